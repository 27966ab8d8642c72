//! Connection limits: global, per client address and per user, and which address a client has.
//!
//! Owns the counters of open proxied sockets and the RAII [`Slot`] that holds one place in each
//! (released on drop), and the client-address rule: the TCP peer, unless the peer is a
//! configured trusted proxy, in which case the right-most `X-Forwarded-For` entry that is not a
//! trusted proxy. No I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use wsguard_token::UserId;

use crate::reason::Refusal;

/// Limits (0 = unlimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitConfig {
    /// All proxied sockets.
    pub global: usize,
    /// Per client address.
    pub per_ip: usize,
    /// Per authenticated user.
    pub per_user: usize,
}

#[derive(Default)]
struct Counts {
    config: LimitConfig,
    global: usize,
    ip: HashMap<IpAddr, usize>,
    user: HashMap<UserId, usize>,
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

    /// Takes a place for a socket from `ip` of `user`, or says which limit is full.
    pub fn acquire(&self, ip: IpAddr, user: Option<&UserId>) -> Result<Slot, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let cfg = c.config;
        if cfg.global > 0 && c.global >= cfg.global {
            return Err(Refusal::TooManyConnections);
        }
        if cfg.per_ip > 0 && c.ip.get(&ip).copied().unwrap_or(0) >= cfg.per_ip {
            return Err(Refusal::TooManyFromClient);
        }
        if let Some(u) = user
            && cfg.per_user > 0
            && c.user.get(u).copied().unwrap_or(0) >= cfg.per_user
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

/// The client's address: `peer`, or, if `peer` is a trusted proxy, the right-most address in
/// `X-Forwarded-For` (all headers, in order) that is not a trusted proxy. Malformed entries stop
/// the walk (the last trustworthy address is used).
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a [u8]>,
    trusted: &[IpAddr],
) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut entries: Vec<&[u8]> = Vec::new();
    for h in forwarded_for {
        entries.extend(h.split(|b| *b == b',').map(<[u8]>::trim_ascii));
        if entries.len() > 64 {
            break;
        }
    }
    let mut client = peer;
    for e in entries.iter().rev() {
        let Some(ip) = std::str::from_utf8(e)
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok())
        else {
            break;
        };
        client = ip;
        if !trusted.contains(&ip) {
            break;
        }
    }
    client
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
            global: 3,
            per_ip: 2,
            per_user: 1,
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
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = [ip("127.0.0.1"), ip("10.0.0.9")];
        let xff = |v: &'static str| std::iter::once(v.as_bytes());
        assert_eq!(
            client_ip(ip("192.0.2.1"), xff("1.2.3.4"), &trusted),
            ip("192.0.2.1"),
            "untrusted peer"
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), xff("1.2.3.4"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), xff("6.6.6.6, 1.2.3.4, 10.0.0.9"), &trusted),
            ip("1.2.3.4"),
            "right-most untrusted"
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), xff("1.2.3.4, garbage"), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), std::iter::empty(), &trusted),
            ip("127.0.0.1")
        );
        let two = [&b"6.6.6.6"[..], &b"1.2.3.4"[..]];
        assert_eq!(
            client_ip(ip("127.0.0.1"), two.into_iter(), &trusted),
            ip("1.2.3.4")
        );
    }
}
