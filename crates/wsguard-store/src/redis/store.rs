//! The Redis store's handle and its one way to talk to Redis.
//!
//! Owns [`RedisStore`] (cheap to clone: one connection with automatic reconnection, one
//! revocation feed), what it holds, and how a command reaches Redis: every command and pipeline
//! bounded by `command_timeout`, the scripts loaded again when the server lost them
//! (`NOSCRIPT`), and errors redacted of the URL. The operations are in the files above it:
//! `sessions.rs` (the [`SessionStore`](crate::SessionStore) implementation), `feed.rs` (the revocation stream), `shared.rs` (tickets,
//! connection counts, rates, nodes), `connect.rs` (making one). It must not decide anything and
//! never reads the clock for a decision.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError};
use wsguard_token::SessionId;

use super::config::{RedisConfig, redact_error};
use super::keys::Keys;
use super::scripts::{SOURCES, Scripts};
use crate::events::Announcer;
use crate::store::{FeedHealth, StoreError};

/// A session store in Redis, shared by every gateway node and the CLI. Cheap to clone (one
/// connection, one revocation feed per [`RedisStore::connect`]).
#[derive(Clone)]
pub struct RedisStore {
    pub(super) inner: Arc<Inner>,
}

/// What a store and its clones share.
pub(super) struct Inner {
    pub(super) conn: ConnectionManager,
    pub(super) client: redis::Client,
    pub(super) keys: Keys,
    pub(super) scripts: Scripts,
    pub(super) config: RedisConfig,
    /// Events sent to subscribers: this node's revocations, other nodes' read from the stream,
    /// and resynchronisations, counted (see [`SessionStore::revocations_announced`](crate::SessionStore::revocations_announced)).
    pub(super) events: Announcer,
    /// Identifies this instance's entries in the stream.
    pub(super) origin: String,
    /// The revocation feed's health, updated by its follower (`feed.rs`).
    pub(super) feed: Mutex<FeedHealth>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.config.redacted_url())
            .field("key_prefix", &self.inner.keys.prefix())
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

/// A reply Redis should not have sent (a corrupt record, a missing field).
pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("redis: {what}"))
}

impl RedisStore {
    /// A store on this connection; nothing is sent yet (see `connect.rs`).
    pub(super) fn assemble(
        conn: ConnectionManager,
        client: redis::Client,
        config: RedisConfig,
    ) -> Self {
        RedisStore {
            inner: Arc::new(Inner {
                conn,
                client,
                keys: Keys::new(&config.key_prefix),
                scripts: Scripts::new(),
                config,
                events: Announcer::new(),
                origin: SessionId::generate().as_str().to_owned(),
                feed: Mutex::new(FeedHealth {
                    connected: false,
                    last_verified: None,
                    last_read: None,
                    resyncs: 0,
                }),
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

    pub(super) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(super) fn scripts(&self) -> &Scripts {
        &self.inner.scripts
    }

    /// Bounds `fut` by `command_timeout`.
    pub(super) async fn bounded<T>(
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
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.clone();
        self.bounded(cmd.query_async(&mut conn)).await
    }

    /// One script call built with [`script_cmd!`](super::scripts::script_cmd), bounded (loaded into the server when it does
    /// not know it).
    pub(super) async fn eval<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        let (value,): (T,) = self.pipe(&pipe).await?;
        Ok(value)
    }

    /// A pipeline, bounded: one round trip. If the server lost the scripts (restarted,
    /// `SCRIPT FLUSH`), they are loaded and the pipeline is sent once more; pipelines are built
    /// so that running their commands twice is harmless.
    pub(super) async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
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
        for source in SOURCES {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source);
        }
        let _: Vec<String> = {
            let mut conn = self.inner.conn.clone();
            self.bounded(pipe.query_async(&mut conn)).await?
        };
        Ok(())
    }
}
