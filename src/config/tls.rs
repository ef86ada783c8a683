//! PEM files the gateway serves TLS with: read and parsed at load, so a bad
//! path or a bad file is a configuration error naming its field, and read
//! again by the gateway when it builds its TLS acceptor.

use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Reads a PEM file of certificates; at least one must be there.
pub fn read_pem_certs(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)", path.display()));
    }
    Ok(bytes)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_pem_key(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: holds no PEM private key: {e}", path.display()))?;
    Ok(bytes)
}
