//! https:// and wss:// for the [`Server`](super::Server), on rustls (feature `tls`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// A TLS configuration the server could not build, naming the file at fault.
///
/// ```
/// let err = estuary::tls_from_pem("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
/// assert!(err.to_string().starts_with("cert: cannot read /nonexistent/cert.pem"));
/// assert_eq!(err.file(), estuary::TlsFile::Cert);
/// ```
#[derive(Debug)]
pub struct TlsError {
    file: TlsFile,
    message: String,
}

/// Which file a [`TlsError`] is about.
///
/// ```
/// use estuary::{tls_from_pem, TlsFile};
///
/// let error = tls_from_pem("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
/// assert_eq!(error.file(), TlsFile::Cert);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
}

impl TlsError {
    /// Which file is at fault (the key, when the key does not fit the certificate).
    pub fn file(&self) -> TlsFile {
        self.file
    }

    fn new(file: TlsFile, message: impl Into<String>) -> Self {
        Self {
            file,
            message: message.into(),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = match self.file {
            TlsFile::Cert => "cert",
            TlsFile::Key => "key",
        };
        write!(f, "{file}: {}", self.message)
    }
}

impl std::error::Error for TlsError {}

/// A rustls server configuration from a PEM certificate chain and a PEM private key. It
/// offers HTTP/1.1 by ALPN; [`ServerBuilder::tls`](super::ServerBuilder::tls) sets the
/// list the server speaks (`h2` too, with HTTP/2 on).
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = estuary::tls_from_pem("cert.pem", "key.pem")?;
/// let server = estuary::Server::builder().tls(tls).bind("0.0.0.0:443".parse()?)?;
/// # Ok(()) }
/// ```
pub fn tls_from_pem(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = (cert.as_ref(), key.as_ref());
    let certs = read_certs(cert)?;
    let key = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(TlsFile::Cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::new(TlsFile::Key, format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let unreadable = |e: &dyn fmt::Display| {
        TlsError::new(
            TlsFile::Cert,
            format!("cannot read {}: {e}", path.display()),
        )
    };
    std::fs::metadata(path).map_err(|e| unreadable(&e))?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::new(
                TlsFile::Cert,
                format!("{} is not valid PEM: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(TlsError::new(
            TlsFile::Cert,
            format!("no CERTIFICATE in {}", path.display()),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    if let Err(e) = std::fs::metadata(path) {
        return Err(TlsError::new(
            TlsFile::Key,
            format!("cannot read {}: {e}", path.display()),
        ));
    }
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsError::new(
            TlsFile::Key,
            format!(
                "no usable PRIVATE KEY in {}: {e}",
                PathBuf::from(path).display()
            ),
        )
    })
}
