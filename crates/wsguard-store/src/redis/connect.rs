//! Making a [`RedisStore`]: connecting, and starting its revocation feed.
//!
//! Owns [`RedisStore::connect`] (Redis must answer; only revocations announced from then on are
//! delivered) and [`RedisStore::connect_lazy`] (a node can start while Redis is down). This is
//! the one place that starts the feed, so it sits above `store.rs` and `feed.rs`. It must not
//! send anything but what finds the stream's position.

use redis::aio::ConnectionManager;

use super::config::{RedisConfig, prepare, redact};
use super::feed;
use super::store::RedisStore;
use crate::store::StoreError;

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
        feed::start(&store, Some(position));
        Ok(store)
    }

    /// Like [`RedisStore::connect`], without waiting for Redis: only an invalid configuration
    /// fails. Until Redis answers, every operation fails with [`StoreError::Backend`] (within
    /// `command_timeout`) and [`SessionStore::feed_health`](crate::SessionStore::feed_health) is not connected; a node can start
    /// not ready and become ready when Redis comes. When the feed first reads where the stream
    /// stands it sends [`Revocation::Resync`](crate::Revocation::Resync): a session authenticated before that could have
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
        feed::start(&store, None);
        Ok(store)
    }
}
