//! `wsguard-bench hold`: opens N idle connections and keeps them open, for measuring a proxy's
//! memory per connection.
//!
//! Prints `ready N` (N = connections open) on stdout once every attempt has finished, then keeps
//! polling each socket (so pings are answered) until SIGTERM, SIGINT or the end of stdin. Then
//! closes them all and reports to stderr how many the peer had closed meanwhile.
//!
//! Owns the holding loop and the stop signals. Sends no data messages.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use futures_util::{StreamExt, stream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::positive;
use crate::stats::Counts;
use crate::target::{CLOSE_TIMEOUT, Target, TargetArgs, Ws, close_gracefully};

/// How long all connections together may take to close at the end.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Number of connections to open and hold.
    #[arg(long, value_parser = positive)]
    connections: usize,
    /// Connection attempts in flight while opening.
    #[arg(long, default_value_t = 200, value_parser = positive)]
    concurrency: usize,
    /// Do not stop when stdin closes; stop on SIGTERM/SIGINT only. Needed when run as a
    /// background job, whose stdin is often /dev/null.
    #[arg(long)]
    ignore_stdin: bool,
}

#[derive(Debug, Default)]
struct Held {
    closed_by_peer: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(args: HoldArgs) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(args.target.clone()).await?;
    let stop = stop_signal(!args.ignore_stdin)?;
    tokio::pin!(stop);

    let (shutdown_tx, shutdown_rx) = watch::channel(());
    let held = Arc::new(Held::default());
    let mut tasks = JoinSet::new();
    let mut opened = 0usize;
    let mut failed = Counts::default();
    let mut first_error = None;
    let mut attempts = stream::iter(0..args.connections)
        .map(|i| target.connect(target.source(i)))
        .buffer_unordered(args.concurrency);
    let interrupted = loop {
        tokio::select! {
            why = &mut stop => break Some(why),
            attempt = attempts.next() => match attempt {
                None => break None,
                Some(Ok(ws)) => {
                    opened += 1;
                    tasks.spawn(hold_one(ws, shutdown_rx.clone(), Arc::clone(&held)));
                }
                Some(Err(e)) => {
                    failed.add(e.kind());
                    first_error.get_or_insert(e);
                }
            },
        }
    };
    drop(attempts);
    if let Some(e) = &first_error {
        eprintln!(
            "{} connections failed to open ({}); first: {e}",
            failed.total(),
            failed.line()
        );
    }
    let why = match interrupted {
        Some(why) => why,
        None => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "ready {opened}")?;
            out.flush()?;
            drop(out);
            stop.await
        }
    };

    // Every task holds a receiver; a send wakes them all to close.
    let _ = shutdown_tx.send(());
    let all_closed = tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    eprintln!(
        "stopped ({why}): held {opened}, closed by peer {}, errors {}, failed to open {}{}",
        held.closed_by_peer.load(Ordering::Relaxed),
        held.errors.load(Ordering::Relaxed),
        failed.total(),
        if all_closed {
            ""
        } else {
            ", some did not close in time"
        }
    );
    Ok(if failed.total() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Polls one socket until shutdown (then closes it) or until the peer ends it.
async fn hold_one(mut ws: Ws, mut shutdown: watch::Receiver<()>, held: Arc<Held>) {
    loop {
        tokio::select! {
            // Err means the sender is gone: shut down as well.
            _ = shutdown.changed() => {
                let _ = close_gracefully(ws).await;
                return;
            }
            next = ws.next() => match next {
                Some(Ok(Message::Close(_))) | None => {
                    held.closed_by_peer.fetch_add(1, Ordering::Relaxed);
                    // Let tungstenite flush its close reply and see the end of the stream.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    return;
                }
                Some(Err(_)) => {
                    held.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {} // pings are answered by tungstenite while we poll
            },
        }
    }
}

/// A future that resolves with the name of the first stop signal: SIGTERM, SIGINT, or (when
/// `watch_stdin`) the end of stdin. Signals are registered now, before anything is opened.
fn stop_signal(
    watch_stdin: bool,
) -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (eof_tx, eof_rx) = oneshot::channel::<()>();
    if watch_stdin {
        // A plain thread: a blocked read must not keep the runtime from shutting down.
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = eof_tx.send(());
        });
    } else {
        drop(eof_tx);
    }
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            Ok(()) = eof_rx => "stdin closed",
        }
    })
}
