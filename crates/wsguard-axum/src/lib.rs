//! wsguard as a library for axum apps: the gateway's handshake checks, session authentication
//! and message policy inside an axum (tower) app, from the same configuration types.
//!
//! It owns the I/O around `wsguard-policy`'s decisions for one guarded WebSocket route:
//!
//! - [`WsGuardLayer`], a tower layer: on a WebSocket upgrade request it runs the gateway's checks
//!   in the gateway's order (request rules, target, strict handshake, origin, session cookie or
//!   `?ticket=`, [`Sessions::authenticate`](wsguard_session::Sessions::authenticate)) and
//!   refuses with the reason table's status, body and headers, or puts the verified
//!   [`Session`](wsguard_session::Session) in the request's extensions. A store that cannot
//!   answer is a 503 `store_unavailable`, never a pass. Requests that are not upgrades pass
//!   through untouched (see [`WsGuardLayer`]);
//! - the extractors [`GuardedSession`] (the session, or 401) and [`GuardedUpgrade`] (the upgrade,
//!   with the route's size limits set), whose socket is a [`GuardedSocket`]: every client message
//!   meets the route's [`RoutePolicy`](wsguard_policy::policy::RoutePolicy) (kind, JSON depth,
//!   schema, sender stamping, rate limits; size and frame limits are enforced while reading), a
//!   refusal closes the socket with the table's close code and text, and a revocation of the
//!   session closes it with 1008 `session revoked`;
//! - [`WsGuardLayer::ticket_endpoint`], the gateway's `POST /wsguard/ticket` for clients that
//!   cannot send the cookie on the upgrade.
//!
//! It decides nothing itself: every decision is `wsguard-policy`'s or `wsguard-session`'s, and
//! every refusal and close goes through `wsguard_policy::reason`. It must not log a token, a
//! cookie or a ticket.
//!
//! What the gateway does that this crate does not: the app is the backend, so nothing is
//! dialled or forwarded (no identity headers); connections are not counted (limits are the
//! app's, e.g. tower's `ConcurrencyLimit`); no compression is negotiated; there is no reload
//! (a verifier swapped with `Sessions::set_verifier` does not close sockets already open under
//! a retired key); no idle timeout or keepalive pings. axum hands over whole messages only, so
//! `max_fragments` and `assembly_timeout` are not enforced (a message is still bounded by
//! `max_message_bytes` while it is assembled).
//!
//! ```rust,no_run
#![doc = include_str!("../examples/echo.rs")]
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Visibility is minimal: an item is `pub` only if it is part of the crate's API.
#![warn(unreachable_pub)]

mod checks;
mod config;
mod extract;
mod layer;
mod refused;
mod socket;
mod ticket;

pub use extract::{GuardedSession, GuardedUpgrade, UpgradeRejection};
pub use layer::{WsGuardLayer, WsGuardService};
pub use refused::Refused;
pub use socket::GuardedSocket;
pub use wsguard_policy::config::{ConfigError, ConfigErrors};

/// Now, in Unix seconds (sessions).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now, in Unix milliseconds (tickets).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The README's Rust snippets, compiled as doc tests so they cannot rot.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
struct ReadmeDoctests;
