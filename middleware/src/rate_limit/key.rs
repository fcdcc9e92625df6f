use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderMap, Request};

use crate::{Identity, PeerAddr};

/// How a rate limiter tells clients apart: each key gets its own budget.
///
/// Ready-made: [`PeerIp`] (the default), [`ForwardedFor`], [`UserId`], and [`key_fn`] for
/// a closure.
///
/// ```
/// use estuary_middleware::rate_limit::KeyExtractor;
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

/// Counts clients by the IP address of the TCP peer ([`PeerAddr`], inserted by the server).
///
/// ```
/// use estuary_middleware::rate_limit::{KeyExtractor, PeerIp};
/// use estuary_middleware::PeerAddr;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(PeerAddr("192.0.2.1:4000".parse().unwrap()));
/// assert_eq!(PeerIp.extract(&request), Some("192.0.2.1".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerIp;

impl KeyExtractor for PeerIp {
    type Key = IpAddr;

    fn extract<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        peer_ip(request.extensions())
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
/// ```
/// use estuary_middleware::rate_limit::{ForwardedFor, KeyExtractor};
/// use estuary_middleware::PeerAddr;
///
/// let proxy = "10.0.0.2".parse().unwrap();
/// let key = ForwardedFor::new([proxy]);
///
/// let mut request = http::Request::builder()
///     // 203.0.113.9 forged the first entry; our proxy appended the real client.
///     .header("x-forwarded-for", "1.1.1.1, 198.51.100.4")
///     .body(())
///     .unwrap();
/// request.extensions_mut().insert(PeerAddr("10.0.0.2:5000".parse().unwrap()));
/// assert_eq!(key.extract(&request), Some("198.51.100.4".parse().unwrap()));
/// ```
#[derive(Debug, Clone)]
pub struct ForwardedFor {
    trusted: Arc<HashSet<IpAddr>>,
}

impl ForwardedFor {
    /// Believes `X-Forwarded-For` entries appended by the `trusted_proxies`.
    pub fn new(trusted_proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            trusted: Arc::new(trusted_proxies.into_iter().collect()),
        }
    }

    /// The client address for a peer and a set of headers.
    fn client(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let mut client = peer;
        if !self.trusted.contains(&client) {
            return client;
        }
        let values: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| value.to_str().unwrap_or(""))
            .collect();
        let hops = values.iter().rev().flat_map(|value| value.rsplit(','));
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
        Some(self.client(request.headers(), peer))
    }
}

/// Counts clients by the user id of the [`Identity`] an auth layer inserted.
///
/// Only useful with the rate limiter placed after (inside) the auth layer.
///
/// ```
/// use estuary_middleware::rate_limit::{KeyExtractor, UserId};
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
/// use estuary_middleware::rate_limit::{key_fn, RateLimitLayer};
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

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
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
        assert_eq!(parse_hop(" 192.0.2.1:8080 "), Some(ip("192.0.2.1")));
        assert_eq!(parse_hop("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("_hidden"), None);
    }

    #[test]
    fn missing_peer_addr_gives_no_key() {
        let request = Request::new(());
        assert_eq!(PeerIp.extract(&request), None);
        assert_eq!(ForwardedFor::new([]).extract(&request), None);
        assert_eq!(UserId.extract(&request), None);
    }
}
