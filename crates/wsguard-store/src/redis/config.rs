//! How to reach Redis: [`RedisConfig`] (what the binary deserializes), [`RedisPassword`], and
//! the client built from them.
//!
//! Owns the configuration's fields, defaults and problems, the client and connection-manager
//! settings made from a valid configuration (`rediss://` with rustls, system roots or a private
//! CA), and the redaction of secrets: the password and a `redis://user:pass@` URL never reach
//! `Debug`, logs or errors. It must not connect (see `connect.rs`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use redis::RedisError;
use redis::aio::ConnectionManagerConfig;

use crate::store::StoreError;

/// A Redis password. Its `Debug` is redacted; it is only ever sent to Redis (`AUTH`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPassword(String);

impl RedisPassword {
    /// Wraps a password (e.g. read by the caller from `password_file`, trailing newline
    /// removed).
    pub fn new(password: impl Into<String>) -> Self {
        RedisPassword(password.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisPassword(<redacted>)")
    }
}

/// How to reach Redis and how to use it: `[store]` with `backend = "redis"`.
///
/// Deserializable (unknown keys refused, every field defaulted). The password is not read from
/// the configuration: the caller reads `password_file` and sets [`RedisConfig::password`].
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://` (TLS with rustls, system roots or
    /// [`RedisConfig::tls_ca_file`]). A password in the URL works but is discouraged.
    pub url: String,
    /// ACL user name (`AUTH username password`), overriding one in the URL.
    pub username: Option<String>,
    /// Password, set by the caller (never deserialized), overriding one in the URL.
    #[serde(skip)]
    pub password: Option<RedisPassword>,
    /// PEM file of the CAs that sign the server's certificate (`rediss://`), instead of the
    /// system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Prefix of every key (several deployments can share one Redis). No `{` or `}`.
    pub key_prefix: String,
    /// Bound on establishing a connection (TCP, TLS, AUTH, SELECT).
    #[serde(with = "crate::redis::config::duration")]
    pub connect_timeout: Duration,
    /// Bound on every command, including waiting for a reconnection: past it the operation
    /// fails with [`StoreError::Backend`] (callers fail closed).
    #[serde(with = "crate::redis::config::duration")]
    pub command_timeout: Duration,
    /// Approximate length the revocation stream is trimmed to (`XADD MAXLEN ~`). A node cut off
    /// for longer than it takes the cluster to write this many entries (revocations and one
    /// probe per node per `probe_interval`) re-checks everything when it comes back.
    pub stream_max_len: u64,
    /// How often each node sends a probe through the revocation stream and expects to read it
    /// back (within `command_timeout`); a probe that does not come back reconnects the feed.
    #[serde(with = "crate::redis::config::duration")]
    pub probe_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            username: None,
            password: None,
            tls_ca_file: None,
            key_prefix: "wsguard:".into(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            stream_max_len: 10_000,
            probe_interval: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("stream_max_len", &self.stream_max_len)
            .field("probe_interval", &self.probe_interval)
            .finish()
    }
}

impl RedisConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    /// What is wrong with this configuration, one line per problem naming the field (empty if
    /// nothing is).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            out.push("url: must start with redis:// or rediss://".into());
        } else if let Err(e) = redis::Client::open(self.url.as_str()) {
            out.push(format!("url: {}", redact(&e.to_string(), &self.url)));
        }
        if self.key_prefix.contains(['{', '}']) {
            out.push(
                "key_prefix: must not contain { or } (they are Redis Cluster hash tags)".into(),
            );
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("probe_interval", self.probe_interval),
        ] {
            if d.is_zero() {
                out.push(format!("{name}: must be more than 0"));
            }
        }
        if self.stream_max_len < 100 {
            out.push("stream_max_len: must be at least 100".into());
        }
        out
    }

    /// The URL with any password replaced, for messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `scheme://user:pass@host` → `scheme://user:<redacted>@host`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((creds, host)) => {
            let user = creds.split_once(':').map_or(creds, |(u, _)| u);
            format!("{scheme}://{user}:<redacted>@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Removes the URL (which may hold a password) from a message.
pub(super) fn redact(message: &str, url: &str) -> String {
    message.replace(url, &redact_url(url))
}

/// Durations as whole seconds or humantime strings ("500ms", "2s").
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        let err = || {
            serde::de::Error::custom(
                "expected a duration: whole seconds (2) or a string like \"500ms\", \"2s\"",
            )
        };
        match Raw::deserialize(d).map_err(|_| err())? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(&t).map_err(|_| err()),
        }
    }
}

/// The client and the connection manager's settings for a valid configuration.
pub(super) fn prepare(
    config: &RedisConfig,
) -> Result<(redis::Client, ConnectionManagerConfig), StoreError> {
    if let Some(problem) = config.problems().into_iter().next() {
        return Err(StoreError::Backend(format!(
            "redis configuration: {problem}"
        )));
    }
    let client = build_client(config)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    Ok((client, manager_config))
}

/// A Redis error's text without the URL (which may hold a password).
pub(super) fn redact_error(e: &RedisError, url: &str) -> String {
    format!("redis: {}", redact(&e.to_string(), url))
}

fn build_client(config: &RedisConfig) -> Result<redis::Client, StoreError> {
    use redis::IntoConnectionInfo;
    let bad = |e: RedisError| {
        StoreError::Backend(format!(
            "redis configuration: url: {}",
            redact(&e.to_string(), &config.url)
        ))
    };
    let mut info = config.url.as_str().into_connection_info().map_err(bad)?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    if config.url.starts_with("rediss://") {
        // rustls needs a process-wide crypto provider; ring is the one the workspace builds.
        // Already installed (by us or the gateway) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    match &config.tls_ca_file {
        Some(path) if config.url.starts_with("rediss://") => {
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Backend(format!(
                    "redis configuration: tls_ca_file: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(bad)
        }
        _ => redis::Client::open(info).map_err(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://user:<redacted>@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:secret@host"),
            "rediss://:<redacted>@host"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        let mut c = RedisConfig::new("redis://u:hunter2@h/0");
        c.password = Some(RedisPassword::new("hunter3"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
    }

    #[test]
    fn configuration_problems_name_the_field() {
        let mut c = RedisConfig::new("http://x");
        c.key_prefix = "a{b".into();
        c.command_timeout = Duration::ZERO;
        let p = c.problems();
        assert!(p.iter().any(|m| m.starts_with("url:")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("key_prefix:")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("command_timeout:")), "{p:?}");
        assert!(RedisConfig::default().problems().is_empty());
    }

    #[test]
    fn the_configuration_deserializes_with_defaults_and_refuses_unknown_keys() {
        let c: RedisConfig = toml::from_str(
            "url = \"rediss://cache:6380/1\"\nusername = \"gw\"\nkey_prefix = \"prod:\"\n\
             command_timeout = \"250ms\"\nconnect_timeout = 3\nprobe_interval = \"2s\"\n\
             stream_max_len = 5000\n",
        )
        .unwrap();
        assert_eq!(c.url, "rediss://cache:6380/1");
        assert_eq!(c.username.as_deref(), Some("gw"));
        assert_eq!(c.command_timeout, Duration::from_millis(250));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.probe_interval, Duration::from_secs(2));
        assert_eq!(c.stream_max_len, 5000);
        assert!(c.password.is_none());
        let d: RedisConfig = toml::from_str("").unwrap();
        assert_eq!(d.key_prefix, "wsguard:");
        assert!(d.problems().is_empty());
        // The password is never read from the configuration itself.
        assert!(toml::from_str::<RedisConfig>("password = \"x\"").is_err());
        assert!(toml::from_str::<RedisConfig>("urll = \"x\"").is_err());
        assert!(toml::from_str::<RedisConfig>("command_timeout = \"soon\"").is_err());
    }
}
