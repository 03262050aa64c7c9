//! TLS for the client and peer ports: a certificate chain and its key (PEM
//! files) loaded into a rustls server configuration that `SIGHUP` reloads
//! (so certificates are rotated without a restart), and a listener that
//! performs handshakes in tasks of their own, so a client that connects and
//! stalls holds only its own handshake, never the accept loop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const READY_QUEUE: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Why a certificate or key file cannot be served with.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("cannot read {what} {path}")]
    Read {
        /// Which flag named the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("invalid {what} {path}: {reason}")]
    Invalid {
        /// Which flag named the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refused the pair.
    #[error("cannot use certificate {cert} with key {key}: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// A certificate chain file and its private key file, as given by flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The flag names, for messages: `("--cert-file", "--key-file")`.
    pub flags: (&'static str, &'static str),
    /// When set, connections must present a certificate signed by a CA of
    /// this PEM file (mutual TLS, `--peer-client-cert-auth`).
    pub client_ca: Option<PathBuf>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

impl CertFiles {
    /// Reads both files and builds the server configuration (HTTP/1.1 over ALPN).
    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let (cert_flag, key_flag) = self.flags;
        let invalid = |what, path: &Path, reason: String| TlsError::Invalid {
            what,
            path: path.to_owned(),
            reason,
        };
        let pem = read(cert_flag, &self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(cert_flag, &self.cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(invalid(
                cert_flag,
                &self.cert,
                "no PEM CERTIFICATE block".into(),
            ));
        }
        let pem = read(key_flag, &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| invalid(key_flag, &self.key, format!("no PEM private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.unusable(&e))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let what = "--peer-trusted-ca-file";
                let ca = api::tls::TrustedCa::load(path)
                    .map_err(|e| invalid(what, path, e.to_string()))?;
                let verifier = WebPkiClientVerifier::builder_with_provider(ca.roots(), provider)
                    .build()
                    .map_err(|e| invalid(what, path, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| self.unusable(&e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The pair as the identity an HTTP client presents (mutual TLS).
    pub fn identity(&self) -> Result<reqwest::Identity, TlsError> {
        let (cert_flag, key_flag) = self.flags;
        let mut pem = read(cert_flag, &self.cert)?;
        pem.push(b'\n');
        pem.extend(read(key_flag, &self.key)?);
        reqwest::Identity::from_pem(&pem).map_err(|e| self.unusable(&e))
    }

    /// The pair refused by rustls or reqwest, with what they said.
    fn unusable(&self, e: &dyn std::error::Error) -> TlsError {
        TlsError::Pair {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason: e.to_string(),
        }
    }
}

/// The server configuration of a [`CertFiles`] pair as last loaded. A reload
/// that fails (a missing, half-written or mismatched file) keeps the
/// configuration in use and says why; handshakes after a reload use the new one.
#[derive(Debug, Clone)]
pub struct Certs {
    files: CertFiles,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl Certs {
    /// Loads the pair; an unusable file is an error.
    pub fn load(files: CertFiles) -> Result<Self, TlsError> {
        let config = files.server_config()?;
        Ok(Self {
            files,
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again and serves them from the next handshake on;
    /// on an error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.server_config()?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// Reloads on every `SIGHUP` for as long as the process runs, logging
    /// each outcome.
    pub fn reload_on_hangup(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let certs = self.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let cert = certs.files.cert.display();
                match certs.reload() {
                    Ok(()) => tracing::info!(%cert, "SIGHUP: certificate reloaded"),
                    Err(e) => tracing::error!(
                        %cert,
                        "SIGHUP: cannot reload the certificate, still serving the one loaded before: {e}"
                    ),
                }
            }
        });
        Ok(())
    }
}

/// A listener whose connections come out TLS-handshaken. A background task
/// accepts TCP connections and starts one handshake task per connection;
/// failed or timed-out handshakes (a plain-HTTP client, a scanner) are
/// dropped. The task ends when the listener is dropped.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS with `certs` (as they are at each handshake) on the connections `tcp` accepts.
    pub fn new(tcp: TcpListener, certs: Certs) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(tcp, certs, tx));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    certs: Certs,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(%e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%e, "cannot set TCP_NODELAY");
        }
        let acceptor = TlsAcceptor::from(certs.current());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // Err: the server is gone, and the connection with it.
                    let _ = tx.send((tls, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends once this receiver is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> anyhow::Result<CertFiles> {
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert)?;
        std::fs::write(&key_path, key)?;
        Ok(CertFiles {
            cert: cert_path,
            key: key_path,
            flags: ("--cert-file", "--key-file"),
            client_ca: None,
        })
    }

    #[test]
    fn bad_files_are_named_in_the_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let missing = CertFiles {
            cert: dir.path().join("absent.pem"),
            key: dir.path().join("absent-key.pem"),
            flags: ("--cert-file", "--key-file"),
            client_ca: None,
        };
        let err = missing.server_config().err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("--cert-file") && e.contains("absent.pem")),
            "{err:?}"
        );
        let garbage = files(dir.path(), "not a certificate", "not a key")?;
        let err = garbage.server_config().err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.starts_with("invalid --cert-file")),
            "{err:?}"
        );
        Ok(())
    }

    /// A self-signed certificate for `name` and its key, as PEM.
    fn self_signed(name: &str) -> anyhow::Result<(String, String)> {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()])?;
        Ok((cert.cert.pem(), cert.signing_key.serialize_pem()))
    }

    #[test]
    fn a_reload_takes_new_files_and_a_failed_one_keeps_the_old() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (cert, key) = self_signed("first.example")?;
        let pair = files(dir.path(), &cert, &key)?;
        let certs = Certs::load(pair.clone())?;
        let first = certs.current();

        let (cert, key) = self_signed("second.example")?;
        files(dir.path(), &cert, &key)?;
        certs.reload()?;
        let second = certs.current();
        assert!(!Arc::ptr_eq(&first, &second), "the reload took no effect");

        std::fs::write(&pair.cert, "-----BEGIN CERTIFICATE-----\ntruncated")?;
        let err = certs.reload().err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.starts_with("invalid --cert-file")),
            "{err:?}"
        );
        assert!(
            Arc::ptr_eq(&second, &certs.current()),
            "a failed reload replaced the configuration in use"
        );
        Ok(())
    }
}
