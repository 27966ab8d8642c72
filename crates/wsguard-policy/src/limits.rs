//! Connection limits: global, per client address and per user, and which address a client has.
//!
//! Owns the counters of open proxied sockets and the RAII [`Slot`] that holds one place in each
//! (released on drop); the counters of connections not yet upgraded (accepted, handshake not
//! finished) and their [`PendingSlot`]; and the client-address rule: the TCP peer, unless the
//! peer is a configured trusted proxy, in which case the right-most `X-Forwarded-For` entry that
//! is not a trusted proxy; the key an address is counted under ([`address_key`]: IPv6 by its
//! /64); and the opt-in rate of handshakes per address ([`HandshakeRate`], governor buckets on
//! a clock the caller chooses). No I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use wsguard_token::UserId;

use crate::config::Limit;
use crate::reason::Refusal;

/// Limits (each a count or unlimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitConfig {
    /// All proxied sockets.
    pub global: Limit,
    /// Per client address.
    pub per_ip: Limit,
    /// Per authenticated user.
    pub per_user: Limit,
    /// Connections not yet upgraded, on the whole gateway.
    pub pending: Limit,
    /// Connections not yet upgraded, per TCP peer address (trusted proxies exempt).
    pub pending_per_ip: Limit,
}

#[derive(Default)]
struct Counts {
    config: LimitConfig,
    global: usize,
    ip: HashMap<IpAddr, usize>,
    user: HashMap<UserId, usize>,
    pending: usize,
    pending_ip: HashMap<IpAddr, usize>,
}

/// The counters.
#[derive(Clone)]
pub struct Limits {
    counts: Arc<Mutex<Counts>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

/// One socket's place; released when dropped.
#[derive(Debug)]
pub struct Slot {
    limits: Limits,
    ip: IpAddr,
    user: Option<UserId>,
}

/// Whether a count (absent: none yet) has reached its limit.
fn full(limit: Limit, count: Option<&usize>) -> bool {
    limit
        .get()
        .is_some_and(|max| count.copied().unwrap_or(0) >= max)
}

fn dec<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.global = c.global.saturating_sub(1);
        dec(&mut c.ip, &self.ip);
        if let Some(u) = &self.user {
            dec(&mut c.user, u);
        }
    }
}

/// A connection's place among those not yet upgraded; released when dropped (when the
/// handshake ends, upgraded or not).
#[derive(Debug)]
pub struct PendingSlot {
    limits: Limits,
    /// `None` when the peer is not counted per address (a trusted proxy, or no such limit).
    ip: Option<IpAddr>,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.pending = c.pending.saturating_sub(1);
        if let Some(ip) = &self.ip {
            dec(&mut c.pending_ip, ip);
        }
    }
}

impl Limits {
    /// Counters for these limits.
    pub fn new(config: LimitConfig) -> Limits {
        Limits {
            counts: Arc::new(Mutex::new(Counts {
                config,
                ..Counts::default()
            })),
        }
    }

    /// New limits for the next handshakes (on reload). Open sockets keep their places; when a
    /// limit is lowered below the current count, new sockets wait until enough have closed.
    pub fn set_config(&self, config: LimitConfig) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).config = config;
    }

    /// Connections not yet upgraded, now.
    pub fn pending(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
    }

    /// Takes a place for a connection just accepted from `peer` (counted under its
    /// [`address_key`]), before anything is read from it, or says which limit is full. A trusted
    /// proxy (`per_ip` false) carries many clients on its one address: it is counted only in the
    /// global limit. Without a per-address limit, addresses are not counted at all (no hashing
    /// per connection); a reload that sets one then counts the connections accepted after it,
    /// which is all of them within `handshake_timeout`.
    pub fn acquire_pending(&self, peer: IpAddr, per_ip: bool) -> Result<PendingSlot, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let cfg = c.config;
        let per_ip = per_ip && cfg.pending_per_ip.get().is_some();
        let peer = address_key(peer);
        if cfg.pending.get().is_some_and(|max| c.pending >= max) {
            return Err(Refusal::TooManyPending);
        }
        if per_ip && full(cfg.pending_per_ip, c.pending_ip.get(&peer)) {
            return Err(Refusal::TooManyPendingFromClient);
        }
        c.pending += 1;
        if per_ip {
            *c.pending_ip.entry(peer).or_default() += 1;
        }
        drop(c);
        Ok(PendingSlot {
            limits: self.clone(),
            ip: per_ip.then_some(peer),
        })
    }

    /// Takes a place for a socket from `ip` (counted under its [`address_key`]) of `user`, or
    /// says which limit is full.
    pub fn acquire(&self, ip: IpAddr, user: Option<&UserId>) -> Result<Slot, Refusal> {
        let ip = address_key(ip);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let cfg = c.config;
        if cfg.global.get().is_some_and(|max| c.global >= max) {
            return Err(Refusal::TooManyConnections);
        }
        if full(cfg.per_ip, c.ip.get(&ip)) {
            return Err(Refusal::TooManyFromClient);
        }
        if let Some(u) = user
            && full(cfg.per_user, c.user.get(u))
        {
            return Err(Refusal::TooManyForUser);
        }
        c.global += 1;
        *c.ip.entry(ip).or_default() += 1;
        if let Some(u) = user {
            *c.user.entry(u.clone()).or_default() += 1;
        }
        drop(c);
        Ok(Slot {
            limits: self.clone(),
            ip,
            user: user.cloned(),
        })
    }
}

/// Most addresses whose handshake buckets are kept. Beyond, new addresses pass unchecked until
/// housekeeping forgets the buckets that are full again: a bound on memory (one entry per
/// address an attacker can rotate through), and a client with that many addresses is not one a
/// per-address limit can stop anyway.
pub const HANDSHAKE_RATE_MAX_ADDRESSES: usize = 100_000;

type KeyedLimiter<C> =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// `gateway.handshake_rate_per_ip`: accepted connections per client address and second (a
/// bucket per [`address_key`]), checked right after `accept`, before anything is read.
pub struct HandshakeRate<C: Clock = DefaultClock> {
    quota: Quota,
    limiter: KeyedLimiter<C>,
}

impl<C: Clock> std::fmt::Debug for HandshakeRate<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeRate")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl HandshakeRate<DefaultClock> {
    /// Buckets of `quota` on the real clock.
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, DefaultClock::default())
    }
}

impl<C: Clock> HandshakeRate<C> {
    /// Buckets of `quota` on `clock`.
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        HandshakeRate {
            quota,
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock),
        }
    }

    /// The quota (a reload with the same one keeps these buckets).
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Takes one handshake from `peer`'s bucket, or refuses it.
    pub fn check(&self, peer: IpAddr) -> Result<(), Refusal> {
        if self.limiter.len() >= HANDSHAKE_RATE_MAX_ADDRESSES {
            return Ok(());
        }
        self.limiter
            .check_key(&address_key(peer))
            .map_err(|_| Refusal::HandshakeRateLimited)
    }

    /// Forgets the buckets that are full again (call now and then); how many are left.
    pub fn shrink(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }
}

/// The key a client address is counted under in the per-address limits: an IPv4 address (also
/// written IPv4-mapped, as a dual-stack listener reports it) as it is, an IPv6 address by its
/// /64 prefix, the usual allocation to one subscriber or one host: counted one by one, a single
/// client could take 2^64 places.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

/// Whether `ip` is one of the `trusted` proxies (IPv4-mapped IPv6 addresses compared as IPv4).
pub fn is_trusted(ip: IpAddr, trusted: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|t| t.to_canonical() == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn limits_at_their_edges_and_released_on_drop() {
        let l = Limits::new(LimitConfig {
            global: Limit::at(3),
            per_ip: Limit::at(2),
            per_user: Limit::at(1),
            ..LimitConfig::default()
        });
        let a = l.acquire(ip("10.0.0.1"), Some(&uid("alice"))).unwrap();
        let _b = l.acquire(ip("10.0.0.1"), None).unwrap();
        assert_eq!(
            l.acquire(ip("10.0.0.1"), None).unwrap_err(),
            Refusal::TooManyFromClient
        );
        assert_eq!(
            l.acquire(ip("10.0.0.2"), Some(&uid("alice"))).unwrap_err(),
            Refusal::TooManyForUser
        );
        let _c = l.acquire(ip("10.0.0.2"), Some(&uid("bob"))).unwrap();
        assert_eq!(
            l.acquire(ip("10.0.0.3"), None).unwrap_err(),
            Refusal::TooManyConnections
        );
        drop(a);
        let _d = l.acquire(ip("10.0.0.3"), Some(&uid("alice"))).unwrap();
        let unlimited = Limits::new(LimitConfig::default());
        let many: Vec<_> = (0..1000)
            .map(|_| unlimited.acquire(ip("10.0.0.1"), Some(&uid("u"))).unwrap())
            .collect();
        assert_eq!(many.len(), 1000);
    }

    #[test]
    fn pending_limits_at_their_edges_and_released_on_drop() {
        let l = Limits::new(LimitConfig {
            pending: Limit::at(3),
            pending_per_ip: Limit::at(2),
            ..LimitConfig::default()
        });
        let a = l.acquire_pending(ip("10.0.0.1"), true).unwrap();
        let _b = l.acquire_pending(ip("10.0.0.1"), true).unwrap();
        assert_eq!(
            l.acquire_pending(ip("10.0.0.1"), true).unwrap_err(),
            Refusal::TooManyPendingFromClient
        );
        // A trusted proxy's address is not counted per address, only globally.
        let proxy = l.acquire_pending(ip("10.0.0.1"), false).unwrap();
        assert_eq!(
            l.acquire_pending(ip("10.0.0.2"), true).unwrap_err(),
            Refusal::TooManyPending
        );
        drop(proxy);
        let _c = l.acquire_pending(ip("10.0.0.2"), true).unwrap();
        drop(a);
        let _d = l.acquire_pending(ip("10.0.0.1"), true).unwrap();
        assert_eq!(
            l.acquire_pending(ip("10.0.0.3"), true).unwrap_err(),
            Refusal::TooManyPending
        );
        // Pending places and socket places are counted apart.
        let _s = l.acquire(ip("10.0.0.3"), None).unwrap();
        // A new configuration applies to the next connections; 0 is unlimited.
        l.set_config(LimitConfig::default());
        let many: Vec<_> = (0..1000)
            .map(|_| l.acquire_pending(ip("10.0.0.1"), true).unwrap())
            .collect();
        assert_eq!(
            l.counts.lock().unwrap().pending_ip.get(&ip("10.0.0.1")),
            Some(&2),
            "without a per-address limit, addresses are not counted"
        );
        drop(many);
        l.set_config(LimitConfig {
            pending_per_ip: Limit::at(1),
            ..LimitConfig::default()
        });
        assert_eq!(
            l.acquire_pending(ip("10.0.0.1"), true).unwrap_err(),
            Refusal::TooManyPendingFromClient,
            "b and d still hold 10.0.0.1's places"
        );
        let c = l.counts.lock().unwrap();
        assert_eq!(c.pending, 3, "b, c and d");
        assert_eq!(c.pending_ip.get(&ip("10.0.0.1")), Some(&2));
        assert_eq!(c.pending_ip.get(&ip("10.0.0.2")), Some(&1));
    }

    #[test]
    fn addresses_are_counted_per_ipv4_address_and_per_ipv6_64() {
        assert_eq!(address_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            address_key(ip("::ffff:192.0.2.7")),
            ip("192.0.2.7"),
            "mapped"
        );
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        let l = Limits::new(LimitConfig {
            per_ip: Limit::at(2),
            pending_per_ip: Limit::at(1),
            ..LimitConfig::default()
        });
        // Two addresses of one /64 share its places; the next /64 has its own.
        let _a = l.acquire(ip("2001:db8:1:2::1"), None).unwrap();
        let _b = l.acquire(ip("2001:db8:1:2::ffff"), None).unwrap();
        assert_eq!(
            l.acquire(ip("2001:db8:1:2:1:2:3:4"), None).unwrap_err(),
            Refusal::TooManyFromClient
        );
        let _c = l.acquire(ip("2001:db8:1:3::1"), None).unwrap();
        // A dual-stack listener's IPv4-mapped peer is the IPv4 client, not all of IPv4.
        let _p = l.acquire_pending(ip("::ffff:192.0.2.7"), true).unwrap();
        assert_eq!(
            l.acquire_pending(ip("192.0.2.7"), true).unwrap_err(),
            Refusal::TooManyPendingFromClient
        );
        let _q = l.acquire_pending(ip("::ffff:192.0.2.8"), true).unwrap();
        let _r = l.acquire_pending(ip("2001:db8:9::1"), true).unwrap();
        assert_eq!(
            l.acquire_pending(ip("2001:db8:9::2"), true).unwrap_err(),
            Refusal::TooManyPendingFromClient
        );
    }

    #[test]
    fn handshake_rate_per_address_with_its_bounds() {
        use governor::clock::FakeRelativeClock;
        use std::num::NonZeroU32;
        use std::time::Duration;
        let quota =
            Quota::per_second(NonZeroU32::new(1).unwrap()).allow_burst(NonZeroU32::new(2).unwrap());
        let clock = FakeRelativeClock::default();
        let rate = HandshakeRate::with_clock(quota, clock.clone());
        // A burst of two, then one a second; per address, an IPv6 client per /64.
        for peer in ["10.0.0.1", "10.0.0.1", "2001:db8:1:2::1", "2001:db8:1:2::2"] {
            assert_eq!(rate.check(ip(peer)), Ok(()), "{peer}");
        }
        assert_eq!(
            rate.check(ip("::ffff:10.0.0.1")),
            Err(Refusal::HandshakeRateLimited)
        );
        assert_eq!(
            rate.check(ip("2001:db8:1:2:ffff::9")),
            Err(Refusal::HandshakeRateLimited)
        );
        assert_eq!(rate.check(ip("10.0.0.2")), Ok(()));
        clock.advance(Duration::from_secs(1));
        assert_eq!(rate.check(ip("10.0.0.1")), Ok(()));
        assert_eq!(
            rate.check(ip("10.0.0.1")),
            Err(Refusal::HandshakeRateLimited)
        );
        // Buckets full again are forgotten.
        clock.advance(Duration::from_secs(5));
        assert_eq!(rate.shrink(), 0);
        // At most HANDSHAKE_RATE_MAX_ADDRESSES addresses are kept; beyond, checks pass until
        // housekeeping shrinks the map.
        for _ in 0..2 {
            rate.check(ip("10.9.9.9")).unwrap();
        }
        for n in 0..HANDSHAKE_RATE_MAX_ADDRESSES as u32 {
            let _ = rate.check(IpAddr::from((0x0b00_0000u32 + n).to_be_bytes()));
        }
        assert_eq!(rate.check(ip("10.9.9.9")), Ok(()), "full: unchecked");
        clock.advance(Duration::from_secs(5));
        assert_eq!(rate.shrink(), 0);
        for _ in 0..2 {
            rate.check(ip("10.9.9.9")).unwrap();
        }
        assert_eq!(
            rate.check(ip("10.9.9.9")),
            Err(Refusal::HandshakeRateLimited)
        );
    }
}
