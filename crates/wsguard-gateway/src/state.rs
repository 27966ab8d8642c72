//! The state both listeners share: the [`Gateway`] (sessions, the live configuration, tickets,
//! the registry of sockets, limits, metrics) and the part of it a reload replaces whole
//! ([`State`]), with the one function that builds and validates it ([`build_state`]) and the
//! reload itself.
//!
//! Every other module of the gateway reads from here; this module imports none of them back
//! but the building blocks it holds (configuration, limits, tickets, registry, metrics). It
//! serves nothing and reads no socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use wsguard_session::Sessions;

use crate::config::{self, GatewayConfig};
use crate::config::{AdminConfig, RouteConfig};
use crate::reason::CloseReason;
use crate::registry::Registry;
use crate::tickets::Tickets;
use crate::{cookie, forward, limits, origin, policy, pool, tls};

/// Resolves once shutdown has been asked for (without holding the channel's lock across awaits).
pub(crate) async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Everything `start` needs.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `[gateway]`.
    pub gateway: GatewayConfig,
    /// `[[route]]`.
    pub routes: Vec<RouteConfig>,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// Session cookie name.
    pub cookie_name: String,
    /// How the admin API sets the session cookie.
    pub cookie: cookie::CookieAttributes,
}

/// A fresh configuration for a reload: the gateway's settings and the session verifier (keys,
/// lifetimes), and what changed that only a restart applies (the caller knows the store and
/// session mode; the gateway adds its listeners).
#[derive(Debug)]
pub struct Reload {
    /// The new settings.
    pub settings: Settings,
    /// The new verifier.
    pub verifier: wsguard_token::Verifier,
    /// Keys whose change needs a restart.
    pub restart_required: Vec<String>,
}

/// Reads the configuration again (the binary's config file and key file).
pub type Loader = Arc<dyn Fn() -> Result<Reload, String> + Send + Sync>;

/// Why a reload did not happen. The configuration in force is unchanged either way.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Started without a way to read the configuration again.
    #[error("no configuration to reload")]
    NotConfigured,
    /// The new configuration is invalid (every error, one per line).
    #[error("{0}")]
    Invalid(String),
}

/// What a reload can change, swapped in whole: routes (upstreams, origins, message policy),
/// the ticket endpoint's origins, limits and timeouts, the TLS certificate.
pub(crate) struct State {
    pub(crate) routes: Vec<config::Route>,
    /// TLS client configurations of the routes with a `wss://` upstream, by route position.
    pub(crate) upstream_tls: std::collections::HashMap<usize, Arc<rustls::ClientConfig>>,
    /// Every upstream the routes name, by `host:port` (shared state, kept across reloads).
    pub(crate) backends: pool::Backends,
    pub(crate) ticket_origins: origin::OriginPolicy,
    /// What the upstream is told (validated `forward_headers` and `client_headers`).
    pub(crate) forwarding: forward::Forwarding,
    pub(crate) settings: GatewayConfig,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// `gateway.handshake_rate_per_ip`'s buckets, if set (kept across a reload that keeps it).
    pub(crate) handshake_rate: Option<Arc<limits::HandshakeRate>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("routes", &self.routes.len())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// What both listeners share.
pub struct Gateway {
    pub(crate) sessions: Sessions,
    /// What a reload replaces, swapped in whole.
    pub(crate) state: ArcSwap<State>,
    pub(crate) cookie_name: String,
    /// The session cookie's `Set-Cookie` attributes.
    pub(crate) cookie: cookie::CookieAttributes,
    /// Public and admin listen addresses (a change needs a restart).
    pub(crate) listeners: (SocketAddr, SocketAddr),
    pub(crate) tickets: Tickets,
    pub(crate) registry: Registry,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) limits: crate::limits::Limits,
    pub(crate) loader: std::sync::Mutex<Option<Loader>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("state", &**self.state.load())
            .finish_non_exhaustive()
    }
}

/// Now, in Unix seconds (sessions).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Validates settings and builds the state they describe, reading the TLS files they name.
/// Upstreams named by `previous` keep their state (open sockets, health, draining). Every error
/// is reported, one per line, naming its key.
pub(crate) fn build_state(
    settings: &Settings,
    previous: &pool::Backends,
) -> Result<State, config::ConfigErrors> {
    let mut errors = config::ConfigErrors::default();
    if let Err(e) = config::validate(&settings.gateway) {
        errors.extend(e);
    }
    if settings.routes.is_empty() {
        errors.push("route", "no [[route]] configured: nothing to proxy to");
    }
    // The files the routes name are read first; the routes are then built in one pass.
    let mut schemas = config::Schemas::new();
    for (i, r) in settings.routes.iter().enumerate() {
        if let Some(path) = &r.messages.json_schema {
            match load_schema(path) {
                Ok(v) => {
                    schemas.insert(i, v);
                }
                Err(e) => errors.push(format!("route[{i}].messages.json_schema"), e),
            }
        }
    }
    let (routes, backends) =
        match config::routes_with(&settings.gateway, &settings.routes, previous, &mut schemas) {
            Ok(r) => r,
            Err(e) => {
                errors.extend(e);
                Default::default()
            }
        };
    let mut upstream_tls = std::collections::HashMap::new();
    for r in &routes {
        if r.pool.members().iter().any(|m| m.url.scheme() == "wss") {
            let key = format!("route[{}].upstream_ca", r.index);
            match tls::client_config(&key, r.upstream_ca.as_deref()) {
                Ok(c) => {
                    upstream_tls.insert(r.index, c);
                }
                Err(e) => errors.0.push(e),
            }
        }
    }
    let tls = match &settings.gateway.tls {
        None => None,
        Some(t) => match tls::server_config("gateway.tls", t) {
            Ok(c) => Some(tokio_rustls::TlsAcceptor::from(c)),
            Err(e) => {
                errors.0.push(e);
                None
            }
        },
    };
    let ticket_origins = origin::OriginPolicy::new(
        &settings.gateway.allowed_origins,
        settings.gateway.allow_missing_origin,
    );
    // Its errors are already in `errors` (config::validate checks it).
    let forwarding = forward::Forwarding::new(
        &settings.gateway.forward_headers,
        &settings.gateway.client_headers,
        settings.gateway.forward_session_cookie,
    );
    match (errors.is_empty(), ticket_origins, forwarding) {
        (true, Ok(ticket_origins), Ok(forwarding)) => Ok(State {
            routes,
            upstream_tls,
            backends,
            ticket_origins,
            forwarding,
            settings: settings.gateway.clone(),
            tls,
            handshake_rate: settings
                .gateway
                .handshake_rate_per_ip
                .and_then(policy::Rate::quota)
                .map(|q| Arc::new(limits::HandshakeRate::new(q))),
        }),
        // An origin error is already in `errors` (config::validate checks them); one reported
        // by both the gateway's and a route's checks is said once.
        _ => {
            if errors.is_empty() {
                // Not reachable while `validate` checks what these two check.
                errors.push("gateway", "origins or forwarded headers are invalid");
            }
            Err(errors.or(()).err().unwrap_or_default())
        }
    }
}

/// Reads and compiles a JSON Schema file. Only references inside the file resolve: nothing is
/// fetched from the network or other files.
fn load_schema(path: &std::path::Path) -> Result<jsonschema::Validator, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let schema: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    jsonschema::validator_for(&schema)
        .map_err(|e| format!("{}: not a usable JSON Schema: {e}", path.display()))
}

pub(crate) fn limit_config(g: &GatewayConfig) -> limits::LimitConfig {
    limits::LimitConfig {
        global: g.max_connections,
        per_ip: g.max_connections_per_ip,
        per_user: g.max_connections_per_user,
        pending: g.max_pending_handshakes,
        pending_per_ip: g.max_pending_handshakes_per_ip,
    }
}

impl Gateway {
    pub(crate) fn set_loader(&self, loader: Loader) {
        *self.loader.lock().unwrap_or_else(|p| p.into_inner()) = Some(loader);
    }

    /// Reads the configuration again and applies it, or keeps the one in force.
    pub(crate) fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let loader = self
            .loader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ReloadError::NotConfigured)?;
        let previous = self.state.load();
        let outcome = loader().and_then(|reload| {
            let state = crate::build_state(&reload.settings, &previous.backends)
                .map_err(|e| e.to_string())?;
            Ok((reload, state))
        });
        drop(previous);
        let (reload, mut state) = match outcome {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(
                    event = "reload_refused",
                    error = %e.replace('\n', "; "),
                    "configuration not reloaded; the one in force stays"
                );
                self.metrics.reloaded("refused");
                return Err(ReloadError::Invalid(e));
            }
        };
        let mut restart_required = reload.restart_required;
        let new = &reload.settings;
        let old = self.state.load();
        if new.gateway.listen != self.listeners.0 {
            restart_required.push("gateway.listen".into());
        }
        if new.admin.listen != self.listeners.1 {
            restart_required.push("admin.listen".into());
        }
        if new.cookie_name != self.cookie_name {
            restart_required.push("sessions.cookie_name".into());
        }
        if new.cookie != self.cookie {
            restart_required.push("sessions.cookie_domain, cookie_secure, cookie_same_site".into());
        }
        if new.gateway.ticket_ttl != old.settings.ticket_ttl {
            restart_required.push("gateway.ticket_ttl".into());
        }
        self.limits.set_config(crate::limit_config(&new.gateway));
        self.sessions.set_verifier(reload.verifier);
        // Sockets whose token was signed by a key the new ring dropped (or whose secret it
        // changed) close now; every other live socket is kept.
        let retired = self.registry.close_retired(
            &self.sessions.verifier(),
            now_secs(),
            CloseReason::KeyRetired,
        );
        // A route that stays, with the same per-user rates, keeps its users' buckets: a reload
        // must not hand every user a second budget.
        for route in &mut state.routes {
            if let Some(before) = old.routes.iter().find(|r| r.path == route.path) {
                route.messages.keep_user_buckets(&before.messages);
            }
        }
        // Likewise the handshake buckets of every address, if the rate stays.
        if let (Some(new), Some(before)) = (&state.handshake_rate, &old.handshake_rate)
            && new.quota() == before.quota()
        {
            state.handshake_rate = Some(Arc::clone(before));
        }
        self.state.store(Arc::new(state));
        self.metrics.reloaded("applied");
        tracing::info!(
            event = "reloaded",
            routes = new.routes.len(),
            closed_retired_keys = retired,
            restart_required = %restart_required.join(", "),
            "configuration reloaded; sockets of retired keys closed, the others kept"
        );
        Ok(restart_required)
    }
}
