//! The SQLite database itself: its tables, how it is opened, and every statement the store runs.
//!
//! Owns the schema (sessions, tombstones, user markers, and the revocation log that other
//! processes poll), opening the file (created mode 0600; WAL, `busy_timeout` 5 s), conversions
//! between rows and store types (a row this version cannot read is [`StoreError::Corrupt`], never
//! a panic), and one synchronous function per store operation, each in its own transaction where
//! it writes. [`with_conn`] is how async code runs them: on a blocking thread, with the one
//! connection's mutex taken there. It must not broadcast events or batch (the callers in
//! `sqlite.rs`, `batch.rs` and `poller.rs` do).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use wsguard_token::{SessionData, SessionId, UserId};

use crate::store::{Lookup, Revocation, SessionRecord, StoreError};

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

/// A database (or thread) failure, as the store reports it.
pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
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

/// A connection to the file at `path`: WAL (readers and one writer at once, across
/// processes), `synchronous = NORMAL`, and a 5 s wait for another process's lock.
pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(backend)?;
    Ok(conn)
}

/// Creates the file if needed (mode 0600), opens it, creates the tables, and reads where the
/// revocation log stands (its last `seq`, 0 if empty).
pub(super) fn open(path: &Path) -> Result<(Connection, i64), StoreError> {
    create_private(path)?;
    let conn = open_connection(path)?;
    conn.execute_batch(SCHEMA).map_err(backend)?;
    let last_seq: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM revocation_log",
            [],
            |r| r.get(0),
        )
        .map_err(backend)?;
    Ok((conn, last_seq))
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

/// The store's one connection, shared by its operations and its lookup batches.
pub(super) type SharedConn = Arc<Mutex<Connection>>;

/// Runs `f` with the connection on a blocking thread.
pub(super) async fn with_conn<T, F>(conn: &SharedConn, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        let mut conn = conn
            .lock()
            .map_err(|_| backend("sqlite store lock poisoned"))?;
        f(&mut conn)
    })
    .await
    .map_err(backend)?
}

/// Stores a new session unless its id is live or tombstoned.
pub(super) fn create(conn: &mut Connection, record: &SessionRecord) -> Result<(), StoreError> {
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
}

/// One session's row, or whether it was revoked.
pub(super) fn lookup(conn: &Connection, sid: &SessionId) -> Result<Lookup, StoreError> {
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

/// Moves `last_active` forward; whether the session is live.
pub(super) fn touch(
    conn: &mut Connection,
    sid: &SessionId,
    last_active: u64,
) -> Result<bool, StoreError> {
    let live = conn
        .prepare_cached("SELECT 1 FROM sessions WHERE sid = ?1")
        .map_err(backend)?
        .exists(params![sid.as_str()])
        .map_err(backend)?;
    conn.prepare_cached("UPDATE sessions SET last_active = ?2 WHERE sid = ?1 AND last_active < ?2")
        .map_err(backend)?
        .execute(params![sid.as_str(), to_sql(last_active)])
        .map_err(backend)?;
    Ok(live)
}

/// Ends a session (a tombstone kept until the later of `keep_until` and its expiry) and logs
/// the revocation for other processes; the owner if it was live.
pub(super) fn revoke_session(
    conn: &mut Connection,
    origin: &str,
    sid: &SessionId,
    keep_until: u64,
) -> Result<Option<UserId>, StoreError> {
    let tx = conn.transaction().map_err(backend)?;
    let removed: Option<(String, i64)> = tx
        .query_row(
            "DELETE FROM sessions WHERE sid = ?1 RETURNING uid, expires_at",
            params![sid.as_str()],
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
        params![sid.as_str(), keep],
    )
    .map_err(backend)?;
    let uid = removed.map(|(uid, _)| uid);
    tx.execute(
        "INSERT INTO revocation_log (origin, kind, sid, uid, at) VALUES (?1, 'session', ?2, ?3, 0)",
        params![origin, sid.as_str(), uid],
    )
    .map_err(backend)?;
    tx.commit().map_err(backend)?;
    uid.map(|u| UserId::parse(&u).map_err(|e| StoreError::Corrupt(format!("uid: {e}"))))
        .transpose()
}

/// Ends every session of `uid` created at or before `now`, sets the user's marker and logs the
/// revocation; how many stored sessions ended.
pub(super) fn revoke_user(
    conn: &mut Connection,
    origin: &str,
    uid: &UserId,
    now: u64,
    keep_until: u64,
) -> Result<usize, StoreError> {
    let tx = conn.transaction().map_err(backend)?;
    let ended: Vec<(String, i64)> = {
        let mut stmt = tx
            .prepare(
                "DELETE FROM sessions WHERE uid = ?1 AND created <= ?2 RETURNING sid, expires_at",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![uid.as_str(), to_sql(now)], |r| {
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
        params![uid.as_str(), to_sql(now), to_sql(keep_until)],
    )
    .map_err(backend)?;
    tx.execute(
        "INSERT INTO revocation_log (origin, kind, sid, uid, at) VALUES (?1, 'user', NULL, ?2, ?3)",
        params![origin, uid.as_str(), to_sql(now)],
    )
    .map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok(ended.len())
}

/// The user's revocation marker, if any.
pub(super) fn user_revoked_at(
    conn: &mut Connection,
    uid: &UserId,
) -> Result<Option<u64>, StoreError> {
    let at: Option<i64> = conn
        .prepare_cached("SELECT revoked_at FROM revoked_users WHERE uid = ?1")
        .map_err(backend)?
        .query_row(params![uid.as_str()], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    at.map(from_sql).transpose()
}

/// The user's live sessions, oldest first.
pub(super) fn list_user(
    conn: &mut Connection,
    uid: &UserId,
) -> Result<Vec<SessionRecord>, StoreError> {
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
}

/// Forgets what expired by `now`, and the oldest revocation log rows; how many rows went.
pub(super) fn purge(conn: &mut Connection, now: u64) -> Result<usize, StoreError> {
    let now_sql = to_sql(now);
    let tx = conn.transaction().map_err(backend)?;
    let mut n = 0;
    n += tx
        .execute(
            "DELETE FROM sessions WHERE expires_at <= ?1",
            params![now_sql],
        )
        .map_err(backend)?;
    n += tx
        .execute(
            "DELETE FROM revoked_sessions WHERE keep_until <= ?1",
            params![now_sql],
        )
        .map_err(backend)?;
    n += tx
        .execute(
            "DELETE FROM revoked_users WHERE keep_until <= ?1",
            params![now_sql],
        )
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
}

/// A revocation log row: its `seq`, and its event (`None` for this store's own rows, which were
/// announced when made, and for rows it cannot read).
pub(super) type LogRow = (i64, Option<Revocation>);

/// Up to 1000 log rows after `after`, on the poller's own connection.
pub(super) fn read_log(
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
