//! `wsguard-bench`: a WebSocket load generator for measuring wsguard (or any WebSocket server or
//! proxy) on this machine.
//!
//! Owns the clap definitions, raising the open-files limit, the tokio runtime and the exit codes
//! (0 measured, 1 nothing could be measured / not all connections held, 2 usage or setup error).
//! The load itself lives in one module per subcommand; this file must not grow measurement logic.

#![forbid(unsafe_code)]

mod echo;
mod handshakes;
mod hold;
mod output;
mod payload;
mod stats;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generator for WebSocket servers and proxies: echo round trips, handshake rate, and
/// idle connections held open.
#[derive(Debug, Parser)]
#[command(name = "wsguard-bench", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N connections send messages and time each echo (messages/s, bytes/s, latency).
    Echo(echo::EchoArgs),
    /// Workers loop connect → handshake → close (handshakes/s, handshake latency, refusals).
    Handshakes(handshakes::HandshakesArgs),
    /// Open N idle connections, print `ready N`, hold them until SIGTERM/SIGINT/stdin closes.
    Hold(hold::HoldArgs),
}

/// clap value parser: an integer of at least 1.
pub(crate) fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; thousands of sockets need it.
fn raise_nofile_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("wsguard-bench: warning: could not raise the open-files limit: {e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_nofile_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsguard-bench: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Echo(args) => echo::run(args).await,
            Command::Handshakes(args) => handshakes::run(args).await,
            Command::Hold(args) => hold::run(args).await,
        }
    });
    // Do not wait for stragglers (e.g. a close that timed out): the report is out.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wsguard-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
