//! wsguard sessions: what "this cookie belongs to a live session" means.
//!
//! Owns [`Sessions`], which combines the token verifier (`wsguard-token`) with a session store
//! (`wsguard-store`) under one of two [`Mode`]s, and the proof type [`Session`] that only
//! [`Sessions::authenticate`] builds.
//!
//! - **Stateful** (default): a token is accepted only while its session is live in the store.
//!   Revocation is immediate; the idle timeout slides with the store's `last_active`, which the
//!   gateway advances with [`Sessions::touch_if_due`] (throttled, so hot sessions do not write on
//!   every message). Legacy tutorial tokens, when accepted at all, are adopted into the store on
//!   first use, so they can be revoked like any other.
//! - **Stateless**: signature and timestamps alone, plus revocation tombstones (per session) and
//!   user markers (every session of a user created at or before a time), each kept until any token
//!   it covers would have expired anyway.
//!
//! Every store error fails closed ([`AuthError::Store`]). This crate does no I/O of its own and
//! never reads the clock: `now` is a parameter.

#![warn(missing_docs)]
// Visibility is minimal: an item is `pub` only if it is part of the crate's API.
#![warn(unreachable_pub)]

use std::sync::Arc;

use arc_swap::ArcSwap;

use wsguard_store::{Lookup, Revocation, SessionRecord, SessionStore, StoreError};
use wsguard_token::{
    Claims, Format, Rejection, SessionData, SessionId, SignedToken, UserId, Verifier,
};

/// Where the truth about a session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Valid only while live in the store (default).
    #[default]
    Stateful,
    /// Valid on signature and timestamps alone, minus a revocation list.
    Stateless,
}

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is not acceptable.
    #[error("{0}")]
    Rejected(#[from] Rejection),
    /// The store could not answer; callers must refuse (fail closed).
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Proof that a token names a live session at the time given. Only [`Sessions`] builds one.
#[derive(Debug, Clone)]
pub struct Session {
    claims: Claims,
    format: Format,
    last_active: u64,
    expires_at: u64,
    verified_by: Arc<Verifier>,
}

impl Session {
    /// The verifier that accepted the token (its keys, for [`Sessions::keys_still_accept`]).
    pub fn verified_by(&self) -> &Arc<Verifier> {
        &self.verified_by
    }

    /// Session id.
    pub fn sid(&self) -> &SessionId {
        &self.claims.sid
    }

    /// User id.
    pub fn uid(&self) -> &UserId {
        &self.claims.uid
    }

    /// Application data.
    pub fn data(&self) -> &SessionData {
        &self.claims.data
    }

    /// All claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Token format.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// The latest known activity (token's or store's).
    pub fn last_active(&self) -> u64 {
        self.last_active
    }

    /// When the session reaches its absolute maximum age (first second it is invalid).
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// A freshly issued session.
#[derive(Debug)]
pub struct Issued {
    /// The cookie value.
    pub token: String,
    /// What it carries.
    pub claims: Claims,
    /// When it expires (absolute), Unix seconds.
    pub expires_at: u64,
}

/// Sessions: a verifier, a store, and a mode.
#[derive(Clone)]
pub struct Sessions {
    verifier: Arc<ArcSwap<Verifier>>,
    store: Arc<dyn SessionStore>,
    mode: Mode,
    touch_interval: u64,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("verifier", &**self.verifier.load())
            .field("mode", &self.mode)
            .field("touch_interval", &self.touch_interval)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Combines a verifier and a store. `touch_interval` (seconds) is the least time between two
    /// store writes of one session's activity.
    pub fn new(
        verifier: Verifier,
        store: Arc<dyn SessionStore>,
        mode: Mode,
        touch_interval: u64,
    ) -> Self {
        Sessions {
            verifier: Arc::new(ArcSwap::from_pointee(verifier)),
            store,
            mode,
            touch_interval,
        }
    }

    /// The verifier in force.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.load_full()
    }

    /// Replaces the verifier (new keys or lifetimes, on a configuration reload) for every clone
    /// of these sessions. The next check uses the new one; sessions verified before keep the
    /// verifier that accepted them ([`Session::verified_by`]), so the caller can ask
    /// [`Sessions::keys_still_accept`] whether their key survived.
    pub fn set_verifier(&self, verifier: Verifier) {
        self.verifier.store(Arc::new(verifier));
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How long tombstones and user markers must be kept so they outlive every token they cover.
    fn keep_until(&self, now: u64) -> u64 {
        let p = *self.verifier.load().policy();
        now.saturating_add(p.max_age)
            .saturating_add(p.future_leeway)
    }

    /// Starts a session for `uid` at `now` and returns its token.
    pub async fn issue(
        &self,
        uid: UserId,
        data: SessionData,
        now: u64,
    ) -> Result<Issued, StoreError> {
        let claims = Claims::new(SessionId::generate(), uid, data, now);
        let expires_at = now.saturating_add(self.verifier.load().policy().max_age);
        if self.mode == Mode::Stateful {
            self.store
                .create(&SessionRecord {
                    sid: claims.sid.clone(),
                    uid: claims.uid.clone(),
                    data: claims.data.clone(),
                    created: claims.created,
                    last_active: claims.last_active,
                    expires_at,
                })
                .await?;
        }
        let token = self.verifier.load().issue(&claims);
        Ok(Issued {
            token,
            claims,
            expires_at,
        })
    }

    /// Decides whether `token` names a live session at `now`. Does not record activity.
    pub async fn authenticate(&self, token: &str, now: u64) -> Result<Session, AuthError> {
        let by = self.verifier.load_full();
        let signed = by.verify_signature(token, now)?;
        signed.check_age(now)?;
        match self.mode {
            Mode::Stateful => self.authenticate_stateful(signed, by, now).await,
            Mode::Stateless => self.authenticate_stateless(signed, by, now).await,
        }
    }

    async fn authenticate_stateful(
        &self,
        signed: SignedToken,
        by: Arc<Verifier>,
        now: u64,
    ) -> Result<Session, AuthError> {
        match self.store.get(&signed.claims().sid).await? {
            Lookup::Live(record) => self.accept_live(signed, by, &record, now),
            Lookup::Revoked => Err(Rejection::Revoked.into()),
            Lookup::Unknown if *signed.format() == Format::Legacy => {
                self.adopt(signed, by, now).await
            }
            Lookup::Unknown => Err(Rejection::UnknownSession.into()),
        }
    }

    fn accept_live(
        &self,
        signed: SignedToken,
        by: Arc<Verifier>,
        record: &SessionRecord,
        now: u64,
    ) -> Result<Session, AuthError> {
        // The token must be the one issued for this record, not another user's token that
        // happens to reuse its id.
        let c = signed.claims();
        if c.uid != record.uid || c.created != record.created {
            return Err(Rejection::UnknownSession.into());
        }
        let expires_at = record.expires_at;
        Self::finish(signed, by, record.last_active, now, Some(expires_at))
    }

    /// First sight of a legacy token in stateful mode: store it so it can be touched and revoked.
    async fn adopt(
        &self,
        signed: SignedToken,
        by: Arc<Verifier>,
        now: u64,
    ) -> Result<Session, AuthError> {
        let c = signed.claims();
        if let Some(at) = self.store.user_revoked_at(&c.uid).await?
            && c.created <= at
        {
            return Err(Rejection::Revoked.into());
        }
        let record = SessionRecord {
            sid: c.sid.clone(),
            uid: c.uid.clone(),
            data: c.data.clone(),
            created: c.created,
            last_active: c.last_active,
            expires_at: c.created.saturating_add(by.policy().max_age),
        };
        // Idle check before storing anything.
        let session = Self::finish(signed, by, 0, now, None)?;
        match self.store.create(&record).await {
            Ok(()) => Ok(session),
            // Adopted concurrently, or revoked meanwhile: ask again.
            Err(StoreError::Duplicate) => match self.store.get(&record.sid).await? {
                Lookup::Live(stored)
                    if stored.uid == record.uid && stored.created == record.created =>
                {
                    Ok(session)
                }
                Lookup::Live(_) | Lookup::Unknown => Err(Rejection::UnknownSession.into()),
                Lookup::Revoked => Err(Rejection::Revoked.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn authenticate_stateless(
        &self,
        signed: SignedToken,
        by: Arc<Verifier>,
        now: u64,
    ) -> Result<Session, AuthError> {
        let c = signed.claims();
        // The tombstone and the user marker together: one round trip on a networked store.
        let (lookup, user_revoked_at) = self.store.get_with_user_mark(&c.sid, &c.uid).await?;
        let last_active = match lookup {
            Lookup::Revoked => return Err(Rejection::Revoked.into()),
            Lookup::Live(record) if record.uid == c.uid => record.last_active,
            Lookup::Live(_) | Lookup::Unknown => 0,
        };
        if let Some(at) = user_revoked_at
            && c.created <= at
        {
            return Err(Rejection::Revoked.into());
        }
        Self::finish(signed, by, last_active, now, None)
    }

    fn finish(
        signed: SignedToken,
        by: Arc<Verifier>,
        last_active: u64,
        now: u64,
        expires_at: Option<u64>,
    ) -> Result<Session, AuthError> {
        let verified = signed.check_lifetime(last_active, now)?;
        let last_active = verified.last_active();
        let format = verified.format().clone();
        let claims = verified.into_claims();
        let expires_at =
            expires_at.unwrap_or_else(|| claims.created.saturating_add(by.policy().max_age));
        Ok(Session {
            claims,
            format,
            last_active,
            expires_at,
            verified_by: by,
        })
    }

    /// Records activity of `session` at `now` if the last recorded activity is at least
    /// `touch_interval` old. Returns whether the store was written. Stateless sessions have no
    /// record to touch (their idle timeout runs from the token's `last_active`).
    pub async fn touch_if_due(&self, session: &mut Session, now: u64) -> Result<bool, StoreError> {
        if self.mode == Mode::Stateless
            || now < session.last_active.saturating_add(self.touch_interval)
        {
            return Ok(false);
        }
        let live = self.store.touch(&session.claims.sid, now).await?;
        if live {
            session.last_active = session.last_active.max(now);
        }
        Ok(live)
    }

    /// Revokes one session (its cookie is refused at once, in both modes).
    pub async fn revoke_session(
        &self,
        sid: &SessionId,
        now: u64,
    ) -> Result<Option<UserId>, StoreError> {
        self.store.revoke_session(sid, self.keep_until(now)).await
    }

    /// Revokes every session of `uid` that exists at `now`.
    pub async fn revoke_user(&self, uid: &UserId, now: u64) -> Result<usize, StoreError> {
        self.store.revoke_user(uid, now, self.keep_until(now)).await
    }

    /// Revokes the session a token names. The token must be authentic (any lifetime: revoking an
    /// expired token's session is harmless); returns its claims.
    pub async fn revoke_token(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let claims = self
            .verifier
            .load()
            .verify_signature(token, now)?
            .into_claims();
        self.revoke_session(&claims.sid, now).await?;
        Ok(claims)
    }

    /// The live sessions of a user (stateful mode; stateless sessions are not stored).
    pub async fn list_user(&self, uid: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        self.store.list_user(uid).await
    }

    /// Revocations as they happen (also those made by other processes sharing the store).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Revocation> {
        self.store.subscribe()
    }

    /// A mark to take before [`Sessions::authenticate`], for [`Sessions::still_live_after`].
    pub fn revocation_mark(&self) -> Option<u64> {
        self.store.revocations_announced()
    }

    /// [`Sessions::still_live`], answered without asking the store when no revocation event
    /// has been sent since `mark` was taken (before the session was authenticated): any
    /// revocation committed after authentication read the store is then announced only now or
    /// later, to whoever watches for it. Otherwise (or if the store does not count its events),
    /// the store is asked.
    pub async fn still_live_after(
        &self,
        session: &Session,
        mark: Option<u64>,
        now: u64,
    ) -> Result<(), AuthError> {
        if mark.is_some() && self.store.revocations_announced() == mark {
            return Ok(());
        }
        self.still_live(session, now).await
    }

    /// Re-checks an authenticated session against the store (revoked since?), e.g. right after
    /// a socket was registered for revocation events, to close the gap between the two.
    pub async fn still_live(&self, session: &Session, _now: u64) -> Result<(), AuthError> {
        let c = &session.claims;
        self.still_live_by(&c.sid, &c.uid, c.created).await
    }

    /// [`Sessions::still_live`] for a session known by its id, owner and creation time (what a
    /// registry of live sockets keeps): one store round trip.
    pub async fn still_live_by(
        &self,
        sid: &SessionId,
        uid: &UserId,
        created: u64,
    ) -> Result<(), AuthError> {
        let (lookup, user_revoked_at) = self.store.get_with_user_mark(sid, uid).await?;
        match lookup {
            Lookup::Revoked => return Err(Rejection::Revoked.into()),
            Lookup::Unknown if self.mode == Mode::Stateful => {
                return Err(Rejection::UnknownSession.into());
            }
            _ => {}
        }
        if let Some(at) = user_revoked_at
            && created <= at
        {
            return Err(Rejection::Revoked.into());
        }
        Ok(())
    }

    /// Least time between two activity writes of one session, seconds.
    pub fn touch_interval(&self) -> u64 {
        self.touch_interval
    }

    /// Whether the verifier in force still accepts the key that signed `session`'s token (a
    /// reload may have dropped the key or changed its secret). Lifetimes are not looked at.
    pub fn keys_still_accept(&self, session: &Session, now: u64) -> bool {
        let current = self.verifier.load();
        Arc::ptr_eq(&current, &session.verified_by)
            || current.still_accepts(&session.verified_by, &session.format, now)
    }

    /// Whether a revocation event ends `session`. [`Revocation::Resync`] ends none by itself:
    /// it asks for every session to be re-checked ([`Sessions::still_live`]).
    pub fn is_revoked_by(session: &Session, event: &Revocation) -> bool {
        match event {
            Revocation::Session { sid, .. } => sid == session.sid(),
            Revocation::User { uid, at } => uid == session.uid() && session.claims.created <= *at,
            Revocation::Resync => false,
        }
    }
}

#[cfg(test)]
mod tests;
