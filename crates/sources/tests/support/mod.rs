//! A TLS terminator in front of a real broker, for the queue consumers' TLS tests: the broker
//! on this machine speaks plain TCP, the consumer speaks TLS to the terminator, which forwards
//! the decrypted bytes. It presents the TEST-ONLY self-signed certificate of
//! `fixtures/localhost-cert.pem` (for 127.0.0.1 and localhost). Each test binary that includes
//! this module uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// The terminator's certificate (PEM): what a client must trust (`tls_ca_file`).
pub const CERT_PEM: &str = include_str!("../fixtures/localhost-cert.pem");
const KEY_PEM: &str = include_str!("../fixtures/localhost-key.pem");
/// A TEST-ONLY client certificate (self-signed, P-256, clientAuth) and its PKCS#8 key: what a
/// terminator started with [`TlsTerminator::requiring_client_cert`] accepts.
pub const CLIENT_CERT_PEM: &str = include_str!("../fixtures/client-cert.pem");
pub const CLIENT_KEY_PEM: &str = include_str!("../fixtures/client-key.pem");

/// When the TLS handshake happens on a connection.
#[derive(Debug, Clone, Copy)]
pub enum Handshake {
    /// At once (AMQP over TLS; NATS with `handshake_first`).
    First,
    /// After the server's first line, passed on in plain text (NATS: `INFO {…}`, then the
    /// client upgrades the connection).
    AfterGreeting,
}

pub struct TlsTerminator {
    pub addr: SocketAddr,
    /// TLS handshakes completed.
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TlsTerminator {
    pub async fn start(target: &'static str, handshake: Handshake) -> TlsTerminator {
        Self::start_with(target, handshake, false).await
    }

    /// A terminator that completes a handshake only with the client certificate of
    /// [`CLIENT_CERT_PEM`] (mutual TLS).
    pub async fn requiring_client_cert(
        target: &'static str,
        handshake: Handshake,
    ) -> TlsTerminator {
        Self::start_with(target, handshake, true).await
    }

    async fn start_with(
        target: &'static str,
        handshake: Handshake,
        client_auth: bool,
    ) -> TlsTerminator {
        let pem = |text: &str| -> Vec<CertificateDer<'static>> {
            CertificateDer::pem_slice_iter(text.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let key = PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(pem(CLIENT_CERT_PEM));
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(pem(CERT_PEM), key).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let done = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    if let Handshake::AfterGreeting = handshake {
                        // Byte by byte: nothing after the line may be read here.
                        let mut byte = [0u8; 1];
                        loop {
                            if outbound.read_exact(&mut byte).await.is_err()
                                || inbound.write_all(&byte).await.is_err()
                            {
                                return;
                            }
                            if byte[0] == b'\n' {
                                break;
                            }
                        }
                    }
                    let Ok(mut tls) = acceptor.accept(inbound).await else {
                        return;
                    };
                    done.fetch_add(1, Ordering::SeqCst);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
                });
            }
        });
        TlsTerminator {
            addr,
            handshakes,
            task,
        }
    }

    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Writes the certificate to trust into `dir` and returns its path.
    pub fn ca_file(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("broker-ca.pem");
        std::fs::write(&path, CERT_PEM).unwrap();
        path
    }

    /// Writes the client certificate and key into `dir`; returns (certificate, key) paths.
    pub fn client_cert_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join("client-cert.pem"), dir.join("client-key.pem"));
        std::fs::write(&cert, CLIENT_CERT_PEM).unwrap();
        std::fs::write(&key, CLIENT_KEY_PEM).unwrap();
        (cert, key)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
