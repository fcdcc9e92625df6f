use std::fmt;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tracing::Instrument;

use super::config::ClientConfig;
use super::error::ConnectError;
use super::handle::Client;
use super::handler::ClientHandler;
use super::handshake::{redact_query, Connector, Target};
use super::http2::Http2Connection;
use super::runner;

/// Configures a [`Client`] before it connects: request headers, subprotocols, TLS roots
/// and the [`ClientConfig`].
///
/// ```no_run
/// use estuary::client::{Client, ClientConfig, ClientHandler};
/// use estuary::Message;
/// use std::time::Duration;
///
/// struct Quiet;
///
/// impl ClientHandler for Quiet {
///     async fn on_message(&mut self, _client: &Client, _message: Message) {}
/// }
///
/// # async fn run() -> Result<(), estuary::client::ConnectError> {
/// let client = Client::builder("ws://127.0.0.1:3000/socket")
///     .header("authorization", "Bearer s3cret")
///     .protocols(["chat.v2", "chat.v1"])
///     .config(ClientConfig::default().with_connect_timeout(Duration::from_secs(3)))
///     .connect(Quiet)
///     .await?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
pub struct ClientBuilder {
    url: String,
    headers: HeaderMap,
    /// The first bad header, reported by `connect`.
    header_error: Option<String>,
    protocols: Vec<String>,
    config: ClientConfig,
    http2: Option<Http2Connection>,
    #[cfg(feature = "tls")]
    tls: super::tls::TlsSettings,
}

impl ClientBuilder {
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            headers: HeaderMap::new(),
            header_error: None,
            protocols: Vec::new(),
            config: ClientConfig::default(),
            http2: None,
            #[cfg(feature = "tls")]
            tls: super::tls::TlsSettings::default(),
        }
    }

    /// Adds a header to the upgrade request, such as `Authorization` or `Origin`. The
    /// handshake's own headers (`Upgrade`, `Connection`, `Sec-WebSocket-*`) are always
    /// the client's; a `Host` given here replaces the URL's.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: fmt::Display,
        V: TryInto<HeaderValue>,
        V::Error: fmt::Display,
    {
        let position = self.headers.len() + 1;
        match (name.try_into(), value.try_into()) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            (Err(e), _) => self.note_header_error(format!("header {position}: {e}")),
            (Ok(name), Err(e)) => self.note_header_error(format!("header {name}: {e}")),
        }
        self
    }

    /// Offers these subprotocols, in order of preference. The server's choice must be one
    /// of them, or connecting fails with
    /// [`ConnectError::UnofferedProtocol`]; it may choose none.
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the connect timeout, message size, keep-alive, backoff and queue settings.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens the WebSocket as a stream of `connection` (HTTP/2, RFC 8441) instead of a
    /// TCP connection of its own; clients given the same [`Http2Connection`] share it.
    /// `wss://` offers only `h2` by ALPN, `ws://` speaks h2c. A reconnect opens a new
    /// stream, on a new connection if that one was lost.
    ///
    /// ```no_run
    /// use estuary::client::{Client, ClientHandler, Http2Connection};
    /// use estuary::Message;
    ///
    /// struct Quiet;
    ///
    /// impl ClientHandler for Quiet {
    ///     async fn on_message(&mut self, _client: &Client, _message: Message) {}
    /// }
    ///
    /// # async fn run() -> Result<(), estuary::client::ConnectError> {
    /// let shared = Http2Connection::new();
    /// let mut clients = Vec::new();
    /// for room in ["a", "b", "c"] {
    ///     let url = format!("ws://127.0.0.1:3000/chat?room={room}");
    ///     clients.push(Client::builder(url).http2(&shared).connect(Quiet).await?);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn http2(mut self, connection: &Http2Connection) -> Self {
        self.http2 = Some(connection.clone());
        self
    }

    /// Trusts `certificate` as a root for `wss://`, besides Mozilla's roots: for a
    /// private certificate authority or a self-signed server.
    ///
    /// ```no_run
    /// use estuary::client::rustls::pki_types::{pem::PemObject, CertificateDer};
    /// use estuary::client::Client;
    ///
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let root = CertificateDer::from_pem_file("ca.pem")?;
    /// let builder = Client::builder("wss://internal.example:8443/feed").add_root_certificate(root);
    /// # let _ = builder;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn add_root_certificate(
        mut self,
        certificate: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    ) -> Self {
        self.tls.extra_roots.push(certificate);
        self
    }

    /// Uses this rustls config for `wss://` instead of the built-in one (Mozilla's roots
    /// and those added with [`ClientBuilder::add_root_certificate`]): for client
    /// certificates, or to trust only a private root.
    ///
    /// ```no_run
    /// use estuary::client::rustls::pki_types::{pem::PemObject, CertificateDer};
    /// use estuary::client::rustls::{self, RootCertStore};
    /// use estuary::client::Client;
    /// use std::sync::Arc;
    ///
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut roots = RootCertStore::empty();
    /// roots.add(CertificateDer::from_pem_file("private-ca.pem")?)?;
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let builder = Client::builder("wss://internal.example/feed").tls_config(Arc::new(config));
    /// # let _ = builder;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// Connects, then runs `handler` on the client's own task. The first connect's
    /// failure is returned here; later ones go to the handler's `on_close`.
    pub async fn connect<H: ClientHandler>(self, handler: H) -> Result<Client, ConnectError> {
        if let Some(problem) = self.header_error {
            return Err(ConnectError::Config(problem));
        }
        self.config.validate()?;
        let connector = Connector::new(
            Target::parse(&self.url)?,
            self.headers,
            self.protocols,
            self.config.compression.clone(),
            self.config.connect_timeout,
            self.http2,
            #[cfg(feature = "tls")]
            &self.tls,
        )?;
        let span = tracing::debug_span!("ws_client", url = %redact_query(&self.url));
        let established = connector.connect().instrument(span.clone()).await?;
        let config = Arc::new(self.config);
        let (client, rx) = Client::new(&config);
        let task = runner::run(handler, client.clone(), rx, connector, config, established);
        tokio::spawn(task.instrument(span));
        Ok(client)
    }

    fn note_header_error(&mut self, problem: String) {
        self.header_error.get_or_insert(problem);
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values and the query are left out: they are often credentials.
        f.debug_struct("ClientBuilder")
            .field("url", &redact_query(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("protocols", &self.protocols)
            .field("config", &self.config)
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}
