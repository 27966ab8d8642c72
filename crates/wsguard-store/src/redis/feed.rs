//! The Redis revocation feed: how a node's revocations reach the other nodes' subscribers.
//!
//! Owns both ends of the revocation stream: announcing (`RedisStore::announce`, and the probes'
//! `append`), where the stream stands (`position`), and the follower task of a [`RedisStore`]
//! with its health. A revocation is first written durably (tombstone, user marker), then
//! announced: `XADD` to the stream `P {rev}:stream` (`MAXLEN ~ stream_max_len`) by a script that
//! numbers entries from `P {rev}:seq`. Each store
//! instance follows the stream on a connection of its own with a blocking `XREAD` from the
//! last id it read, so every entry arrives once, in order, and after a reconnect it resumes
//! where it stopped. The sequence numbers tell what `XREAD` cannot:
//! - a number that skips ahead: entries after our position were trimmed away;
//! - a number that goes back (or a stream behind us on reconnect): the stream was reset
//!   (Redis flushed, or restarted without its data);
//!
//! and either sends [`Revocation::Resync`] to subscribers (re-check every live socket) before
//! the events that follow. This node's own entries are skipped: they were sent to its
//! subscribers when made.
//!
//! Pub/sub is not used: a blocked `XREAD` is woken by the `XADD` itself, in the same turn of
//! the server's event loop that would deliver a `PUBLISH`, so it would add a second path to
//! de-duplicate and no speed (see BENCHMARKS.md, "Redis store").
//!
//! A silent feed (a half-open connection, a stuck proxy) is caught by probes: every
//! `probe_interval` the follower appends a probe entry through the store's command connection
//! and must read it back within `command_timeout` (the blocking read itself is bounded by
//! `probe_interval + command_timeout`); otherwise it reconnects, with backoff. Health
//! ([`FeedHealth`]) records the last verified probe, so the gateway can stop trusting a feed
//! that has been quiet too long. The task holds the store weakly and ends when it is dropped.
//! It must not decide anything about sessions.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::{AsyncConnectionConfig, Pipeline};
use wsguard_token::{SessionId, UserId};

use super::scripts::script_cmd;
use super::store::{Inner, RedisStore};
use crate::store::{FeedHealth, Revocation, StoreError};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Entries read per `XREAD`.
const READ_COUNT: usize = 512;

/// The feed's health, as the follower last updated it.
pub(super) fn health(store: &RedisStore) -> FeedHealth {
    *store
        .inner
        .feed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn update(inner: &Inner, f: impl FnOnce(&mut FeedHealth)) {
    let mut state = inner
        .feed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut state);
}

/// Tells subscribers to re-check everything (counted, like every event sent).
fn resync(inner: &Inner, why: &str) {
    tracing::warn!(
        reason = why,
        "revocation feed lost its place; subscribers re-check every session"
    );
    update(inner, |s| s.resyncs += 1);
    inner.events.announce(Revocation::Resync);
}

impl RedisStore {
    /// Where the revocation stream stands (sequence, last id).
    pub(super) async fn position(&self) -> Result<(u64, String), StoreError> {
        let k = self.keys();
        self.eval(script_cmd!(&self.scripts().position, [k.stream(), k.seq()]))
            .await
    }

    /// Appends an entry to the revocation stream.
    pub(super) async fn append(
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
    pub(super) async fn announce(
        &self,
        event: Revocation,
        bookkeeping: Pipeline,
    ) -> Result<(), StoreError> {
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
        self.inner.events.announce(event);
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
}

/// Starts following the stream after `position` (sequence, entry id); without one, from where
/// the stream stands when the feed first connects, with a [`Revocation::Resync`] then.
pub(super) fn start(store: &RedisStore, position: Option<(u64, String)>) {
    let weak = Arc::downgrade(&store.inner);
    tokio::spawn(follow(weak, position));
}

fn upgrade(weak: &Weak<Inner>) -> Option<RedisStore> {
    weak.upgrade().map(|inner| RedisStore { inner })
}

/// One entry of the stream.
struct Entry {
    id: String,
    seq: u64,
    kind: String,
    sid: String,
    uid: String,
    at: u64,
    origin: String,
}

type RawReply = Option<
    Vec<(
        String,
        Vec<(String, std::collections::HashMap<String, String>)>,
    )>,
>;

fn entries(reply: RawReply) -> Vec<Entry> {
    let mut out = Vec::new();
    for (_, ids) in reply.unwrap_or_default() {
        for (id, mut f) in ids {
            let mut take = |k: &str| f.remove(k).unwrap_or_default();
            out.push(Entry {
                seq: take("n").parse().unwrap_or(0),
                kind: take("k"),
                sid: take("s"),
                uid: take("u"),
                at: take("a").parse().unwrap_or(0),
                origin: take("o"),
                id,
            });
        }
    }
    out
}

/// The event an entry announces, if it is a readable revocation.
fn event(entry: &Entry) -> Option<Revocation> {
    match entry.kind.as_str() {
        "s" => Some(Revocation::Session {
            sid: SessionId::parse(&entry.sid).ok()?,
            uid: if entry.uid.is_empty() {
                None
            } else {
                Some(UserId::parse(&entry.uid).ok()?)
            },
        }),
        "u" => Some(Revocation::User {
            uid: UserId::parse(&entry.uid).ok()?,
            at: entry.at,
        }),
        _ => None,
    }
}

async fn follow(weak: Weak<Inner>, start: Option<(u64, String)>) {
    let mut backoff = MIN_BACKOFF;
    let mut known = start.is_some();
    let (mut seq, mut last_id) = start.unwrap_or_default();
    loop {
        let Some(store) = upgrade(&weak) else { return };
        let config = store.inner.config.clone();
        let block = config.probe_interval;
        let read_bound = block + config.command_timeout;
        let client = store.inner.client.clone();
        let stream = store.keys().stream();
        let origin = store.inner.origin.clone();
        drop(store);

        // Connect, then find out whether the stream was reset while we were away.
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(read_bound));
        let conn = tokio::time::timeout(
            config.connect_timeout,
            client.get_multiplexed_async_connection_with_config(&conn_config),
        )
        .await;
        let mut conn = match conn {
            Ok(Ok(conn)) => conn,
            _ => {
                tracing::debug!("revocation feed cannot connect; retrying");
                backoff = pause(&weak, backoff).await;
                continue;
            }
        };
        let Some(store) = upgrade(&weak) else { return };
        match store.position().await {
            Ok((now_seq, now_id)) if !known => {
                resync(&store.inner, "first position read after a lazy start");
                (seq, last_id) = (now_seq, now_id);
                known = true;
            }
            Ok((now_seq, now_id)) => {
                if now_seq < seq {
                    resync(&store.inner, "stream reset");
                    (seq, last_id) = (now_seq, now_id);
                }
            }
            Err(_) => {
                drop(store);
                backoff = pause(&weak, backoff).await;
                continue;
            }
        }
        update(&store.inner, |s| s.connected = true);
        drop(store);
        backoff = MIN_BACKOFF;

        let mut probe: Option<(u64, Instant)> = None;
        let mut next_probe = Instant::now();
        loop {
            let Some(store) = upgrade(&weak) else { return };
            if probe.is_none() && Instant::now() >= next_probe {
                match store.append("p", "", "", 0).await {
                    Ok((n, _)) => probe = Some((n, Instant::now())),
                    Err(e) => {
                        tracing::warn!(error = %e, "revocation feed probe cannot be written");
                        break;
                    }
                }
                next_probe = Instant::now() + config.probe_interval;
            }
            drop(store);
            let read = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX))
                .arg("STREAMS")
                .arg(&stream)
                .arg(&last_id)
                .to_owned();
            let reply =
                tokio::time::timeout(read_bound, read.query_async::<RawReply>(&mut conn)).await;
            let Some(store) = upgrade(&weak) else { return };
            let reply = match reply {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "revocation feed read failed; reconnecting");
                    break;
                }
                Err(_) => {
                    tracing::warn!("revocation feed read got no answer; reconnecting");
                    break;
                }
            };
            let now = Instant::now();
            update(&store.inner, |s| s.last_read = Some(now));
            let mut lost = false;
            for entry in entries(reply) {
                if entry.seq != seq + 1 && !lost {
                    resync(
                        &store.inner,
                        if entry.seq > seq {
                            "entries trimmed away"
                        } else {
                            "stream reset"
                        },
                    );
                    lost = true;
                }
                seq = entry.seq;
                last_id = entry.id.clone();
                if entry.origin == origin {
                    continue;
                }
                match event(&entry) {
                    Some(event) => store.inner.events.announce(event),
                    None if entry.kind == "p" => {}
                    None => tracing::warn!(seq, "skipping an unreadable revocation entry"),
                }
            }
            if let Some((probe_seq, sent)) = probe {
                if seq >= probe_seq {
                    probe = None;
                    update(&store.inner, |s| s.last_verified = Some(now));
                } else if now.duration_since(sent) > read_bound {
                    tracing::warn!("revocation feed probe did not come back; reconnecting");
                    break;
                }
            }
        }
        if let Some(store) = upgrade(&weak) {
            update(&store.inner, |s| s.connected = false);
        }
        backoff = pause(&weak, backoff).await;
    }
}

/// Marks the feed disconnected, waits `backoff`, and returns the next one.
async fn pause(weak: &Weak<Inner>, backoff: Duration) -> Duration {
    if let Some(inner) = weak.upgrade() {
        update(&inner, |s| s.connected = false);
    }
    tokio::time::sleep(backoff).await;
    (backoff * 2).min(MAX_BACKOFF)
}
