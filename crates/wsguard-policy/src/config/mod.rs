//! Gateway settings: the `[gateway]`, `[[route]]` and `[admin]` sections of `wsguard.toml`.
//!
//! Owns their shape and defaults (here), their validation (`validate.rs`), the route table
//! built from them in one pass (`routes.rs`), and the value types and duration syntax shared
//! with the binary's own sections (`values.rs`). Every problem is a [`ConfigError`] naming its
//! key, and validation reports every problem it finds. It must not open sockets or files (TLS
//! files and JSON Schemas are read by the gateway, the admin token file by the caller).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod routes;
mod validate;
mod values;

pub use routes::{Rewrite, Route, Schemas, routes, routes_with};
pub use validate::validate;
pub use values::{ConfigError, ConfigErrors, Limit, ZERO_MEANS_OFF, duration};

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Public listener.
    pub listen: SocketAddr,
    /// Allowed origins for every route (a route may replace them).
    pub allowed_origins: Vec<String>,
    /// Accept upgrades without an `Origin` header (non-browser clients). Off by default.
    pub allow_missing_origin: bool,
    /// Deadline for a client to send its complete handshake.
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
    /// Deadline for an upstream to answer its handshake, for all the upstreams of a pool
    /// tried in turn.
    #[serde(with = "duration")]
    pub upstream_timeout: Duration,
    /// How long an upstream whose dial failed (connect, TLS, connection lost before an
    /// answer) is passed over for new sockets while others are up.
    #[serde(with = "duration")]
    pub upstream_backoff: Duration,
    /// `[gateway.health_check]`: probe every upstream periodically (off unless set).
    pub health_check: Option<HealthCheckConfig>,
    /// How long shutdown waits for sockets to finish closing.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// Largest request head accepted, bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most request headers accepted (431 beyond).
    pub max_headers: usize,
    /// Lifetime of one-time connect tickets (at most 30 s).
    #[serde(with = "duration")]
    pub ticket_ttl: Duration,
    /// Forward wsguard's session cookie to the upstream. Off by default.
    pub forward_session_cookie: bool,
    /// Client headers passed to the upstream as the client sent them, by name (any case).
    /// Every other client header is dropped, except those wsguard rebuilds from what it
    /// checked (`Origin`, `Cookie` without the session cookie, `Sec-WebSocket-Protocol`).
    pub forward_headers: Vec<String>,
    /// `[gateway.client_headers]`: how the upstream is told who the client is.
    pub client_headers: crate::forward::ClientHeadersConfig,
    /// Most proxied sockets at once (`"unlimited"`: none). Beyond: 503.
    pub max_connections: Limit,
    /// Most sockets per client address, IPv6 addresses per /64 (`"unlimited"`: none). Beyond: 429.
    pub max_connections_per_ip: Limit,
    /// Most sockets per user (`"unlimited"`: none). Beyond: 429.
    pub max_connections_per_user: Limit,
    /// Most connections not yet upgraded (accepted, handshake or TLS handshake not finished) at
    /// once (`"unlimited"`: none). Beyond: 503, sent without reading the request, then closed.
    pub max_pending_handshakes: Limit,
    /// Most connections not yet upgraded per TCP peer address, IPv6 per /64 (`"unlimited"`: none);
    /// trusted proxies count only towards `max_pending_handshakes`. Beyond: 429, sent unread,
    /// then closed.
    pub max_pending_handshakes_per_ip: Limit,
    /// Most new connections per TCP peer address (IPv6 per /64) and second, with a burst; off
    /// unless set (behind a load balancer not listed in `trusted_proxies`, every client shares
    /// its address). Trusted proxies are exempt. Beyond: 429, sent unread, then closed.
    pub handshake_rate_per_ip: Option<crate::policy::Rate>,
    /// Proxies whose `X-Forwarded-For` (and `X-Forwarded-Proto`, `X-Forwarded-Host`) is
    /// believed for the client address.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Close after this long without a data message either way (`"never"`: never).
    #[serde(with = "duration::or_never")]
    pub idle_timeout: Option<Duration>,
    /// Keepalive ping interval to both peers (`"never"`: no pings).
    #[serde(with = "duration::or_never")]
    pub ping_interval: Option<Duration>,
    /// How long a peer has to answer a ping.
    #[serde(with = "duration")]
    pub pong_timeout: Duration,
    /// How long a peer has to accept a message (slow readers are closed with 1013).
    #[serde(with = "duration")]
    pub send_timeout: Duration,
    /// `[gateway.tls]`: terminate `wss://` with this certificate. Off by default (put wsguard
    /// behind a TLS terminator, or set this).
    pub tls: Option<TlsConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_origins: Vec::new(),
            allow_missing_origin: false,
            handshake_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(10),
            upstream_backoff: Duration::from_secs(10),
            health_check: None,
            drain_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            ticket_ttl: Duration::from_secs(30),
            forward_session_cookie: false,
            forward_headers: crate::forward::DEFAULT_FORWARD_HEADERS
                .map(String::from)
                .to_vec(),
            client_headers: crate::forward::ClientHeadersConfig::default(),
            max_connections: Limit::at(10_000),
            max_connections_per_ip: Limit::at(1_000),
            max_connections_per_user: Limit::at(64),
            max_pending_handshakes: Limit::at(1_024),
            max_pending_handshakes_per_ip: Limit::at(64),
            handshake_rate_per_ip: None,
            trusted_proxies: Vec::new(),
            idle_timeout: Some(Duration::from_secs(3600)),
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// `[gateway.tls]`: terminate `wss://` on the public listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[gateway.health_check]`: active health checks of every upstream.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Time between two probes of an upstream.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// How long a probe may take.
    #[serde(with = "duration", default = "default_probe_timeout")]
    pub timeout: Duration,
    /// Probe with `GET path` (healthy: a 2xx or 3xx answer); without it, a TCP connect (and
    /// the TLS handshake for `wss://`) is the probe.
    #[serde(default)]
    pub path: Option<String>,
}

fn default_probe_timeout() -> Duration {
    Duration::from_secs(2)
}

/// One `[[route]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix (at a `/` boundary); the longest matching route wins.
    pub path: String,
    /// Upstream base URL, `ws://` or `wss://`. The request's normalised path (see
    /// `strip_prefix`, `upstream_path`) and query are appended. Set this or `upstreams`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Several upstreams (a pool): each new socket goes to the one with the fewest open sockets
    /// (`crate::pool`). Set this or `upstream`.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Remove the route's path from the request path before it is appended to the upstream's
    /// (`/chat/room` on route `/chat` asks the upstream for `/room`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Ask every upstream for exactly this path (normal form), whatever the request path under
    /// the route; the query is kept. The upstream URLs may then carry no path.
    #[serde(default)]
    pub upstream_path: Option<String>,
    /// No authentication on this route (still origin-checked).
    #[serde(default)]
    pub public: bool,
    /// Replaces `gateway.allowed_origins` for this route.
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
    /// Replaces `gateway.allow_missing_origin` for this route.
    #[serde(default)]
    pub allow_missing_origin: Option<bool>,
    /// `[route.messages]`: what clients may send.
    #[serde(default)]
    pub messages: crate::policy::MessageConfig,
    /// PEM CA certificates that a `wss://` upstream's certificate must chain to (instead of the
    /// system's roots).
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// Negotiate permessage-deflate (RFC 7692) with clients and the upstream. Off by default:
    /// without it, `Sec-WebSocket-Extensions` is dropped and an upstream that enables an
    /// extension is refused.
    #[serde(default)]
    pub compression: bool,
}

impl RouteConfig {
    /// An authenticated route from `path` to `upstream`, everything else at its default.
    pub fn new(path: impl Into<String>, upstream: impl Into<String>) -> RouteConfig {
        RouteConfig {
            path: path.into(),
            upstream: Some(upstream.into()),
            upstreams: Vec::new(),
            strip_prefix: false,
            upstream_path: None,
            public: false,
            allowed_origins: None,
            allow_missing_origin: None,
            messages: crate::policy::MessageConfig::default(),
            upstream_ca: None,
            compression: false,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin listener (keep it on loopback or a private network).
    pub listen: SocketAddr,
    /// File holding the bearer token (created with a random token by `serve` if missing).
    pub token_file: PathBuf,
    /// Ask for the bearer token on `/metrics` too. Off by default: `/metrics` holds counts
    /// only, and scrapers rarely carry tokens. `/healthz` and `/readyz` stay open either way
    /// (orchestrators probe them).
    pub metrics_require_token: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token_file: "wsguard-admin-token".into(),
            metrics_require_token: false,
        }
    }
}
