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

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed, keyed::DefaultKeyedStateStore};
use governor::{Quota, RateLimiter};
use serde::Deserialize;

use crate::config::ConfigErrors;

use crate::reason::CloseReason;

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

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Keyed<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A route's message policy, shared by its sockets (the per-user buckets live here).
pub struct RoutePolicy<C: Clock = DefaultClock> {
    config: MessageConfig,
    schema: Option<jsonschema::Validator>,
    clock: C,
    user_messages: Option<Arc<Keyed<C>>>,
    user_bytes: Option<Arc<Keyed<C>>>,
}

impl<C: Clock> std::fmt::Debug for RoutePolicy<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutePolicy")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One socket's view of the policy: its own buckets plus the route's.
pub struct ConnPolicy<C: Clock = DefaultClock> {
    route: Arc<RoutePolicy<C>>,
    user: Option<String>,
    messages: Option<Direct<C>>,
    bytes: Option<Direct<C>>,
    control: Option<Direct<C>>,
}

/// What a client sent, as the policy sees it: whole messages (borrowed, unmasked; text is
/// already checked UTF-8), and control frames (pings and pongs) only as a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen<'a> {
    /// A text message.
    Text(&'a [u8]),
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping or a pong.
    Control,
}

/// What to do with a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it as it is.
    Forward,
    /// Forward this text instead (the sender stamped).
    Rewrite(Vec<u8>),
    /// Drop it silently (rate limited with `on_limit = "drop"`; pings and pongs, which the
    /// gateway answers itself).
    Drop,
    /// Close the socket.
    Close(CloseReason),
}

impl RoutePolicy<DefaultClock> {
    /// A policy on the real clock.
    pub fn new(config: MessageConfig) -> Arc<Self> {
        Self::with_clock(config, DefaultClock::default())
    }

    /// A policy that also checks every message against a compiled JSON Schema.
    pub fn with_schema(config: MessageConfig, schema: jsonschema::Validator) -> Arc<Self> {
        Arc::new(Self::build(config, Some(schema), DefaultClock::default()))
    }
}

impl<C: Clock + Clone> RoutePolicy<C> {
    /// A policy on the given clock.
    pub fn with_clock(config: MessageConfig, clock: C) -> Arc<Self> {
        Arc::new(Self::build(config, None, clock))
    }

    fn build(config: MessageConfig, schema: Option<jsonschema::Validator>, clock: C) -> Self {
        let keyed = |r: Option<Rate>| {
            r.and_then(Rate::quota)
                .map(|q| RateLimiter::new(q, DefaultKeyedStateStore::default(), clock.clone()))
                .map(Arc::new)
        };
        RoutePolicy {
            user_messages: keyed(config.user_messages),
            user_bytes: keyed(config.user_bytes),
            config,
            schema,
            clock,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MessageConfig {
        &self.config
    }

    /// Largest frame accepted.
    pub fn max_frame_bytes(&self) -> usize {
        self.config
            .max_frame_bytes
            .unwrap_or(self.config.max_message_bytes)
    }

    /// Per-socket state for a socket of `user` (None on public routes).
    pub fn connection(self: &Arc<Self>, user: Option<&str>) -> ConnPolicy<C> {
        let direct = |r: Option<Rate>| {
            r.and_then(Rate::quota)
                .map(|q| RateLimiter::direct_with_clock(q, self.clock.clone()))
        };
        ConnPolicy {
            route: Arc::clone(self),
            user: user.map(str::to_owned),
            messages: direct(self.config.connection_messages),
            bytes: direct(self.config.connection_bytes),
            control: direct(Some(self.config.control_frames)),
        }
    }

    /// Takes over `earlier`'s per-user buckets where the rate is the same (on a reload, for the
    /// same route): sockets opened before and after the reload then draw from one budget per
    /// user, not two. A changed rate starts new buckets. Only before the policy is shared
    /// (`Arc::get_mut`); returns whether anything was taken over.
    pub fn keep_user_buckets(self: &mut Arc<Self>, earlier: &RoutePolicy<C>) -> bool {
        let Some(this) = Arc::get_mut(self) else {
            return false;
        };
        let mut kept = false;
        if this.config.user_messages == earlier.config.user_messages
            && let Some(b) = &earlier.user_messages
        {
            this.user_messages = Some(Arc::clone(b));
            kept = true;
        }
        if this.config.user_bytes == earlier.config.user_bytes
            && let Some(b) = &earlier.user_bytes
        {
            this.user_bytes = Some(Arc::clone(b));
            kept = true;
        }
        kept
    }

    /// Forgets per-user buckets that are full again (call now and then).
    pub fn shrink(&self) {
        for l in [&self.user_messages, &self.user_bytes]
            .into_iter()
            .flatten()
        {
            l.retain_recent();
        }
    }
}

/// Nesting depth of a JSON text, counting brackets outside strings; stops early past `limit`.
fn json_depth_within(text: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

impl<C: Clock + Clone> ConnPolicy<C> {
    fn rate_ok(&self, len: usize) -> bool {
        let n = NonZeroU32::new(u32::try_from(len.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        let one_ok = self.messages.as_ref().is_none_or(|l| l.check().is_ok());
        let bytes_ok = self
            .bytes
            .as_ref()
            .is_none_or(|l| matches!(l.check_n(n), Ok(Ok(()))));
        let (user_msg_ok, user_bytes_ok) = match &self.user {
            Some(u) => (
                self.route
                    .user_messages
                    .as_ref()
                    .is_none_or(|l| l.check_key(u).is_ok()),
                self.route
                    .user_bytes
                    .as_ref()
                    .is_none_or(|l| matches!(l.check_key_n(u, n), Ok(Ok(())))),
            ),
            None => (true, true),
        };
        one_ok && bytes_ok && user_msg_ok && user_bytes_ok
    }

    /// Counts one control frame (ping or pong) from the client: a flood closes the socket.
    pub fn control_frame(&self) -> Result<(), CloseReason> {
        match &self.control {
            Some(l) if l.check().is_err() => Err(CloseReason::ControlFlood),
            _ => Ok(()),
        }
    }

    /// Judges one client message: data messages against the policy; pings and pongs against
    /// the control-frame bound (`Drop`: the gateway has answered them, nothing to forward).
    pub fn judge(&self, seen: Seen<'_>) -> Verdict {
        let (text, payload) = match seen {
            Seen::Control => {
                return match self.control_frame() {
                    Ok(()) => Verdict::Drop,
                    Err(reason) => Verdict::Close(reason),
                };
            }
            Seen::Text(t) => (true, t),
            Seen::Binary(b) => (false, b),
        };
        let cfg = &self.route.config;
        if !self.rate_ok(payload.len()) {
            return match cfg.on_limit {
                OnLimit::Close => Verdict::Close(CloseReason::RateLimited),
                OnLimit::Drop => Verdict::Drop,
            };
        }
        match (cfg.kind, text) {
            (Kind::Any, _) | (Kind::Text, true) | (Kind::Binary, false) => Verdict::Forward,
            (Kind::Json, true) => match self.json(payload) {
                Ok(None) => Verdict::Forward,
                Ok(Some(rewritten)) => Verdict::Rewrite(rewritten),
                Err(reason) => Verdict::Close(reason),
            },
            _ => Verdict::Close(CloseReason::UnsupportedData),
        }
    }

    /// Checks a JSON text message: `Ok(None)` to forward it as it is (no copy), `Ok(Some(_))`
    /// to forward a rewritten one (sender stamped).
    fn json(&self, text: &[u8]) -> Result<Option<Vec<u8>>, CloseReason> {
        let cfg = &self.route.config;
        if !json_depth_within(text, cfg.json_max_depth) {
            return Err(CloseReason::PolicyViolation);
        }
        let stamp = match (&cfg.stamp_sender, &self.user) {
            (Some(field), Some(user)) => Some((field, user)),
            _ => None,
        };
        if stamp.is_none() && self.route.schema.is_none() {
            // Syntax only: nothing is built.
            serde_json::from_slice::<serde::de::IgnoredAny>(text)
                .map_err(|_| CloseReason::PolicyViolation)?;
            return Ok(None);
        }
        let mut value: serde_json::Value =
            serde_json::from_slice(text).map_err(|_| CloseReason::PolicyViolation)?;
        let mut stamped = false;
        if let (Some((field, user)), serde_json::Value::Object(map)) = (stamp, &mut value) {
            map.insert(field.clone(), serde_json::Value::String(user.clone()));
            stamped = true;
        }
        if let Some(schema) = &self.route.schema
            && !schema.is_valid(&value)
        {
            return Err(CloseReason::SchemaViolation);
        }
        if !stamped {
            return Ok(None);
        }
        // serde_json writes UTF-8.
        serde_json::to_vec(&value)
            .map(Some)
            .map_err(|_| CloseReason::PolicyViolation)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn policy(cfg: MessageConfig) -> (Arc<RoutePolicy<FakeRelativeClock>>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RoutePolicy::with_clock(cfg, clock.clone()), clock)
    }

    fn text(s: &str) -> Seen<'_> {
        Seen::Text(s.as_bytes())
    }

    #[test]
    fn kinds() {
        let (p, _) = policy(MessageConfig {
            kind: Kind::Text,
            ..Default::default()
        });
        let c = p.connection(Some("alice"));
        assert_eq!(c.judge(text("hi")), Verdict::Forward);
        assert_eq!(
            c.judge(Seen::Binary(&[1u8])),
            Verdict::Close(CloseReason::UnsupportedData)
        );
        let (p, _) = policy(MessageConfig {
            kind: Kind::Binary,
            ..Default::default()
        });
        assert_eq!(
            p.connection(None).judge(text("hi")),
            Verdict::Close(CloseReason::UnsupportedData)
        );
    }

    #[test]
    fn json_mode_and_depth() {
        let (p, _) = policy(MessageConfig {
            kind: Kind::Json,
            json_max_depth: 3,
            ..Default::default()
        });
        let c = p.connection(Some("alice"));
        for ok in [r#"{"a":[1,{"b":2}]}"#, "1", r#""[[[[""#, "[]"] {
            assert_eq!(c.judge(text(ok)), Verdict::Forward, "{ok}");
        }
        for bad in [
            r#"{"a":[1,{"b":[2]}]}"#,
            "{",
            "nope",
            r#"{"a":1}{"b":2}"#,
            "",
        ] {
            assert_eq!(
                c.judge(text(bad)),
                Verdict::Close(CloseReason::PolicyViolation),
                "{bad}"
            );
        }
        assert_eq!(
            c.judge(Seen::Binary(b"1")),
            Verdict::Close(CloseReason::UnsupportedData)
        );
        let deep = "[".repeat(100_000);
        assert_eq!(
            c.judge(text(&deep)),
            Verdict::Close(CloseReason::PolicyViolation)
        );
    }

    #[test]
    fn sender_is_stamped_over_what_the_client_wrote() {
        let cfg = MessageConfig {
            kind: Kind::Json,
            stamp_sender: Some("sender".into()),
            ..Default::default()
        };
        let (p, _) = policy(cfg);
        let c = p.connection(Some("alice"));
        let Verdict::Rewrite(t) = c.judge(text(r#"{"sender":"bob","msg":"hi"}"#)) else {
            panic!("not rewritten")
        };
        let v: serde_json::Value = serde_json::from_slice(&t).unwrap();
        assert_eq!(v["sender"], "alice");
        assert_eq!(v["msg"], "hi");
        // Non-object JSON passes unchanged.
        assert_eq!(c.judge(text("[1]")), Verdict::Forward);
    }

    #[test]
    fn connection_rate_limit_edges() {
        let cfg = MessageConfig {
            connection_messages: Some(Rate {
                per_second: 10,
                burst: Some(3),
            }),
            ..Default::default()
        };
        let (p, clock) = policy(cfg);
        let c = p.connection(Some("alice"));
        for _ in 0..3 {
            assert_eq!(c.judge(text("x")), Verdict::Forward);
        }
        assert_eq!(
            c.judge(text("x")),
            Verdict::Close(CloseReason::RateLimited),
            "burst exhausted"
        );
        clock.advance(Duration::from_millis(99));
        assert_eq!(
            c.judge(text("x")),
            Verdict::Close(CloseReason::RateLimited),
            "1 ms before a token"
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(c.judge(text("x")), Verdict::Forward, "one token per 100 ms");
    }

    #[test]
    fn byte_rate_and_drop_action() {
        let cfg = MessageConfig {
            max_message_bytes: 10,
            connection_bytes: Some(Rate {
                per_second: 10,
                burst: Some(10),
            }),
            on_limit: OnLimit::Drop,
            ..Default::default()
        };
        cfg.validate("route[0].messages").unwrap();
        let (p, clock) = policy(cfg);
        let c = p.connection(None);
        assert_eq!(c.judge(text("123456")), Verdict::Forward);
        assert_eq!(c.judge(text("12345")), Verdict::Drop, "6 + 5 > 10");
        assert_eq!(c.judge(text("1234")), Verdict::Forward);
        clock.advance(Duration::from_secs(1));
        assert_eq!(c.judge(text("1234567890")), Verdict::Forward);
    }

    #[test]
    fn user_limit_is_shared_across_sockets() {
        let cfg = MessageConfig {
            user_messages: Some(Rate {
                per_second: 1,
                burst: Some(2),
            }),
            ..Default::default()
        };
        let (p, _) = policy(cfg);
        let (a, b, other) = (
            p.connection(Some("alice")),
            p.connection(Some("alice")),
            p.connection(Some("bob")),
        );
        assert!(matches!(a.judge(text("1")), Verdict::Forward));
        assert!(matches!(b.judge(text("2")), Verdict::Forward));
        assert_eq!(a.judge(text("3")), Verdict::Close(CloseReason::RateLimited));
        assert!(
            matches!(other.judge(text("x")), Verdict::Forward),
            "per user"
        );
    }

    #[test]
    fn a_reloaded_route_keeps_its_users_budgets_unless_the_rate_changed() {
        let rate = |burst| MessageConfig {
            user_messages: Some(Rate {
                per_second: 1,
                burst: Some(burst),
            }),
            ..Default::default()
        };
        let clock = FakeRelativeClock::default();
        let before = RoutePolicy::with_clock(rate(2), clock.clone());
        let old_socket = before.connection(Some("alice"));
        assert!(matches!(old_socket.judge(text("1")), Verdict::Forward));
        // Reloaded with the same rate: a socket opened after the reload shares alice's bucket
        // with the one opened before.
        let mut after = RoutePolicy::with_clock(rate(2), clock.clone());
        assert!(after.keep_user_buckets(&before));
        let new_socket = after.connection(Some("alice"));
        assert!(matches!(new_socket.judge(text("2")), Verdict::Forward));
        assert_eq!(
            new_socket.judge(text("3")),
            Verdict::Close(CloseReason::RateLimited),
            "one budget across the reload"
        );
        // Reloaded with another rate: new buckets, under the new rate.
        let mut changed = RoutePolicy::with_clock(rate(3), clock.clone());
        assert!(!changed.keep_user_buckets(&before));
        let third = changed.connection(Some("alice"));
        for n in 0..3 {
            assert!(matches!(third.judge(text("x")), Verdict::Forward), "{n}");
        }
        // A policy already shared by sockets is left as it is.
        let _socket = changed.connection(Some("bob"));
        assert!(!changed.keep_user_buckets(&RoutePolicy::with_clock(rate(3), clock)));
    }

    #[test]
    fn config_errors_name_the_key() {
        let bad = [
            (
                MessageConfig {
                    max_message_bytes: 0,
                    ..Default::default()
                },
                "max_message_bytes",
            ),
            (
                MessageConfig {
                    max_frame_bytes: Some(1 << 20),
                    ..Default::default()
                },
                "max_frame_bytes",
            ),
            (
                MessageConfig {
                    stamp_sender: Some("s".into()),
                    ..Default::default()
                },
                "stamp_sender",
            ),
            (
                MessageConfig {
                    connection_messages: Some(Rate {
                        per_second: 0,
                        burst: None,
                    }),
                    ..Default::default()
                },
                "connection_messages",
            ),
            (
                MessageConfig {
                    user_bytes: Some(Rate {
                        per_second: 100,
                        burst: None,
                    }),
                    ..Default::default()
                },
                "user_bytes",
            ),
        ];
        for (cfg, key) in bad {
            let e = cfg.validate("route[0].messages").unwrap_err();
            assert_eq!(e.0[0].key, format!("route[0].messages.{key}"), "{e}");
        }
    }
}
