//! What runs beside the listeners: housekeeping (expired tickets, idle buckets, expired
//! sessions), active health checks of upstreams, and the revocation follower that closes live
//! sockets (re-checking every socket after missed events).
//!
//! It serves no request.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::reason::CloseReason;
use crate::state::Gateway;

/// How often expired tickets and idle rate buckets are dropped.
const HOUSEKEEPING: Duration = Duration::from_secs(30);
/// Expired sessions are purged from the store every this many housekeeping rounds (10 min).
const STORE_PURGE_EVERY: u32 = 20;

impl Gateway {
    /// Every [`HOUSEKEEPING`]: drops expired tickets and full per-user rate buckets; every
    /// [`STORE_PURGE_EVERY`] rounds, purges expired sessions and tombstones from the store, so
    /// nothing grows without bound.
    pub(crate) async fn housekeeping(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut round = 0u32;
        loop {
            tick.tick().await;
            round = round.wrapping_add(1);
            self.sweep(round.is_multiple_of(STORE_PURGE_EVERY)).await;
        }
    }

    /// Probes every upstream each `gateway.health_check.interval` (read again each round, so a
    /// reload turns checks on, off or changes them), all upstreams at once.
    pub(crate) async fn health_checks(self: Arc<Self>) {
        loop {
            let check = self.state.load().settings.health_check.clone();
            let Some(check) = check else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            self.probe_all(&check).await;
            tokio::time::sleep(check.interval).await;
        }
    }

    /// One round of probes; logs each upstream whose health changed.
    pub(crate) async fn probe_all(&self, check: &crate::config::HealthCheckConfig) {
        let state = self.state.load_full();
        let mut seen = std::collections::HashSet::new();
        let mut probes = Vec::new();
        for route in &state.routes {
            for m in route.pool.members() {
                if !seen.insert(m.backend.key().to_owned()) {
                    continue;
                }
                let (m, tls) = (m.clone(), state.upstream_tls.get(&route.index).cloned());
                let path = check.path.clone();
                let timeout = check.timeout;
                probes.push(async move {
                    let ok =
                        crate::health::probe(&m.url, tls.as_ref(), path.as_deref(), timeout).await;
                    let was_up = m.backend.is_up(Instant::now());
                    m.backend.probed(ok);
                    if was_up != ok {
                        tracing::warn!(
                            event = "upstream_health",
                            upstream = m.backend.key(),
                            up = ok,
                            "health check changed the upstream's state"
                        );
                    }
                });
            }
        }
        futures_util::future::join_all(probes).await;
    }

    /// One housekeeping round; returns (expired tickets dropped, store rows purged).
    pub(crate) async fn sweep(&self, purge_store: bool) -> (usize, usize) {
        self.sweep_at(purge_store, SystemTime::now()).await
    }

    /// One housekeeping round as if the clock read `now` (what tickets and store rows have
    /// expired is decided at `now`); [`crate::Running::sweep_at`] lets tests drive it.
    pub(crate) async fn sweep_at(&self, purge_store: bool, now: SystemTime) -> (usize, usize) {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let tickets = self.tickets.purge(since_epoch.as_millis() as u64);
        let state = self.state.load();
        for route in &state.routes {
            route.messages.shrink();
        }
        if let Some(rate) = &state.handshake_rate {
            rate.shrink();
        }
        let mut purged = 0;
        if purge_store {
            match self.sessions.store().purge(since_epoch.as_secs()).await {
                Ok(n) => purged = n,
                Err(e) => tracing::warn!(error = %e, "cannot purge expired sessions"),
            }
        }
        tracing::debug!(expired_tickets = tickets, purged, "housekeeping");
        (tickets, purged)
    }

    /// Closes live sockets as revocations arrive (from this process or, through the store,
    /// from others). After missed events, re-checks every socket against the store.
    pub(crate) async fn follow_revocations(self: Arc<Self>) {
        let mut events = self.sessions.subscribe();
        loop {
            match events.recv().await {
                // The store's feed may have missed events: as after a lag.
                Ok(wsguard_store::Revocation::Resync) => {
                    tracing::warn!("revocation feed resynchronised; re-checking every socket");
                    self.recheck_all().await;
                }
                Ok(event) => {
                    let n = self.registry.apply(&event);
                    tracing::debug!(closed = n, "revocation applied");
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "revocation events missed; re-checking every socket");
                    self.recheck_all().await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Re-checks every authenticated socket against the store (after missed events): a session
    /// that is no longer live (revoked, its user revoked, or unknown in stateful mode) closes
    /// with 1008. A store error is never taken for "live": that socket is checked again, with
    /// a growing pause, until the store answers; the sockets it answered for are settled.
    async fn recheck_all(&self) {
        let mut pending = self.registry.sessions();
        let mut pause = Duration::from_millis(50);
        while !pending.is_empty() {
            let mut failed = Vec::new();
            for (id, sid, uid, created) in pending {
                match self.sessions.still_live_by(&sid, &uid, created).await {
                    Ok(()) => {}
                    Err(wsguard_session::AuthError::Rejected(_)) => {
                        self.registry.close_conn(id, CloseReason::SessionRevoked);
                    }
                    Err(wsguard_session::AuthError::Store(e)) => {
                        tracing::warn!(error = %e, "cannot re-check a socket; will retry");
                        failed.push((id, sid, uid, created));
                    }
                }
            }
            pending = failed;
            if !pending.is_empty() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
