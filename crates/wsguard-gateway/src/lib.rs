//! wsguard gateway: the WebSocket reverse proxy.
//!
//! Owns everything between a client's upgrade request and the upstream socket: the strict
//! handshake checks, the origin policy, authentication (session cookie or one-time ticket), the
//! relay, the registry of live sockets that revocations close, and the admin API. Pure policy
//! (origin, cookie header, handshake, the table of reasons) lives in modules that do no I/O, so
//! every boundary is tested without a socket. Configuration files and key files are read by the
//! binary, not here; what a reload may change is swapped in whole (`State`), so a socket or a
//! handshake never sees half of an old and half of a new configuration.

pub use wsguard_policy::{
    config, cookie, deflate, forward, handshake, limits, origin, policy, pool, reason, target,
    tickets, wire,
};

mod accept;
pub mod admin;
mod background;
pub mod echo;
pub mod health;
pub mod metrics;
mod pipeline;
mod refusal;
pub mod registry;
pub mod relay;
mod socket;
mod state;
pub mod stream;
mod ticket_endpoint;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wsguard_session::Sessions;
use zeroize::Zeroizing;

pub use crate::forward::{DATA_HEADER, SESSION_HEADER, USER_HEADER};
pub use crate::pipeline::TICKET_PATH;
use crate::registry::Registry;
use crate::state::{Gateway, build_state, limit_config};
pub use crate::state::{Loader, Reload, ReloadError, Settings};
use crate::tickets::Tickets;

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

/// Checks settings as `start` and a reload would, without binding anything: every error, one
/// per line, naming its key (for `wsguard check-config`).
pub fn check(settings: &Settings) -> Result<(), config::ConfigErrors> {
    build_state(settings, &pool::Backends::default()).map(|_| ())
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

    /// A test hook: [`Running::sweep`] as if the wall clock read `now`, so that a test expires
    /// tickets and sessions by choosing the instant instead of sleeping past their lifetime.
    /// Production code calls [`Running::sweep`] (or lets housekeeping run).
    pub async fn sweep_at(&self, now: std::time::SystemTime) -> (usize, usize) {
        self.gateway.sweep_at(true, now).await
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
    Config(config::ConfigErrors),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
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
