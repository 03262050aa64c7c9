//! Trusting a private CA: the PEM file a `--ca-file` flag names, checked once
//! and applied to reqwest clients, and telling an untrusted server
//! certificate apart from other connection failures.
//!
//! With a CA file, only that CA is trusted (as etcdctl's `--cacert` does);
//! without one, clients keep reqwest's built-in roots.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file is missing or unreadable.
    #[error("cannot read CA file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable PEM certificate.
    #[error("invalid CA file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The certificates of a CA file, every one accepted as a trust anchor.
#[derive(Debug, Clone)]
pub struct TrustedCa {
    path: PathBuf,
    certs: Vec<reqwest::Certificate>,
    roots: Arc<rustls::RootCertStore>,
}

impl TrustedCa {
    /// Reads and checks the PEM certificates in `path`.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| TlsError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        if certs.is_empty() {
            return Err(invalid("no PEM CERTIFICATE block".into()));
        }
        let mut store = rustls::RootCertStore::empty();
        let mut trusted = Vec::with_capacity(certs.len());
        for cert in certs {
            trusted
                .push(reqwest::Certificate::from_der(&cert).map_err(|e| invalid(e.to_string()))?);
            store
                .add(cert)
                .map_err(|e| invalid(format!("not a CA certificate: {e}")))?;
        }
        Ok(TrustedCa {
            path: path.to_owned(),
            certs: trusted,
            roots: Arc::new(store),
        })
    }

    /// The certificates as rustls trust anchors (for verifying clients).
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        self.roots.clone()
    }

    /// The file the certificates came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `builder` trusting exactly these certificates (no built-in roots).
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        self.certs
            .iter()
            .fold(builder.tls_built_in_root_certs(false), |b, cert| {
                b.add_root_certificate(cert.clone())
            })
    }
}

/// `builder` trusting `ca` when given, else unchanged (built-in roots).
pub fn trusting(builder: reqwest::ClientBuilder, ca: Option<&TrustedCa>) -> reqwest::ClientBuilder {
    match ca {
        Some(ca) => ca.apply(builder),
        None => builder,
    }
}

/// Why the server's certificate was refused, when that is what `err` (or
/// anything in its source chain) is about.
pub fn untrusted_certificate(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(reason)) = rustls_error(e) {
            return Some(match reason {
                rustls::CertificateError::UnknownIssuer => {
                    "it is not signed by a trusted CA".to_owned()
                }
                other => other.to_string(),
            });
        }
        next = e.source();
    }
    None
}

/// The rustls error `e` is, or wraps in (nested) IO errors: the TLS
/// connector puts the handshake's `io::Error` inside another one, and an IO
/// error's `source()` skips what it wraps.
fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = e;
    for _ in 0..8 {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = current.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
    None
}
