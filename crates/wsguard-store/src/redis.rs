//! Redis session store: several gateway nodes share sessions, revocations, tickets and limits.
//!
//! Like the other backends it stores and reports; it does not decide, and it never reads the
//! clock for a decision: expiry times are the caller's, and Redis forgets a key at its absolute
//! time (`EXPIREAT`) by its own clock. Secrets (the password, a `redis://user:pass@` URL) never
//! reach `Debug`, logs or errors. This file only declares the parts, from the bottom up (each
//! imports only from those before it):
//! - `config.rs`: [`RedisConfig`], [`RedisPassword`], the client built from them, redaction;
//! - `keys.rs`: the key layout (a table of every key);
//! - `scripts.rs`: every Lua script, and how one is called;
//! - `store.rs`: [`RedisStore`], bounded commands and pipelines, scripts reloaded on `NOSCRIPT`;
//! - `feed.rs`: the revocation stream, both ways (announcing, following), and its health;
//! - `sessions.rs`: the [`SessionStore`](crate::SessionStore) implementation;
//! - `shared.rs`: tickets, connection counts, rates (GCRA) and node heartbeats;
//! - `connect.rs`: [`RedisStore::connect`] and [`RedisStore::connect_lazy`].
//!
//! # Redis Cluster
//!
//! Every Lua script and every multi-key command touches one hash slot: the keys of one user
//! share the hash tag `{UID}` (the marker script reads the user's index too; ticket bounds,
//! connection counts and rates are one key each), the stream and its sequence share `{rev}`,
//! and a session's record and tombstone are one key tagged `{SID}`. Sessions are tagged by
//! their id rather than their user because the trait addresses them by id alone (a stateless
//! token is revoked by id, `DELETE /sessions/{sid}` knows no user). Operations that touch a
//! session *and* its user (create, revoke_user, list_user) are pipelines or sequences of
//! single-slot scripts, ordered so that a crash between two steps leaves nothing unsafe (the
//! index is written before the record; an index entry without a live record of that user is
//! ignored). This client connects to one server (standalone, or a primary behind a proxy);
//! a cluster client is not wired in yet, but the layout needs no change for one.
//!
//! Needs Redis ≥ 7.0 (`EXPIRETIME`, `GETDEL`, `ZADD GT`).

mod config;
mod connect;
mod feed;
mod keys;
mod scripts;
mod sessions;
mod shared;
mod store;

pub use config::{RedisConfig, RedisPassword};
pub use shared::{
    Admission, ConnectionCounter, GcraRate, MAX_TICKET_TTL, NodeHeartbeat, NodeSeen, RateGrant,
    TicketIssue,
};
pub use store::{RedisServerInfo, RedisStore};
