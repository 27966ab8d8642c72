//! SQLite session store: the default backend.
//!
//! Owns [`SqliteStore`]: the schema, the SQL, and the revocation-log poller. SQLite in WAL mode
//! lets several processes (a running gateway and the `wsguard` CLI) share one file safely; every
//! revocation is also appended to `revocation_log`, which each process polls so that a revoke
//! made elsewhere still reaches its subscribers (and closes live sockets).
//!
//! It must not block the async runtime: every statement runs on a blocking thread
//! (`spawn_blocking`), and the connection mutex is only taken there. Session lookups, one per
//! authenticated handshake, are batched: those asked for in the same turn of the runtime share
//! one trip to a blocking thread and one read transaction, since the trip (a thread woken, two
//! context switches, SQLite's file locks) costs more than the lookup itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::broadcast;
use wsguard_token::{SessionData, SessionId, UserId};

use crate::{
    Lookup, REVOCATION_CHANNEL_CAPACITY, Revocation, SessionRecord, SessionStore, StoreError,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    uid TEXT NOT NULL,
    data TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_active INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_uid ON sessions (uid, created);
CREATE TABLE IF NOT EXISTS revoked_sessions (
    sid TEXT PRIMARY KEY,
    keep_until INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked_users (
    uid TEXT PRIMARY KEY,
    revoked_at INTEGER NOT NULL,
    keep_until INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revocation_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('session', 'user')),
    sid TEXT,
    uid TEXT,
    at INTEGER NOT NULL
);
";

/// How many revocation-log rows are kept for pollers.
const LOG_RETENTION: i64 = 10_000;

/// How often other processes' revocations are looked for, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A session store in a SQLite file (WAL mode), shareable between processes.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    events: broadcast::Sender<Revocation>,
    /// Events sent so far, ours and the poller's (see [`SessionStore::revocations_announced`]).
    announced: std::sync::atomic::AtomicU64,
    /// Identifies this store instance's rows in the revocation log, so the poller does not
    /// broadcast our own revocations twice.
    origin: String,
    poll_interval: Duration,
    poller: Mutex<PollerState>,
    /// Session lookups waiting for the next batch (see [`SqliteStore::get`]).
    lookups: Mutex<Vec<PendingLookup>>,
}

/// A session lookup waiting for its batch, and where its answer goes.
type PendingLookup = (
    SessionId,
    tokio::sync::oneshot::Sender<Result<Lookup, StoreError>>,
);

impl Inner {
    /// Counts, then sends, a revocation event.
    fn announce(&self, event: Revocation) {
        self.announced
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = self.events.send(event);
    }
}

#[derive(Debug)]
enum PollerState {
    NotStarted { last_seq: i64 },
    Running,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// SQLite stores i64; our times are ≤ 9999-12-31, but `keep_until` may be computed with
/// saturating additions, so clamp.
fn to_sql(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn from_sql(t: i64) -> Result<u64, StoreError> {
    u64::try_from(t).map_err(|_| StoreError::Corrupt("negative timestamp".into()))
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(backend)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed, with owner-only permissions) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        Self::open_with_poll_interval(path, DEFAULT_POLL_INTERVAL)
    }

    /// Like [`SqliteStore::open`], polling for other processes' revocations every `interval`.
    pub fn open_with_poll_interval(
        path: impl AsRef<Path>,
        interval: Duration,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        create_private(&path)?;
        let conn = open_connection(&path)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        let last_seq: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM revocation_log",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let (events, _) = broadcast::channel(REVOCATION_CHANNEL_CAPACITY);
        let origin = SessionId::generate().as_str().to_owned();
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
                events,
                announced: std::sync::atomic::AtomicU64::new(0),
                origin,
                poll_interval: interval,
                poller: Mutex::new(PollerState::NotStarted { last_seq }),
                lookups: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` with the connection on a blocking thread.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .conn
                .lock()
                .map_err(|_| backend("sqlite store lock poisoned"))?;
            f(&mut conn)
        })
        .await
        .map_err(backend)?
    }

    fn publish(&self, event: Revocation) {
        self.inner.announce(event);
    }

    fn start_poller(&self) {
        let Ok(mut state) = self.inner.poller.lock() else {
            return;
        };
        let PollerState::NotStarted { last_seq } = *state else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // No runtime (e.g. a synchronous caller): local events only.
            return;
        };
        *state = PollerState::Running;
        let weak = Arc::downgrade(&self.inner);
        handle.spawn(poll_revocations(weak, last_seq));
    }
}

/// Runs the lookups asked for in this turn of the runtime: it yields once, so that every
/// handshake already woken can add its own, then takes them all to one blocking thread and one
/// read transaction. A lookup asked for after the batch is taken starts the next one. The
/// answers are sent from here, on the runtime: sent from the blocking thread, each one would
/// wake the runtime's driver with a system call of its own.
async fn run_lookups(store: SqliteStore) {
    tokio::task::yield_now().await;
    let batch = std::mem::take(
        &mut *store
            .inner
            .lookups
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    let (sids, answers): (Vec<SessionId>, Vec<_>) = batch.into_iter().unzip();
    // If the batch cannot run (or panics), its answers are dropped and every caller in it gets
    // an error.
    let Ok(results) = store
        .with_conn(move |conn| Ok(lookup_all(conn, &sids)))
        .await
    else {
        return;
    };
    for (answer, result) in answers.into_iter().zip(results) {
        let _ = answer.send(result);
    }
}

/// The lookups of one batch, in order.
fn lookup_all(conn: &mut Connection, sids: &[SessionId]) -> Vec<Result<Lookup, StoreError>> {
    // Alone, a lookup needs no transaction of its own: its two statements may read two
    // snapshots, but the second runs only when the first found no row, and a revocation
    // deletes the row and writes the tombstone in one transaction, so the two cannot disagree
    // about it. Several lookups share one snapshot, and with it one read lock on the database.
    if let [sid] = sids {
        return vec![lookup(conn, sid)];
    }
    // Every lookup still reads what was committed before it was asked for.
    let read = conn.transaction();
    sids.iter()
        .map(|sid| match &read {
            Ok(tx) => lookup(tx, sid),
            Err(e) => Err(backend(e)),
        })
        .collect()
}

/// One session's row, or whether it was revoked.
fn lookup(conn: &Connection, sid: &SessionId) -> Result<Lookup, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT sid, uid, data, created, last_active, expires_at FROM sessions WHERE sid = ?1",
        )
        .map_err(backend)?
        .query_row(params![sid.as_str()], raw_record)
        .optional()
        .map_err(backend)?;
    if let Some((sid, uid, data, created, last_active, expires_at)) = row {
        return decode_record(sid, uid, data, created, last_active, expires_at).map(Lookup::Live);
    }
    let revoked = conn
        .prepare_cached("SELECT 1 FROM revoked_sessions WHERE sid = ?1")
        .map_err(backend)?
        .exists(params![sid.as_str()])
        .map_err(backend)?;
    Ok(if revoked {
        Lookup::Revoked
    } else {
        Lookup::Unknown
    })
}

/// Creates the database file with mode 0600 if it does not exist yet.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Backend(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Broadcasts revocations other processes appended to the log. Stops when the store is dropped.
async fn poll_revocations(weak: Weak<Inner>, mut last_seq: i64) {
    let path = match weak.upgrade() {
        Some(inner) => inner.path.clone(),
        None => return,
    };
    let conn = match tokio::task::spawn_blocking(move || open_connection(&path)).await {
        Ok(Ok(conn)) => Arc::new(Mutex::new(conn)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "revocation poller cannot open the session store");
            return;
        }
        Err(_) => return,
    };
    let interval = match weak.upgrade() {
        Some(inner) => inner.poll_interval,
        None => return,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let origin = inner.origin.clone();
        drop(inner);
        let conn = Arc::clone(&conn);
        let rows = tokio::task::spawn_blocking(move || read_log(&conn, last_seq, &origin)).await;
        let rows = match rows {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "revocation poller failed; retrying");
                continue;
            }
            Err(_) => return,
        };
        let Some(inner) = weak.upgrade() else { return };
        for (seq, event) in rows {
            last_seq = seq;
            if let Some(event) = event {
                inner.announce(event);
            }
        }
    }
}

type LogRow = (i64, Option<Revocation>);

fn read_log(
    conn: &Mutex<Connection>,
    after: i64,
    own_origin: &str,
) -> Result<Vec<LogRow>, StoreError> {
    let conn = conn.lock().map_err(|_| backend("poller lock poisoned"))?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, origin, kind, sid, uid, at FROM revocation_log WHERE seq > ?1 \
             ORDER BY seq LIMIT 1000",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![after], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, origin, kind, sid, uid, at) = row.map_err(backend)?;
        if origin == own_origin {
            out.push((seq, None));
            continue;
        }
        let uid = uid.and_then(|u| UserId::parse(&u).ok());
        let event = match (kind.as_str(), sid, uid) {
            ("session", Some(sid), uid) => SessionId::parse(&sid)
                .ok()
                .map(|sid| Revocation::Session { sid, uid }),
            ("user", _, Some(uid)) => Some(Revocation::User {
                uid,
                at: from_sql(at)?,
            }),
            _ => None,
        };
        if event.is_none() {
            tracing::warn!(seq, "skipping unreadable revocation log row");
        }
        out.push((seq, event));
    }
    Ok(out)
}

fn decode_record(
    sid: String,
    uid: String,
    data: String,
    created: i64,
    last_active: i64,
    expires_at: i64,
) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        sid: SessionId::parse(&sid).map_err(|e| StoreError::Corrupt(format!("sid: {e}")))?,
        uid: UserId::parse(&uid).map_err(|e| StoreError::Corrupt(format!("uid: {e}")))?,
        data: SessionData::parse(&data).map_err(|e| StoreError::Corrupt(format!("data: {e}")))?,
        created: from_sql(created)?,
        last_active: from_sql(last_active)?,
        expires_at: from_sql(expires_at)?,
    })
}

type RawRecord = (String, String, String, i64, i64, i64);

fn raw_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let tomb: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM revoked_sessions WHERE sid = ?1",
                    params![record.sid.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            if tomb.is_some() {
                return Err(StoreError::Duplicate);
            }
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO sessions (sid, uid, data, created, last_active, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        record.sid.as_str(),
                        record.uid.as_str(),
                        record.data.as_json(),
                        to_sql(record.created),
                        to_sql(record.last_active),
                        to_sql(record.expires_at),
                    ],
                )
                .map_err(backend)?;
            if inserted == 0 {
                return Err(StoreError::Duplicate);
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn get(&self, sid: &SessionId) -> Result<Lookup, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let first = {
            let mut waiting = self.inner.lookups.lock().unwrap_or_else(|p| p.into_inner());
            waiting.push((sid.clone(), answer));
            waiting.len() == 1
        };
        if first {
            // A task of its own, so that the batch is run even if this caller goes away.
            tokio::spawn(run_lookups(self.clone()));
        }
        answered
            .await
            .map_err(|_| backend("session lookup failed: its batch stopped"))?
    }

    async fn touch(&self, sid: &SessionId, last_active: u64) -> Result<bool, StoreError> {
        let sid = sid.clone();
        self.with_conn(move |conn| {
            let live = conn
                .prepare_cached("SELECT 1 FROM sessions WHERE sid = ?1")
                .map_err(backend)?
                .exists(params![sid.as_str()])
                .map_err(backend)?;
            conn.prepare_cached(
                "UPDATE sessions SET last_active = ?2 WHERE sid = ?1 AND last_active < ?2",
            )
            .map_err(backend)?
            .execute(params![sid.as_str(), to_sql(last_active)])
            .map_err(backend)?;
            Ok(live)
        })
        .await
    }

    async fn revoke_session(
        &self,
        sid: &SessionId,
        keep_until: u64,
    ) -> Result<Option<UserId>, StoreError> {
        let sid_owned = sid.clone();
        let origin = self.inner.origin.clone();
        let uid = self
            .with_conn(move |conn| {
                let tx = conn.transaction().map_err(backend)?;
                let removed: Option<(String, i64)> = tx
                    .query_row(
                        "DELETE FROM sessions WHERE sid = ?1 RETURNING uid, expires_at",
                        params![sid_owned.as_str()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(backend)?;
                let keep = removed.as_ref().map_or(to_sql(keep_until), |(_, exp)| {
                    (*exp).max(to_sql(keep_until))
                });
                tx.execute(
                    "INSERT INTO revoked_sessions (sid, keep_until) VALUES (?1, ?2) \
                     ON CONFLICT (sid) DO UPDATE SET keep_until = MAX(keep_until, excluded.keep_until)",
                    params![sid_owned.as_str(), keep],
                )
                .map_err(backend)?;
                let uid = removed.map(|(uid, _)| uid);
                tx.execute(
                    "INSERT INTO revocation_log (origin, kind, sid, uid, at) VALUES (?1, 'session', ?2, ?3, 0)",
                    params![origin, sid_owned.as_str(), uid],
                )
                .map_err(backend)?;
                tx.commit().map_err(backend)?;
                uid.map(|u| UserId::parse(&u).map_err(|e| StoreError::Corrupt(format!("uid: {e}"))))
                    .transpose()
            })
            .await?;
        self.publish(Revocation::Session {
            sid: sid.clone(),
            uid: uid.clone(),
        });
        Ok(uid)
    }

    async fn revoke_user(
        &self,
        uid: &UserId,
        now: u64,
        keep_until: u64,
    ) -> Result<usize, StoreError> {
        let uid_owned = uid.clone();
        let origin = self.inner.origin.clone();
        let ended = self
            .with_conn(move |conn| {
                let tx = conn.transaction().map_err(backend)?;
                let ended: Vec<(String, i64)> = {
                    let mut stmt = tx
                        .prepare(
                            "DELETE FROM sessions WHERE uid = ?1 AND created <= ?2 RETURNING sid, expires_at",
                        )
                        .map_err(backend)?;
                    let rows = stmt
                        .query_map(params![uid_owned.as_str(), to_sql(now)], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .map_err(backend)?;
                    rows.collect::<Result<_, _>>().map_err(backend)?
                };
                for (sid, expires_at) in &ended {
                    tx.execute(
                        "INSERT INTO revoked_sessions (sid, keep_until) VALUES (?1, ?2) \
                         ON CONFLICT (sid) DO UPDATE SET keep_until = MAX(keep_until, excluded.keep_until)",
                        params![sid, (*expires_at).max(to_sql(keep_until))],
                    )
                    .map_err(backend)?;
                }
                tx.execute(
                    "INSERT INTO revoked_users (uid, revoked_at, keep_until) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (uid) DO UPDATE SET revoked_at = MAX(revoked_at, excluded.revoked_at), \
                     keep_until = MAX(keep_until, excluded.keep_until)",
                    params![uid_owned.as_str(), to_sql(now), to_sql(keep_until)],
                )
                .map_err(backend)?;
                tx.execute(
                    "INSERT INTO revocation_log (origin, kind, sid, uid, at) VALUES (?1, 'user', NULL, ?2, ?3)",
                    params![origin, uid_owned.as_str(), to_sql(now)],
                )
                .map_err(backend)?;
                tx.commit().map_err(backend)?;
                Ok(ended.len())
            })
            .await?;
        self.publish(Revocation::User {
            uid: uid.clone(),
            at: now,
        });
        Ok(ended)
    }

    async fn user_revoked_at(&self, uid: &UserId) -> Result<Option<u64>, StoreError> {
        let uid = uid.clone();
        self.with_conn(move |conn| {
            let at: Option<i64> = conn
                .prepare_cached("SELECT revoked_at FROM revoked_users WHERE uid = ?1")
                .map_err(backend)?
                .query_row(params![uid.as_str()], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            at.map(from_sql).transpose()
        })
        .await
    }

    async fn list_user(&self, uid: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let uid = uid.clone();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT sid, uid, data, created, last_active, expires_at FROM sessions \
                     WHERE uid = ?1 ORDER BY created, sid",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![uid.as_str()], raw_record)
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (sid, uid, data, created, last_active, expires_at) = row.map_err(backend)?;
                out.push(decode_record(
                    sid,
                    uid,
                    data,
                    created,
                    last_active,
                    expires_at,
                )?);
            }
            Ok(out)
        })
        .await
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        self.with_conn(move |conn| {
            let now_sql = to_sql(now);
            let tx = conn.transaction().map_err(backend)?;
            let mut n = 0;
            n += tx
                .execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now_sql])
                .map_err(backend)?;
            n += tx
                .execute("DELETE FROM revoked_sessions WHERE keep_until <= ?1", params![now_sql])
                .map_err(backend)?;
            n += tx
                .execute("DELETE FROM revoked_users WHERE keep_until <= ?1", params![now_sql])
                .map_err(backend)?;
            // The log only feeds pollers, which read it every few milliseconds: keep the newest
            // LOG_RETENTION rows (and always the newest, so AUTOINCREMENT never reuses a seq).
            tx.execute(
                "DELETE FROM revocation_log WHERE seq <= (SELECT MAX(seq) FROM revocation_log) - ?1",
                params![LOG_RETENTION],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(n)
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        let rx = self.inner.events.subscribe();
        self.start_poller();
        rx
    }

    fn revocations_announced(&self) -> Option<u64> {
        Some(
            self.inner
                .announced
                .load(std::sync::atomic::Ordering::SeqCst),
        )
    }
}
