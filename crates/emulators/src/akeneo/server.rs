//! The HTTP/1.1 server loop. Hand-rolled on hyper (rather than `axum::serve`) so that fault
//! injection can drop a connection without answering: the service returns an error and hyper
//! closes the socket.

use std::io;
use std::net::SocketAddr;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use super::http::DropConnection;

#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
struct Dropped;

/// A served emulator. Dropping it (or [`RunningEmulator::shutdown`]) stops the server and closes
/// its connections.
pub struct RunningEmulator {
    /// `http://127.0.0.1:<port>`: the base URL to configure clients with.
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningEmulator")
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl RunningEmulator {
    /// Stops accepting, closes open connections and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub(crate) async fn serve(router: Router, addr: SocketAddr) -> io::Result<RunningEmulator> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut rx => break,
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "akeneo emulator: accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let router = router.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let router = router.clone();
                            async move {
                                let resp = match router.oneshot(req).await {
                                    Ok(r) => r,
                                    Err(never) => match never {},
                                };
                                if resp.extensions().get::<DropConnection>().is_some() {
                                    Err(Dropped)
                                } else {
                                    Ok(resp)
                                }
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                    while conns.try_join_next().is_some() {}
                }
            }
        }
        conns.shutdown().await;
    });
    Ok(RunningEmulator {
        base_url: format!("http://{local}"),
        addr: local,
        shutdown: Some(tx),
        task: Some(task),
    })
}
