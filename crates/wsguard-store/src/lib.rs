//! wsguard session store.
//!
//! Owns the [`SessionStore`] trait (async, fallible, shaped so that a networked backend fits
//! behind it), the record and event types, and three backends:
//! - [`MemoryStore`]: one process, nothing survives a restart (tests, throwaway gateways);
//! - [`SqliteStore`]: the default. SQLite in WAL mode, so a running gateway and the `wsguard`
//!   CLI can use the same file at once; revocations made by another process reach
//!   [`SessionStore::subscribe`] through a polled revocation log;
//! - [`RedisStore`]: several gateway nodes on one Redis. Revocations reach every node through a
//!   Redis stream (probed, resumed after reconnects, [`Revocation::Resync`] when events may
//!   have been lost); it also holds what the nodes must share beyond sessions: one-time
//!   tickets, per-user connection counts, per-user rates (GCRA) and node heartbeats
//!   ([`RedisStore::issue_ticket`], [`ConnectionCounter`], [`RedisStore::take_rate`],
//!   [`RedisStore::node_heartbeat`]).
//!
//! This crate stores and reports; it does not decide. Whether a token is acceptable is decided by
//! `wsguard-session`, which combines the token's proof with what the store says. Time is always a
//! parameter (`now`, Unix seconds): the store never reads the clock.

#![warn(missing_docs)]
// Visibility is minimal: an item is `pub` only if it is part of the crate's API.
#![warn(unreachable_pub)]

// The trait and its types are in `store.rs`, at the bottom: every backend imports from there
// (and `events.rs`), never through these re-exports, so this file stays on top.
mod events;
mod memory;
mod redis;
mod sqlite;
mod store;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use crate::redis::{
    Admission, ConnectionCounter, GcraRate, MAX_TICKET_TTL, NodeHeartbeat, NodeSeen, RateGrant,
    RedisConfig, RedisPassword, RedisServerInfo, RedisStore, TicketIssue,
};
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
pub use store::{
    FeedHealth, Lookup, REVOCATION_CHANNEL_CAPACITY, Revocation, SessionRecord, SessionStore,
    StoreError,
};
