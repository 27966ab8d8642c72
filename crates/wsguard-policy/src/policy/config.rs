//! The `[route.messages]` table: what a route's clients may send (kind, sizes, depth, stamping,
//! rates, schema file, fragments, control frames, inflation), its defaults and its validation.
//!
//! Owns the shape and the checks of values that parse but make no sense, each naming its key.
//! It must not judge messages (`judge.rs`) or read the schema file (the caller does).

use std::num::NonZeroU32;

use governor::Quota;
use serde::Deserialize;

use crate::config::ConfigErrors;

/// Which messages a route accepts from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Text and binary.
    #[default]
    Any,
    /// Text only (binary → 1003).
    Text,
    /// Binary only (text → 1003).
    Binary,
    /// Text that is one JSON value within `json_max_depth` (else 1008); binary → 1003.
    Json,
}

/// A rate: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained rate per second.
    pub per_second: u32,
    /// Bucket size (defaults to one second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
}

impl Rate {
    /// The governor quota; None if `per_second` or `burst` is zero.
    pub fn quota(self) -> Option<Quota> {
        let per = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.unwrap_or(self.per_second))?;
        Some(Quota::per_second(per).allow_burst(burst))
    }
}

/// What to do with a message over a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLimit {
    /// Close the socket with 1008 `rate limited` (default).
    #[default]
    Close,
    /// Drop the message, keep the socket.
    Drop,
}

/// The `[route.messages]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageConfig {
    /// Largest message (after reassembly), bytes. Default 64 KiB.
    pub max_message_bytes: usize,
    /// Largest single frame, bytes. Default: `max_message_bytes`.
    pub max_frame_bytes: Option<usize>,
    /// Accepted kind.
    pub kind: Kind,
    /// Deepest nesting in JSON mode.
    pub json_max_depth: usize,
    /// JSON mode: set this field of every object message to the user id.
    pub stamp_sender: Option<String>,
    /// Messages per connection.
    pub connection_messages: Option<Rate>,
    /// Bytes per connection.
    pub connection_bytes: Option<Rate>,
    /// Messages per user, across all of the user's sockets on this route.
    pub user_messages: Option<Rate>,
    /// Bytes per user.
    pub user_bytes: Option<Rate>,
    /// Close or drop when over a limit.
    pub on_limit: OnLimit,
    /// JSON mode: a JSON Schema file every client message must satisfy (after stamping).
    /// Only local references; nothing is fetched.
    pub json_schema: Option<std::path::PathBuf>,
    /// Most frames one message may span (default 64).
    pub max_fragments: u32,
    /// Most time from a message's first fragment to its last (default 10 s).
    #[serde(with = "crate::config::duration")]
    pub assembly_timeout: std::time::Duration,
    /// Pings and pongs a client may send (default 10/s, bursts of 50): ping floods are closed.
    pub control_frames: Rate,
    /// With `compression = true` on the route: the most a compressed message may inflate, as a
    /// multiple of its compressed size, once past 4 KiB (default 100; ordinary text stays
    /// under 30, a deflate bomb reaches 1,000). Beyond: 1009.
    pub max_inflate_ratio: u32,
}

impl Default for MessageConfig {
    fn default() -> Self {
        MessageConfig {
            max_message_bytes: 64 * 1024,
            max_frame_bytes: None,
            kind: Kind::Any,
            json_max_depth: 32,
            stamp_sender: None,
            connection_messages: None,
            connection_bytes: None,
            user_messages: None,
            user_bytes: None,
            on_limit: OnLimit::Close,
            json_schema: None,
            max_fragments: 64,
            assembly_timeout: std::time::Duration::from_secs(10),
            control_frames: Rate {
                per_second: 10,
                burst: Some(50),
            },
            max_inflate_ratio: 100,
        }
    }
}

impl MessageConfig {
    /// Checks values that parse but make no sense. `at` names the table in errors.
    pub fn validate(&self, at: &str) -> Result<(), ConfigErrors> {
        let mut errors = ConfigErrors::default();
        if !(1..=64 << 20).contains(&self.max_message_bytes) {
            errors.push(
                format!("{at}.max_message_bytes"),
                "must be between 1 and 67108864",
            );
        }
        if let Some(f) = self.max_frame_bytes
            && !(1..=self.max_message_bytes).contains(&f)
        {
            errors.push(
                format!("{at}.max_frame_bytes"),
                "must be between 1 and max_message_bytes",
            );
        }
        if !(1..=256).contains(&self.json_max_depth) {
            errors.push(format!("{at}.json_max_depth"), "must be between 1 and 256");
        }
        if self.stamp_sender.is_some() && self.kind != Kind::Json {
            errors.push(format!("{at}.stamp_sender"), "needs kind = \"json\"");
        }
        if self.stamp_sender.as_deref().is_some_and(str::is_empty) {
            errors.push(format!("{at}.stamp_sender"), "must not be empty");
        }
        if self.json_schema.is_some() && self.kind != Kind::Json {
            errors.push(format!("{at}.json_schema"), "needs kind = \"json\"");
        }
        if self.max_fragments == 0 {
            errors.push(format!("{at}.max_fragments"), "must be at least 1");
        }
        if self.max_inflate_ratio == 0 {
            errors.push(format!("{at}.max_inflate_ratio"), "must be at least 1");
        }
        if self.assembly_timeout.is_zero() {
            errors.push(format!("{at}.assembly_timeout"), "must be more than zero");
        }
        if self.control_frames.quota().is_none() {
            errors.push(
                format!("{at}.control_frames"),
                "per_second and burst must be more than zero",
            );
        }
        for (key, rate) in [
            ("connection_messages", self.connection_messages),
            ("connection_bytes", self.connection_bytes),
            ("user_messages", self.user_messages),
            ("user_bytes", self.user_bytes),
        ] {
            if let Some(r) = rate
                && r.quota().is_none()
            {
                errors.push(
                    format!("{at}.{key}"),
                    "per_second and burst must be more than zero",
                );
            }
        }
        for (key, rate) in [
            ("connection_bytes", self.connection_bytes),
            ("user_bytes", self.user_bytes),
        ] {
            if let Some(r) = rate
                && (r.burst.unwrap_or(r.per_second) as usize) < self.max_message_bytes
            {
                errors.push(format!("{at}.{key}"), "burst must be at least max_message_bytes, or a largest message could never pass");
            }
        }
        errors.or(())
    }
}
