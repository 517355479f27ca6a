//! PEM files the sources read — certificate lists and private keys — with errors that say what
//! is wrong with the file; the caller names the file and the configuration key.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A file's bytes (`cannot be read: …`).
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))
}

/// The certificates of a PEM text, at least one.
pub(crate) fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate (`-----BEGIN CERTIFICATE-----`)".into());
    }
    Ok(certs)
}

/// The private key of a PEM text (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("is not a PEM private key: {e}"))
}

/// The certificates of a PEM file, at least one.
pub(crate) fn certificate_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    certificates(&read(path)?)
}

/// The private key of a PEM file.
pub(crate) fn private_key_file(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    private_key(&read(path)?)
}
