//! Sessions on Redis: the [`SessionStore`] implementation of [`RedisStore`].
//!
//! Owns each operation's commands and the order in which a multi-slot operation sends them,
//! so that a crash between two steps leaves nothing unsafe (the index is written before the
//! record; an index entry without a live record of that user is ignored), and the mapping of
//! Redis replies to store types (a record this version cannot read is
//! [`StoreError::Corrupt`]). Expiry times are the caller's; Redis forgets a key at its absolute
//! time (`EXPIREAT`) by its own clock. A revocation is written, then announced to the other
//! nodes (`feed.rs`). It must not decide whether a session is acceptable (`wsguard-session`
//! does).

use async_trait::async_trait;
use redis::Cmd;
use tokio::sync::broadcast;
use wsguard_token::{SessionData, SessionId, UserId};

use super::feed;
use super::scripts::script_cmd;
use super::store::{RedisStore, corrupt};
use crate::store::{FeedHealth, Lookup, Revocation, SessionRecord, SessionStore, StoreError};

/// Latest time written to Redis (9999-12-31T23:59:59Z): callers compute `keep_until` with
/// saturating additions, and `EXPIREAT` refuses larger values.
const MAX_TS: u64 = 253_402_300_799;

/// How many ledger entries one purge step handles.
const PURGE_BATCH: isize = 1000;

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
        Some(self.inner.events.announced())
    }

    fn feed_health(&self) -> Option<FeedHealth> {
        Some(feed::health(self))
    }
}

impl RedisStore {
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
