//! `wsguard check-config`: validate a configuration file the way `serve` and a reload would,
//! and explain every problem.
//!
//! Owns the report: one line per problem, naming the key (`route[1].upstream: ...`), then a
//! summary. Without a file named and no `wsguard.toml` in the working directory it checks the
//! built-in defaults, as every other command would use them, and says so. It reads the files
//! the configuration names (key file, TLS certificate and key, CA files) but never prints their
//! contents, binds no socket and opens no store.

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

/// The configuration at `path` (default `wsguard.toml`, or the built-in defaults if that file
/// does not exist), as `Config::load` finds it but before the checks that need more than one
/// value.
fn read(path: Option<&Path>) -> (Checked, Result<Config, String>) {
    let (path, named) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
            return (Checked::Defaults, Ok(Config::default()));
        }
        Err(e) => {
            let e = format!("cannot read {}: {e}", path.display());
            return (Checked::File(path), Err(e));
        }
    };
    let config = Config::parse_unchecked(&text).map(|mut config| {
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        config
    });
    (Checked::File(path), config.map_err(|e| crate::report(&e)))
}

/// Every problem of a configuration [`read`] returned, or `Ok` with a summary.
fn problems(checked: &Checked, config: Result<Config, String>) -> Result<String, Vec<String>> {
    let config = config.map_err(|e| vec![e])?;
    let mut out = config.problems();
    if let Err(e) = keys::load(&config) {
        out.push(crate::report(&e));
    }
    if out.is_empty() {
        // Files named by the gateway sections (TLS certificate and key, upstream CAs).
        if let Err(e) = wsguard_gateway::check(&crate::serve_cmd::settings(&config)) {
            out.extend(e.lines().map(str::to_owned));
        }
    }
    if !out.is_empty() {
        return Err(out);
    }
    Ok(format!(
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
    ))
}

/// Prints the report: exit 0 if the file is valid, 1 with every problem otherwise.
pub fn run(path: Option<&Path>) -> ExitCode {
    let (checked, config) = read(path);
    if let Checked::Defaults = checked {
        println!("no {DEFAULT_CONFIG} in the working directory: checking the built-in defaults");
    }
    if let Ok(c) = &config {
        for w in c.warnings() {
            println!("warning: {w}");
        }
    }
    match problems(&checked, config) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                println!("error: {p}");
            }
            println!(
                "{} problem{} found",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
    }
}
