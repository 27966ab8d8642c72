//! The `wsguard` binary: command-line parsing and dispatch.
//!
//! Owns the clap definitions, logging setup, exit codes (0 success/valid, 1 invalid token or
//! configuration, 2 usage or operational error; `connect` adds 3 and 4, see
//! `serve_cmd::ConnectOutcome`), how an error is printed (each cause once), and the wiring from
//! configuration to key ring, store and sessions. Command logic lives in the modules it calls;
//! this file must not grow policy.

mod check_cmd;
mod config;
mod diagnose;
mod keys;
mod serve_cmd;
mod session_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use wsguard_session::Sessions;
use wsguard_store::{MemoryStore, SessionStore, SqliteStore};
use wsguard_token::Verifier;

use crate::config::{Backend, Config};

/// wsguard: a WebSocket security gateway. Signed sessions, origin policy, revocation that closes
/// live sockets.
#[derive(Debug, Parser)]
#[command(name = "wsguard", version, propagate_version = true)]
struct Cli {
    /// Configuration file. Default: wsguard.toml in the working directory, if present
    /// (built-in defaults otherwise).
    #[arg(long, short, global = true, env = "WSGUARD_CONFIG")]
    config: Option<PathBuf>,

    /// Log format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the key file, or rotate it: add a new signing key and keep the previous one for
    /// verification only, so users stay logged in.
    Keygen(KeygenArgs),
    /// Issue, verify, revoke and list sessions.
    #[command(subcommand)]
    Session(session_cmd::SessionCommand),
    /// Run the gateway: accept WebSocket upgrades, check origin and session, relay to the
    /// upstream, close revoked sessions live.
    Serve(serve_cmd::ServeArgs),
    /// Validate a configuration file as `serve` would (including the key, certificate and CA
    /// files it names) and explain every problem: exit 0 valid, 1 invalid. Without a file
    /// (neither FILE nor --config) and no wsguard.toml here, checks the built-in defaults.
    CheckConfig(CheckArgs),
    /// Run a plain WebSocket echo backend (for trying wsguard out).
    Echo(serve_cmd::EchoArgs),
    /// Connect to a WebSocket URL with a session cookie; send stdin lines, print replies.
    #[command(after_help = serve_cmd::CONNECT_EXIT_STATUS)]
    Connect(serve_cmd::ConnectArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The file to check (the same as --config FILE).
    file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Print a fresh one-key file to stdout instead of writing sessions.keys_file.
    #[arg(long)]
    stdout: bool,
    /// How long the previous signing key keeps verifying after a rotation. Default: the
    /// configured sessions.max_age, so every token it signed lives out its lifetime.
    #[arg(long, value_parser = humantime::parse_duration)]
    keep_previous_for: Option<std::time::Duration>,
}

/// The current time in Unix seconds: the one place the binary reads the clock for sessions.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds the sessions service described by the configuration.
pub fn open_sessions(config: &Config) -> anyhow::Result<Sessions> {
    sessions_with(config, keys::load(config)?)
}

/// Builds the sessions service described by the configuration, with its keys already read.
pub fn sessions_with(config: &Config, ring: wsguard_token::KeyRing) -> anyhow::Result<Sessions> {
    let verifier = Verifier::new(Arc::new(ring), config.token_policy());
    let store: Arc<dyn SessionStore> = match config.store.backend {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Sqlite => {
            let path = &config.store.path;
            Arc::new(
                SqliteStore::open(path)
                    .with_context(|| format!("cannot open session store {}", path.display()))?,
            )
        }
    };
    Ok(Sessions::new(
        verifier,
        store,
        config.sessions.mode,
        config.sessions.touch_interval.as_secs(),
    ))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// An error and its causes on one line, each said once. A cause whose text the message before
/// it already holds is left out: `cannot listen on …: Address already in use (os error 98)`
/// is not followed by the `io::Error` it quotes, `URL error: URL scheme not supported` not by
/// the `UrlError` it wraps.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let load = || Config::load(cli.config.as_deref());
    let current_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    };
    match cli.command {
        Command::Keygen(args) => keygen(&load()?, &args),
        Command::Session(cmd) => current_thread()?.block_on(session_cmd::run(&load()?, cmd)),
        Command::Serve(args) => {
            let config = load()?;
            let runtime = if args.threads == 1 {
                current_thread()?
            } else {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                if args.threads > 1 {
                    builder.worker_threads(args.threads);
                }
                builder
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?
            };
            runtime.block_on(serve_cmd::serve(config, cli.config, args))
        }
        Command::CheckConfig(args) => {
            let path = match (args.file, cli.config) {
                (Some(file), Some(config)) if file != config => bail!(
                    "check-config: two files given ({} and --config {}): name one",
                    file.display(),
                    config.display()
                ),
                (file, config) => file.or(config),
            };
            Ok(check_cmd::run(path.as_deref()))
        }
        Command::Echo(args) => {
            load()?;
            current_thread()?.block_on(serve_cmd::echo(args))
        }
        Command::Connect(args) => current_thread()?.block_on(serve_cmd::connect(&load()?, args)),
    }
}

fn keygen(config: &Config, args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let now = now();
    if args.stdout {
        print!("{}", keys::fresh(now).as_str());
        return Ok(ExitCode::SUCCESS);
    }
    let keep = args
        .keep_previous_for
        .unwrap_or(config.sessions.max_age)
        .as_secs();
    let path = &config.sessions.keys_file;
    match keys::keygen(path, now, keep)? {
        keys::KeygenOutcome::Created { id } => {
            println!("created {} with signing key {id}", path.display());
        }
        keys::KeygenOutcome::Rotated { id, previous_until } => {
            let until = std::time::UNIX_EPOCH + std::time::Duration::from_secs(previous_until);
            println!(
                "rotated {}: new signing key {id}; the previous key verifies until {}",
                path.display(),
                humantime::format_rfc3339_seconds(until)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_says_each_cause_once() {
        // A context that quotes its source, as `StartError::Bind` and tungstenite's errors do.
        #[derive(Debug)]
        struct Quoting {
            source: std::io::Error,
        }
        impl std::fmt::Display for Quoting {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot listen on 127.0.0.1:8080: {}", self.source)
            }
        }
        impl std::error::Error for Quoting {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let text = io.to_string();
        let e = anyhow::Error::new(Quoting { source: io }).context("serve");
        assert_eq!(
            report(&e),
            format!("serve: cannot listen on 127.0.0.1:8080: {text}")
        );
        // Causes that add something are all kept, in order.
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(report(&e), "outer: middle: inner");
    }
}
