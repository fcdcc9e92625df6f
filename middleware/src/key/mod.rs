//! How layers tell clients apart: the key a rate limit or a per-client connection cap
//! counts a request under.
//!
//! Addresses are grouped the way one client holds them: an IPv4-mapped IPv6 address
//! (`::ffff:192.0.2.1`) is its IPv4 address, and IPv6 addresses are grouped per network
//! prefix ([`DEFAULT_IPV6_PREFIX`], a /64, unless set otherwise), because one host is
//! routinely handed a whole /64 and could otherwise take billions of keys. See [`ip_key`].
//!
//! ```
//! use estuary_middleware::key::{KeyExtractor, PeerIp};
//! use estuary_middleware::PeerAddr;
//!
//! let from = |addr: &str| {
//!     let mut request = http::Request::new(());
//!     request.extensions_mut().insert(PeerAddr(addr.parse().unwrap()));
//!     request
//! };
//! // Two addresses in one /64 are one client; another /64 is another.
//! let key = PeerIp::default();
//! assert_eq!(key.extract(&from("[2001:db8::1]:1")), key.extract(&from("[2001:db8::2]:1")));
//! assert_ne!(key.extract(&from("[2001:db8::1]:1")), key.extract(&from("[2001:db8:0:1::1]:1")));
//! ```

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderMap, Request};

/// The header proxies append the client address to.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

use crate::{Identity, PeerAddr};

/// How a rate limiter tells clients apart: each key gets its own budget.
///
/// Ready-made: [`PeerIp`] (the default), [`ForwardedFor`], [`UserId`], [`AllClients`],
/// and [`key_fn`] for a closure.
///
/// ```
/// use estuary_middleware::key::KeyExtractor;
/// use http::Request;
///
/// /// One budget per API key header.
/// #[derive(Clone)]
/// struct ApiKey;
///
/// impl KeyExtractor for ApiKey {
///     type Key = String;
///
///     fn extract<B>(&self, request: &Request<B>) -> Option<String> {
///         let value = request.headers().get("x-api-key")?;
///         value.to_str().ok().map(str::to_owned)
///     }
/// }
/// ```
pub trait KeyExtractor: Clone {
    /// The value clients are counted under.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key for `request`, or `None` when this request does not carry one; the layer
    /// then answers 500, because a server that cannot tell clients apart must not
    /// silently stop limiting.
    fn extract<B>(&self, request: &Request<B>) -> Option<Self::Key>;
}

/// The prefix length IPv6 clients are grouped by unless set otherwise: a /64, the
/// smallest network a host is usually given.
///
/// ```
/// use estuary_middleware::key::{ip_key, DEFAULT_IPV6_PREFIX};
///
/// let a = ip_key("2001:db8::1".parse().unwrap(), DEFAULT_IPV6_PREFIX);
/// let b = ip_key("2001:db8::2".parse().unwrap(), DEFAULT_IPV6_PREFIX);
/// assert_eq!(a, b, "one /64, one client");
/// ```
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The key for a client address: an IPv4-mapped IPv6 address as its IPv4 address, and an
/// IPv6 address reduced to its first `ipv6_prefix` bits (the rest zero).
///
/// # Panics
///
/// If `ipv6_prefix` is more than 128.
///
/// ```
/// use estuary_middleware::key::ip_key;
/// use std::net::IpAddr;
///
/// let ip = |text: &str| text.parse::<IpAddr>().unwrap();
/// assert_eq!(ip_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
/// assert_eq!(ip_key(ip("2001:db8::1:2:3:4"), 64), ip("2001:db8::"));
/// assert_eq!(ip_key(ip("2001:db8:aa:bb::1"), 48), ip("2001:db8:aa::"));
/// assert_eq!(ip_key(ip("192.0.2.1"), 48), ip("192.0.2.1"));
/// ```
pub fn ip_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    let ipv6_prefix = checked_prefix(ipv6_prefix);
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(ipv6_prefix))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

/// `bits`, when it is a prefix length of an IPv6 address.
fn checked_prefix(bits: u8) -> u8 {
    assert!(
        bits <= 128,
        "an IPv6 prefix is at most 128 bits, got {bits}"
    );
    bits
}

/// Counts clients by the IP address of the TCP peer ([`PeerAddr`], inserted by the
/// server), IPv6 per /64 unless set otherwise (see [`ip_key`]).
///
/// ```
/// use estuary_middleware::key::{KeyExtractor, PeerIp};
/// use estuary_middleware::PeerAddr;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(PeerAddr("192.0.2.1:4000".parse().unwrap()));
/// assert_eq!(PeerIp::default().extract(&request), Some("192.0.2.1".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PeerIp {
    ipv6_prefix: u8,
}

impl PeerIp {
    /// Groups IPv6 peers per `/bits` network instead of per /64: 128 counts each address
    /// on its own, 48 a whole site.
    ///
    /// # Panics
    ///
    /// If `bits` is more than 128.
    pub fn with_ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = checked_prefix(bits);
        self
    }
}

impl Default for PeerIp {
    fn default() -> Self {
        Self {
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

impl KeyExtractor for PeerIp {
    type Key = IpAddr;

    fn extract<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        Some(ip_key(peer_ip(request.extensions())?, self.ipv6_prefix))
    }
}

/// Counts every request under one key: a limit for the whole server rather than per
/// client.
///
/// ```
/// use estuary_middleware::key::{AllClients, KeyExtractor};
///
/// assert_eq!(AllClients.extract(&http::Request::new(())), Some(()));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AllClients;

impl KeyExtractor for AllClients {
    type Key = ();

    fn extract<B>(&self, _request: &Request<B>) -> Option<()> {
        Some(())
    }
}

/// Counts clients by the address in `X-Forwarded-For`, behind proxies you trust.
///
/// Anyone can send an `X-Forwarded-For` header, so only the part appended by your own
/// proxies is believed. If the TCP peer is not one of the trusted proxies, its own address
/// is the key. Otherwise the header is read from the right, skipping trusted proxies: the
/// first address that is not one of them is the client (what nginx's `real_ip_recursive`
/// does). If every hop is trusted, the leftmost is the key; an entry that is not an IP
/// address stops the walk at the last address believed.
///
/// The header is split into entries as bytes, so whatever a client put on the left
/// (non-ASCII bytes included) cannot hide the entry a proxy appended on the right. The
/// address found is keyed as [`ip_key`] says: IPv6 per /64 unless set otherwise.
///
/// ```
/// use estuary_middleware::key::{ForwardedFor, KeyExtractor};
/// use estuary_middleware::PeerAddr;
///
/// let proxy = "10.0.0.2".parse().unwrap();
/// let key = ForwardedFor::new([proxy]);
///
/// let mut request = http::Request::builder()
///     // The client forged the first entry; our proxy appended the real client.
///     .header("x-forwarded-for", "1.1.1.1, 198.51.100.4")
///     .body(())
///     .unwrap();
/// request.extensions_mut().insert(PeerAddr("10.0.0.2:5000".parse().unwrap()));
/// assert_eq!(key.extract(&request), Some("198.51.100.4".parse().unwrap()));
/// ```
#[derive(Debug, Clone)]
pub struct ForwardedFor {
    trusted: Arc<HashSet<IpAddr>>,
    ipv6_prefix: u8,
}

impl ForwardedFor {
    /// Believes `X-Forwarded-For` entries appended by the `trusted_proxies`.
    pub fn new(trusted_proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        let trusted = trusted_proxies.into_iter().map(|ip| ip.to_canonical());
        Self {
            trusted: Arc::new(trusted.collect()),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }

    /// Groups IPv6 clients per `/bits` network instead of per /64 (see
    /// [`PeerIp::with_ipv6_prefix`]).
    ///
    /// # Panics
    ///
    /// If `bits` is more than 128.
    pub fn with_ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = checked_prefix(bits);
        self
    }

    /// The client address for a peer and a set of headers.
    fn client(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusted.contains(&client) {
            return client;
        }
        let hops = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|value| value.as_bytes().rsplit(|&byte| byte == b','));
        for hop in hops {
            let Some(hop) = parse_hop(hop) else { break };
            client = hop;
            if !self.trusted.contains(&client) {
                break;
            }
        }
        client
    }
}

impl KeyExtractor for ForwardedFor {
    type Key = IpAddr;

    fn extract<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let peer = peer_ip(request.extensions())?;
        Some(ip_key(
            self.client(request.headers(), peer),
            self.ipv6_prefix,
        ))
    }
}

/// Counts clients by the user id of the [`Identity`] an auth layer inserted.
///
/// Only useful with the rate limiter placed after (inside) the auth layer.
///
/// ```
/// use estuary_middleware::key::{KeyExtractor, UserId};
/// use estuary_middleware::Identity;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Identity::new("alice"));
/// assert_eq!(UserId.extract(&request).as_deref(), Some("alice"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct UserId;

impl KeyExtractor for UserId {
    type Key = Arc<str>;

    fn extract<B>(&self, request: &Request<B>) -> Option<Arc<str>> {
        let identity = request.extensions().get::<Identity>()?;
        Some(identity.user_id_arc().clone())
    }
}

/// Counts clients by whatever a closure makes of the request headers and extensions.
///
/// ```
/// use estuary_middleware::key::key_fn;
/// use estuary_middleware::rate_limit::RateLimitLayer;
/// use std::num::NonZeroU32;
///
/// let tenant = key_fn(|headers, _extensions| {
///     Some(headers.get("x-tenant")?.to_str().ok()?.to_owned())
/// });
/// let layer = RateLimitLayer::per_second(NonZeroU32::new(10).unwrap()).with_key(tenant);
/// # let _ = layer;
/// ```
pub fn key_fn<F, K>(f: F) -> KeyFn<F>
where
    F: Fn(&HeaderMap, &Extensions) -> Option<K> + Clone,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    KeyFn(f)
}

/// A [`KeyExtractor`] made from a closure by [`key_fn`].
///
/// ```
/// use estuary_middleware::key::{key_fn, KeyExtractor};
///
/// let tenant = key_fn(|headers, _extensions| {
///     Some(headers.get("x-tenant")?.to_str().ok()?.to_owned())
/// });
/// let request = http::Request::get("/").header("x-tenant", "acme").body(()).unwrap();
/// assert_eq!(tenant.extract(&request).as_deref(), Some("acme"));
/// ```
#[derive(Clone)]
pub struct KeyFn<F>(F);

impl<F> fmt::Debug for KeyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFn").finish_non_exhaustive()
    }
}

impl<F, K> KeyExtractor for KeyFn<F>
where
    F: Fn(&HeaderMap, &Extensions) -> Option<K> + Clone,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;

    fn extract<B>(&self, request: &Request<B>) -> Option<K> {
        (self.0)(request.headers(), request.extensions())
    }
}

fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<PeerAddr>().map(PeerAddr::ip)
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1` or
/// `[2001:db8::1]:80`, with IPv4-mapped addresses as IPv4; `None` for anything else,
/// bytes that are not UTF-8 included.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop.trim_ascii()).ok()?;
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test addresses are valid")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_forwards() {
        let key = ForwardedFor::new([ip("10.0.0.1")]);
        let client = key.client(&forwarded(&["1.1.1.1"]), ip("203.0.113.5"));
        assert_eq!(client, ip("203.0.113.5"));
    }

    #[test]
    fn trusted_proxy_chain_is_skipped_from_the_right() {
        let key = ForwardedFor::new([ip("10.0.0.1"), ip("10.0.0.2")]);
        let headers = forwarded(&["6.6.6.6, 198.51.100.4", "10.0.0.2"]);
        assert_eq!(key.client(&headers, ip("10.0.0.1")), ip("198.51.100.4"));
    }

    #[test]
    fn all_trusted_hops_give_the_leftmost() {
        let key = ForwardedFor::new([ip("10.0.0.1"), ip("10.0.0.2")]);
        let headers = forwarded(&["10.0.0.2"]);
        assert_eq!(key.client(&headers, ip("10.0.0.1")), ip("10.0.0.2"));
        assert_eq!(
            key.client(&HeaderMap::new(), ip("10.0.0.1")),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn garbage_entry_stops_at_the_last_believed_address() {
        let key = ForwardedFor::new([ip("10.0.0.1")]);
        let headers = forwarded(&["198.51.100.4, unknown"]);
        assert_eq!(key.client(&headers, ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn hops_with_ports_and_brackets_parse() {
        assert_eq!(parse_hop(b" 192.0.2.1:8080 "), Some(ip("192.0.2.1")));
        assert_eq!(parse_hop(b"[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop(b"[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop(b"2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop(b"::ffff:192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(parse_hop(b"_hidden"), None);
        assert_eq!(parse_hop(b"\xff192.0.2.1"), None);
    }

    /// What a proxy that appends the peer makes of a header the client sent.
    fn appended(sent: &[u8], client: &str) -> HeaderMap {
        let mut value = sent.to_vec();
        value.extend_from_slice(format!(", {client}").as_bytes());
        let mut headers = HeaderMap::new();
        let value = http::HeaderValue::from_bytes(&value).expect("obs-text is a header value");
        headers.append("x-forwarded-for", value);
        headers
    }

    #[test]
    fn bytes_a_client_injects_do_not_hide_the_hop_the_proxy_appended() {
        let key = ForwardedFor::new([ip("10.0.0.1")]);
        for sent in [
            &b"\xff\xfe"[..],
            b"1.1.1.1\x80",
            b"\xc3\xa9t\xc3\xa9, 6.6.6.6",
            b"6.6.6.6",
            b"",
        ] {
            let headers = appended(sent, "198.51.100.4");
            assert_eq!(
                key.client(&headers, ip("10.0.0.1")),
                ip("198.51.100.4"),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address() {
        let key = ForwardedFor::new([ip("::ffff:10.0.0.1")]);
        let headers = forwarded(&["::ffff:198.51.100.4"]);
        assert_eq!(key.client(&headers, ip("10.0.0.1")), ip("198.51.100.4"));
        assert_eq!(ip_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
    }

    #[test]
    fn ipv6_clients_are_keyed_per_prefix() {
        assert_eq!(ip_key(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(
            ip_key(ip("2001:db8:1:2:3:4:5:6"), 128),
            ip("2001:db8:1:2:3:4:5:6")
        );
        assert_eq!(ip_key(ip("2001:db8:1:2:3:4:5:6"), 0), ip("::"));
        assert_eq!(ip_key(ip("2001:db8:1:2:3:4:5:6"), 24), ip("2001:d00::"));
        assert_eq!(ip_key(ip("192.0.2.1"), 0), ip("192.0.2.1"));
    }

    #[test]
    fn forwarded_ipv6_clients_are_keyed_per_prefix() {
        let key = ForwardedFor::new([ip("10.0.0.1")]).with_ipv6_prefix(48);
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(PeerAddr("10.0.0.1:1".parse().unwrap()));
        request
            .headers_mut()
            .insert("x-forwarded-for", "2001:db8:aa:bb::1".parse().unwrap());
        assert_eq!(key.extract(&request), Some(ip("2001:db8:aa::")));
    }

    #[test]
    #[should_panic(expected = "at most 128 bits")]
    fn a_prefix_longer_than_128_bits_is_refused() {
        let _ = PeerIp::default().with_ipv6_prefix(129);
    }

    #[test]
    fn missing_peer_addr_gives_no_key() {
        let request = Request::new(());
        assert_eq!(PeerIp::default().extract(&request), None);
        assert_eq!(ForwardedFor::new([]).extract(&request), None);
        assert_eq!(UserId.extract(&request), None);
    }
}
