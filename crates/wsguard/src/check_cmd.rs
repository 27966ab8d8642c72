//! `wsguard check-config`: validate a configuration file the way `serve` and a reload would,
//! and explain every problem.
//!
//! Owns the report: one line per problem, naming the key (`route[1].upstream: ...`), then a
//! summary. It reads the files the configuration names (key file, TLS certificate and key, CA
//! files) but never prints their contents, binds no socket and opens no store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, DEFAULT_CONFIG};
use crate::keys;

/// Every problem of the file at `path` (default `wsguard.toml`), or `Ok` with a summary.
pub fn problems(path: Option<&Path>) -> Result<String, Vec<String>> {
    let path: PathBuf = path.map_or_else(|| PathBuf::from(DEFAULT_CONFIG), Path::to_path_buf);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    let mut config = Config::parse_unchecked(&text).map_err(|e| vec![crate::report(&e)])?;
    config.resolve_paths(path.parent().unwrap_or(Path::new("")));
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
        "{}: ok ({} route{}, {} mode, {} store{})",
        path.display(),
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
    match problems(path) {
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
