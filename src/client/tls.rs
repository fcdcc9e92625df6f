//! `wss://` on rustls: Mozilla's root certificates (webpki-roots) plus any the user adds,
//! or the user's own rustls config.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::error::ConnectError;
use super::stream::Stream;

/// What the builder collected about TLS.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    pub(crate) config: Option<Arc<ClientConfig>>,
}

impl TlsSettings {
    /// The connector every connection of one client uses: built once, at the first
    /// connect. It offers `h2` by ALPN for a client on an HTTP/2 connection, `http/1.1`
    /// otherwise, so that a server that speaks both picks the one the client speaks;
    /// a config of the user's is used with that ALPN list.
    pub(crate) fn connector(&self, http2: bool) -> Result<TlsConnector, ConnectError> {
        let alpn = if http2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        if let Some(config) = &self.config {
            let mut config = ClientConfig::clone(config);
            config.alpn_protocols = alpn;
            return Ok(TlsConnector::from(Arc::new(config)));
        }
        let mut roots: RootCertStore = webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect();
        for (i, cert) in self.extra_roots.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| {
                ConnectError::Config(format!("root certificate {} is not usable: {e}", i + 1))
            })?;
        }
        // An explicit provider, so that another crate installing a process-wide default
        // (or two of them) cannot change or break ours.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// Runs the TLS handshake for `host` over `tcp`.
pub(crate) async fn handshake(
    connector: &TlsConnector,
    host: &str,
    tcp: TcpStream,
) -> Result<Stream, ConnectError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| {
        ConnectError::Config(format!("{host:?} is neither a DNS name nor an IP address"))
    })?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(ConnectError::Tls)?;
    Ok(Stream::Tls(Box::new(tls)))
}
