//! Upstream pools: which upstream a new socket is sent to, and what the gateway knows of each
//! upstream's health.
//!
//! Owns the state of each upstream ([`Backend`], one per `host:port`, shared by every route that
//! names it and kept across reloads: open sockets, failed dials, passive and active health,
//! draining) and the choice among a route's upstreams ([`Pool::pick`]): **least connections**,
//! ties taken in turn. Sockets live for minutes or hours and carry very different loads, so
//! counting open sockets spreads them where round robin, blind to how many a slow backend still
//! holds, would pile them up. A failed dial marks an upstream down for `gateway.upstream_backoff`
//! (passive health); optional probes (`[gateway.health_check]`) mark it down until one succeeds
//! (active health). Down upstreams are passed over while another is up, but tried rather than
//! refusing when none is: a mark is a guess, and refusing would turn a short blip into an
//! outage. A draining upstream gets no new socket at all; its open sockets finish.
//!
//! Pure: time is a parameter, nothing is dialled or logged here (`upstream.rs` dials,
//! `server.rs` decides what a failure means, `health.rs` probes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The instant that `down_until` values count from (milliseconds; 0 is "not down").
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch(t: Instant) -> u64 {
    // Saturating: an instant before the epoch counts as the epoch (+1, so it is never "0").
    u64::try_from(t.saturating_duration_since(epoch()).as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One upstream server (`host:port`), shared by the routes that name it.
#[derive(Debug)]
pub struct Backend {
    key: String,
    open: AtomicUsize,
    /// Passive health: down until this many ms after [`epoch`] (0: not down).
    down_until: AtomicU64,
    /// Active health: the last probe failed.
    probe_failed: AtomicBool,
    draining: AtomicBool,
    failures: AtomicU64,
}

/// What the admin API and the metrics show of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendState {
    /// `host:port`.
    pub upstream: String,
    /// Sockets open to it (and handshakes being dialled).
    pub open: usize,
    /// Neither marked down by a failed dial nor by a failed probe.
    pub up: bool,
    /// Taking no new sockets.
    pub draining: bool,
    /// Failed dials since the gateway started.
    pub failures: u64,
}

impl Backend {
    fn new(key: String) -> Backend {
        Backend {
            key,
            open: AtomicUsize::new(0),
            down_until: AtomicU64::new(0),
            probe_failed: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        }
    }

    /// `host:port`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sockets open to it, and handshakes being dialled.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Whether it is believed up at `now`: no recent failed dial, no failed probe.
    pub fn is_up(&self, now: Instant) -> bool {
        !self.probe_failed.load(Ordering::Relaxed)
            && self.down_until.load(Ordering::Relaxed) <= millis_since_epoch(now)
    }

    /// Whether it takes no new sockets.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Stops (or resumes) sending it new sockets; open ones are not touched.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// A dial failed at `now` (connect, TLS, or the connection lost before an answer): down for
    /// `backoff`.
    pub fn dial_failed(&self, now: Instant, backoff: Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.down_until
            .store(millis_since_epoch(now + backoff), Ordering::Relaxed);
    }

    /// A dial succeeded: whatever a failed dial said is forgotten.
    pub fn dial_succeeded(&self) {
        self.down_until.store(0, Ordering::Relaxed);
    }

    /// A probe's outcome. A success also forgets a failed dial.
    pub fn probed(&self, ok: bool) {
        self.probe_failed.store(!ok, Ordering::Relaxed);
        if ok {
            self.down_until.store(0, Ordering::Relaxed);
        }
    }

    /// Its state at `now`.
    pub fn state(&self, now: Instant) -> BackendState {
        BackendState {
            upstream: self.key.clone(),
            open: self.open(),
            up: self.is_up(now),
            draining: self.is_draining(),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// A place taken on an upstream: counted in its open sockets until dropped.
#[derive(Debug)]
pub struct Lease(Arc<Backend>);

impl Lease {
    /// The upstream.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every upstream the configuration names, by `host:port`.
#[derive(Debug, Default, Clone)]
pub struct Backends(HashMap<String, Arc<Backend>>);

impl Backends {
    /// The state for `key`: the one `previous` held (so that open counts, health and draining
    /// carry over a reload), or a fresh one.
    pub fn resolve(&mut self, key: &str, previous: &Backends) -> Arc<Backend> {
        if let Some(b) = self.0.get(key) {
            return Arc::clone(b);
        }
        let b = previous
            .0
            .get(key)
            .cloned()
            .unwrap_or_else(|| Arc::new(Backend::new(key.to_owned())));
        self.0.insert(key.to_owned(), Arc::clone(&b));
        b
    }

    /// The upstream with this key.
    pub fn get(&self, key: &str) -> Option<&Arc<Backend>> {
        self.0.get(key)
    }

    /// Every upstream, by key.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Backend>> {
        let mut v: Vec<&Arc<Backend>> = self.0.values().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v.into_iter()
    }
}

/// One upstream of a route: its URL (scheme, authority, base path) and its shared state.
#[derive(Debug, Clone)]
pub struct Member {
    /// The upstream URL as configured.
    pub url: url::Url,
    /// Its state.
    pub backend: Arc<Backend>,
}

/// The upstreams of one route.
#[derive(Debug)]
pub struct Pool {
    members: Vec<Member>,
    /// Where the next tie-break starts (round robin among equals).
    next: AtomicUsize,
}

impl Clone for Pool {
    fn clone(&self) -> Self {
        Pool {
            members: self.members.clone(),
            next: AtomicUsize::new(self.next.load(Ordering::Relaxed)),
        }
    }
}

/// The key of an upstream URL: `host:port` (the scheme's port if none is written).
pub fn key_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("");
    let port = url.port_or_known_default().unwrap_or(80);
    format!("{host}:{port}")
}

impl Pool {
    /// A pool of these members (at least one; config validation ensures it).
    pub fn new(members: Vec<Member>) -> Pool {
        Pool {
            members,
            next: AtomicUsize::new(0),
        }
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member a new socket should try at `now`, never one in `tried` or one draining: the
    /// up member with the fewest open sockets, ties in turn; if none is up, the down one with
    /// the fewest. `None` when every member is draining or tried.
    pub fn pick(&self, now: Instant, tried: &[usize]) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(bool, usize, usize)> = None; // (down, open, index)
        for i in (0..n).map(|k| (start + k) % n) {
            let b = &self.members[i].backend;
            if tried.contains(&i) || b.is_draining() {
                continue;
            }
            let candidate = (!b.is_up(now), b.open(), i);
            // Strictly better only, so the first of equals (in turn order) stays.
            if best.is_none_or(|(d, o, _)| (candidate.0, candidate.1) < (d, o)) {
                best = Some(candidate);
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// Takes a place on member `i` (counted as open until the lease is dropped).
    pub fn lease(&self, i: usize) -> Option<(&Member, Lease)> {
        let m = self.members.get(i)?;
        m.backend.open.fetch_add(1, Ordering::Relaxed);
        Some((m, Lease(Arc::clone(&m.backend))))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pool(keys: &[&str], backends: &mut Backends) -> Pool {
        Pool::new(
            keys.iter()
                .map(|k| {
                    let url = url::Url::parse(&format!("ws://{k}")).unwrap();
                    Member {
                        backend: backends.resolve(&key_of(&url), &Backends::default()),
                        url,
                    }
                })
                .collect(),
        )
    }

    #[test]
    fn least_connections_with_ties_in_turn() {
        let mut b = Backends::default();
        let p = pool(&["a:1", "b:1", "c:1"], &mut b);
        let now = Instant::now();
        // All empty: each pick (without a lease) starts one further along.
        let firsts: Vec<usize> = (0..3).map(|_| p.pick(now, &[]).unwrap()).collect();
        assert_eq!(firsts, [0, 1, 2]);
        // Leases make a member busier: the others come first.
        let (_, a1) = p.lease(0).unwrap();
        let (_, a2) = p.lease(0).unwrap();
        let (_, b1) = p.lease(1).unwrap();
        for _ in 0..5 {
            assert_eq!(p.pick(now, &[]), Some(2));
        }
        let (_, c1) = p.lease(2).unwrap();
        for _ in 0..5 {
            assert!(matches!(p.pick(now, &[]), Some(1 | 2)));
        }
        drop((a1, a2, b1, c1));
        assert_eq!(b.get("a:1").unwrap().open(), 0);
    }

    #[test]
    fn down_members_are_passed_over_until_their_backoff_ends() {
        let mut b = Backends::default();
        let p = pool(&["a:1", "b:1"], &mut b);
        let now = Instant::now();
        let a = b.get("a:1").unwrap();
        a.dial_failed(now, Duration::from_secs(10));
        assert!(!a.is_up(now));
        for _ in 0..4 {
            assert_eq!(p.pick(now, &[]), Some(1));
        }
        // The last millisecond of the back-off, then up again.
        assert!(!a.is_up(now + Duration::from_millis(9_999)));
        assert!(a.is_up(now + Duration::from_secs(10)));
        // Down is a preference: with every member down, the least busy is still tried.
        b.get("b:1")
            .unwrap()
            .dial_failed(now, Duration::from_secs(10));
        let (_, _busy) = p.lease(1).unwrap();
        assert_eq!(p.pick(now, &[]), Some(0));
        // A tried member is not picked again in the same handshake.
        assert_eq!(p.pick(now, &[0]), Some(1));
        assert_eq!(p.pick(now, &[0, 1]), None);
        // A success forgets the failure.
        a.dial_succeeded();
        assert!(a.is_up(now));
        assert_eq!(a.state(now).failures, 1);
    }

    #[test]
    fn probes_mark_down_until_one_succeeds() {
        let mut b = Backends::default();
        let p = pool(&["a:1", "b:1"], &mut b);
        let now = Instant::now();
        let a = b.get("a:1").unwrap();
        a.probed(false);
        assert!(!a.is_up(now + Duration::from_secs(3600)));
        assert_eq!(p.pick(now, &[]), Some(1));
        a.dial_failed(now, Duration::from_secs(60));
        a.probed(true);
        assert!(a.is_up(now), "a good probe clears a failed dial too");
    }

    #[test]
    fn draining_members_get_no_new_socket() {
        let mut b = Backends::default();
        let p = pool(&["a:1", "b:1"], &mut b);
        let now = Instant::now();
        b.get("b:1").unwrap().set_draining(true);
        for _ in 0..4 {
            assert_eq!(p.pick(now, &[]), Some(0));
        }
        b.get("a:1").unwrap().set_draining(true);
        assert_eq!(p.pick(now, &[]), None);
        b.get("b:1").unwrap().set_draining(false);
        assert_eq!(p.pick(now, &[]), Some(1));
    }

    #[test]
    fn state_is_shared_by_routes_and_kept_across_a_reload() {
        let mut before = Backends::default();
        let r1 = pool(&["a:1", "b:1"], &mut before);
        let r2 = pool(&["b:1"], &mut before);
        let (_, lease) = r1.lease(1).unwrap();
        assert_eq!(
            r2.members()[0].backend.open(),
            1,
            "one backend for both routes"
        );
        before.get("b:1").unwrap().set_draining(true);
        // A reload resolves the same keys to the same state.
        let mut after = Backends::default();
        let b = after.resolve("b:1", &before);
        assert_eq!(b.open(), 1);
        assert!(b.is_draining());
        drop(lease);
        assert_eq!(b.open(), 0);
        let c = after.resolve("c:1", &before);
        assert_eq!((c.open(), c.is_draining()), (0, false));
        assert_eq!(
            after.all().map(|b| b.key()).collect::<Vec<_>>(),
            ["b:1", "c:1"]
        );
    }

    #[test]
    fn keys_name_host_and_port() {
        let k = |u: &str| key_of(&url::Url::parse(u).unwrap());
        assert_eq!(k("ws://a.example"), "a.example:80");
        assert_eq!(k("wss://a.example/x"), "a.example:443");
        assert_eq!(k("ws://[::1]:9000"), "[::1]:9000");
    }
}
