//! TLS material read from files: the CA bundles that verify Consul's and
//! Patroni's REST API's certificates.

use crate::error::{Error, Result};

/// Reads a PEM bundle of CA certificates; `key` is the setting that names it.
pub fn read_ca(ca: &std::path::Path, key: &str) -> Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(ca)
        .map_err(|e| Error::usage(format!("reading {key} {}: {e}", ca.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| Error::usage(format!("{key} {}: not a PEM bundle: {e}", ca.display())))?;
    if certs.is_empty() {
        return Err(Error::usage(format!(
            "{key} {}: no certificate in it",
            ca.display()
        )));
    }
    Ok(certs)
}
