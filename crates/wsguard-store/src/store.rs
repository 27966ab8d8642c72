//! The contract every backend meets: the [`SessionStore`] trait and what passes through it.
//!
//! Owns [`SessionStore`], the records and answers it deals in ([`SessionRecord`], [`Lookup`],
//! [`Revocation`], [`FeedHealth`]), [`StoreError`], and the capacity of revocation channels.
//! Backends (`memory.rs`, `sqlite.rs`, `redis.rs`) implement it; `wsguard-session` decides with
//! it. It must not hold a backend's code, and must not read the clock: time is a parameter.

use async_trait::async_trait;
use tokio::sync::broadcast;
use wsguard_token::{SessionData, SessionId, UserId};

/// A live session as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id (the key).
    pub sid: SessionId,
    /// Owner.
    pub uid: UserId,
    /// Application data.
    pub data: SessionData,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Last activity the store knows of, Unix seconds. Only moves forward.
    pub last_active: u64,
    /// When the record may be purged (its absolute expiry), Unix seconds.
    pub expires_at: u64,
}

/// What the store knows about a session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The session is live.
    Live(SessionRecord),
    /// The session was revoked (a tombstone is kept until the session could have expired anyway).
    Revoked,
    /// The store has never heard of it, or has forgotten it after expiry.
    Unknown,
}

/// A revocation, as broadcast to subscribers (e.g. the gateway closing live sockets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One session. The user is known if the store held the session.
    Session {
        /// The revoked session.
        sid: SessionId,
        /// Its owner, if known.
        uid: Option<UserId>,
    },
    /// Every session of a user created at or before `at`.
    User {
        /// The user.
        uid: UserId,
        /// Revocation time, Unix seconds.
        at: u64,
    },
    /// Revocations may have been missed (a shared store's feed lost its place: its position
    /// was trimmed away, the store was reset, or it cannot tell). It ends no session by
    /// itself: every live session must be re-checked against the store, as after
    /// `RecvError::Lagged`. Sent only by backends that can lose events (Redis).
    Resync,
}

/// How a shared store's revocation feed is doing (see [`SessionStore::feed_health`]), for a
/// readiness check and for closing sockets once the feed has been stale too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedHealth {
    /// The feed's connection is up.
    pub connected: bool,
    /// Last time the feed was proven to work end to end: a probe written to the store was read
    /// back through the feed. `None`: not yet.
    pub last_verified: Option<std::time::Instant>,
    /// Last time the feed read anything (entries, or an empty answer to a blocking read).
    pub last_read: Option<std::time::Instant>,
    /// How many times the feed told subscribers to re-check everything
    /// ([`Revocation::Resync`]).
    pub resyncs: u64,
}

impl FeedHealth {
    /// Whether the feed is connected and was verified no longer than `max_staleness` before
    /// `now`.
    pub fn is_fresh(&self, now: std::time::Instant, max_staleness: std::time::Duration) -> bool {
        self.connected
            && self
                .last_verified
                .is_some_and(|t| now.saturating_duration_since(t) <= max_staleness)
    }
}

/// A store failure. Callers fail closed on it (the gateway answers 503).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, database error, lock poisoned).
    #[error("session store backend error: {0}")]
    Backend(String),
    /// A session with this id already exists.
    #[error("a session with this id already exists")]
    Duplicate,
    /// The store holds data this version cannot read.
    #[error("session store holds an invalid record: {0}")]
    Corrupt(String),
}

/// A place where sessions live. All methods are safe to call concurrently.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new live session. Fails with [`StoreError::Duplicate`] if the id exists (live or revoked).
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError>;

    /// Looks a session up.
    async fn get(&self, sid: &SessionId) -> Result<Lookup, StoreError>;

    /// [`SessionStore::get`] and [`SessionStore::user_revoked_at`] of the session's user
    /// together: what a stateless check (and a re-check) needs. Networked backends answer in
    /// one round trip; the default asks twice.
    async fn get_with_user_mark(
        &self,
        sid: &SessionId,
        uid: &UserId,
    ) -> Result<(Lookup, Option<u64>), StoreError> {
        let lookup = self.get(sid).await?;
        Ok((lookup, self.user_revoked_at(uid).await?))
    }

    /// Records activity: `last_active` becomes `max(stored, last_active)`. Returns `false` if the
    /// session is not live. Callers throttle this (see `wsguard-session`).
    async fn touch(&self, sid: &SessionId, last_active: u64) -> Result<bool, StoreError>;

    /// Revokes one session: it stops being live at once and a tombstone is kept until
    /// `keep_until`. Returns the owner if the session was live. Revoking an unknown id still
    /// records the tombstone (stateless tokens are not in the store) and broadcasts.
    async fn revoke_session(
        &self,
        sid: &SessionId,
        keep_until: u64,
    ) -> Result<Option<UserId>, StoreError>;

    /// Revokes every session of `uid` created at or before `now` (also stateless ones, through a
    /// user revocation marker kept until `keep_until`). Returns how many stored sessions ended.
    async fn revoke_user(
        &self,
        uid: &UserId,
        now: u64,
        keep_until: u64,
    ) -> Result<usize, StoreError>;

    /// The latest user-wide revocation time of `uid`, if one is in force.
    async fn user_revoked_at(&self, uid: &UserId) -> Result<Option<u64>, StoreError>;

    /// The live sessions of a user, oldest first.
    async fn list_user(&self, uid: &UserId) -> Result<Vec<SessionRecord>, StoreError>;

    /// Forgets expired sessions, tombstones and markers (`expires_at`/`keep_until` <= `now`).
    /// Returns how many rows went.
    async fn purge(&self, now: u64) -> Result<usize, StoreError>;

    /// Subscribes to revocations, including (for shared backends) those made by other processes.
    fn subscribe(&self) -> broadcast::Receiver<Revocation>;

    /// How many revocation events this store has sent to subscribers so far (counted before
    /// each is sent), if it counts them. Two equal readings mean no event was sent in between;
    /// `None` (the default) means unknown: callers must then assume one was.
    fn revocations_announced(&self) -> Option<u64> {
        None
    }

    /// The health of the feed that brings other processes' revocations, for backends whose
    /// feed can fail on its own (Redis). `None` (the default): nothing to watch (memory), or
    /// the feed fails only with the store itself (SQLite's polled log).
    fn feed_health(&self) -> Option<FeedHealth> {
        None
    }
}

/// Capacity of revocation broadcast channels. A subscriber that lags more than this many events
/// behind gets `RecvError::Lagged` and must resynchronise (the gateway re-checks every socket).
pub const REVOCATION_CHANNEL_CAPACITY: usize = 4096;
