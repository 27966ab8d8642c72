//! In-memory session store: one process, lost on restart.
//!
//! Owns [`MemoryStore`]: three maps behind one mutex (sessions, session tombstones, user
//! revocation markers) and a broadcast channel. It must not block: no I/O, and the lock is never
//! held across an `.await`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::broadcast;
use wsguard_token::{SessionId, UserId};

use crate::events::Announcer;
use crate::store::{Lookup, Revocation, SessionRecord, SessionStore, StoreError};

/// A session store in this process's memory.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    events: Announcer,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionId, SessionRecord>,
    /// sid → keep until.
    tombstones: HashMap<SessionId, u64>,
    /// uid → (revoked at, keep until).
    revoked_users: HashMap<UserId, (u64, u64)>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            events: Announcer::new(),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }

    fn publish(&self, event: Revocation) {
        self.events.announce(event);
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let mut state = self.lock()?;
        if state.sessions.contains_key(&record.sid) || state.tombstones.contains_key(&record.sid) {
            return Err(StoreError::Duplicate);
        }
        state.sessions.insert(record.sid.clone(), record.clone());
        Ok(())
    }

    async fn get(&self, sid: &SessionId) -> Result<Lookup, StoreError> {
        let state = self.lock()?;
        if let Some(record) = state.sessions.get(sid) {
            return Ok(Lookup::Live(record.clone()));
        }
        if state.tombstones.contains_key(sid) {
            return Ok(Lookup::Revoked);
        }
        Ok(Lookup::Unknown)
    }

    async fn touch(&self, sid: &SessionId, last_active: u64) -> Result<bool, StoreError> {
        let mut state = self.lock()?;
        match state.sessions.get_mut(sid) {
            Some(record) => {
                record.last_active = record.last_active.max(last_active);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn revoke_session(
        &self,
        sid: &SessionId,
        keep_until: u64,
    ) -> Result<Option<UserId>, StoreError> {
        let uid = {
            let mut state = self.lock()?;
            let removed = state.sessions.remove(sid);
            let keep_until = removed
                .as_ref()
                .map_or(keep_until, |r| keep_until.max(r.expires_at));
            let entry = state.tombstones.entry(sid.clone()).or_insert(keep_until);
            *entry = (*entry).max(keep_until);
            removed.map(|r| r.uid)
        };
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
        let ended = {
            let mut state = self.lock()?;
            let ended: Vec<SessionRecord> = state
                .sessions
                .values()
                .filter(|r| &r.uid == uid && r.created <= now)
                .cloned()
                .collect();
            for record in &ended {
                state.sessions.remove(&record.sid);
                state
                    .tombstones
                    .insert(record.sid.clone(), record.expires_at.max(keep_until));
            }
            let marker = state
                .revoked_users
                .entry(uid.clone())
                .or_insert((now, keep_until));
            *marker = (marker.0.max(now), marker.1.max(keep_until));
            ended.len()
        };
        self.publish(Revocation::User {
            uid: uid.clone(),
            at: now,
        });
        Ok(ended)
    }

    async fn user_revoked_at(&self, uid: &UserId) -> Result<Option<u64>, StoreError> {
        Ok(self.lock()?.revoked_users.get(uid).map(|(at, _)| *at))
    }

    async fn list_user(&self, uid: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let state = self.lock()?;
        let mut records: Vec<SessionRecord> = state
            .sessions
            .values()
            .filter(|r| &r.uid == uid)
            .cloned()
            .collect();
        records.sort_by(|a, b| (a.created, &a.sid).cmp(&(b.created, &b.sid)));
        Ok(records)
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        let mut state = self.lock()?;
        let before = state.sessions.len() + state.tombstones.len() + state.revoked_users.len();
        state.sessions.retain(|_, r| r.expires_at > now);
        state.tombstones.retain(|_, keep| *keep > now);
        state.revoked_users.retain(|_, (_, keep)| *keep > now);
        let after = state.sessions.len() + state.tombstones.len() + state.revoked_users.len();
        Ok(before - after)
    }

    fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.events.subscribe()
    }

    fn revocations_announced(&self) -> Option<u64> {
        Some(self.events.announced())
    }
}
