//! The `wsguard.toml` configuration file, shared by the CLI and the gateway.
//!
//! Owns parsing, defaults and validation: every error names the key (`sessions.max_age`) and
//! what is wrong with it. Relative paths are resolved against the directory of the config file.
//! It must not open stores or key files (see `keys.rs`, `main.rs`), and never holds secrets:
//! keys live in their own file (or environment variable).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;
use wsguard_gateway::config::{ConfigError, duration};
use wsguard_session::Mode;
use wsguard_token::TokenPolicy;

/// Default config file name (looked up in the working directory).
pub const DEFAULT_CONFIG: &str = "wsguard.toml";

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[sessions]`
    pub sessions: SessionsConfig,
    /// `[store]`
    pub store: StoreConfig,
    /// `[gateway]`
    pub gateway: wsguard_gateway::config::GatewayConfig,
    /// `[[route]]`
    #[serde(rename = "route")]
    pub routes: Vec<wsguard_gateway::config::RouteConfig>,
    /// `[admin]`
    pub admin: wsguard_gateway::config::AdminConfig,
    /// Deprecated spellings the file used (a `0` that means "unlimited" or "never"), each
    /// naming its key and line: filled in by [`crate::diagnose::diagnose`], shown by
    /// [`Config::warnings`].
    #[serde(skip)]
    pub deprecated: Vec<String>,
}

/// `[sessions]`: tokens, keys and lifetimes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// `stateful` (default) or `stateless`.
    pub mode: Mode,
    /// Absolute session lifetime.
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// Idle timeout.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Least time between two store writes of a session's activity.
    #[serde(with = "duration")]
    pub touch_interval: Duration,
    /// Tolerated clock skew for timestamps in the future.
    #[serde(with = "duration")]
    pub future_leeway: Duration,
    /// Name of the session cookie.
    pub cookie_name: String,
    /// `Domain` of the session cookie the admin API (and `session issue --json`) sets, for a
    /// gateway on another host of the app's domain (`example.com` for an app on
    /// `app.example.com` and a gateway on `ws.example.com`). None: only the host that set it.
    pub cookie_domain: Option<String>,
    /// `Secure`: the cookie never travels over plain HTTP. On by default.
    pub cookie_secure: bool,
    /// `SameSite`: `"lax"` (default), `"strict"` or `"none"` (cross-site; needs `Secure`).
    pub cookie_same_site: wsguard_gateway::cookie::SameSite,
    /// Key file (TOML, see `wsguard keygen`).
    pub keys_file: PathBuf,
    /// If set, and that environment variable is set, keys are read from it (key file TOML)
    /// instead of `keys_file`.
    pub keys_env: Option<String>,
    /// Accept the "SecureSession" tutorial's tokens (needs `legacy_secret` in the key file).
    pub accept_legacy_tokens: bool,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        let p = TokenPolicy::default();
        SessionsConfig {
            mode: Mode::Stateful,
            max_age: Duration::from_secs(p.max_age),
            idle_timeout: Duration::from_secs(p.idle_timeout),
            touch_interval: Duration::from_secs(60),
            future_leeway: Duration::from_secs(p.future_leeway),
            cookie_name: "wsguard_session".into(),
            cookie_domain: None,
            cookie_secure: true,
            cookie_same_site: wsguard_gateway::cookie::SameSite::Lax,
            keys_file: "wsguard-keys.toml".into(),
            keys_env: None,
            accept_legacy_tokens: false,
        }
    }
}

/// `[store]`: where sessions live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite` (default, persistent, shared with the CLI) or `memory`.
    pub backend: Backend,
    /// SQLite database file.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Sqlite,
            path: "wsguard-sessions.db".into(),
        }
    }
}

/// Store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded SQLite file (default).
    Sqlite,
    /// Process memory: lost on restart, not shared with the CLI.
    Memory,
}

impl Config {
    /// Makes relative paths relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let mut paths = vec![
            &mut self.sessions.keys_file,
            &mut self.store.path,
            &mut self.admin.token_file,
        ];
        if let Some(tls) = &mut self.gateway.tls {
            paths.push(&mut tls.cert);
            paths.push(&mut tls.key);
        }
        for r in &mut self.routes {
            if let Some(ca) = &mut r.upstream_ca {
                paths.push(ca);
            }
            if let Some(schema) = &mut r.messages.json_schema {
                paths.push(schema);
            }
        }
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Checks values that parse but make no sense together: the first problem.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.problems().into_iter().next() {
            None => Ok(()),
            Some(p) => bail!("{p}"),
        }
    }

    /// Every problem with values that parse but make no sense, one line each, naming its key.
    /// Files named by the configuration are not read here.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let s = &self.sessions;
        for (key, d) in [
            ("sessions.max_age", s.max_age),
            ("sessions.idle_timeout", s.idle_timeout),
        ] {
            if d.as_secs() == 0 {
                out.push(ConfigError::new(key, "must be at least one second"));
            }
        }
        if s.max_age.as_secs() > 366 * 24 * 3600 {
            out.push(ConfigError::new(
                "sessions.max_age",
                "must be at most a year (366 days)",
            ));
        }
        if s.touch_interval >= s.idle_timeout {
            out.push(ConfigError::new(
                "sessions.touch_interval",
                format!(
                    "must be shorter than sessions.idle_timeout ({}), or \
                 activity is never recorded in time to keep a session alive",
                    humantime::format_duration(s.idle_timeout)
                ),
            ));
        }
        if s.future_leeway.as_secs() > 300 {
            out.push(ConfigError::new(
                "sessions.future_leeway",
                "must be at most 300 seconds",
            ));
        }
        if s.cookie_name.is_empty()
            || s.cookie_name.len() > 64
            || !s
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            out.push(ConfigError::new("sessions.cookie_name", "must be 1 to 64 characters of an RFC 6265 cookie name (letters, digits, and !#$%&'*+-.^_`|~)"));
        }
        if let Some(d) = &s.cookie_domain
            && !valid_cookie_domain(d)
        {
            out.push(ConfigError::new(
                "sessions.cookie_domain",
                "must be a domain name like \"example.com\" (lower case, \
                 no scheme, port, path or leading dot)",
            ));
        }
        if s.cookie_same_site == wsguard_gateway::cookie::SameSite::None && !s.cookie_secure {
            out.push(ConfigError::new(
                "sessions.cookie_same_site",
                "\"none\" needs sessions.cookie_secure = true \
                 (browsers drop a SameSite=None cookie that is not Secure)",
            ));
        }
        if let Some(var) = &s.keys_env
            && (var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            out.push(ConfigError::new(
                "sessions.keys_env",
                "must be an environment variable name ([A-Za-z0-9_]+)",
            ));
        }
        if let Err(e) = wsguard_gateway::config::validate(&self.gateway) {
            out.extend(e);
        }
        if let Err(e) = wsguard_gateway::config::routes(&self.gateway, &self.routes) {
            out.extend(e);
        }
        let (public, admin) = (self.gateway.listen, self.admin.listen);
        if public == admin && public.port() != 0 {
            out.push(ConfigError::new(
                "admin.listen",
                format!(
                    "must differ from gateway.listen (both {public}): two listeners cannot share \
                     one address"
                ),
            ));
        }
        if self.store.backend == Backend::Sqlite && self.store.path.as_os_str().is_empty() {
            out.push(ConfigError::new(
                "store.path",
                "must not be empty with backend = \"sqlite\"",
            ));
        }
        // An invalid gateway.allowed_origins is reported once, not once per route too.
        let mut seen = std::collections::HashSet::new();
        out.retain(|p| seen.insert(p.clone()));
        out
    }

    /// Settings that are valid but weaker than the defaults, one line each naming its key:
    /// `check-config` prints them and `serve` logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let s = &self.sessions;
        let mut out = self.deprecated.clone();
        if !s.cookie_secure {
            out.push(
                "sessions.cookie_secure = false: the session cookie may travel over plain HTTP, \
                 where anyone on the path can read and replay it; for local development only"
                    .into(),
            );
        }
        if s.cookie_same_site == wsguard_gateway::cookie::SameSite::None {
            out.push(
                "sessions.cookie_same_site = \"none\": browsers send the session cookie with \
                 requests from every site; sockets are still refused to foreign origins, but \
                 anything else on these hosts that trusts the cookie is open to cross-site \
                 requests. Same-site deployments (app.example.com and ws.example.com) need only \
                 sessions.cookie_domain"
                    .into(),
            );
        }
        out
    }

    /// The attributes of the session cookie's `Set-Cookie`.
    pub fn cookie_attributes(&self) -> wsguard_gateway::cookie::CookieAttributes {
        wsguard_gateway::cookie::CookieAttributes {
            domain: self.sessions.cookie_domain.clone(),
            secure: self.sessions.cookie_secure,
            same_site: self.sessions.cookie_same_site,
        }
    }

    /// The gateway settings a configuration describes.
    pub fn settings(&self) -> wsguard_gateway::Settings {
        wsguard_gateway::Settings {
            gateway: self.gateway.clone(),
            routes: self.routes.clone(),
            admin: self.admin.clone(),
            cookie_name: self.sessions.cookie_name.clone(),
            cookie: self.cookie_attributes(),
        }
    }

    /// The token policy these settings describe.
    pub fn token_policy(&self) -> TokenPolicy {
        let s = &self.sessions;
        TokenPolicy {
            max_age: s.max_age.as_secs(),
            idle_timeout: s.idle_timeout.as_secs(),
            future_leeway: s.future_leeway.as_secs(),
            accept_legacy_tokens: s.accept_legacy_tokens,
        }
    }
}

/// A `Domain` attribute value: DNS labels of lower-case letters, digits and `-`.
fn valid_cookie_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn defaults_are_valid_and_secure() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.sessions.mode, Mode::Stateful);
        assert!(!c.sessions.accept_legacy_tokens);
        assert_eq!(c.store.backend, Backend::Sqlite);
        assert_eq!(c.token_policy(), TokenPolicy::default());
        // Both listeners on loopback until told otherwise; the admin API above all.
        assert!(c.admin.listen.ip().is_loopback());
        assert!(c.gateway.listen.ip().is_loopback());
        // Limits on by default.
        let g = &c.gateway;
        for limit in [
            g.max_connections,
            g.max_connections_per_ip,
            g.max_connections_per_user,
            g.max_pending_handshakes,
            g.max_pending_handshakes_per_ip,
        ] {
            assert!(
                limit.get().is_some(),
                "every connection limit is bounded by default"
            );
        }
        assert!(!g.allow_missing_origin && !g.forward_session_cookie);
    }

    #[test]
    fn durations_take_seconds_or_text() {
        let c = Config::parse("[sessions]\nmax_age = \"2h\"\nidle_timeout = 600\n").unwrap();
        assert_eq!(c.sessions.max_age, Duration::from_secs(7200));
        assert_eq!(c.sessions.idle_timeout, Duration::from_secs(600));
    }

    #[test]
    fn errors_name_the_key() {
        let e = err("[sessions]\nmax_age = \"forever\"\n");
        assert!(
            e.contains("line 2: sessions.max_age: expected a duration"),
            "{e}"
        );
        let e = err("[sessions]\nmode = \"sometimes\"\n");
        assert!(e.contains("sessions.mode"), "{e}");
        assert!(e.contains("stateful"), "{e}");
        let e = err("[sessions]\nmax_agee = 5\n");
        assert!(e.contains("max_agee"), "{e}");
        let e = err("[sessions]\nidle_timeout = 0\n");
        assert!(e.contains("sessions.idle_timeout"), "{e}");
        let e = err("[sessions]\nidle_timeout = 30\n");
        assert!(e.contains("sessions.touch_interval"), "{e}");
        let e = err("[sessions]\ncookie_name = \"a b\"\n");
        assert!(e.contains("sessions.cookie_name"), "{e}");
        let e = err("[store]\nbackend = \"redis\"\n");
        assert!(e.contains("store.backend"), "{e}");
        let e = err("[sessions]\nkeys_env = \"A-B\"\n");
        assert!(e.contains("sessions.keys_env"), "{e}");
    }

    #[test]
    fn unquoted_text_is_explained() {
        for value in ["127.0.0.1:8080", "[::1]:8080", "localhost:8080"] {
            let e = err(&format!("[gateway]\nlisten = {value}\n"));
            assert!(
                e.starts_with("line 2: gateway.listen: ")
                    && e.contains("must be in double quotes: listen = \"...\""),
                "{value}: {e}"
            );
            assert!(!e.contains("float"), "{e}");
        }
        let e = err("[[route]]\npath = \"/\"\nupstream = ws://127.0.0.1:9000\n");
        assert!(
            e.contains("line 3: route[0].upstream: not a TOML value"),
            "{e}"
        );
        // Quoted but broken, or of the wrong type: TOML's own message.
        let e = err("[gateway]\nlisten = \"127.0.0.1:1\n");
        assert!(!e.contains("double quotes"), "{e}");
        let e = err("[gateway]\nlisten = 8080\n");
        assert!(e.contains("invalid type: integer"), "{e}");
    }

    #[test]
    fn listeners_cannot_share_an_address() {
        let e =
            err("[gateway]\nlisten = \"127.0.0.1:7000\"\n[admin]\nlisten = \"127.0.0.1:7000\"\n");
        assert!(
            e.contains("admin.listen: must differ from gateway.listen"),
            "{e}"
        );
        Config::parse("[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n")
            .unwrap();
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wsguard.toml");
        std::fs::write(&path, "[store]\npath = \"data/s.db\"\n").unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.store.path, dir.path().join("data/s.db"));
        std::fs::write(
            &path,
            "[gateway.tls]\ncert = \"c.pem\"\nkey = \"/abs/k.pem\"\n[[route]]\npath = \"/\"\n\
             upstream = \"wss://x\"\nupstream_ca = \"ca.pem\"\n[route.messages]\nkind = \"json\"\n\
             json_schema = \"s.json\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&path)).unwrap();
        let tls = c.gateway.tls.as_ref().unwrap();
        assert_eq!(tls.cert, dir.path().join("c.pem"));
        assert_eq!(tls.key, PathBuf::from("/abs/k.pem"));
        assert_eq!(c.routes[0].upstream_ca, Some(dir.path().join("ca.pem")));
        assert_eq!(
            c.routes[0].messages.json_schema,
            Some(dir.path().join("s.json"))
        );
        assert_eq!(c.sessions.keys_file, dir.path().join("wsguard-keys.toml"));
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
