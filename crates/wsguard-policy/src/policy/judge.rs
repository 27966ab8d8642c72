//! Judging a client's messages: a route's policy shared by its sockets ([`RoutePolicy`], with
//! the per-user buckets) and each socket's own view ([`ConnPolicy`]: its buckets, its user).
//!
//! Owns the order of the checks (rates, then kind, then JSON) and the verdict. Pure except for
//! the rate limiters' clock, a type parameter so tests drive it exactly. It must not read files
//! or the clock by itself, and it copies a message only to stamp it.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::RateLimiter;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed, keyed::DefaultKeyedStateStore};

use super::json;
use super::{Kind, MessageConfig, OnLimit, Rate};
use crate::reason::CloseReason;

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

    /// Checks a JSON text message (see [`json::check`]).
    fn json(&self, text: &[u8]) -> Result<Option<Vec<u8>>, CloseReason> {
        json::check(
            &self.route.config,
            self.route.schema.as_ref(),
            self.user.as_deref(),
            text,
        )
    }
}
