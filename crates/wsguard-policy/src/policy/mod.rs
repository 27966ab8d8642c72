//! Message policy: what a client may send once its socket is open.
//!
//! Owns the per-route rules applied to every client→upstream data message: the message kind
//! (any, text only, binary only, or JSON text within a depth bound), sender stamping (in JSON
//! mode, a configured field of each object message is set to the authenticated user id,
//! overwriting what the client wrote), and rate limits per connection and per user (token
//! buckets from `governor`, messages/s and bytes/s with bursts), an optional JSON Schema, and
//! the bound on client pings and pongs. Size limits, fragment count and assembly time are the
//! relay's (checked on frame headers before anything is buffered). Pure except for the rate
//! limiters' clock, which is a type parameter so tests drive it exactly; the schema file is
//! read by the gateway's builder, not here. Messages arrive borrowed ([`Seen`]): judging one
//! copies nothing unless the sender is stamped.
//!
//! Laid out as: the `[route.messages]` table and its validation (`config.rs`), the judging of
//! each message and the rate buckets (`judge.rs`), and the JSON checks and stamping (`json.rs`).

mod config;
mod json;
mod judge;
#[cfg(test)]
mod tests;

pub use config::{Kind, MessageConfig, OnLimit, Rate};
pub use judge::{ConnPolicy, RoutePolicy, Seen, Verdict};
