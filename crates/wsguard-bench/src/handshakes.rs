//! `wsguard-bench handshakes`: the rate and latency of opening WebSocket connections.
//!
//! Each worker loops: TCP connect, handshake, close frame, wait for the peer's close, repeat.
//! Handshake latency is from the start of the TCP connect to the 101 response. Non-101 responses
//! are counted as refusals by status code; other failures as errors by kind.
//!
//! Owns the worker loop and the handshake report. Must not retry or back off beyond a short
//! pause after a failed TCP connect (so a dead target is not spun on).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::timeout_at;

use crate::stats::{Counts, Latency, LatencySummary, Window, per_sec};
use crate::target::{ConnectError, Target, TargetArgs, close_gracefully};
use crate::{output, positive};

/// Pause after a failure that is not an HTTP answer (refused TCP, timeout, ...).
const ERROR_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, Args)]
pub struct HandshakesArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Concurrent workers, each looping connect → handshake → close.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    connections: usize,
    /// How long to measure, after the warmup (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load before measuring; its samples are discarded.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug)]
struct WorkerResult {
    latency: Latency,
    handshakes: u64,
    refusals: Counts,
    errors: Counts,
}

#[derive(Debug, Serialize)]
struct HandshakesReport {
    url: String,
    workers: usize,
    duration_s: f64,
    warmup_s: f64,
    /// Handshakes answered 101 inside the measurement window.
    handshakes: u64,
    handshakes_per_sec: f64,
    #[serde(flatten)]
    latency: LatencySummary,
    /// Handshakes answered with anything but 101.
    refusals: u64,
    refusals_by_status: Counts,
    /// Failures other than refusals (TCP connect, timeouts, bad close, ...).
    errors: u64,
    error_kinds: Counts,
}

pub async fn run(args: HandshakesArgs) -> anyhow::Result<ExitCode> {
    let target = Arc::new(Target::resolve(args.target.clone()).await?);
    let window = Window::new(Instant::now(), args.warmup, args.duration);
    let mut tasks = JoinSet::new();
    for i in 0..args.connections {
        tasks.spawn(worker(
            Arc::clone(&target),
            i,
            args.connections,
            window,
            Latency::new()?,
        ));
    }
    let mut latency = Latency::new()?;
    let mut handshakes = 0;
    let mut refusals = Counts::default();
    let mut errors = Counts::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => {
                latency.merge(&r.latency)?;
                handshakes += r.handshakes;
                refusals.merge(&r.refusals);
                errors.merge(&r.errors);
            }
            Err(_) => errors.add("task_failed"),
        }
    }
    let measured = window.measured();
    let report = HandshakesReport {
        url: target.url().to_owned(),
        workers: args.connections,
        duration_s: measured.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        handshakes,
        handshakes_per_sec: per_sec(handshakes, measured),
        latency: latency.summary(),
        refusals: refusals.total(),
        refusals_by_status: refusals,
        errors: errors.total(),
        error_kinds: errors,
    };
    if args.json {
        output::json(&report)?;
    } else {
        println!("handshakes {}: {} workers", report.url, report.workers);
        println!(
            "  window      {:.1} s measured after {:.1} s warmup",
            report.duration_s, report.warmup_s
        );
        println!(
            "  handshakes  {} ({:.0}/s)",
            report.handshakes, report.handshakes_per_sec
        );
        println!("  latency µs  {}", report.latency.line());
        println!(
            "  refusals    {} (by status: {})",
            report.refusals,
            report.refusals_by_status.line()
        );
        println!(
            "  errors      {} ({})",
            report.errors,
            report.error_kinds.line()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn worker(
    target: Arc<Target>,
    first: usize,
    step: usize,
    w: Window,
    latency: Latency,
) -> WorkerResult {
    let mut r = WorkerResult {
        latency,
        handshakes: 0,
        refusals: Counts::default(),
        errors: Counts::default(),
    };
    // Worker i takes sources i, i + step, i + 2·step, ...: round-robin over all workers.
    let mut attempt = first;
    loop {
        let start = Instant::now();
        if start >= w.end {
            break;
        }
        let source = target.source(attempt);
        attempt = attempt.wrapping_add(step);
        let measured = start >= w.warmup_end;
        match timeout_at(w.end.into(), target.connect(source)).await {
            Err(_) => break,
            Ok(Ok(ws)) => {
                let done = Instant::now();
                if w.counts(start, done) {
                    r.latency.record(done - start);
                    r.handshakes += 1;
                }
                if let Err(kind) = close_gracefully(ws).await
                    && measured
                {
                    r.errors.add(kind);
                }
            }
            Ok(Err(ConnectError::Refused(status))) => {
                if measured {
                    r.refusals.add(status.as_u16().to_string());
                }
            }
            Ok(Err(e)) => {
                if measured {
                    r.errors.add(e.kind());
                }
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    r
}
