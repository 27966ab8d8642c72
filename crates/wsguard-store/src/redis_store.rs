//! Redis session store: several gateway nodes share sessions, revocations, tickets and limits.
//!
//! Owns [`RedisConfig`] (what the binary deserializes), [`RedisStore`] (connection with
//! automatic reconnection, every command bounded by `command_timeout`), the key layout, the Lua
//! scripts of the [`SessionStore`] operations, and the mapping of Redis replies to store types.
//! The revocation feed lives in `redis_feed.rs`, the shared primitives (tickets, connection
//! counts, rates, node heartbeats) in `redis_shared.rs`. Like the other backends it stores and
//! reports; it does not decide, and it never reads the clock for a decision: expiry times are
//! the caller's, and Redis forgets a key at its absolute time (`EXPIREAT`) by its own clock.
//! Secrets (the password, a `redis://user:pass@` URL) never reach `Debug`, logs or errors.
//!
//! # Key layout (prefix `P`, default `wsguard:`)
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `P s:{SID}` | hash | a live session (`u` uid, `d` data, `c` created, `a` last active, `e` expires) or its tombstone (`r`, `k` keep until) | `e`, then `k` |
//! | `P u:{UID}:s` | zset | the user's session ids, scored by expiry (index for list/revoke) | latest expiry |
//! | `P u:{UID}:r` | hash | the user revocation marker (`a` revoked at, `k` keep until) | `k` |
//! | `P u:{UID}:t` | zset | hashes of the user's outstanding tickets (per-user bound) | ticket TTL |
//! | `P u:{UID}:c` | zset | `conn@node` → heartbeat deadline (ms), cross-node connection count | latest deadline |
//! | `P u:{UID}:g:RULE` | string | GCRA theoretical arrival time (µs) | when full again |
//! | `P t:{SHA256}` | string | a ticket, by the SHA-256 of its value: the cookie it was issued for | ticket TTL (≤ 30 s) |
//! | `P {rev}:stream`, `P {rev}:seq` | stream, counter | revocation announcements (`MAXLEN ~`), their sequence | never (trimmed) |
//! | `P purge` | zset | purge ledger: `s:SID` / `r:UID` → expiry, so [`SessionStore::purge`] can count | trimmed by purge |
//! | `P nodes` | hash | node heartbeats for a cluster listing | entries pruned when listed |
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

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, Script};
use tokio::sync::broadcast;
use wsguard_token::{SessionData, SessionId, UserId};

use crate::redis_feed::{self, FeedState};
use crate::{
    FeedHealth, Lookup, REVOCATION_CHANNEL_CAPACITY, Revocation, SessionRecord, SessionStore,
    StoreError,
};

/// Latest time written to Redis (9999-12-31T23:59:59Z): callers compute `keep_until` with
/// saturating additions, and `EXPIREAT` refuses larger values.
const MAX_TS: u64 = 253_402_300_799;

/// How many ledger entries one purge step handles.
const PURGE_BATCH: isize = 1000;

/// A Redis password. Its `Debug` is redacted; it is only ever sent to Redis (`AUTH`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPassword(String);

impl RedisPassword {
    /// Wraps a password (e.g. read by the caller from `password_file`, trailing newline
    /// removed).
    pub fn new(password: impl Into<String>) -> Self {
        RedisPassword(password.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisPassword(<redacted>)")
    }
}

/// How to reach Redis and how to use it: `[store]` with `backend = "redis"`.
///
/// Deserializable (unknown keys refused, every field defaulted). The password is not read from
/// the configuration: the caller reads `password_file` and sets [`RedisConfig::password`].
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://` (TLS with rustls, system roots or
    /// [`RedisConfig::tls_ca_file`]). A password in the URL works but is discouraged.
    pub url: String,
    /// ACL user name (`AUTH username password`), overriding one in the URL.
    pub username: Option<String>,
    /// Password, set by the caller (never deserialized), overriding one in the URL.
    #[serde(skip)]
    pub password: Option<RedisPassword>,
    /// PEM file of the CAs that sign the server's certificate (`rediss://`), instead of the
    /// system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Prefix of every key (several deployments can share one Redis). No `{` or `}`.
    pub key_prefix: String,
    /// Bound on establishing a connection (TCP, TLS, AUTH, SELECT).
    #[serde(with = "crate::redis_store::duration")]
    pub connect_timeout: Duration,
    /// Bound on every command, including waiting for a reconnection: past it the operation
    /// fails with [`StoreError::Backend`] (callers fail closed).
    #[serde(with = "crate::redis_store::duration")]
    pub command_timeout: Duration,
    /// Approximate length the revocation stream is trimmed to (`XADD MAXLEN ~`). A node cut off
    /// for longer than it takes the cluster to write this many entries (revocations and one
    /// probe per node per `probe_interval`) re-checks everything when it comes back.
    pub stream_max_len: u64,
    /// How often each node sends a probe through the revocation stream and expects to read it
    /// back (within `command_timeout`); a probe that does not come back reconnects the feed.
    #[serde(with = "crate::redis_store::duration")]
    pub probe_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            username: None,
            password: None,
            tls_ca_file: None,
            key_prefix: "wsguard:".into(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            stream_max_len: 10_000,
            probe_interval: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("stream_max_len", &self.stream_max_len)
            .field("probe_interval", &self.probe_interval)
            .finish()
    }
}

impl RedisConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    /// What is wrong with this configuration, one line per problem naming the field (empty if
    /// nothing is).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            out.push("url: must start with redis:// or rediss://".into());
        } else if let Err(e) = redis::Client::open(self.url.as_str()) {
            out.push(format!("url: {}", redact(&e.to_string(), &self.url)));
        }
        if self.key_prefix.contains(['{', '}']) {
            out.push(
                "key_prefix: must not contain { or } (they are Redis Cluster hash tags)".into(),
            );
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("probe_interval", self.probe_interval),
        ] {
            if d.is_zero() {
                out.push(format!("{name}: must be more than 0"));
            }
        }
        if self.stream_max_len < 100 {
            out.push("stream_max_len: must be at least 100".into());
        }
        out
    }

    /// The URL with any password replaced, for messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `scheme://user:pass@host` → `scheme://user:<redacted>@host`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((creds, host)) => {
            let user = creds.split_once(':').map_or(creds, |(u, _)| u);
            format!("{scheme}://{user}:<redacted>@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Removes the URL (which may hold a password) from a message.
fn redact(message: &str, url: &str) -> String {
    message.replace(url, &redact_url(url))
}

/// Durations as whole seconds or humantime strings ("500ms", "2s").
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        let err = || {
            serde::de::Error::custom(
                "expected a duration: whole seconds (2) or a string like \"500ms\", \"2s\"",
            )
        };
        match Raw::deserialize(d).map_err(|_| err())? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(&t).map_err(|_| err()),
        }
    }
}

/// Key names (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    p: String,
}

impl Keys {
    pub(crate) fn session(&self, sid: &str) -> String {
        format!("{}s:{{{sid}}}", self.p)
    }
    pub(crate) fn user_index(&self, uid: &UserId) -> String {
        format!("{}u:{{{}}}:s", self.p, uid.as_str())
    }
    pub(crate) fn user_mark(&self, uid: &str) -> String {
        format!("{}u:{{{uid}}}:r", self.p)
    }
    pub(crate) fn user_tickets(&self, uid: &UserId) -> String {
        format!("{}u:{{{}}}:t", self.p, uid.as_str())
    }
    pub(crate) fn user_conns(&self, uid: &UserId) -> String {
        format!("{}u:{{{}}}:c", self.p, uid.as_str())
    }
    pub(crate) fn user_rate(&self, uid: &UserId, rule: &str) -> String {
        format!("{}u:{{{}}}:g:{rule}", self.p, uid.as_str())
    }
    pub(crate) fn ticket(&self, hash_hex: &str) -> String {
        format!("{}t:{{{hash_hex}}}", self.p)
    }
    pub(crate) fn stream(&self) -> String {
        format!("{}{{rev}}:stream", self.p)
    }
    pub(crate) fn seq(&self) -> String {
        format!("{}{{rev}}:seq", self.p)
    }
    pub(crate) fn ledger(&self) -> String {
        format!("{}purge", self.p)
    }
    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes", self.p)
    }
    /// The key a ledger member stands for.
    fn ledger_key(&self, member: &str) -> Option<String> {
        if let Some(sid) = member.strip_prefix("s:") {
            Some(self.session(sid))
        } else {
            member.strip_prefix("r:").map(|uid| self.user_mark(uid))
        }
    }
}

/// Creates a session unless its id exists (live or tombstoned). KEYS: session. ARGV: uid,
/// data, created, last_active, expires_at. Returns 1 if created.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'd', ARGV[2], 'c', ARGV[3], 'a', ARGV[4], 'e', ARGV[5])
redis.call('EXPIREAT', KEYS[1], ARGV[5])
return 1
";

/// Adds a session id to its user's index, forgetting entries that expired before it was
/// created, and keeps the index until its latest entry expires. KEYS: index. ARGV: sid,
/// expires_at, created.
const INDEX_ADD: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local cur = redis.call('EXPIRETIME', KEYS[1])
if cur < tonumber(ARGV[2]) then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return 1
";

/// `last_active = max(stored, ARGV[1])` if the session is live. KEYS: session. Returns 1 if
/// live.
const TOUCH: &str = r"
local a = redis.call('HGET', KEYS[1], 'a')
if not a then return 0 end
if tonumber(ARGV[1]) > tonumber(a) then redis.call('HSET', KEYS[1], 'a', ARGV[1]) end
return 1
";

/// Turns a session into a tombstone kept until max(ARGV[1], its expiry, an older keep).
/// With ARGV[2] (a uid) non-empty, only a live session of that user created at or before
/// ARGV[3] is ended. KEYS: session. Returns {ended (0/1), uid or nil, keep}.
const REVOKE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'u', 'c', 'e', 'k')
if ARGV[2] ~= '' then
  if (not f[1]) or f[1] ~= ARGV[2] or tonumber(f[2]) > tonumber(ARGV[3]) then
    return {0, false, 0}
  end
end
local keep = tonumber(ARGV[1])
if f[3] and tonumber(f[3]) > keep then keep = tonumber(f[3]) end
if f[4] and tonumber(f[4]) > keep then keep = tonumber(f[4]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'r', '1', 'k', string.format('%d', keep))
redis.call('EXPIREAT', KEYS[1], string.format('%d', keep))
return {1, f[1] or false, keep}
";

/// Moves the user's revocation marker forward (never back) and returns the user's indexed
/// session ids. KEYS: marker, index (one user: same hash tag). ARGV: now, keep_until.
const MARK_USER: &str = r"
local f = redis.call('HMGET', KEYS[1], 'a', 'k')
local at, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
if f[1] and tonumber(f[1]) > at then at = tonumber(f[1]) end
if f[2] and tonumber(f[2]) > keep then keep = tonumber(f[2]) end
redis.call('HSET', KEYS[1], 'a', string.format('%d', at), 'k', string.format('%d', keep))
redis.call('EXPIREAT', KEYS[1], string.format('%d', keep))
return redis.call('ZRANGE', KEYS[2], 0, -1)
";

/// Deletes a session, tombstone or marker whose own expiry is at or before ARGV[1] (so one
/// whose expiry was extended meanwhile stays). KEYS: the key. Returns 1 if deleted.
const PURGE_ONE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'e', 'k')
if not (f[1] or f[2]) then return 0 end
local t = math.max(tonumber(f[1] or '0'), tonumber(f[2] or '0'))
if t <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) return 1 end
return 0
";

/// Appends an entry to the revocation stream with the next sequence number. KEYS: stream,
/// seq (same hash tag). ARGV: maxlen, kind (s/u/p), sid, uid, at, origin. Returns {seq, id}.
pub(crate) const ANNOUNCE: &str = r"
local n = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'n', n, 'k', ARGV[2], 's', ARGV[3], 'u', ARGV[4], 'a', ARGV[5], 'o', ARGV[6])
return {n, id}
";

/// The stream's position: {seq, last entry id}. KEYS: stream, seq.
pub(crate) const POSITION: &str = r"
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then return {n, last[1][1]} end
return {n, '0-0'}
";

/// The store's Lua scripts (hashed once; loaded on first use and again after `NOSCRIPT`).
pub(crate) struct Scripts {
    pub(crate) create: Script,
    pub(crate) index_add: Script,
    pub(crate) touch: Script,
    pub(crate) revoke: Script,
    pub(crate) mark_user: Script,
    pub(crate) purge_one: Script,
    pub(crate) announce: Script,
    pub(crate) position: Script,
    pub(crate) shared: crate::redis_shared::SharedScripts,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            create: Script::new(CREATE),
            index_add: Script::new(INDEX_ADD),
            touch: Script::new(TOUCH),
            revoke: Script::new(REVOKE),
            mark_user: Script::new(MARK_USER),
            purge_one: Script::new(PURGE_ONE),
            announce: Script::new(ANNOUNCE),
            position: Script::new(POSITION),
            shared: crate::redis_shared::SharedScripts::new(),
        }
    }

    /// The source of every script, for `SCRIPT LOAD`.
    fn sources() -> impl Iterator<Item = &'static str> {
        [
            CREATE, INDEX_ADD, TOUCH, REVOKE, MARK_USER, PURGE_ONE, ANNOUNCE, POSITION,
        ]
        .into_iter()
        .chain(crate::redis_shared::SOURCES.iter().copied())
    }
}

/// An `EVALSHA` command without its arguments (see [`script_cmd!`]).
pub(crate) fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

/// `script_cmd!(script, [key, ...], arg, ...)`: an `EVALSHA` command for [`RedisStore::eval`]
/// or a pipeline (see [`RedisStore::pipe`] for `NOSCRIPT`).
macro_rules! script_cmd {
    ($script:expr, [$($key:expr),* $(,)?] $(, $arg:expr)* $(,)?) => {{
        #[allow(unused_mut)]
        let mut cmd = $crate::redis_store::evalsha($script, &[$(AsRef::<str>::as_ref(&$key)),*]);
        $(cmd.arg($arg);)*
        cmd
    }};
}
pub(crate) use script_cmd;

/// A session store in Redis, shared by every gateway node and the CLI. Cheap to clone (one
/// connection, one revocation feed per [`RedisStore::connect`]).
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) conn: ConnectionManager,
    pub(crate) client: redis::Client,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    pub(crate) config: RedisConfig,
    pub(crate) events: broadcast::Sender<Revocation>,
    /// Events sent to subscribers so far: this node's revocations, other nodes' read from the
    /// stream, and resynchronisations (see [`SessionStore::revocations_announced`]).
    pub(crate) announced: AtomicU64,
    /// Identifies this instance's entries in the stream.
    pub(crate) origin: String,
    pub(crate) feed: Mutex<FeedState>,
}

impl Inner {
    /// Counts, then sends, an event to this process's subscribers.
    pub(crate) fn broadcast(&self, event: Revocation) {
        self.announced.fetch_add(1, Ordering::SeqCst);
        let _ = self.events.send(event);
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redact_url(&self.inner.config.url))
            .field("key_prefix", &self.inner.keys.p)
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

/// What [`RedisStore::server_info`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisServerInfo {
    /// `redis_version` from `INFO server`.
    pub version: String,
    /// The round trip of that command.
    pub round_trip: Duration,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("redis: {what}"))
}

impl RedisStore {
    /// Connects (bounded by `connect_timeout`), reads where the revocation stream stands (only
    /// revocations announced from now on are delivered) and starts following it. Needs a Tokio
    /// runtime. Fails if the configuration is invalid or Redis cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<RedisStore, StoreError> {
        let (client, manager_config) = prepare(&config)?;
        let conn = tokio::time::timeout(
            config.connect_timeout,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| {
            StoreError::Backend(format!(
                "redis: cannot connect to {} within {:?}",
                config.redacted_url(),
                config.connect_timeout
            ))
        })?
        .map_err(|e| {
            StoreError::Backend(format!(
                "redis: cannot connect to {}: {}",
                config.redacted_url(),
                redact(&e.to_string(), &config.url)
            ))
        })?;
        let store = Self::assemble(conn, client, config);
        let position = store.position().await?;
        redis_feed::start(&store, Some(position));
        Ok(store)
    }

    /// Like [`RedisStore::connect`], without waiting for Redis: only an invalid configuration
    /// fails. Until Redis answers, every operation fails with [`StoreError::Backend`] (within
    /// `command_timeout`) and [`SessionStore::feed_health`] is not connected; a node can start
    /// not ready and become ready when Redis comes. When the feed first reads where the stream
    /// stands it sends [`Revocation::Resync`]: a session authenticated before that could have
    /// been revoked unseen. Needs a Tokio runtime.
    pub fn connect_lazy(config: RedisConfig) -> Result<RedisStore, StoreError> {
        let (client, manager_config) = prepare(&config)?;
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| {
                StoreError::Backend(format!(
                    "redis configuration: {}",
                    redact(&e.to_string(), &config.url)
                ))
            })?;
        let store = Self::assemble(conn, client, config);
        redis_feed::start(&store, None);
        Ok(store)
    }

    fn assemble(conn: ConnectionManager, client: redis::Client, config: RedisConfig) -> Self {
        let (events, _) = broadcast::channel(REVOCATION_CHANNEL_CAPACITY);
        RedisStore {
            inner: Arc::new(Inner {
                conn,
                client,
                keys: Keys {
                    p: config.key_prefix.clone(),
                },
                scripts: Scripts::new(),
                config,
                events,
                announced: AtomicU64::new(0),
                origin: SessionId::generate().as_str().to_owned(),
                feed: Mutex::new(FeedState::default()),
            }),
        }
    }

    /// The configuration in force (its `Debug` is redacted).
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// This instance's id in the revocation stream (random per [`RedisStore::connect`]).
    pub fn instance_id(&self) -> &str {
        &self.inner.origin
    }

    /// Asks the server its version (`INFO server`), e.g. for `check-config` and `/readyz`.
    pub async fn server_info(&self) -> Result<RedisServerInfo, StoreError> {
        let started = std::time::Instant::now();
        let info: String = self.query(redis::cmd("INFO").arg("server")).await?;
        let round_trip = started.elapsed();
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| corrupt("INFO server has no redis_version"))?;
        Ok(RedisServerInfo {
            version,
            round_trip,
        })
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn scripts(&self) -> &Scripts {
        &self.inner.scripts
    }

    /// Bounds `fut` by `command_timeout`.
    pub(crate) async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.inner.config.command_timeout, fut).await {
            Ok(r) => r.map_err(|e| StoreError::Backend(redact_error(&e, &self.inner.config.url))),
            Err(_) => Err(StoreError::Backend(format!(
                "redis: no answer within command_timeout ({:?})",
                self.inner.config.command_timeout
            ))),
        }
    }

    /// One command, bounded.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.clone();
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// One script call built with [`evalsha`], bounded (loaded into the server when it does
    /// not know it).
    pub(crate) async fn eval<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        let (value,): (T,) = self.pipe(&pipe).await?;
        Ok(value)
    }

    /// A pipeline, bounded: one round trip. If the server lost the scripts (restarted,
    /// `SCRIPT FLUSH`), they are loaded and the pipeline is sent once more; pipelines are built
    /// so that running their commands twice is harmless.
    pub(crate) async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.clone();
        let first = tokio::time::timeout(
            self.inner.config.command_timeout,
            pipe.query_async::<T>(&mut conn),
        )
        .await;
        match first {
            Ok(Err(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.load_scripts().await?;
                self.bounded(pipe.query_async::<T>(&mut conn)).await
            }
            Ok(r) => r.map_err(|e| StoreError::Backend(redact_error(&e, &self.inner.config.url))),
            Err(_) => Err(StoreError::Backend(format!(
                "redis: no answer within command_timeout ({:?})",
                self.inner.config.command_timeout
            ))),
        }
    }

    async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for source in Scripts::sources() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source);
        }
        let _: Vec<String> = {
            let mut conn = self.inner.conn.clone();
            self.bounded(pipe.query_async(&mut conn)).await?
        };
        Ok(())
    }

    /// Where the revocation stream stands (sequence, last id).
    pub(crate) async fn position(&self) -> Result<(u64, String), StoreError> {
        let k = self.keys();
        self.eval(script_cmd!(&self.scripts().position, [k.stream(), k.seq()]))
            .await
    }

    /// Appends an entry to the revocation stream.
    pub(crate) async fn append(
        &self,
        kind: &str,
        sid: &str,
        uid: &str,
        at: u64,
    ) -> Result<(u64, String), StoreError> {
        let k = self.keys();
        let maxlen = self.inner.config.stream_max_len;
        self.eval(script_cmd!(
            &self.scripts().announce,
            [k.stream(), k.seq()],
            maxlen,
            kind,
            sid,
            uid,
            at,
            self.inner.origin.as_str()
        ))
        .await
    }

    /// Sends a revocation to this process's subscribers, then announces it to the other nodes,
    /// with `bookkeeping` (idempotent commands) in the same round trip after the announcement.
    /// The revocation is already durable; if the announcement fails, the caller is told (and
    /// can revoke again: revocations are idempotent), since other nodes would otherwise keep
    /// their sockets until they re-check.
    async fn announce(&self, event: Revocation, bookkeeping: Pipeline) -> Result<(), StoreError> {
        let (kind, sid, uid, at) = match &event {
            Revocation::Session { sid, uid } => (
                "s",
                sid.as_str().to_owned(),
                uid.as_ref()
                    .map(|u| u.as_str().to_owned())
                    .unwrap_or_default(),
                0,
            ),
            Revocation::User { uid, at } => ("u", String::new(), uid.as_str().to_owned(), *at),
            Revocation::Resync => return Ok(()),
        };
        self.inner.broadcast(event);
        let k = self.keys();
        let mut pipe = redis::pipe();
        pipe.add_command(script_cmd!(
            &self.scripts().announce,
            [k.stream(), k.seq()],
            self.inner.config.stream_max_len,
            kind,
            sid,
            uid,
            at,
            self.inner.origin.as_str()
        ))
        .ignore();
        for cmd in bookkeeping.cmd_iter() {
            pipe.add_command(cmd.clone()).ignore();
        }
        let announced: Result<(), StoreError> = self.pipe(&pipe).await;
        announced.map_err(|e| {
            StoreError::Backend(format!(
                "revocation recorded, but not announced to the other nodes: {e}"
            ))
        })
    }

    async fn revoke_sids(
        &self,
        sids: &[String],
        uid: &UserId,
        now: u64,
        keep_until: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sid in sids {
            pipe.add_command(script_cmd!(
                &self.scripts().revoke,
                [self.keys().session(sid)],
                keep_until,
                uid.as_str(),
                now
            ));
        }
        let replies: Vec<(u8, Option<String>, u64)> = self.pipe(&pipe).await?;
        Ok(sids
            .iter()
            .zip(replies)
            .filter(|(_, (ended, _, _))| *ended == 1)
            .map(|(sid, (_, _, keep))| (sid.clone(), keep))
            .collect())
    }
}

/// The client and the connection manager's settings for a valid configuration.
fn prepare(config: &RedisConfig) -> Result<(redis::Client, ConnectionManagerConfig), StoreError> {
    if let Some(problem) = config.problems().into_iter().next() {
        return Err(StoreError::Backend(format!(
            "redis configuration: {problem}"
        )));
    }
    let client = build_client(config)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    Ok((client, manager_config))
}

/// A Redis error's text without the URL (which may hold a password).
fn redact_error(e: &RedisError, url: &str) -> String {
    format!("redis: {}", redact(&e.to_string(), url))
}

fn build_client(config: &RedisConfig) -> Result<redis::Client, StoreError> {
    use redis::IntoConnectionInfo;
    let bad = |e: RedisError| {
        StoreError::Backend(format!(
            "redis configuration: url: {}",
            redact(&e.to_string(), &config.url)
        ))
    };
    let mut info = config.url.as_str().into_connection_info().map_err(bad)?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    if config.url.starts_with("rediss://") {
        // rustls needs a process-wide crypto provider; ring is the one the workspace builds.
        // Already installed (by us or the gateway) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    match &config.tls_ca_file {
        Some(path) if config.url.starts_with("rediss://") => {
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Backend(format!(
                    "redis configuration: tls_ca_file: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(bad)
        }
        _ => redis::Client::open(info).map_err(bad),
    }
}

fn clamp(t: u64) -> u64 {
    t.min(MAX_TS)
}

/// The fields a lookup reads, in the order [`decode_session`] expects them.
const SESSION_FIELDS: [&str; 6] = ["r", "u", "d", "c", "a", "e"];

/// `HMGET` of [`SESSION_FIELDS`].
fn read_session(key: String) -> Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key).arg(&SESSION_FIELDS[..]);
    cmd
}

/// A lookup from the values of [`SESSION_FIELDS`] (all absent: no such key).
fn decode_session(sid: &SessionId, fields: Vec<Option<String>>) -> Result<Lookup, StoreError> {
    let [r, u, d, c, a, e]: [Option<String>; 6] = fields
        .try_into()
        .map_err(|_| corrupt("HMGET answered the wrong number of fields"))?;
    if r.is_some() {
        return Ok(Lookup::Revoked);
    }
    let (Some(uid), Some(data)) = (u, d) else {
        if [&c, &a, &e].iter().all(|f| f.is_none()) {
            return Ok(Lookup::Unknown);
        }
        return Err(corrupt("session without uid or data"));
    };
    let num = |name: &str, v: Option<String>| -> Result<u64, StoreError> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt(&format!("session field {name} missing or not a number")))
    };
    Ok(Lookup::Live(SessionRecord {
        sid: sid.clone(),
        uid: UserId::parse(&uid).map_err(|e| StoreError::Corrupt(format!("uid: {e}")))?,
        data: SessionData::parse(&data).map_err(|e| StoreError::Corrupt(format!("data: {e}")))?,
        created: num("c", c)?,
        last_active: num("a", a)?,
        expires_at: num("e", e)?,
    }))
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let k = self.keys();
        let sid = record.sid.as_str();
        let expires_at = clamp(record.expires_at);
        let mut pipe = redis::pipe();
        // The index first: an index entry without a record is ignored, a record missing from
        // its index would escape revoke_user.
        pipe.add_command(script_cmd!(
            &self.scripts().index_add,
            [k.user_index(&record.uid)],
            sid,
            expires_at,
            record.created
        ))
        .ignore();
        pipe.cmd("ZADD")
            .arg(k.ledger())
            .arg("GT")
            .arg(expires_at)
            .arg(format!("s:{sid}"))
            .ignore();
        pipe.add_command(script_cmd!(
            &self.scripts().create,
            [k.session(sid)],
            record.uid.as_str(),
            record.data.as_json(),
            record.created,
            record.last_active,
            expires_at
        ));
        let (created,): (u8,) = self.pipe(&pipe).await?;
        if created == 1 {
            Ok(())
        } else {
            Err(StoreError::Duplicate)
        }
    }

    async fn get(&self, sid: &SessionId) -> Result<Lookup, StoreError> {
        let fields = self
            .query(&read_session(self.keys().session(sid.as_str())))
            .await?;
        decode_session(sid, fields)
    }

    async fn get_with_user_mark(
        &self,
        sid: &SessionId,
        uid: &UserId,
    ) -> Result<(Lookup, Option<u64>), StoreError> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        pipe.add_command(read_session(k.session(sid.as_str())));
        pipe.cmd("HGET").arg(k.user_mark(uid.as_str())).arg("a");
        let (fields, at): (Vec<Option<String>>, Option<u64>) = self.pipe(&pipe).await?;
        Ok((decode_session(sid, fields)?, at))
    }

    async fn touch(&self, sid: &SessionId, last_active: u64) -> Result<bool, StoreError> {
        let live: u8 = self
            .eval(script_cmd!(
                &self.scripts().touch,
                [self.keys().session(sid.as_str())],
                last_active
            ))
            .await?;
        Ok(live == 1)
    }

    async fn revoke_session(
        &self,
        sid: &SessionId,
        keep_until: u64,
    ) -> Result<Option<UserId>, StoreError> {
        let k = self.keys();
        let (_, uid, keep): (u8, Option<String>, u64) = self
            .eval(script_cmd!(
                &self.scripts().revoke,
                [k.session(sid.as_str())],
                clamp(keep_until),
                "",
                0u64
            ))
            .await?;
        let uid = uid
            .map(|u| UserId::parse(&u).map_err(|e| StoreError::Corrupt(format!("uid: {e}"))))
            .transpose()?;
        // Bookkeeping, sent after the announcement in its round trip (not needed for
        // correctness): the ledger, the user's index.
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(k.ledger())
            .arg("GT")
            .arg(keep)
            .arg(format!("s:{}", sid.as_str()))
            .ignore();
        if let Some(uid) = &uid {
            pipe.cmd("ZREM")
                .arg(k.user_index(uid))
                .arg(sid.as_str())
                .ignore();
        }
        self.announce(
            Revocation::Session {
                sid: sid.clone(),
                uid: uid.clone(),
            },
            pipe,
        )
        .await?;
        Ok(uid)
    }

    async fn revoke_user(
        &self,
        uid: &UserId,
        now: u64,
        keep_until: u64,
    ) -> Result<usize, StoreError> {
        let k = self.keys();
        let keep_until = clamp(keep_until);
        // 1. The marker (stateless tokens end here) and the user's session ids.
        let sids: Vec<String> = self
            .eval(script_cmd!(
                &self.scripts().mark_user,
                [k.user_mark(uid.as_str()), k.user_index(uid)],
                now,
                keep_until
            ))
            .await?;
        // 2. Every stored session of the user created at or before `now` becomes a tombstone.
        let ended = self.revoke_sids(&sids, uid, now, keep_until).await?;
        // 3. The announcement, and bookkeeping in the same round trip.
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(k.ledger())
            .arg("GT")
            .arg(keep_until)
            .arg(format!("r:{}", uid.as_str()))
            .ignore();
        for (sid, keep) in &ended {
            pipe.cmd("ZADD")
                .arg(k.ledger())
                .arg("GT")
                .arg(*keep)
                .arg(format!("s:{sid}"))
                .ignore();
        }
        if !ended.is_empty() {
            pipe.cmd("ZREM")
                .arg(k.user_index(uid))
                .arg(ended.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>())
                .ignore();
        }
        self.announce(
            Revocation::User {
                uid: uid.clone(),
                at: now,
            },
            pipe,
        )
        .await?;
        Ok(ended.len())
    }

    async fn user_revoked_at(&self, uid: &UserId) -> Result<Option<u64>, StoreError> {
        self.query(
            redis::cmd("HGET")
                .arg(self.keys().user_mark(uid.as_str()))
                .arg("a"),
        )
        .await
    }

    async fn list_user(&self, uid: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let k = self.keys();
        let sids: Vec<String> = self
            .query(redis::cmd("ZRANGE").arg(k.user_index(uid)).arg(0).arg(-1))
            .await?;
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sid in &sids {
            pipe.add_command(read_session(k.session(sid)));
        }
        let values: Vec<Vec<Option<String>>> = self.pipe(&pipe).await?;
        let mut out = Vec::new();
        for (sid, value) in sids.iter().zip(values) {
            let Ok(sid) = SessionId::parse(sid) else {
                return Err(corrupt("a user index holds an invalid session id"));
            };
            if let Lookup::Live(record) = decode_session(&sid, value)?
                && &record.uid == uid
            {
                out.push(record);
            }
        }
        out.sort_by(|a, b| (a.created, &a.sid).cmp(&(b.created, &b.sid)));
        Ok(out)
    }

    /// Redis forgets expired keys by itself (`EXPIREAT`, by its own clock); this deletes those
    /// already expired by the caller's `now` (clocks may differ) and trims the purge ledger.
    /// Returns how many sessions, tombstones and markers had expired by `now`, whether Redis
    /// or this call removed them. Cost: one round trip per 1,000 expired entries, plus one.
    /// Call it periodically (the gateway's housekeeping does): the ledger keeps one entry per
    /// session, tombstone and marker until then.
    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        let k = self.keys();
        let mut total = 0;
        loop {
            let members: Vec<String> = self
                .query(
                    redis::cmd("ZRANGE")
                        .arg(k.ledger())
                        .arg("-inf")
                        .arg(now)
                        .arg("BYSCORE")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(PURGE_BATCH),
                )
                .await?;
            if members.is_empty() {
                return Ok(total);
            }
            let mut pipe = redis::pipe();
            for member in &members {
                if let Some(key) = k.ledger_key(member) {
                    pipe.add_command(script_cmd!(&self.scripts().purge_one, [key], now))
                        .ignore();
                }
            }
            pipe.cmd("ZREM").arg(k.ledger()).arg(&members);
            let (removed,): (usize,) = self.pipe(&pipe).await?;
            total += removed;
            if members.len() < usize::try_from(PURGE_BATCH).unwrap_or(usize::MAX) {
                return Ok(total);
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.inner.events.subscribe()
    }

    fn revocations_announced(&self) -> Option<u64> {
        Some(self.inner.announced.load(Ordering::SeqCst))
    }

    fn feed_health(&self) -> Option<FeedHealth> {
        Some(redis_feed::health(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://user:<redacted>@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:secret@host"),
            "rediss://:<redacted>@host"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        let mut c = RedisConfig::new("redis://u:hunter2@h/0");
        c.password = Some(RedisPassword::new("hunter3"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
    }

    #[test]
    fn configuration_problems_name_the_field() {
        let mut c = RedisConfig::new("http://x");
        c.key_prefix = "a{b".into();
        c.command_timeout = Duration::ZERO;
        let p = c.problems();
        assert!(p.iter().any(|m| m.starts_with("url:")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("key_prefix:")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("command_timeout:")), "{p:?}");
        assert!(RedisConfig::default().problems().is_empty());
    }

    #[test]
    fn the_configuration_deserializes_with_defaults_and_refuses_unknown_keys() {
        let c: RedisConfig = toml::from_str(
            "url = \"rediss://cache:6380/1\"\nusername = \"gw\"\nkey_prefix = \"prod:\"\n\
             command_timeout = \"250ms\"\nconnect_timeout = 3\nprobe_interval = \"2s\"\n\
             stream_max_len = 5000\n",
        )
        .unwrap();
        assert_eq!(c.url, "rediss://cache:6380/1");
        assert_eq!(c.username.as_deref(), Some("gw"));
        assert_eq!(c.command_timeout, Duration::from_millis(250));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.probe_interval, Duration::from_secs(2));
        assert_eq!(c.stream_max_len, 5000);
        assert!(c.password.is_none());
        let d: RedisConfig = toml::from_str("").unwrap();
        assert_eq!(d.key_prefix, "wsguard:");
        assert!(d.problems().is_empty());
        // The password is never read from the configuration itself.
        assert!(toml::from_str::<RedisConfig>("password = \"x\"").is_err());
        assert!(toml::from_str::<RedisConfig>("urll = \"x\"").is_err());
        assert!(toml::from_str::<RedisConfig>("command_timeout = \"soon\"").is_err());
    }

    #[test]
    fn ledger_members_map_back_to_keys() {
        let k = Keys { p: "w:".into() };
        assert_eq!(k.ledger_key("s:abc").as_deref(), Some("w:s:{abc}"));
        assert_eq!(k.ledger_key("r:bob").as_deref(), Some("w:u:{bob}:r"));
        assert_eq!(k.ledger_key("x"), None);
    }
}
