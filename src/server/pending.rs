//! The limits on connections in their HTTP phase: so many for the whole server, and so
//! many from one address, so that one address cannot hold every place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use estuary_middleware::key::ip_key;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Places for connections in their HTTP phase, for the server and per address.
#[derive(Debug)]
pub(crate) struct PendingLimit {
    server: Arc<Semaphore>,
    per_address: Option<PerAddress>,
}

/// How many places each address holds; an address holding none has no entry, and since
/// an address takes a server place first, there are never more entries than server places.
#[derive(Debug)]
struct PerAddress {
    max: usize,
    ipv6_prefix: u8,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// Which limit turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// Every place of the server is taken.
    Server,
    /// The connection's address holds all the places it may.
    Address,
}

/// A connection's place, given back when dropped.
#[derive(Debug)]
pub(crate) struct PendingPermit {
    _server: OwnedSemaphorePermit,
    address: Option<(Arc<PendingLimit>, IpAddr)>,
}

impl PendingLimit {
    /// At most `max` connections in their HTTP phase, and at most `per_address` of them
    /// from one address (IPv6 per `/ipv6_prefix` network), when set.
    pub(crate) fn new(max: usize, per_address: Option<usize>, ipv6_prefix: u8) -> Arc<Self> {
        Arc::new(Self {
            server: Arc::new(Semaphore::new(max)),
            per_address: per_address.map(|max| PerAddress {
                max,
                ipv6_prefix,
                held: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A place for a connection from `ip`, or which limit is full.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<PendingPermit, Busy> {
        let server = self
            .server
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::Server)?;
        let address = match &self.per_address {
            None => None,
            Some(per_address) => {
                let key = ip_key(ip, per_address.ipv6_prefix);
                if !per_address.take(key) {
                    return Err(Busy::Address);
                }
                Some((self.clone(), key))
            }
        };
        Ok(PendingPermit {
            _server: server,
            address,
        })
    }

    /// How many addresses hold a place now.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.per_address.as_ref().map_or(0, |per_address| {
            per_address
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
        })
    }
}

impl PerAddress {
    fn take(&self, key: IpAddr) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(key).or_insert(0);
        if *count >= self.max {
            if *count == 0 {
                held.remove(&key);
            }
            return false;
        }
        *count += 1;
        true
    }

    fn give_back(&self, key: IpAddr) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&key);
            }
        }
    }
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        if let Some((limit, key)) = self.address.take() {
            if let Some(per_address) = &limit.per_address {
                per_address.give_back(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test addresses are valid")
    }

    #[test]
    fn one_address_holds_at_most_its_share_while_others_get_places() {
        let limit = PendingLimit::new(10, Some(3), 64);
        let held: Vec<_> = (0..3)
            .map(|_| limit.try_acquire(ip("127.0.0.2")).unwrap())
            .collect();
        assert_eq!(
            limit.try_acquire(ip("127.0.0.2")).unwrap_err(),
            Busy::Address
        );
        assert_eq!(
            limit.try_acquire(ip("::ffff:127.0.0.2")).unwrap_err(),
            Busy::Address
        );
        let other = limit.try_acquire(ip("127.0.0.1")).unwrap();
        assert_eq!(limit.server.available_permits(), 6);
        drop(held);
        drop(other);
        assert_eq!(limit.server.available_permits(), 10);
        assert_eq!(limit.addresses(), 0);
    }

    #[test]
    fn ipv6_neighbours_share_one_share() {
        let limit = PendingLimit::new(10, Some(1), 64);
        let _first = limit.try_acquire(ip("2001:db8::1")).unwrap();
        assert_eq!(
            limit.try_acquire(ip("2001:db8::ffff")).unwrap_err(),
            Busy::Address
        );
        assert!(limit.try_acquire(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn the_server_limit_bounds_how_many_addresses_are_remembered() {
        let limit = PendingLimit::new(4, Some(2), 64);
        let mut held = Vec::new();
        let mut busy = Vec::new();
        for i in 0..100u8 {
            match limit.try_acquire(IpAddr::from([10, 0, 0, i])) {
                Ok(permit) => held.push(permit),
                Err(why) => busy.push(why),
            }
        }
        assert_eq!(held.len(), 4);
        assert!(busy.iter().all(|why| *why == Busy::Server));
        assert_eq!(limit.addresses(), 4);
        drop(held);
        assert_eq!(limit.addresses(), 0);
    }

    #[test]
    fn a_refused_address_leaves_no_entry_and_no_server_place() {
        let limit = PendingLimit::new(4, Some(0), 64);
        assert_eq!(
            limit.try_acquire(ip("127.0.0.2")).unwrap_err(),
            Busy::Address
        );
        assert_eq!(limit.addresses(), 0);
        assert_eq!(limit.server.available_permits(), 4);
    }
}
