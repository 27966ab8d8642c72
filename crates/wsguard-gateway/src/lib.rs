//! wsguard gateway: the WebSocket reverse proxy.
//!
//! Owns everything between a client's upgrade request and the upstream socket: the strict
//! handshake checks, the origin policy, authentication (session cookie or one-time ticket), the
//! relay, the registry of live sockets that revocations close, and the admin API. Pure policy
//! (origin, cookie header, handshake, the table of reasons) lives in modules that do no I/O, so
//! every boundary is tested without a socket. Configuration files and key files are read by the
//! binary, not here.

pub mod admin;
pub mod config;
pub mod cookie;
pub mod echo;
pub mod handshake;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod policy;
pub mod reason;
pub mod registry;
pub mod relay;
pub mod server;
pub mod tickets;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wsguard_session::Sessions;
use zeroize::Zeroizing;

use crate::config::{AdminConfig, GatewayConfig, RouteConfig};
use crate::registry::Registry;
use crate::server::Gateway;
use crate::tickets::Tickets;

/// Resolves once shutdown has been asked for (without holding the channel's lock across awaits).
pub(crate) async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// Where the public listener listens.
    pub public_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    public: JoinHandle<()>,
    admin: JoinHandle<()>,
    registry: Registry,
}

impl Running {
    /// Starts a graceful shutdown: stop accepting, close every socket with 1001, drain.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// The registry of live sockets.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Waits until both listeners have stopped (after [`Running::shutdown`]).
    pub async fn wait(self) {
        let _ = self.public.await;
        let _ = self.admin.await;
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Invalid configuration (the message names the key).
    #[error("{0}")]
    Config(String),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
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
}

/// Binds both listeners and starts serving.
pub async fn start(
    sessions: Sessions,
    settings: Settings,
    admin_token: Zeroizing<String>,
) -> Result<Running, StartError> {
    config::validate(&settings.gateway).map_err(StartError::Config)?;
    if settings.routes.is_empty() {
        return Err(StartError::Config(
            "route: no [[route]] configured: nothing to proxy to".into(),
        ));
    }
    let routes = config::routes(&settings.gateway, &settings.routes).map_err(StartError::Config)?;
    let ticket_origins = origin::OriginPolicy::new(
        &settings.gateway.allowed_origins,
        settings.gateway.allow_missing_origin,
    )
    .map_err(|e| StartError::Config(format!("gateway.allowed_origins: {e}")))?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let public = bind(settings.gateway.listen).await?;
    let admin = bind(settings.admin.listen).await?;
    let public_addr = public.local_addr().map_err(|source| StartError::Bind {
        addr: settings.gateway.listen,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        addr: settings.admin.listen,
        source,
    })?;
    let (shutdown, _) = watch::channel(false);
    let registry = Registry::new();
    let gateway = Arc::new(Gateway {
        sessions,
        routes,
        ticket_origins,
        cookie_name: settings.cookie_name.clone(),
        tickets: Tickets::new(settings.gateway.ticket_ttl.as_millis() as u64),
        registry: registry.clone(),
        settings: settings.gateway.clone(),
        shutdown: shutdown.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
        limits: limits::Limits::new(limits::LimitConfig {
            global: settings.gateway.max_connections,
            per_ip: settings.gateway.max_connections_per_ip,
            per_user: settings.gateway.max_connections_per_user,
        }),
    });
    let admin_state = Arc::new(admin::Admin::new(Arc::clone(&gateway), admin_token));
    let admin = tokio::spawn(admin_state.serve(admin));
    let public = tokio::spawn(gateway.serve(public));
    Ok(Running {
        public_addr,
        admin_addr,
        shutdown,
        public,
        admin,
        registry,
    })
}
