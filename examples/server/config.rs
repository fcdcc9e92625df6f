//! The example server's configuration: a TOML file in which every key is optional and
//! every bad value is a startup error that names its key.
//!
//! ```text
//! config: idle_timeout: invalid duration "12x": expected a number and a unit (ms, s, m, h, d), or "infinity"
//! config: rate_limit.per_second: invalid value: integer `0`, expected a nonzero u32
//! config: unknown key `idle_timout`, expected one of `bind`, `echo_path`, ...
//! ```
//!
//! Adding a key: a field here (with its default in `Default`), a line in
//! `examples/server.toml`, and the use in `app.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use estuary::middleware::origin::OriginLayer;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The example server's settings, as read from the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The address to listen on; `--bind` overrides it.
    pub bind: SocketAddr,
    /// The path of the echo WebSocket.
    #[serde(deserialize_with = "route_path")]
    pub echo_path: String,
    /// The path of the chat WebSocket (the page at `/` talks to it).
    #[serde(deserialize_with = "route_path")]
    pub chat_path: String,
    /// The path of the health check.
    #[serde(deserialize_with = "route_path")]
    pub health_path: String,
    /// The path of the Prometheus metrics; empty turns them off.
    #[serde(deserialize_with = "optional_route_path")]
    pub metrics_path: Option<String>,
    /// SO_REUSEPORT, so several server processes can share the port.
    pub reuse_port: bool,
    /// The most WebSockets open at once; one more gets 503.
    pub max_connections: NonZeroUsize,
    /// The most WebSockets open at once from one IP address; one more gets 503.
    pub max_connections_per_ip: NonZeroUsize,
    /// How long a WebSocket may stay open at all; `None` is "infinity".
    #[serde(deserialize_with = "duration_or_infinity")]
    pub max_connection_age: Option<Duration>,
    /// Close each WebSocket up to this fraction of `max_connection_age` earlier (0 to 1,
    /// drawn once per socket), so sockets opened together do not reconnect together.
    #[serde(deserialize_with = "fraction")]
    pub max_connection_age_jitter: f64,
    /// How long a WebSocket may stay silent; `None` is "infinity".
    #[serde(deserialize_with = "duration_or_infinity")]
    pub idle_timeout: Option<Duration>,
    /// A ping after this long without a word from the client; `None` ("infinity") turns
    /// keep-alive pings off.
    #[serde(deserialize_with = "duration_or_infinity")]
    pub keepalive_interval: Option<Duration>,
    /// How long a keep-alive ping may go unanswered before the socket is closed as idle.
    #[serde(deserialize_with = "duration")]
    pub keepalive_timeout: Duration,
    /// The largest message a client may send, in bytes.
    pub max_message_size: NonZeroUsize,
    /// Debug-level logs for estuary (RUST_LOG, when set, still wins).
    pub show_debug_logs: bool,
    /// Origins browsers may open WebSockets from; empty allows only the server's own
    /// pages (an `Origin` that is the request's `Host`).
    #[serde(deserialize_with = "origins")]
    pub allowed_origins: Vec<String>,
    /// At most `capacity` messages per `duration` from each client.
    pub transmission_limit: Option<TransmissionLimit>,
    /// Requests per second per client IP, on every route.
    pub rate_limit: Option<RateLimit>,
    /// Who may open a WebSocket.
    pub auth: Auth,
    /// How long shutdown waits for sockets to close before it exits anyway.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// How long a client may take to send its request headers (slowloris).
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// The most connections in their HTTP phase (handshakes in progress) at once.
    pub max_pending_handshakes: NonZeroUsize,
    /// The most connections in their HTTP phase from one IP address at once.
    pub max_pending_handshakes_per_ip: NonZeroUsize,
    /// How many leading bits of an IPv6 address make one client, for every per-IP limit.
    #[serde(deserialize_with = "ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// What one chat connection may hold, and who may join and speak where.
    pub hub: Hub,
    /// Deliver across server processes through this Redis.
    pub redis: Option<Redis>,
    /// Serve https:// and wss:// with this certificate.
    pub tls: Option<Tls>,
    /// permessage-deflate for clients that offer it.
    pub compression: Compression,
    /// HTTP/2 beside HTTP/1.1 with `[tls]` (ALPN), with WebSockets over it (RFC 8441).
    pub http2: bool,
    /// HTTP/2 with prior knowledge (h2c) on plain TCP, beside HTTP/1.1.
    pub h2c: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            echo_path: "/echo".into(),
            chat_path: "/ws".into(),
            health_path: "/health".into(),
            metrics_path: Some("/metrics".into()),
            reuse_port: false,
            max_connections: NonZeroUsize::new(65_536).expect("65536 is not zero"),
            max_connections_per_ip: NonZeroUsize::new(1024).expect("1024 is not zero"),
            max_connection_age: None,
            max_connection_age_jitter: 0.0,
            idle_timeout: Some(Duration::from_secs(120)),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            max_message_size: NonZeroUsize::new(1 << 20).expect("1 MiB is not zero"),
            show_debug_logs: false,
            allowed_origins: Vec::new(),
            transmission_limit: None,
            rate_limit: None,
            auth: Auth::default(),
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_pending_handshakes: NonZeroUsize::new(1024).expect("1024 is not zero"),
            max_pending_handshakes_per_ip: NonZeroUsize::new(64).expect("64 is not zero"),
            ipv6_prefix: estuary::middleware::key::DEFAULT_IPV6_PREFIX,
            hub: Hub::default(),
            redis: None,
            tls: None,
            compression: Compression::default(),
            http2: true,
            h2c: false,
        }
    }
}

/// `[compression]`: permessage-deflate (RFC 7692), for clients that offer it (every
/// browser does).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Compression {
    /// Accept it at all.
    pub enabled: bool,
    /// How compression state is kept between messages.
    pub mode: CompressionMode,
    /// Messages shorter than this many bytes go uncompressed.
    pub threshold: usize,
    /// The zlib level, 0 to 9.
    #[serde(deserialize_with = "level")]
    pub level: u32,
    /// The largest LZ77 window, 8 to 15 bits.
    #[serde(deserialize_with = "window_bits")]
    pub window_bits: u8,
}

impl Default for Compression {
    fn default() -> Self {
        let library = estuary::DeflateConfig::default();
        Self {
            enabled: true,
            mode: CompressionMode::Shared,
            threshold: library.threshold,
            level: library.level,
            window_bits: library.window_bits,
        }
    }
}

impl Compression {
    /// The library's settings, when compression is on.
    pub fn deflate(&self) -> Option<estuary::DeflateConfig> {
        let mode = match self.mode {
            CompressionMode::Shared => estuary::DeflateMode::Shared,
            CompressionMode::PerConnection => estuary::DeflateMode::PerConnection,
        };
        self.enabled.then(|| {
            estuary::DeflateConfig::default()
                .with_mode(mode)
                .with_threshold(self.threshold)
                .with_level(self.level)
                .with_window_bits(self.window_bits)
        })
    }
}

/// `compression.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompressionMode {
    /// No context takeover: no zlib state per idle connection; a broadcast is
    /// compressed once.
    #[default]
    Shared,
    /// Context takeover: better ratios for small, similar messages, at about 300 KB per
    /// connection.
    PerConnection,
}

/// `[tls]`: a PEM certificate chain and private key; the server then speaks only TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))] // read only to refuse the table
pub struct Tls {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
}

impl Tls {
    /// Reads the files into a rustls configuration; errors name `tls.cert` or `tls.key`.
    #[cfg(feature = "tls")]
    pub fn load(
        &self,
    ) -> Result<std::sync::Arc<estuary::client::rustls::ServerConfig>, ConfigError> {
        estuary::tls_from_pem(&self.cert, &self.key).map_err(|e| {
            let key = match e.file() {
                estuary::TlsFile::Cert => "tls.cert",
                estuary::TlsFile::Key => "tls.key",
            };
            // The error starts with "cert: " or "key: "; the key path replaces it.
            let message = e.to_string();
            let message = message
                .split_once(": ")
                .map_or(message.as_str(), |(_, m)| m);
            ConfigError::at(key, message)
        })
    }

    fn check(&self) -> Result<(), ConfigError> {
        #[cfg(feature = "tls")]
        return self.load().map(drop);
        #[cfg(not(feature = "tls"))]
        Err(ConfigError::at(
            "tls",
            "this build has no TLS support: run with `--features tls`",
        ))
    }
}

/// `[hub]`: the bounds of what one chat connection may hold, and the channels only some
/// users may join or speak in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hub {
    /// The most channels one connection may be in.
    pub max_channels_per_connection: NonZeroUsize,
    /// The longest channel name, in bytes.
    pub max_channel_length: NonZeroUsize,
    /// `[hub.channels."name"]` or `[hub.channels."prefix*"]`: who may join, who may say,
    /// what is kept for clients that reconnect.
    pub channels: BTreeMap<String, ChannelRule>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            max_channels_per_connection: NonZeroUsize::new(100).expect("100 is not zero"),
            max_channel_length: NonZeroUsize::new(64).expect("64 is not zero"),
            channels: BTreeMap::new(),
        }
    }
}

impl Hub {
    /// The hub limits these settings ask for.
    pub fn limits(&self) -> estuary::HubLimits {
        estuary::HubLimits::default()
            .with_max_channels_per_connection(self.max_channels_per_connection.get())
            .with_max_channel_len(self.max_channel_length.get())
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.max_channel_length.get() > usize::from(u16::MAX) {
            return Err(ConfigError::at(
                "hub.max_channel_length",
                "may be at most 65535 bytes",
            ));
        }
        for (pattern, rule) in &self.channels {
            let name = pattern.strip_suffix('*').unwrap_or(pattern);
            if name.contains('*') {
                return Err(ConfigError::at(
                    &format!("hub.channels.{pattern:?}"),
                    "a `*` may only end a pattern (a prefix)",
                ));
            }
            if rule.history_ttl.is_some() && rule.history_size.is_none() {
                return Err(ConfigError::at(
                    &format!("hub.channels.{pattern:?}.history_ttl"),
                    "needs history_size: how many lines to keep",
                ));
            }
        }
        Ok(())
    }
}

/// `[hub.channels."pattern"]`: who may join a channel and who may say something in it
/// (a list left out lets everyone), and how much of what was said there is kept for
/// clients that reconnect (none unless `history_size` is set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRule {
    /// The user ids that may join.
    pub join: Option<Vec<String>>,
    /// The user ids that may say something.
    pub say: Option<Vec<String>>,
    /// How many of the last lines said are kept, for clients that reconnect.
    pub history_size: Option<NonZeroUsize>,
    /// How long a kept line is kept (with `history_size`; default 10 minutes).
    #[serde(default, deserialize_with = "optional_duration")]
    pub history_ttl: Option<Duration>,
}

impl ChannelRule {
    /// How long a kept line is kept when `history_ttl` is left out.
    pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(600);

    /// The history this rule keeps, if any.
    pub fn history(&self) -> Option<estuary::History> {
        let size = self.history_size?;
        let ttl = self.history_ttl.unwrap_or(Self::DEFAULT_HISTORY_TTL);
        Some(estuary::History::new(size.get(), ttl))
    }
}

/// `[redis]`: the hub's backplane, so chat messages reach users on every node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // read only to refuse the table
pub struct Redis {
    /// `redis://host:port/db` for one Redis, or a list of `redis://host:port` for the
    /// nodes of a Redis Cluster.
    #[serde(deserialize_with = "redis_urls")]
    pub url: RedisUrl,
    /// How long a chat line may take to reach another node before it is dropped.
    #[serde(deserialize_with = "duration", default = "Redis::default_deadline")]
    pub delivery_deadline: Duration,
    /// How long a node's members stay listed after the node stops refreshing them.
    #[serde(deserialize_with = "duration", default = "Redis::default_presence_ttl")]
    pub presence_ttl: Duration,
    /// "interest" (a node hears only what it has sessions for) or "broadcast".
    #[serde(default)]
    pub routing: RedisRouting,
    /// A PEM CA certificate to trust for `rediss://`, instead of the system's roots.
    pub ca_cert: Option<PathBuf>,
}

/// `redis.url`: one Redis, or the nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisUrl {
    /// One Redis.
    One(String),
    /// Some nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

/// `redis.routing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[serde(rename_all = "lowercase")]
pub enum RedisRouting {
    /// A node subscribes to what it has sessions for.
    #[default]
    Interest,
    /// Every node receives every delivery.
    Broadcast,
}

impl Redis {
    fn default_deadline() -> Duration {
        Duration::from_secs(2)
    }

    fn default_presence_ttl() -> Duration {
        Duration::from_secs(6)
    }

    fn urls(&self) -> &[String] {
        match &self.url {
            RedisUrl::One(url) => std::slice::from_ref(url),
            RedisUrl::Cluster(urls) => urls,
        }
    }

    /// The backplane's settings; reads `ca_cert`.
    #[cfg(feature = "redis")]
    pub fn backplane(&self) -> Result<estuary::RedisConfig, ConfigError> {
        let config = match &self.url {
            RedisUrl::One(url) => estuary::RedisConfig::new(url.as_str()),
            RedisUrl::Cluster(urls) => estuary::RedisConfig::cluster(urls.iter().cloned()),
        };
        let mut config = config
            .with_delivery_deadline(self.delivery_deadline)
            .with_presence_ttl(self.presence_ttl)
            .with_routing(match self.routing {
                RedisRouting::Interest => estuary::Routing::Interest,
                RedisRouting::Broadcast => estuary::Routing::Broadcast,
            });
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::at(
                    "redis.ca_cert",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            config = config.with_ca_certificate(pem);
        }
        Ok(config)
    }
}

/// `[transmission_limit]`: a message rate, per connection.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransmissionLimit {
    /// Messages (frames) allowed in one window.
    pub capacity: NonZeroU32,
    /// The window.
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
}

/// `[rate_limit]`: requests per client IP, on every route.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second, once the burst is spent.
    pub per_second: NonZeroU32,
    /// Requests allowed at once; `per_second` when absent.
    pub burst: Option<NonZeroU32>,
}

/// `[auth]`: how WebSocket clients prove who they are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Which check applies.
    pub mode: AuthMode,
    /// The realm named in `WWW-Authenticate` challenges.
    pub realm: String,
    /// `mode = "basic"`: user name to password.
    pub users: BTreeMap<String, String>,
    /// `mode = "bearer"`: token to user id.
    pub tokens: BTreeMap<String, String>,
    /// `mode = "bearer"`: also accept the token in this query parameter (for browsers).
    pub query_param: Option<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            realm: "estuary".into(),
            users: BTreeMap::new(),
            tokens: BTreeMap::new(),
            query_param: None,
        }
    }
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone may connect.
    #[default]
    None,
    /// `Authorization: Basic`, checked against `users`.
    Basic,
    /// `Authorization: Bearer` (or `query_param`), checked against `tokens`.
    Bearer,
}

/// A config error, naming the key: `config: idle_timeout: invalid duration "12x"`.
#[derive(Debug)]
pub struct ConfigError(String);

impl ConfigError {
    fn at(key: &str, message: impl fmt::Display) -> Self {
        if key.is_empty() {
            Self(message.to_string())
        } else {
            Self(format!("{key}: {message}"))
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// Parses and checks a config file's text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let document = toml::Deserializer::parse(text).map_err(|e| {
            let message = e.message().trim_end();
            match e.span() {
                // A syntax error: point at the line, which holds the key.
                Some(span) => {
                    let number = 1 + text[..span.start].matches('\n').count();
                    let line = text.lines().nth(number - 1).unwrap_or("").trim();
                    ConfigError(format!("line {number}: {message}: `{line}`"))
                }
                None => ConfigError(message.to_owned()),
            }
        })?;
        let config: Config = serde_path_to_error::deserialize(document).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            // serde says "field"; a config file has keys.
            let message = e.inner().message().replace("unknown field", "unknown key");
            ConfigError::at(&key, message.trim_end())
        })?;
        config.check()?;
        Ok(config)
    }

    /// What serde cannot see: keys that only make sense together.
    fn check(&self) -> Result<(), ConfigError> {
        let mut paths = vec![("chat page", "/")];
        paths.push(("health_path", &self.health_path));
        if let Some(metrics) = &self.metrics_path {
            paths.push(("metrics_path", metrics));
        }
        paths.push(("chat_path", &self.chat_path));
        paths.push(("echo_path", &self.echo_path));
        for (i, (key, path)) in paths.iter().enumerate() {
            if let Some((other, _)) = paths[..i].iter().find(|(_, p)| p == path) {
                return Err(ConfigError::at(
                    key,
                    format!("{path:?} is also the {other}"),
                ));
            }
        }
        self.hub.check()?;
        if let Some(redis) = &self.redis {
            redis.check()?;
        }
        if let Some(tls) = &self.tls {
            tls.check()?;
        }
        self.auth.check()
    }
}

impl Redis {
    fn check(&self) -> Result<(), ConfigError> {
        if !cfg!(feature = "redis") {
            return Err(ConfigError::at(
                "redis.url",
                "this build has no Redis support: run with `--features redis`",
            ));
        }
        let schemes: &[&str] = match self.url {
            RedisUrl::One(_) => &["redis://", "rediss://", "unix://"],
            RedisUrl::Cluster(_) => &["redis://", "rediss://"],
        };
        if let Some(url) = self
            .urls()
            .iter()
            .find(|url| !schemes.iter().any(|scheme| url.starts_with(scheme)))
        {
            // Only the scheme: the rest may hold a password.
            let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
            let expected = schemes.join(", ");
            return Err(ConfigError::at(
                "redis.url",
                format!("expected a URL starting with {expected}, got scheme {scheme:?}"),
            ));
        }
        if self.presence_ttl < Duration::from_millis(300) {
            return Err(ConfigError::at(
                "redis.presence_ttl",
                "must be at least 300ms",
            ));
        }
        if let Some(path) = &self.ca_cert {
            if let Err(e) = std::fs::metadata(path) {
                return Err(ConfigError::at(
                    "redis.ca_cert",
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        Ok(())
    }
}

/// `redis.url`: a string, or a non-empty list of strings.
fn redis_urls<'de, D: Deserializer<'de>>(deserializer: D) -> Result<RedisUrl, D::Error> {
    struct Urls;

    impl<'de> Visitor<'de> for Urls {
        type Value = RedisUrl;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a redis:// URL, or a list of the URLs of Redis Cluster nodes")
        }

        fn visit_str<E: de::Error>(self, url: &str) -> Result<RedisUrl, E> {
            Ok(RedisUrl::One(url.to_owned()))
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RedisUrl, A::Error> {
            let mut urls = Vec::new();
            while let Some(url) = seq.next_element::<String>()? {
                urls.push(url);
            }
            if urls.is_empty() {
                return Err(de::Error::custom("the list of cluster nodes is empty"));
            }
            Ok(RedisUrl::Cluster(urls))
        }
    }

    deserializer.deserialize_any(Urls)
}

impl Auth {
    fn check(&self) -> Result<(), ConfigError> {
        let (key, empty, mode) = match self.mode {
            AuthMode::None => ("", false, ""),
            AuthMode::Basic => ("auth.users", self.users.is_empty(), "basic"),
            AuthMode::Bearer => ("auth.tokens", self.tokens.is_empty(), "bearer"),
        };
        if empty {
            return Err(ConfigError::at(
                key,
                format!("mode = \"{mode}\" needs at least one entry"),
            ));
        }
        if let Some(name) = self.users.keys().find(|name| name.contains(':')) {
            return Err(ConfigError::at(
                "auth.users",
                format!("user name {name:?} contains ':', which Basic credentials cannot carry"),
            ));
        }
        if self.tokens.contains_key("") {
            return Err(ConfigError::at("auth.tokens", "a token must not be empty"));
        }
        if self.query_param.as_deref() == Some("") {
            return Err(ConfigError::at("auth.query_param", "must not be empty"));
        }
        Ok(())
    }
}

/// Parses "250ms", "30s", "5m", "1h" or "1d": a whole number and a unit.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit = match unit {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        _ => return None,
    };
    unit.checked_mul(u32::try_from(number).ok()?)
}

/// A duration key, with or without "infinity".
struct DurationVisitor {
    infinity: bool,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"30s\"")?;
        if self.infinity {
            f.write_str(" or \"infinity\"")?;
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        if self.infinity && text == "infinity" {
            return Ok(None);
        }
        let infinity = if self.infinity {
            ", or \"infinity\""
        } else {
            ""
        };
        match parse_duration(text) {
            Some(Duration::ZERO) => Err(E::custom(format!(
                "{text:?} is zero; it must be longer{}",
                if self.infinity {
                    " (\"infinity\" turns it off)"
                } else {
                    ""
                }
            ))),
            Some(duration) => Ok(Some(duration)),
            None => Err(E::custom(format!(
                "invalid duration {text:?}: expected a number and a unit (ms, s, m, h, d){infinity}"
            ))),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let duration = deserializer.deserialize_str(DurationVisitor { infinity: false })?;
    Ok(duration.expect("without \"infinity\" a duration is finite"))
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

fn duration_or_infinity<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    deserializer.deserialize_str(DurationVisitor { infinity: true })
}

fn route_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let path = String::deserialize(deserializer)?;
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(de::Error::custom(format!(
            "{path:?} is not a path: it must start with '/' and have no query"
        )));
    }
    Ok(path)
}

/// A route path, or "" for off.
fn optional_route_path<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let path = String::deserialize(deserializer)?;
    if path.is_empty() {
        return Ok(None);
    }
    route_path(de::value::StringDeserializer::new(path)).map(Some)
}

fn ipv6_prefix<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    let bits = u32::deserialize(deserializer)?;
    u8::try_from(bits)
        .ok()
        .filter(|&bits| bits <= 128)
        .ok_or_else(|| {
            de::Error::custom(format!("{bits} is not a prefix length: expected 0 to 128"))
        })
}

fn fraction<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let fraction = f64::deserialize(deserializer)?;
    if !(0.0..=1.0).contains(&fraction) {
        return Err(de::Error::custom(format!(
            "{fraction} is not a fraction: expected 0 (no jitter) to 1"
        )));
    }
    Ok(fraction)
}

fn level<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let level = u32::deserialize(deserializer)?;
    if level > 9 {
        return Err(de::Error::custom(format!(
            "{level} is not a zlib level: use 0 (store) to 9 (smallest)"
        )));
    }
    Ok(level)
}

fn window_bits<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    let bits = u32::deserialize(deserializer)?;
    u8::try_from(bits)
        .ok()
        .filter(|bits| (8..=15).contains(bits))
        .ok_or_else(|| {
            de::Error::custom(format!(
                "{bits} is not a window size: use 8 (256 bytes) to 15 (32 KiB)"
            ))
        })
}

fn origins<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let origins = Vec::<String>::deserialize(deserializer)?;
    OriginLayer::new(&origins).map_err(de::Error::custom)?;
    Ok(origins)
}
