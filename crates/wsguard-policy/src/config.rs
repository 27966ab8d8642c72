//! Gateway settings: the `[gateway]`, `[[route]]` and `[admin]` sections of `wsguard.toml`.
//!
//! Owns their shape, defaults and validation into [`Route`]s (parsed origins, upstream URLs,
//! bounded durations). Errors name the key, and validation reports every error it finds, one
//! per line. It must not open sockets or files (TLS files are read by the gateway, the admin
//! token file by the caller).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::origin::OriginPolicy;
use crate::pool::Backends;

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
    #[serde(with = "humantime_serde_secs")]
    pub handshake_timeout: Duration,
    /// Deadline for an upstream to answer its handshake, for all the upstreams of a pool
    /// tried in turn.
    #[serde(with = "humantime_serde_secs")]
    pub upstream_timeout: Duration,
    /// How long an upstream whose dial failed (connect, TLS, connection lost before an
    /// answer) is passed over for new sockets while others are up.
    #[serde(with = "humantime_serde_secs")]
    pub upstream_backoff: Duration,
    /// `[gateway.health_check]`: probe every upstream periodically (off unless set).
    pub health_check: Option<HealthCheckConfig>,
    /// How long shutdown waits for sockets to finish closing.
    #[serde(with = "humantime_serde_secs")]
    pub drain_timeout: Duration,
    /// Largest request head accepted, bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most request headers accepted (431 beyond).
    pub max_headers: usize,
    /// Lifetime of one-time connect tickets (at most 30 s).
    #[serde(with = "humantime_serde_secs")]
    pub ticket_ttl: Duration,
    /// Forward wsguard's session cookie to the upstream. Off by default.
    pub forward_session_cookie: bool,
    /// Client headers passed to the upstream as the client sent them, by name (any case).
    /// Every other client header is dropped, except those wsguard rebuilds from what it
    /// checked (`Origin`, `Cookie` without the session cookie, `Sec-WebSocket-Protocol`).
    pub forward_headers: Vec<String>,
    /// `[gateway.client_headers]`: how the upstream is told who the client is.
    pub client_headers: crate::forward::ClientHeadersConfig,
    /// Most proxied sockets at once (0: unlimited). Beyond: 503.
    pub max_connections: usize,
    /// Most sockets per client address, IPv6 addresses per /64 (0: unlimited). Beyond: 429.
    pub max_connections_per_ip: usize,
    /// Most sockets per user (0: unlimited). Beyond: 429.
    pub max_connections_per_user: usize,
    /// Most connections not yet upgraded (accepted, handshake or TLS handshake not finished) at
    /// once (0: unlimited). Beyond: 503, sent without reading the request, then closed.
    pub max_pending_handshakes: usize,
    /// Most connections not yet upgraded per TCP peer address, IPv6 per /64 (0: unlimited);
    /// trusted proxies count only towards `max_pending_handshakes`. Beyond: 429, sent unread,
    /// then closed.
    pub max_pending_handshakes_per_ip: usize,
    /// Most new connections per TCP peer address (IPv6 per /64) and second, with a burst; off
    /// unless set (behind a load balancer not listed in `trusted_proxies`, every client shares
    /// its address). Trusted proxies are exempt. Beyond: 429, sent unread, then closed.
    pub handshake_rate_per_ip: Option<crate::policy::Rate>,
    /// Proxies whose `X-Forwarded-For` (and `X-Forwarded-Proto`, `X-Forwarded-Host`) is
    /// believed for the client address.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Close after this long without a data message either way ("0s": never).
    #[serde(with = "humantime_serde_secs")]
    pub idle_timeout: Duration,
    /// Keepalive ping interval to both peers ("0s": no pings).
    #[serde(with = "humantime_serde_secs")]
    pub ping_interval: Duration,
    /// How long a peer has to answer a ping.
    #[serde(with = "humantime_serde_secs")]
    pub pong_timeout: Duration,
    /// How long a peer has to accept a message (slow readers are closed with 1013).
    #[serde(with = "humantime_serde_secs")]
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
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_connections_per_user: 64,
            max_pending_handshakes: 1_024,
            max_pending_handshakes_per_ip: 64,
            handshake_rate_per_ip: None,
            trusted_proxies: Vec::new(),
            idle_timeout: Duration::from_secs(3600),
            ping_interval: Duration::from_secs(30),
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
    #[serde(with = "humantime_serde_secs")]
    pub interval: Duration,
    /// How long a probe may take.
    #[serde(with = "humantime_serde_secs", default = "default_probe_timeout")]
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

/// Durations as whole seconds or humantime strings.
pub(crate) mod humantime_serde_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        let err = || {
            serde::de::Error::custom(
                "expected a duration: whole seconds or a string like \"500ms\", \"10s\"",
            )
        };
        match Raw::deserialize(d).map_err(|_| err())? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(&t).map_err(|_| err()),
        }
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path prefix in normal form ([`crate::target::normalise`]), without a trailing `/`
    /// (except the root route `/`).
    pub path: String,
    /// The path as a case-insensitive backend reads it ([`crate::target::fold`]): no two routes
    /// share one.
    pub folded_path: String,
    /// The upstreams (one, or a pool).
    pub pool: crate::pool::Pool,
    /// How the request path becomes the upstream's.
    pub rewrite: Rewrite,
    /// No authentication.
    pub public: bool,
    /// The origin policy in force on this route.
    pub origins: OriginPolicy,
    /// The message policy (shared by the route's sockets: per-user buckets).
    pub messages: std::sync::Arc<crate::policy::RoutePolicy>,
    /// Position of this route in the configuration (for error messages).
    pub index: usize,
    /// CA file for a `wss://` upstream (system roots if `None`).
    pub upstream_ca: Option<PathBuf>,
    /// permessage-deflate is negotiated with both peers ([`crate::deflate`]).
    pub compression: bool,
}

impl crate::target::RoutePath for Route {
    fn path(&self) -> &str {
        &self.path
    }

    fn folded_path(&self) -> &str {
        &self.folded_path
    }
}

impl Route {
    /// Whether a normalised `path` falls under this route (prefix at a segment boundary).
    pub fn matches(&self, path: &str) -> bool {
        crate::target::is_under(&self.path, path)
    }

    /// The upstream request target (origin form) on `upstream` for a normalised request path
    /// under this route and its query (already without wsguard's parameters): the upstream's
    /// base path, then the path as [`Rewrite`] says, then the query.
    pub fn upstream_target(&self, upstream: &url::Url, path: &str, query: Option<&str>) -> String {
        let base = upstream.path().trim_end_matches('/');
        let rest = match &self.rewrite {
            Rewrite::Append => path,
            Rewrite::StripPrefix if self.path == "/" => path,
            Rewrite::StripPrefix => path.get(self.path.len()..).unwrap_or(""),
            Rewrite::Fixed(fixed) => fixed,
        };
        let mut s =
            String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
        s.push_str(base);
        s.push_str(rest);
        if s.is_empty() {
            s.push('/');
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            s.push('?');
            s.push_str(q);
        }
        s
    }
}

/// How a route turns the request path into the upstream's (after the upstream URL's own path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// The whole normalised path (the default).
    Append,
    /// The normalised path without the route's prefix (`strip_prefix = true`).
    StripPrefix,
    /// Always this path (`upstream_path`).
    Fixed(String),
}

/// Builds the route table. Errors name the route and key; every route's errors are reported,
/// one per line.
pub fn routes(gateway: &GatewayConfig, routes: &[RouteConfig]) -> Result<Vec<Route>, String> {
    routes_with(gateway, routes, &Backends::default(), &mut Schemas::new()).map(|(r, _)| r)
}

/// The compiled JSON Schemas of the routes that name one, by route position: read and compiled
/// by the caller (this crate reads no file), taken by [`routes_with`]. A route that names a
/// schema absent here is built without one (its file's problem is the caller's to report).
pub type Schemas = std::collections::HashMap<usize, jsonschema::Validator>;

/// Builds the route table and the upstreams it names, taking each upstream's state from
/// `previous` when it names the same `host:port` (a reload keeps open counts, health and
/// draining).
pub fn routes_with(
    gateway: &GatewayConfig,
    routes: &[RouteConfig],
    previous: &Backends,
    schemas: &mut Schemas,
) -> Result<(Vec<Route>, Backends), String> {
    let mut out = Vec::with_capacity(routes.len());
    let mut errors = Vec::new();
    let mut has_unusable_origins = false;
    let mut backends = Backends::default();
    for (i, r) in routes.iter().enumerate() {
        match route(
            gateway,
            i,
            r,
            &out,
            &mut backends,
            previous,
            schemas.remove(&i),
        ) {
            Ok(route) => out.push(route),
            Err(e) if e.is_empty() => has_unusable_origins = true,
            Err(e) => errors.push(e),
        }
    }
    if has_unusable_origins && errors.is_empty() {
        // Only `gateway.allowed_origins` was wrong: say so here too, for callers that build
        // routes without `validate`.
        for (j, e) in OriginPolicy::problems(&gateway.allowed_origins) {
            errors.push(format!("gateway.allowed_origins[{j}]: {e}"));
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    // Longest prefix first.
    out.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
    Ok((out, backends))
}

/// A route's `path`, which must be written in normal form (requests are matched in it).
fn route_path(key: &str, raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') || raw.contains(['?', '#']) {
        return Err(format!("{key}: must be an absolute path like \"/chat\""));
    }
    let trimmed = |p: &str| match p.trim_end_matches('/') {
        "" if p == "/" => "/".to_owned(),
        t => t.to_owned(),
    };
    match crate::target::normalise(raw) {
        Ok(p) if trimmed(&p) == trimmed(raw) => Ok(trimmed(&p)),
        Ok(p) => Err(format!(
            "{key}: not in normal form; requests are matched after normalisation, so write it \
             as {:?}",
            trimmed(&p)
        )),
        Err(_) => Err(format!(
            "{key}: holds what no request path may (a raw \\ or ;, an escaped /, \\, ;, %, ?, # \
             or control, or a character outside ASCII: escape it as UTF-8)"
        )),
    }
}

/// Parses one upstream URL of a route.
fn upstream_url(key: &str, raw: &str) -> Result<url::Url, String> {
    let upstream = url::Url::parse(raw).map_err(|e| format!("{key}: not a URL ({e})"))?;
    if !matches!(upstream.scheme(), "ws" | "wss") || upstream.host().is_none() {
        return Err(format!("{key}: must be a ws:// or wss:// URL with a host"));
    }
    if upstream.query().is_some()
        || upstream.fragment().is_some()
        || !upstream.username().is_empty()
    {
        return Err(format!(
            "{key}: must not carry a query, fragment or credentials"
        ));
    }
    Ok(upstream)
}

fn route(
    gateway: &GatewayConfig,
    i: usize,
    r: &RouteConfig,
    before: &[Route],
    backends: &mut Backends,
    previous: &Backends,
    schema: Option<jsonschema::Validator>,
) -> Result<Route, String> {
    let at = |key: &str| format!("route[{i}].{key}");
    // Every problem of the route is reported, not only the first.
    let mut errors: Vec<String> = Vec::new();
    let path = route_path(&at("path"), &r.path)
        .map_err(|e| errors.push(e))
        .ok();
    let folded_path = path.as_deref().map(crate::target::fold);
    if let Some(path) = &path {
        if before.iter().any(|o: &Route| &o.path == path) {
            errors.push(format!("{}: two routes for {path}", at("path")));
        } else if let Some(o) = before
            .iter()
            .find(|o| Some(&o.folded_path) == folded_path.as_ref())
        {
            errors.push(format!(
                "{}: {path} and route[{}]'s {} are the same path to a backend that ignores case \
                 or trailing dots: requests for it would be ambiguous",
                at("path"),
                o.index,
                o.path
            ));
        }
    }
    let urls: Vec<(String, &str)> = match (&r.upstream, r.upstreams.as_slice()) {
        (Some(u), []) => vec![(at("upstream"), u.as_str())],
        (None, []) => {
            errors.push(format!(
                "{}: no upstream: set upstream = \"ws://host:port\" or upstreams = [...]",
                at("upstream")
            ));
            Vec::new()
        }
        (None, list) => list
            .iter()
            .enumerate()
            .map(|(j, u)| (at(&format!("upstreams[{j}]")), u.as_str()))
            .collect(),
        (Some(_), _) => {
            errors.push(format!(
                "{}: set upstream or upstreams, not both",
                at("upstreams")
            ));
            Vec::new()
        }
    };
    let mut members: Vec<crate::pool::Member> = Vec::with_capacity(urls.len());
    for (key, raw) in &urls {
        let url = match upstream_url(key, raw) {
            Ok(u) => u,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let backend_key = crate::pool::key_of(&url);
        if members
            .iter()
            .any(|m| crate::pool::key_of(&m.url) == backend_key)
        {
            errors.push(format!(
                "{key}: {backend_key} is already in this route's pool"
            ));
            continue;
        }
        members.push(crate::pool::Member {
            backend: backends.resolve(&backend_key, previous),
            url,
        });
    }
    let has_base_path = members.iter().any(|m| m.url.path() != "/");
    let rewrite = match (&r.upstream_path, r.strip_prefix) {
        (Some(_), true) => {
            errors.push(format!(
                "{}: set upstream_path or strip_prefix, not both",
                at("upstream_path")
            ));
            Rewrite::Append
        }
        (Some(_), false) if has_base_path => {
            errors.push(format!(
                "{}: the upstream URL already has a path; write the whole path in one place",
                at("upstream_path")
            ));
            Rewrite::Append
        }
        (Some(p), false) => match crate::target::normalise(p) {
            Ok(n) if &n == p => Rewrite::Fixed(n),
            _ => {
                errors.push(format!(
                    "{}: must be an absolute path in normal form, like \"/socket\"",
                    at("upstream_path")
                ));
                Rewrite::Append
            }
        },
        (None, true) => Rewrite::StripPrefix,
        (None, false) => Rewrite::Append,
    };
    // A route's own origins are checked here, entry by entry; the gateway's are checked once,
    // by `validate`.
    if let Some(own) = &r.allowed_origins {
        for (j, e) in OriginPolicy::problems(own) {
            errors.push(format!("{}[{j}]: {e}", at("allowed_origins")));
        }
    }
    let origins = OriginPolicy::new(
        r.allowed_origins
            .as_ref()
            .unwrap_or(&gateway.allowed_origins),
        r.allow_missing_origin
            .unwrap_or(gateway.allow_missing_origin),
    )
    .ok();
    if let Err(e) = r.messages.validate(&at("messages")) {
        errors.extend(e.lines().map(str::to_owned));
    }
    if r.upstream_ca.is_some() && !members.iter().any(|m| m.url.scheme() == "wss") {
        errors.push(format!(
            "{}: only meaningful with a wss:// upstream",
            at("upstream_ca")
        ));
    }
    let (Some(path), Some(folded_path), Some(origins), true) =
        (path, folded_path, origins, errors.is_empty())
    else {
        // An origin error of `gateway.allowed_origins` alone is `validate`'s to report.
        return Err(errors.join("\n"));
    };
    let messages = match schema {
        Some(v) => crate::policy::RoutePolicy::with_schema(r.messages.clone(), v),
        None => crate::policy::RoutePolicy::new(r.messages.clone()),
    };
    Ok(Route {
        path,
        folded_path,
        pool: crate::pool::Pool::new(members),
        rewrite,
        public: r.public,
        origins,
        messages,
        index: i,
        upstream_ca: r.upstream_ca.clone(),
        compression: r.compression,
    })
}

/// Validates the `[gateway]` numbers; every error, one per line.
pub fn validate(g: &GatewayConfig) -> Result<(), String> {
    let mut errors = Vec::new();
    let mut nonzero = vec![
        ("gateway.handshake_timeout", g.handshake_timeout),
        ("gateway.upstream_timeout", g.upstream_timeout),
        ("gateway.ticket_ttl", g.ticket_ttl),
        ("gateway.pong_timeout", g.pong_timeout),
        ("gateway.send_timeout", g.send_timeout),
        ("gateway.upstream_backoff", g.upstream_backoff),
    ];
    if let Some(h) = &g.health_check {
        nonzero.push(("gateway.health_check.interval", h.interval));
        nonzero.push(("gateway.health_check.timeout", h.timeout));
        if h.path
            .as_deref()
            .is_some_and(|p| crate::target::normalise(p).ok().as_deref() != Some(p))
        {
            errors.push(
                "gateway.health_check.path: must be an absolute path in normal form, like \"/healthz\""
                    .into(),
            );
        }
    }
    for (key, d) in nonzero {
        if d.is_zero() {
            errors.push(format!("{key}: must be more than zero"));
        }
    }
    if g.ticket_ttl > Duration::from_secs(30) {
        errors.push("gateway.ticket_ttl: must be at most 30s".into());
    }
    if !(1024..=1024 * 1024).contains(&g.max_header_bytes) {
        errors.push("gateway.max_header_bytes: must be between 1024 and 1048576".into());
    }
    if !(8..=1024).contains(&g.max_headers) {
        errors.push("gateway.max_headers: must be between 8 and 1024".into());
    }
    if let Some(r) = g.handshake_rate_per_ip
        && r.quota().is_none()
    {
        errors.push(
            "gateway.handshake_rate_per_ip: per_second and burst must be more than zero".into(),
        );
    }
    for (i, e) in OriginPolicy::problems(&g.allowed_origins) {
        errors.push(format!("gateway.allowed_origins[{i}]: {e}"));
    }
    if let Err(e) = crate::forward::Forwarding::new(
        &g.forward_headers,
        &g.client_headers,
        g.forward_session_cookie,
    ) {
        errors.extend(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}
