//! `wsguard check-config`: validate a configuration file the way `serve` and a reload would,
//! and explain every problem.
//!
//! Owns the report: one line per problem, naming the key (`route[1].upstream: ...`), then a
//! summary. Without a file named and no `wsguard.toml` in the working directory it checks the
//! built-in defaults, as every other command would use them, and says so. It reads the files
//! the configuration names (key file, TLS certificate and key, CA files) but never prints their
//! contents, binds no socket and opens no store.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, DEFAULT_CONFIG};
use crate::keys;

/// What is checked: a file, or the built-in defaults.
enum Checked {
    File(PathBuf),
    /// No file named and no `wsguard.toml` in the working directory.
    Defaults,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checked::File(path) => write!(f, "{}", path.display()),
            Checked::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// The text of the configuration at `path` (default `wsguard.toml`, or the built-in defaults
/// if that file does not exist), as `Config::load` finds it.
fn read(path: Option<&Path>) -> (Checked, Result<String, String>) {
    let (path, named) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => (Checked::File(path), Ok(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
            (Checked::Defaults, Ok(String::new()))
        }
        Err(e) => {
            let e = format!("cannot read {}: {e}", path.display());
            (Checked::File(path), Err(e))
        }
    }
}

/// Every problem of the configuration at `path`, as `serve` and a reload would find them, in
/// file order: syntax, shapes, values that do not fit together, then the key file, then the
/// files the gateway sections name (TLS, CAs, schemas). `Ok` with the configuration (paths
/// resolved) if there is none. A refused reload reports exactly this list.
pub fn problems_in(path: Option<&Path>) -> Result<Config, Vec<String>> {
    let (checked, text) = read(path);
    problems(&checked, text).map(|(config, _)| config)
}

fn problems(
    checked: &Checked,
    text: Result<String, String>,
) -> Result<(Config, String), Vec<String>> {
    let text = text.map_err(|e| vec![e])?;
    let d = crate::diagnose::diagnose(&text);
    let mut out: Vec<String> = d.problems.iter().map(ToString::to_string).collect();
    let Some(mut config) = d.config else {
        return Err(out);
    };
    if let Checked::File(path) = checked {
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
    }
    if let Err(e) = keys::load(&config) {
        out.push(crate::report(&e));
    }
    if out.is_empty() {
        // Files named by the gateway sections (TLS certificate and key, upstream CAs).
        if let Err(e) = wsguard_gateway::check(&config.settings()) {
            out.extend(e.into_iter().map(|e| e.to_string()));
        }
    }
    if !out.is_empty() {
        return Err(out);
    }
    let summary = format!(
        "{checked}: ok ({} route{}, {} mode, {} store{})",
        config.routes.len(),
        if config.routes.len() == 1 { "" } else { "s" },
        match config.sessions.mode {
            wsguard_session::Mode::Stateful => "stateful",
            wsguard_session::Mode::Stateless => "stateless",
        },
        match config.store.backend {
            crate::config::Backend::Sqlite => "sqlite",
            crate::config::Backend::Memory => "memory",
        },
        if config.gateway.tls.is_some() {
            ", TLS on"
        } else {
            ""
        },
    );
    Ok((config, summary))
}

/// Prints the report: exit 0 if the file is valid, 1 with every problem otherwise. A reader
/// that stops early (`check-config | head -1`) ends the output, not the process with a panic.
pub fn run(path: Option<&Path>) -> ExitCode {
    let (checked, text) = read(path);
    let mut lines = Vec::new();
    if let Checked::Defaults = checked {
        lines.push(format!(
            "no {DEFAULT_CONFIG} in the working directory: checking the built-in defaults"
        ));
    }
    let code = match problems(&checked, text) {
        Ok((config, summary)) => {
            lines.extend(config.warnings().iter().map(|w| format!("warning: {w}")));
            lines.push(summary);
            ExitCode::SUCCESS
        }
        Err(problems) => {
            lines.extend(problems.iter().map(|p| format!("error: {p}")));
            lines.push(format!(
                "{} problem{} found",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            ));
            ExitCode::from(1)
        }
    };
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    code
}
