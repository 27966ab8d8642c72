//! wsguard's policy core: every decision the gateway makes about a request or a message, and
//! nothing else.
//!
//! It owns the strict checks of an upgrade request ([`handshake`]), the request target
//! ([`target`]), the origin policy ([`origin`]), the session cookie ([`cookie`]), what the
//! upstream is told ([`forward`]), the message policy ([`policy`]), connection and rate limits
//! ([`limits`]), one-time tickets ([`tickets`]), the WebSocket wire format ([`wire`]),
//! permessage-deflate ([`deflate`]), the choice among upstreams ([`pool`]), the one table of
//! reasons ([`reason`]) and the configuration's shape and validation ([`config`]).
//!
//! No I/O and no async runtime: nothing here opens a socket or a file, reads the clock by
//! itself where a decision depends on time (`now` is a parameter), or logs. The gateway
//! (`wsguard-gateway`) and the axum integration (`wsguard-axum`) do the I/O around it, so both
//! decide alike, and every boundary is tested without a socket.

#![forbid(unsafe_code)]

pub mod config;
pub mod cookie;
pub mod deflate;
pub mod forward;
pub mod frames;
pub mod handshake;
pub mod limits;
pub mod liveness;
pub mod origin;
pub mod policy;
pub mod pool;
pub mod reason;
pub mod target;
pub mod tickets;
pub mod wire;
