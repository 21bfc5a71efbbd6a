//! HTTPS for the collector, with rustls: the certificate chain and key come from PEM
//! files named in `collector.toml` (`tls_cert_file`, `tls_key_file`); agents verify the
//! chain against their system roots or the CA in their `ca_file`.
//!
//! Handshakes run in each connection's own task, under its request head deadline
//! ([`crate::server`]): a client that never finishes its handshake holds neither the
//! accept loop nor more than its one connection slot, and not for long.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("key `tls_cert_file`: {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("key `tls_key_file`: {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Cert {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |reason: String| TlsError::Key {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| err(format!("no PKCS#8, PKCS#1 or SEC1 private key: {e}")))
}

/// Loads and checks the certificate chain and key (they must belong together).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs(&files.cert_file)?;
    let key = key(&files.key_file)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Key {
            path: files.key_file.display().to_string(),
            reason: format!("does not fit the certificate: {e}"),
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_file() {
        let d = tempfile::tempdir().unwrap();
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let files = TlsFiles {
            cert_file: d.path().join("missing.pem"),
            key_file: junk.clone(),
        };
        let e = server_config(&files).unwrap_err().to_string();
        assert!(
            e.starts_with("key `tls_cert_file`: ") && e.contains("missing.pem"),
            "{e}"
        );
        let files = TlsFiles {
            cert_file: junk.clone(),
            key_file: junk,
        };
        let e = server_config(&files).unwrap_err().to_string();
        assert!(
            e.contains("key `tls_cert_file`") && e.contains("no CERTIFICATE"),
            "{e}"
        );
    }
}
