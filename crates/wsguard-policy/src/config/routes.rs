//! The route table: `[[route]]` sections validated and built in one pass into [`Route`]s
//! (normalised paths, parsed upstream URLs and origins, message policies with their compiled
//! schemas), longest path first.
//!
//! Owns what makes a route valid and how a request path becomes the upstream's. It must not
//! read files: the JSON Schemas a route names come in compiled ([`Schemas`]).

use std::path::PathBuf;

use super::{ConfigError, ConfigErrors, GatewayConfig, RouteConfig};
use crate::origin::OriginPolicy;
use crate::pool::Backends;

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
pub fn routes(gateway: &GatewayConfig, routes: &[RouteConfig]) -> Result<Vec<Route>, ConfigErrors> {
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
) -> Result<(Vec<Route>, Backends), ConfigErrors> {
    let mut out = Vec::with_capacity(routes.len());
    let mut errors = ConfigErrors::default();
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
            Err(e) => errors.extend(e),
        }
    }
    if has_unusable_origins && errors.is_empty() {
        // Only `gateway.allowed_origins` was wrong: say so here too, for callers that build
        // routes without `validate`.
        for (j, e) in OriginPolicy::problems(&gateway.allowed_origins) {
            errors.push(format!("gateway.allowed_origins[{j}]"), e.to_string());
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Longest prefix first.
    out.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
    Ok((out, backends))
}

/// A route's `path`, which must be written in normal form (requests are matched in it).
fn route_path(key: &str, raw: &str) -> Result<String, ConfigError> {
    let err = |problem: String| ConfigError::new(key, problem);
    if !raw.starts_with('/') || raw.contains(['?', '#']) {
        return Err(err("must be an absolute path like \"/chat\"".into()));
    }
    let trimmed = |p: &str| match p.trim_end_matches('/') {
        "" if p == "/" => "/".to_owned(),
        t => t.to_owned(),
    };
    match crate::target::normalise(raw) {
        Ok(p) if trimmed(&p) == trimmed(raw) => Ok(trimmed(&p)),
        Ok(p) => Err(err(format!(
            "not in normal form; requests are matched after normalisation, so write it \
             as {:?}",
            trimmed(&p)
        ))),
        Err(_) => Err(err(
            "holds what no request path may (a raw \\ or ;, an escaped /, \\, ;, %, ?, # \
             or control, or a character outside ASCII: escape it as UTF-8)"
                .into(),
        )),
    }
}

/// Parses one upstream URL of a route.
fn upstream_url(key: &str, raw: &str) -> Result<url::Url, ConfigError> {
    let upstream =
        url::Url::parse(raw).map_err(|e| ConfigError::new(key, format!("not a URL ({e})")))?;
    if !matches!(upstream.scheme(), "ws" | "wss") || upstream.host().is_none() {
        return Err(ConfigError::new(
            key,
            "must be a ws:// or wss:// URL with a host",
        ));
    }
    if upstream.query().is_some()
        || upstream.fragment().is_some()
        || !upstream.username().is_empty()
    {
        return Err(ConfigError::new(
            key,
            "must not carry a query, fragment or credentials",
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
) -> Result<Route, ConfigErrors> {
    let at = |key: &str| format!("route[{i}].{key}");
    // Every problem of the route is reported, not only the first.
    let mut errors = ConfigErrors::default();
    let path = route_path(&at("path"), &r.path)
        .map_err(|e| errors.0.push(e))
        .ok();
    let folded_path = path.as_deref().map(crate::target::fold);
    if let Some(path) = &path {
        if before.iter().any(|o: &Route| &o.path == path) {
            errors.push(at("path"), format!("two routes for {path}"));
        } else if let Some(o) = before
            .iter()
            .find(|o| Some(&o.folded_path) == folded_path.as_ref())
        {
            errors.push(
                at("path"),
                format!(
                    "{path} and route[{}]'s {} are the same path to a backend that ignores \
                     case or trailing dots: requests for it would be ambiguous",
                    o.index, o.path
                ),
            );
        }
    }
    let urls: Vec<(String, &str)> = match (&r.upstream, r.upstreams.as_slice()) {
        (Some(u), []) => vec![(at("upstream"), u.as_str())],
        (None, []) => {
            errors.push(
                at("upstream"),
                "no upstream: set upstream = \"ws://host:port\" or upstreams = [...]",
            );
            Vec::new()
        }
        (None, list) => list
            .iter()
            .enumerate()
            .map(|(j, u)| (at(&format!("upstreams[{j}]")), u.as_str()))
            .collect(),
        (Some(_), _) => {
            errors.push(at("upstreams"), "set upstream or upstreams, not both");
            Vec::new()
        }
    };
    let mut members: Vec<crate::pool::Member> = Vec::with_capacity(urls.len());
    for (key, raw) in &urls {
        let url = match upstream_url(key, raw) {
            Ok(u) => u,
            Err(e) => {
                errors.0.push(e);
                continue;
            }
        };
        let backend_key = crate::pool::key_of(&url);
        if members
            .iter()
            .any(|m| crate::pool::key_of(&m.url) == backend_key)
        {
            errors.push(
                key.as_str(),
                format!("{backend_key} is already in this route's pool"),
            );
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
            errors.push(
                at("upstream_path"),
                "set upstream_path or strip_prefix, not both",
            );
            Rewrite::Append
        }
        (Some(_), false) if has_base_path => {
            errors.push(
                at("upstream_path"),
                "the upstream URL already has a path; write the whole path in one place",
            );
            Rewrite::Append
        }
        (Some(p), false) => match crate::target::normalise(p) {
            Ok(n) if &n == p => Rewrite::Fixed(n),
            _ => {
                errors.push(
                    at("upstream_path"),
                    "must be an absolute path in normal form, like \"/socket\"",
                );
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
            errors.push(format!("{}[{j}]", at("allowed_origins")), e.to_string());
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
        errors.extend(e);
    }
    if r.upstream_ca.is_some() && !members.iter().any(|m| m.url.scheme() == "wss") {
        errors.push(at("upstream_ca"), "only meaningful with a wss:// upstream");
    }
    let (Some(path), Some(folded_path), Some(origins), true) =
        (path, folded_path, origins, errors.is_empty())
    else {
        // An origin error of `gateway.allowed_origins` alone is `validate`'s to report.
        return Err(errors);
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
