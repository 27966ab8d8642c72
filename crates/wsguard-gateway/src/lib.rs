//! wsguard gateway: the WebSocket reverse proxy.
//!
//! Owns everything between a client's upgrade request and the upstream socket: the strict
//! handshake checks, the origin policy, authentication (session cookie or one-time ticket), the
//! relay, the registry of live sockets that revocations close, and the admin API. Pure policy
//! (origin, cookie header, handshake, the table of reasons) lives in modules that do no I/O, so
//! every boundary is tested without a socket. Configuration files and key files are read by the
//! binary, not here; what a reload may change is swapped in whole ([`State`]), so a socket or a
//! handshake never sees half of an old and half of a new configuration.

pub mod admin;
pub mod config;
pub mod cookie;
pub mod deflate;
pub mod echo;
pub mod forward;
pub mod handshake;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod policy;
pub mod pool;
pub mod reason;
pub mod registry;
pub mod relay;
pub mod server;
pub mod stream;
pub mod target;
pub mod tickets;
pub mod tls;
pub mod upstream;
pub mod wire;

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
    gateway: Arc<Gateway>,
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

/// Validates settings and builds the state they describe, reading the TLS files they name.
/// Upstreams named by `previous` keep their state (open sockets, health, draining). Every error
/// is reported, one per line, naming its key.
pub(crate) fn build_state(settings: &Settings, previous: &pool::Backends) -> Result<State, String> {
    let mut errors = Vec::new();
    if let Err(e) = config::validate(&settings.gateway) {
        errors.push(e);
    }
    if settings.routes.is_empty() {
        errors.push("route: no [[route]] configured: nothing to proxy to".into());
    }
    let (mut routes, backends) =
        match config::routes_with(&settings.gateway, &settings.routes, previous) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                Default::default()
            }
        };
    for r in &mut routes {
        if let Some(path) = &r.messages.config().json_schema {
            match load_schema(path) {
                Ok(v) => {
                    r.messages = policy::RoutePolicy::with_schema(r.messages.config().clone(), v);
                }
                Err(e) => errors.push(format!("route[{}].messages.json_schema: {e}", r.index)),
            }
        }
        if r.pool.members().iter().any(|m| m.url.scheme() == "wss") {
            let key = format!("route[{}].upstream_ca", r.index);
            match tls::client_config(&key, r.upstream_ca.as_deref()) {
                Ok(c) => r.tls = Some(c),
                Err(e) => errors.push(e),
            }
        }
    }
    let tls = match &settings.gateway.tls {
        None => None,
        Some(t) => match tls::server_config("gateway.tls", t) {
            Ok(c) => Some(tokio_rustls::TlsAcceptor::from(c)),
            Err(e) => {
                errors.push(e);
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
            let mut seen = std::collections::HashSet::new();
            let lines: Vec<&str> = errors
                .iter()
                .flat_map(|e| e.lines())
                .filter(|l| seen.insert(*l))
                .collect();
            Err(lines.join("\n"))
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

/// Checks settings as `start` and a reload would, without binding anything: every error, one
/// per line, naming its key (for `wsguard check-config`).
pub fn check(settings: &Settings) -> Result<(), String> {
    build_state(settings, &pool::Backends::default()).map(|_| ())
}

fn limit_config(g: &GatewayConfig) -> limits::LimitConfig {
    limits::LimitConfig {
        global: g.max_connections,
        per_ip: g.max_connections_per_ip,
        per_user: g.max_connections_per_user,
        pending: g.max_pending_handshakes,
        pending_per_ip: g.max_pending_handshakes_per_ip,
    }
}

impl Running {
    /// Gives the gateway a way to read its configuration again (`POST /reload`, SIGHUP).
    pub fn set_loader(&self, loader: Loader) {
        self.gateway.set_loader(loader);
    }

    /// Reads the configuration again and applies it without dropping live sockets: new
    /// handshakes see the new routes, origins, limits, timeouts, keys and certificate; open
    /// sockets keep the message policy they started with. An invalid configuration is refused
    /// and the one in force stays. Returns the changed keys that need a restart.
    pub fn reload(&self) -> Result<Vec<String>, ReloadError> {
        self.gateway.reload()
    }

    /// Runs one housekeeping round now (it also runs on its own every 30 s): drops expired
    /// tickets and idle rate buckets, and purges expired sessions from the store. Returns
    /// (tickets dropped, store rows purged).
    pub async fn sweep(&self) -> (usize, usize) {
        self.gateway.sweep(true).await
    }

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
    /// How the admin API sets the session cookie.
    pub cookie: cookie::CookieAttributes,
}

/// Pending connections a listener queues before the kernel drops SYNs (capped by
/// `net.core.somaxconn`). The standard library's 128 overflows when thousands of clients reconnect
/// at once, after a restart or a network blip, and each dropped SYN costs its client a 1 s
/// retransmission; nginx asks for 511, HAProxy for its connection limit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener on `addr` (address reuse on, as the standard library's bind) with
/// [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds both listeners and starts serving.
pub async fn start(
    sessions: Sessions,
    settings: Settings,
    admin_token: Zeroizing<String>,
) -> Result<Running, StartError> {
    let state = build_state(&settings, &pool::Backends::default()).map_err(StartError::Config)?;
    let bind = |addr: SocketAddr| listen(addr).map_err(|source| StartError::Bind { addr, source });
    let public = bind(settings.gateway.listen)?;
    let admin = bind(settings.admin.listen)?;
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
        state: arc_swap::ArcSwap::from_pointee(state),
        cookie_name: settings.cookie_name.clone(),
        cookie: settings.cookie.clone(),
        listeners: (settings.gateway.listen, settings.admin.listen),
        tickets: Tickets::new(settings.gateway.ticket_ttl.as_millis() as u64),
        registry: registry.clone(),
        shutdown: shutdown.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
        limits: limits::Limits::new(limit_config(&settings.gateway)),
        loader: std::sync::Mutex::new(None),
    });
    let admin_state = Arc::new(admin::Admin::new(
        Arc::clone(&gateway),
        admin_token,
        settings.admin.metrics_require_token,
    ));
    let admin = tokio::spawn(admin_state.serve(admin));
    let public = tokio::spawn(Arc::clone(&gateway).serve(public));
    Ok(Running {
        public_addr,
        admin_addr,
        shutdown,
        public,
        admin,
        registry,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener nobody accepts from completes as many handshakes as its queue holds: past the
    /// standard library's backlog of 128 the kernel would drop the SYNs, and those connects would
    /// not complete before something accepts.
    #[tokio::test]
    async fn listener_queues_more_than_the_standard_librarys_128() {
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1000);
        let want = somaxconn.min(1000) as usize;
        if want <= 200 {
            eprintln!("net.core.somaxconn is {somaxconn}: too small to tell, skipped");
            return;
        }
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = (0..want).map(|_| tokio::net::TcpStream::connect(addr));
        let all = futures_util::future::try_join_all(connects);
        // Generous: each connect is one loopback round trip; a dropped SYN is retried after 1 s,
        // 3 s, 7 s, … and would never get in while the queue stays full.
        let streams = tokio::time::timeout(std::time::Duration::from_secs(20), all)
            .await
            .expect("connects past a backlog of 128 completed without an accept")
            .unwrap();
        assert_eq!(streams.len(), want);
    }
}
