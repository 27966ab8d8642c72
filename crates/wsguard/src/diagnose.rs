//! Every problem of a configuration text in one pass, in file order, each with its line and key.
//!
//! Owns the three passes and their merge: TOML syntax (toml's parser recovers and reports every
//! error it meets), then shapes (unknown keys, wrong types, bad values: each error's entry is
//! set aside and the rest deserialised again, until the rest is clean), then the checks that
//! need several values ([`Config::problems`]), located by key. A key already reported by the
//! first two passes is not reported again by the third (it was checked at its default), and one
//! line's same message is said once. It reads no file.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::config::{Config, DEFAULT_CONFIG};
use wsguard_gateway::config::ZERO_MEANS_OFF;

/// Most entries set aside before giving up (each costs one more deserialisation).
const MAX_PASSES: usize = 256;

/// One problem: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, if known.
    pub line: Option<usize>,
    /// The key (`route[1].upstream`), if the problem belongs to one.
    pub key: Option<String>,
    /// What is wrong, and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The configuration a text describes, if its shape is clean, and every problem found.
#[derive(Debug)]
pub struct Diagnosis {
    /// The configuration, when syntax and shapes have no problem (paths as written).
    pub config: Option<Config>,
    /// Every problem, in file order (those without a line last).
    pub problems: Vec<Problem>,
}

/// Finds every problem of a configuration text.
pub fn diagnose(text: &str) -> Diagnosis {
    let lines = LineIndex::new(text);
    let (mut table, syntax) = DeTable::parse_recoverable(text);
    let original = table.clone();
    let mut problems: Vec<Problem> = syntax
        .iter()
        .map(|e| {
            let line = e.span().map(|s| lines.line(s.start));
            let line_text = line.and_then(|l| lines.text(text, l));
            let mut key = e.span().and_then(|s| path_at(&original, s.start));
            if line_text.and_then(unquoted_text).is_some() {
                // `listen = [::1]:8080` reads as an array: name the key, not its element.
                key = key.map(|mut k| {
                    while k.ends_with(']')
                        && let Some(i) = k.rfind('[')
                    {
                        k.truncate(i);
                    }
                    k
                });
            }
            Problem {
                line,
                key,
                message: hint(e.message(), line_text),
            }
        })
        .collect();
    let clean_syntax = problems.is_empty();
    let mut shaped = None;
    for _ in 0..MAX_PASSES {
        match Config::deserialize(toml::de::Deserializer::from(table.clone())) {
            Ok(config) => {
                shaped = Some(config);
                break;
            }
            Err(e) => {
                let span = e.span();
                let line = span.as_ref().map(|s| lines.line(s.start));
                let key = span.as_ref().and_then(|s| set_aside(&mut table, s.start));
                let removed = key.is_some();
                problems.push(Problem {
                    line,
                    key,
                    message: hint(e.message(), line.and_then(|l| lines.text(text, l))),
                });
                if !removed {
                    break;
                }
            }
        }
    }
    let clean_shape = shaped.is_some() && problems.len() == syntax.len();
    if let Some(config) = &shaped {
        let reported: Vec<String> = problems.iter().filter_map(|p| p.key.clone()).collect();
        for p in config.problems() {
            let (key, message) = (Some(p.key), p.problem);
            if key
                .as_deref()
                .is_some_and(|k| reported.iter().any(|r| covers(r, k) || covers(k, r)))
            {
                continue;
            }
            let line = key
                .as_deref()
                .and_then(|k| span_of(&original, k))
                .map(|s| lines.line(s.start));
            problems.push(Problem { line, key, message });
        }
    }
    problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.key.is_none()));
    // One message per line: a broken value can trip the parser and the shape check alike.
    let mut said: Vec<(Option<usize>, String)> = Vec::new();
    problems.retain(|p| {
        let seen = said.iter().any(|(l, m)| *l == p.line && *m == p.message);
        if !seen {
            said.push((p.line, p.message.clone()));
        }
        !seen
    });
    let mut config = shaped.filter(|_| clean_syntax && clean_shape);
    if let Some(config) = &mut config {
        config.deprecated = deprecated(text, &original, &lines);
    }
    Diagnosis { config, problems }
}

/// The keys of [`ZERO_MEANS_OFF`] written as `0` (or a zero duration): still read as
/// "unlimited" / "never", each said with its line and the word to write instead.
fn deprecated(text: &str, original: &Spanned<DeTable<'_>>, lines: &LineIndex) -> Vec<String> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    let is_zero = |v: &toml::Value| match v {
        toml::Value::Integer(0) => true,
        toml::Value::String(s) => humantime::parse_duration(s).is_ok_and(|d| d.is_zero()),
        _ => false,
    };
    ZERO_MEANS_OFF
        .iter()
        .filter(|(key, _)| {
            let mut v: Option<&toml::Value> = None;
            let mut t = Some(&table);
            for part in key.split('.') {
                v = t.and_then(|t| t.get(part));
                t = v.and_then(toml::Value::as_table);
            }
            v.is_some_and(is_zero)
        })
        .map(|(key, word)| {
            let line = span_of(original, key).map(|s| lines.line(s.start));
            let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
            format!(
                "{at}{key}: 0 for \"{word}\" is deprecated and will be refused in a later \
                 release; write {key_name} = \"{word}\"",
                key_name = key.rsplit('.').next().unwrap_or(key)
            )
        })
        .collect()
}

impl Config {
    /// Loads `path`. A missing file is an error only if it was named explicitly; the default
    /// name falls back to built-in defaults (paths relative to the working directory).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                let config = Config::default();
                config.validate()?;
                return Ok(config);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut config = Config::parse(&text)
            .with_context(|| format!("invalid configuration in {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and validates config text (paths stay as written). The error lists every
    /// problem, one per line, in file order ([`diagnose`]).
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let d = crate::diagnose::diagnose(text);
        match d.config {
            Some(config) if d.problems.is_empty() => Ok(config),
            _ => bail!(
                "{}",
                d.problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
}

/// Whether key `a` is `b` or a parent of it (`route[1]` covers `route[1].upstream`).
fn covers(a: &str, b: &str) -> bool {
    b == a
        || b.strip_prefix(a)
            .is_some_and(|rest| rest.starts_with(['.', '[']))
}

/// The key of a `key = value` line whose value is text left unquoted (`listen = 127.0.0.1:8080`,
/// which TOML reads as a broken float): a value that starts with no quote and does not parse.
fn unquoted_text(line: &str) -> Option<&str> {
    let (key, value) = line.split_once('=')?;
    let value = value.trim();
    if value.is_empty() || value.starts_with(['"', '\'']) {
        return None;
    }
    toml::from_str::<toml::Table>(&format!("v = {value}"))
        .is_err()
        .then(|| key.trim())
}

/// The message, with advice where TOML's own is cryptic: text left unquoted.
fn hint(message: &str, line: Option<&str>) -> String {
    let message = message.trim();
    match line.and_then(unquoted_text) {
        Some(key) => format!(
            "not a TOML value: text (addresses, URLs, paths) must be in double quotes: \
             {key} = \"...\""
        ),
        None => message.to_owned(),
    }
}

/// Byte offsets → 1-based line numbers.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        LineIndex(
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        )
    }

    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset).max(1)
    }

    fn text<'t>(&self, text: &'t str, line: usize) -> Option<&'t str> {
        text.lines().nth(line.checked_sub(1)?)
    }
}

fn contains(span: &Range<usize>, at: usize) -> bool {
    span.start <= at && at < span.end.max(span.start + 1)
}

/// Whether a value holds offset `at`: its own span (a table's is only its header), or any entry
/// or element inside it.
fn holds(v: &Spanned<DeValue<'_>>, at: usize) -> bool {
    contains(&v.span(), at)
        || match v.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .any(|(k, v)| contains(&k.span(), at) || holds(v, at)),
            DeValue::Array(a) => a.iter().any(|v| holds(v, at)),
            _ => false,
        }
}

/// Whether the value holds `at` somewhere inside it rather than only in its own span.
fn holds_inside(v: &DeValue<'_>, at: usize) -> bool {
    match v {
        DeValue::Table(t) => t
            .iter()
            .any(|(k, v)| contains(&k.span(), at) || holds(v, at)),
        DeValue::Array(a) => a.iter().any(|v| holds(v, at)),
        _ => false,
    }
}

/// The key path of the deepest entry at `at`, in the configuration's own spelling.
fn path_at(table: &Spanned<DeTable<'_>>, at: usize) -> Option<String> {
    let mut path = String::new();
    walk_path(table.get_ref(), at, &mut path).then_some(path)
}

fn walk_path(table: &DeTable<'_>, at: usize, path: &mut String) -> bool {
    let Some((k, v)) = table
        .iter()
        .find(|(k, v)| contains(&k.span(), at) || holds(v, at))
    else {
        return false;
    };
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(k.get_ref());
    if !contains(&k.span(), at) {
        walk_value(v.get_ref(), at, path);
    }
    true
}

fn walk_value(value: &DeValue<'_>, at: usize, path: &mut String) {
    match value {
        DeValue::Table(t) => {
            walk_path(t, at, path);
        }
        DeValue::Array(a) => {
            if let Some((i, v)) = a.iter().enumerate().find(|(_, v)| holds(v, at)) {
                path.push_str(&format!("[{i}]"));
                walk_value(v.get_ref(), at, path);
            }
        }
        _ => {}
    }
}

/// Removes the deepest entry at `at` (so the rest can be checked) and returns its key path.
fn set_aside(table: &mut Spanned<DeTable<'_>>, at: usize) -> Option<String> {
    let mut path = String::new();
    remove_in_table(table.get_mut(), at, &mut path).then_some(path)
}

fn remove_in_table(table: &mut DeTable<'_>, at: usize, path: &mut String) -> bool {
    let Some(key) = table
        .iter()
        .find(|(k, v)| contains(&k.span(), at) || holds(v, at))
        .map(|(k, _)| k.clone())
    else {
        return false;
    };
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key.get_ref());
    let descend = table
        .get_mut(&key)
        .filter(|v| !contains(&key.span(), at) && holds_inside(v.get_ref(), at));
    if let Some(v) = descend
        && remove_in_value(v.get_mut(), at, path)
    {
        return true;
    }
    table.remove(&key);
    true
}

fn remove_in_value(value: &mut DeValue<'_>, at: usize, path: &mut String) -> bool {
    match value {
        DeValue::Table(t) => remove_in_table(t, at, path),
        DeValue::Array(a) => {
            let Some(i) = a.iter().position(|v| holds(v, at)) else {
                return false;
            };
            path.push_str(&format!("[{i}]"));
            let slots: &mut [Spanned<DeValue<'_>>] = a;
            if !holds_inside(slots[i].get_ref(), at)
                || !remove_in_value(slots[i].get_mut(), at, path)
            {
                // `DeArray` has no `remove`: rebuild it without the entry.
                let rest = std::mem::replace(a, toml::de::DeArray::new());
                *a = rest
                    .into_iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, v)| v)
                    .collect();
            }
            true
        }
        _ => false,
    }
}

/// The span of the entry `key` (`route[1].messages.kind`), or of its nearest parent in the file.
fn span_of(table: &Spanned<DeTable<'_>>, key: &str) -> Option<Range<usize>> {
    let mut found: Option<Range<usize>> = None;
    let mut here: Option<&DeValue<'_>> = None;
    let mut top = Some(table.get_ref());
    for segment in key.split('.') {
        let (name, indexes) = match segment.split_once('[') {
            Some((n, rest)) => (n, Some(rest)),
            None => (segment, None),
        };
        let t = match (top.take(), here) {
            (Some(t), _) => t,
            (None, Some(DeValue::Table(t))) => t,
            _ => break,
        };
        let Some((k, v)) = t.iter().find(|(k, _)| k.get_ref() == name) else {
            break;
        };
        found = Some(k.span());
        let mut v = v;
        let mut ok = true;
        for idx in indexes
            .into_iter()
            .flat_map(|r| r.split('['))
            .map(|i| i.trim_end_matches(']'))
        {
            match (v.get_ref(), idx.parse::<usize>()) {
                (DeValue::Array(a), Ok(i)) if i < a.len() => {
                    v = &a[i];
                    found = Some(v.span());
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            break;
        }
        here = Some(v.get_ref());
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn report(text: &str) -> Vec<String> {
        diagnose(text)
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_problem_in_one_run_in_file_order() {
        let text = "\
[sessions]
max_age = \"forever\"
colour = \"blue\"

[gateway]
listen = 127.0.0.1:8080
max_headers = \"many\"
allowed_origins = [\"https://ok.example\", \"ftp://bad\", \"https://*\"]

[[route]]
path = \"/a\"
upstream = \"http://x\"

[[route]]
path = \"/b\"
upstream = \"ws://h:1\"
publik = true
";
        let got = report(text);
        let lines: Vec<usize> = diagnose(text)
            .problems
            .iter()
            .map(|p| p.line.unwrap())
            .collect();
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{got:#?}");
        for needle in [
            "line 2: sessions.max_age: expected a duration",
            "line 3: sessions.colour: unknown field",
            "line 6: gateway.listen: not a TOML value: text (addresses, URLs, paths) must be in \
             double quotes: listen = \"...\"",
            "line 7: gateway.max_headers: invalid type",
            "line 12: route[0].upstream: must be a ws:// or wss:// URL",
            "line 17: route[1].publik: unknown field",
        ] {
            assert!(
                got.iter().any(|p| p.starts_with(needle)),
                "{needle}\n{got:#?}"
            );
        }
        assert!(diagnose(text).config.is_none());
    }

    #[test]
    fn syntax_errors_are_all_reported() {
        let text =
            "[gateway\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \n[[route]]\npath = \"/\" x\n";
        let got = report(text);
        assert!(got.len() >= 3, "{got:#?}");
        assert!(got[0].starts_with("line 1:"), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("line 4:")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("line 6:")), "{got:#?}");
    }

    #[test]
    fn a_clean_file_has_a_config_and_no_problem() {
        let d = diagnose("[sessions]\nmax_age = \"2h\"\n");
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert_eq!(d.config.unwrap().sessions.max_age.as_secs(), 7200);
        let d = diagnose("");
        assert!(d.problems.is_empty() && d.config.is_some());
    }

    #[test]
    fn zero_for_unlimited_or_never_still_reads_and_is_deprecated_by_line() {
        let d = diagnose(
            "[gateway]\nmax_connections = 0\nmax_connections_per_ip = \"unlimited\"\n\
             max_connections_per_user = 5\nidle_timeout = \"0s\"\nping_interval = \"never\"\n",
        );
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        let c = d.config.unwrap();
        let g = &c.gateway;
        assert_eq!(g.max_connections.get(), None);
        assert_eq!(g.max_connections_per_ip.get(), None);
        assert_eq!(g.max_connections_per_user.get(), Some(5));
        assert_eq!((g.idle_timeout, g.ping_interval), (None, None));
        assert_eq!(
            c.deprecated,
            [
                "line 2: gateway.max_connections: 0 for \"unlimited\" is deprecated and will be \
                 refused in a later release; write max_connections = \"unlimited\"",
                "line 5: gateway.idle_timeout: 0 for \"never\" is deprecated and will be \
                 refused in a later release; write idle_timeout = \"never\"",
            ]
        );
        assert_eq!(c.warnings()[..2], c.deprecated[..]);
        let e = report("[gateway]\nmax_connections = \"lots\"\n");
        assert_eq!(
            e,
            ["line 2: gateway.max_connections: expected a positive whole number or \"unlimited\""]
        );
    }

    #[test]
    fn lines_and_keys_are_located() {
        let text = "# c\n[gateway]\n\nlisten = \"1\"\n[[route]]\npath = \"/\"\n[[route]]\npath = \"/b\"\n[route.messages]\nkind = \"x\"\n";
        let (t, _) = DeTable::parse_recoverable(text);
        let li = LineIndex::new(text);
        let line = |k: &str| span_of(&t, k).map(|s| li.line(s.start));
        assert_eq!(line("gateway.listen"), Some(4));
        assert_eq!(line("route[1].path"), Some(8));
        assert_eq!(line("route[1].messages.kind"), Some(10));
        assert_eq!(line("route[1].upstream"), line("route[1]"));
        assert_eq!(line("route[1]"), Some(7));
        assert_eq!(line("nothing.here"), None);
    }
}
