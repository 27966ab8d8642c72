//! The value types of both configuration files (`wsguard.toml`'s every section, and the axum
//! layer's): a problem named by its key ([`ConfigError`]), a count bound that may be
//! `"unlimited"` ([`Limit`]), and the one duration parser ([`duration`]) every duration key
//! goes through.
//!
//! Owns how these values are written and read, and what is deprecated in how they are written
//! ([`ZERO_MEANS_OFF`]). It must not validate whole sections (see `validate.rs`, `routes.rs`).

use std::fmt;
use std::num::NonZeroUsize;

use serde::{Deserialize, Deserializer};

/// One problem of a configuration: the key it is about (`route[0].upstream`,
/// `gateway.ticket_ttl`) and what is wrong with it. Shown as `key: problem`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigError {
    /// The key path, as written in the file (`route[2].messages.max_fragments`).
    pub key: String,
    /// What is wrong, and where it helps, what to write instead.
    pub problem: String,
}

impl ConfigError {
    /// A problem of `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, in the order found; shown one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// `Ok(ok)` when nothing was found, else these problems, each said once.
    pub fn or<T>(mut self, ok: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            return Ok(ok);
        }
        let mut seen = std::collections::HashSet::new();
        self.0.retain(|e| seen.insert(e.clone()));
        Err(self)
    }

    /// Adds a problem of `key`.
    pub fn push(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.0.push(ConfigError::new(key, problem));
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Extend<ConfigError> for ConfigErrors {
    fn extend<I: IntoIterator<Item = ConfigError>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A bound on a count: a positive number, or `"unlimited"`.
///
/// `0` is still read as unlimited, as it was before `"unlimited"` existed; it is deprecated
/// (`wsguard check-config` says so, see [`ZERO_MEANS_OFF`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Limit {
    /// At most this many.
    At(NonZeroUsize),
    /// No bound.
    #[default]
    Unlimited,
}

impl Limit {
    /// At most `n`; `0` reads as unlimited (as in the file).
    pub const fn at(n: usize) -> Limit {
        match NonZeroUsize::new(n) {
            Some(n) => Limit::At(n),
            None => Limit::Unlimited,
        }
    }

    /// The bound, if there is one.
    pub fn get(self) -> Option<usize> {
        match self {
            Limit::At(n) => Some(n.get()),
            Limit::Unlimited => None,
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Word(String),
        }
        let err = || serde::de::Error::custom("expected a positive whole number or \"unlimited\"");
        match Raw::deserialize(d).map_err(|_| err())? {
            Raw::Count(n) => usize::try_from(n).map(Limit::at).map_err(|_| err()),
            Raw::Word(w) if w == "unlimited" => Ok(Limit::Unlimited),
            Raw::Word(_) => Err(err()),
        }
    }
}

/// Keys whose `0` (or `"0s"`) still means "no bound" / "never", and the word to write instead.
/// Accepted for compatibility; `wsguard check-config` and `serve` warn about each.
pub const ZERO_MEANS_OFF: &[(&str, &str)] = &[
    ("gateway.max_connections", "unlimited"),
    ("gateway.max_connections_per_ip", "unlimited"),
    ("gateway.max_connections_per_user", "unlimited"),
    ("gateway.max_pending_handshakes", "unlimited"),
    ("gateway.max_pending_handshakes_per_ip", "unlimited"),
    ("gateway.idle_timeout", "never"),
    ("gateway.ping_interval", "never"),
];

/// The one duration syntax of both configuration files: whole seconds (`30`) or a humantime
/// string (`"500ms"`, `"10s"`, `"12h"`, `"1h 30m"`). Use with `#[serde(with = "…::duration")]`;
/// [`duration::or_never`] for the keys that may be `"never"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    const EXPECTED: &str =
        "expected a duration: whole seconds (30) or a string like \"500ms\", \"10s\", \"12h\"";

    /// A duration as whole seconds or a humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(d, false).map(|d| d.unwrap_or(Duration::ZERO))
    }

    fn parse<'de, D: Deserializer<'de>>(d: D, never: bool) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        let err = || {
            serde::de::Error::custom(if never {
                format!("{EXPECTED}, or \"never\"")
            } else {
                EXPECTED.to_owned()
            })
        };
        match Raw::deserialize(d).map_err(|_| err())? {
            Raw::Secs(s) => Ok(Some(Duration::from_secs(s))),
            Raw::Text(t) if never && t == "never" => Ok(None),
            Raw::Text(t) => humantime::parse_duration(&t).map(Some).map_err(|_| err()),
        }
    }

    /// A duration that may be `"never"` (`None`). A zero duration also reads as never (the
    /// deprecated spelling, see [`super::ZERO_MEANS_OFF`]).
    pub mod or_never {
        use super::*;

        /// `None` for `"never"` or zero.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Ok(super::parse(d, true)?.filter(|d| !d.is_zero()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Deserialize, Debug)]
    struct T {
        #[serde(default)]
        limit: Limit,
        #[serde(default, with = "duration")]
        d: Duration,
        #[serde(default, with = "duration::or_never")]
        n: Option<Duration>,
    }

    fn read(text: &str) -> Result<T, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn limits_are_counts_or_unlimited_and_zero_still_reads_as_unlimited() {
        assert_eq!(read("limit = 5").unwrap().limit.get(), Some(5));
        assert_eq!(
            read("limit = \"unlimited\"").unwrap().limit,
            Limit::Unlimited
        );
        assert_eq!(read("limit = 0").unwrap().limit, Limit::Unlimited);
        for bad in ["limit = -1", "limit = \"many\"", "limit = 1.5"] {
            let e = read(bad).unwrap_err();
            assert!(e.contains("\"unlimited\""), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_share_one_syntax() {
        assert_eq!(read("d = 30").unwrap().d, Duration::from_secs(30));
        assert_eq!(read("d = \"500ms\"").unwrap().d, Duration::from_millis(500));
        assert_eq!(read("d = \"1h 30m\"").unwrap().d, Duration::from_secs(5400));
        assert!(read("d = \"never\"").unwrap_err().contains("whole seconds"));
        assert!(read("d = \"soon\"").is_err());
        assert_eq!(read("n = \"never\"").unwrap().n, None);
        assert_eq!(read("n = \"0s\"").unwrap().n, None);
        assert_eq!(read("n = 0").unwrap().n, None);
        assert_eq!(read("n = \"2s\"").unwrap().n, Some(Duration::from_secs(2)));
        assert!(read("n = \"soon\"").unwrap_err().contains("\"never\""));
    }

    #[test]
    fn errors_show_as_key_and_problem_each_said_once() {
        let mut e = ConfigErrors::default();
        e.push("a.b", "must be more than zero");
        e.push("c", "x");
        e.push("a.b", "must be more than zero");
        let e = e.or(()).unwrap_err();
        assert_eq!(e.to_string(), "a.b: must be more than zero\nc: x");
        assert_eq!(ConfigErrors::default().or(1), Ok(1));
    }
}
