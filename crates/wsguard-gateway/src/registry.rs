//! The registry of live proxied sockets, by session and by user.
//!
//! Owns which sockets are open for which session, and the signal that asks a socket's relay to
//! close with a [`CloseReason`]. Revocations (from this process or, through the store, from
//! others), keys a reload retires, and shutdown go through here. It does no I/O: closing is the
//! relay's job; this module only delivers the request, once, and returns how many sockets were
//! asked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use wsguard_session::Session;
use wsguard_store::Revocation;
use wsguard_token::{Format, SessionId, UserId, Verifier};

use crate::reason::CloseReason;

/// Identifies one proxied socket.
pub type ConnId = u64;

/// A request to close a socket: why, and since when (for the revocation latency metric).
pub type CloseRequest = (CloseReason, std::time::Instant);

/// What the registry knows about a socket (for the admin API's listing).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnInfo {
    /// Connection id.
    pub id: ConnId,
    /// Session id (public routes: none).
    #[serde(serialize_with = "full_id")]
    pub sid: Option<SessionId>,
    /// User id (public routes: none).
    #[serde(serialize_with = "full_id")]
    pub uid: Option<UserId>,
    /// Client address (serialized as `ip:port`).
    pub peer: SocketAddr,
    /// Route path.
    pub route: String,
    /// The upstream it was sent to (`host:port`).
    pub upstream: String,
    /// The client's address as the gateway decided it (`X-Forwarded-For` believed only from
    /// trusted proxies).
    pub client: std::net::IpAddr,
    /// When it opened, Unix seconds.
    pub opened_at: u64,
    /// Messages and bytes so far (filled when listed).
    #[serde(flatten)]
    pub traffic: TrafficCounts,
}

/// What a socket has carried: data messages and their payload bytes, each way ("in" is client
/// to upstream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficCounts {
    /// Client → upstream messages.
    pub messages_in: u64,
    /// Client → upstream payload bytes.
    pub bytes_in: u64,
    /// Upstream → client messages.
    pub messages_out: u64,
    /// Upstream → client payload bytes.
    pub bytes_out: u64,
}

/// A socket's traffic counters: written by its relay, read by the admin API and the access log.
#[derive(Debug, Default)]
pub struct Traffic {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl Traffic {
    /// Nothing counted yet.
    pub const fn new() -> Traffic {
        Traffic {
            messages_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    /// A client message of `len` payload bytes went upstream.
    pub fn up(&self, len: u64) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(len, Ordering::Relaxed);
    }

    /// `len` payload bytes of an upstream frame went to the client; `message_end` when the
    /// frame ends a message.
    pub fn down(&self, len: u64, message_end: bool) {
        if message_end {
            self.messages_out.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_out.fetch_add(len, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn counts(&self) -> TrafficCounts {
        TrafficCounts {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// An id in full (its `Display`; `Debug` shows only a prefix), or null.
fn full_id<S, T>(id: &Option<T>, s: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    T: std::fmt::Display,
{
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

struct Entry {
    info: ConnInfo,
    created: u64,
    /// How the socket's token was signed, and the verifier that accepted it (authenticated
    /// routes), so that a reload can close the sockets of keys it retires.
    key: Option<(Format, Arc<Verifier>)>,
    close: Option<oneshot::Sender<CloseRequest>>,
    traffic: Arc<Traffic>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<ConnId, Entry>,
    by_sid: HashMap<SessionId, Vec<ConnId>>,
    by_uid: HashMap<UserId, Vec<ConnId>>,
}

/// The registry. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("open", &self.len())
            .finish()
    }
}

/// Deregisters its socket when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Registry,
    id: ConnId,
    traffic: Arc<Traffic>,
}

impl Registration {
    /// This socket's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// This socket's traffic counters.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

fn remove_id<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<ConnId>>, key: &K, id: ConnId) {
    if let Some(ids) = map.get_mut(key) {
        ids.retain(|i| *i != id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The registry holds no invariant a panicking holder could break half-way that matters
        // more than closing sockets: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a socket. The receiver fires (once) when something asks it to close.
    pub fn register(
        &self,
        session: Option<&Session>,
        (peer, client): (SocketAddr, std::net::IpAddr),
        (route, upstream): (&str, &str),
        now: u64,
    ) -> (Registration, oneshot::Receiver<CloseRequest>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let traffic = Arc::new(Traffic::default());
        let info = ConnInfo {
            id,
            sid: session.map(|s| s.sid().clone()),
            uid: session.map(|s| s.uid().clone()),
            peer,
            route: route.to_owned(),
            upstream: upstream.to_owned(),
            client,
            opened_at: now,
            traffic: TrafficCounts::default(),
        };
        let mut inner = self.lock();
        if let Some(s) = session {
            inner.by_sid.entry(s.sid().clone()).or_default().push(id);
            inner.by_uid.entry(s.uid().clone()).or_default().push(id);
        }
        let created = session.map_or(0, |s| s.claims().created);
        inner.conns.insert(
            id,
            Entry {
                info,
                created,
                key: session.map(|s| (s.format().clone(), Arc::clone(s.verified_by()))),
                close: Some(tx),
                traffic: Arc::clone(&traffic),
            },
        );
        drop(inner);
        (
            Registration {
                registry: self.clone(),
                id,
                traffic,
            },
            rx,
        )
    }

    fn remove(&self, id: ConnId) {
        let mut inner = self.lock();
        let Some(entry) = inner.conns.remove(&id) else {
            return;
        };
        if let (Some(sid), Some(uid)) = (&entry.info.sid, &entry.info.uid) {
            remove_id(&mut inner.by_sid, sid, id);
            remove_id(&mut inner.by_uid, uid, id);
        }
    }

    fn signal(inner: &mut Inner, ids: &[ConnId], reason: CloseReason) -> usize {
        let now = std::time::Instant::now();
        let mut n = 0;
        for id in ids {
            if let Some(tx) = inner.conns.get_mut(id).and_then(|e| e.close.take())
                && tx.send((reason, now)).is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// Asks every socket whose token's key `current` no longer accepts at `now` (see
    /// [`Verifier::still_accepts`]) to close; the others are noted as accepted by `current` (the
    /// same key with the same secret), which the next reload compares with. Returns how many
    /// were asked.
    pub fn close_retired(&self, current: &Arc<Verifier>, now: u64, reason: CloseReason) -> usize {
        let mut inner = self.lock();
        let mut retired = Vec::new();
        for (id, entry) in &mut inner.conns {
            let Some((format, by)) = &mut entry.key else {
                continue;
            };
            if Arc::ptr_eq(by, current) {
                continue;
            }
            if current.still_accepts(by, format, now) {
                *by = Arc::clone(current);
            } else {
                retired.push(*id);
            }
        }
        Self::signal(&mut inner, &retired, reason)
    }

    /// Asks every socket of a session to close. Returns how many were asked.
    pub fn close_session(&self, sid: &SessionId, reason: CloseReason) -> usize {
        let mut inner = self.lock();
        let ids = inner.by_sid.get(sid).cloned().unwrap_or_default();
        Self::signal(&mut inner, &ids, reason)
    }

    /// Asks every socket of a user whose session was created at or before `at` to close.
    pub fn close_user(&self, uid: &UserId, at: u64, reason: CloseReason) -> usize {
        let mut inner = self.lock();
        let ids: Vec<ConnId> = inner
            .by_uid
            .get(uid)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| inner.conns.get(id).is_some_and(|e| e.created <= at))
                    .collect()
            })
            .unwrap_or_default();
        Self::signal(&mut inner, &ids, reason)
    }

    /// Applies a revocation event: closes the sockets it ends with `session revoked`.
    /// [`Revocation::Resync`] ends none by itself (the caller re-checks every socket).
    pub fn apply(&self, event: &Revocation) -> usize {
        match event {
            Revocation::Session { sid, .. } => self.close_session(sid, CloseReason::SessionRevoked),
            Revocation::User { uid, at } => self.close_user(uid, *at, CloseReason::SessionRevoked),
            Revocation::Resync => 0,
        }
    }

    /// Asks every socket to close (shutdown).
    pub fn close_all(&self, reason: CloseReason) -> usize {
        let mut inner = self.lock();
        let ids: Vec<ConnId> = inner.conns.keys().copied().collect();
        Self::signal(&mut inner, &ids, reason)
    }

    /// Every authenticated socket's session and user, for re-checking after missed events.
    pub fn sessions(&self) -> Vec<(ConnId, SessionId, UserId, u64)> {
        self.lock()
            .conns
            .values()
            .filter_map(|e| {
                Some((
                    e.info.id,
                    e.info.sid.clone()?,
                    e.info.uid.clone()?,
                    e.created,
                ))
            })
            .collect()
    }

    /// Asks one socket to close.
    pub fn close_conn(&self, id: ConnId, reason: CloseReason) -> bool {
        let mut inner = self.lock();
        Self::signal(&mut inner, &[id], reason) == 1
    }

    /// Open sockets.
    pub fn list(&self) -> Vec<ConnInfo> {
        let mut v: Vec<ConnInfo> = self
            .lock()
            .conns
            .values()
            .map(|e| ConnInfo {
                traffic: e.traffic.counts(),
                ..e.info.clone()
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// How many sockets are open.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
