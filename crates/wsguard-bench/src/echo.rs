//! `wsguard-bench echo`: N connections send messages of a fixed size and time each echo.
//!
//! Closed loop (default): each connection sends one message, waits for its echo, sends the next;
//! latency is send → echo. Open loop (`--rate`): each connection sends on a fixed schedule and a
//! reader matches echoes by the sequence number and send time in the payload. Latency counts from
//! the actual send, not the scheduled tick: tokio's timer is 1 ms coarse, so scheduled times would
//! add up to a millisecond of our own lateness. A server that stalls the sender shows instead as
//! `send_lag_max_us` (how far the sender fell behind its schedule) and a rate below the schedule.
//!
//! Owns the per-connection send/receive loops and the echo report. Connection setup lives in
//! `target`, payload format in `payload`, aggregation in `stats`. No reconnects: a connection that
//! fails mid-run is counted as lost and stays gone.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt, stream};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::timeout_at;
use tokio_tungstenite::tungstenite::Message;

use crate::payload::{HEADER_LEN, Payloads, Stamp};
use crate::stats::{Counts, Latency, LatencySummary, Window, per_sec};
use crate::target::{Target, TargetArgs, Ws, close_gracefully, ws_error_kind};
use crate::{output, positive};

#[derive(Debug, Args)]
pub struct EchoArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Number of connections.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    connections: usize,
    /// Payload size in bytes, at least 32 (the sequence number and send time travel in the first
    /// 32 bytes; the rest is ASCII filler).
    #[arg(long, default_value_t = 64, value_parser = payload_size)]
    size: usize,
    /// Messages per second per connection on a fixed schedule (open loop). 0 = closed loop: send
    /// one message, wait for its echo, send the next.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    rate: u64,
    /// Send binary messages (default: text).
    #[arg(long)]
    binary: bool,
    /// How long to measure, after the warmup (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load before measuring; its samples are discarded.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Connection attempts in flight while opening.
    #[arg(long, default_value_t = 200, value_parser = positive)]
    concurrency: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn payload_size(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n < HEADER_LEN {
        return Err(format!("must be at least {HEADER_LEN}"));
    }
    Ok(n)
}

/// What one connection measured.
#[derive(Debug)]
struct ConnResult {
    latency: Latency,
    messages: u64,
    errors: Counts,
    lost: bool,
    /// Open loop: the furthest the sender fell behind its schedule while measuring.
    send_lag_max: Duration,
}

impl ConnResult {
    fn new(latency: Latency) -> Self {
        Self {
            latency,
            messages: 0,
            errors: Counts::default(),
            lost: false,
            send_lag_max: Duration::ZERO,
        }
    }

    fn fail(&mut self, kind: &'static str) {
        self.errors.add(kind);
        self.lost = true;
    }
}

#[derive(Debug, Serialize)]
struct EchoReport {
    url: String,
    mode: &'static str,
    connections_requested: usize,
    connections_opened: usize,
    connections_failed: u64,
    connections_lost: u64,
    size: usize,
    binary: bool,
    rate_per_connection: u64,
    duration_s: f64,
    warmup_s: f64,
    /// Round trips completed inside the measurement window.
    messages: u64,
    messages_per_sec: f64,
    /// Payload bytes per second, one way.
    bytes_per_sec: f64,
    #[serde(flatten)]
    latency: LatencySummary,
    /// Open loop only: the furthest any sender fell behind its schedule (timer granularity
    /// included, so about 1000 µs even when the server keeps up).
    send_lag_max_us: Option<u64>,
    /// Failed connects, connections lost mid-run, and echoes that did not match.
    errors: u64,
    error_kinds: Counts,
}

pub async fn run(args: EchoArgs) -> anyhow::Result<ExitCode> {
    let mut target = Target::resolve(args.target.clone()).await?;
    target.size_reads_for(args.size);
    let payloads = Payloads::new(args.size, args.binary);

    let mut opened = Vec::with_capacity(args.connections);
    let mut errors = Counts::default();
    let mut first_error = None;
    let mut attempts = stream::iter(0..args.connections)
        .map(|i| target.connect(target.source(i)))
        .buffer_unordered(args.concurrency);
    while let Some(attempt) = attempts.next().await {
        match attempt {
            Ok(ws) => opened.push(ws),
            Err(e) => {
                errors.add(e.kind());
                first_error.get_or_insert(e);
            }
        }
    }
    drop(attempts);
    let connections_failed = errors.total();
    if let Some(e) = first_error {
        eprintln!("{connections_failed} connections failed to open; first: {e}");
    }
    let connections_opened = opened.len();

    let window = Window::new(Instant::now(), args.warmup, args.duration);
    let mut tasks = JoinSet::new();
    for (i, ws) in opened.into_iter().enumerate() {
        let latency = Latency::new()?;
        let payloads = payloads.clone();
        if args.rate == 0 {
            tasks.spawn(closed_loop(ws, payloads, window, latency));
        } else {
            // Spread the connections' schedules evenly over one period.
            let period = Duration::from_secs_f64(1.0 / args.rate as f64);
            let offset = period.mul_f64(i as f64 / connections_opened as f64);
            tasks.spawn(open_loop(ws, payloads, window, period, offset, latency));
        }
    }
    let mut latency = Latency::new()?;
    let mut messages = 0;
    let mut connections_lost = 0;
    let mut send_lag_max = Duration::ZERO;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => {
                latency.merge(&r.latency)?;
                messages += r.messages;
                errors.merge(&r.errors);
                connections_lost += u64::from(r.lost);
                send_lag_max = send_lag_max.max(r.send_lag_max);
            }
            Err(_) => {
                errors.add("task_failed");
                connections_lost += 1;
            }
        }
    }

    let measured = window.measured();
    let report = EchoReport {
        url: target.url().to_owned(),
        mode: if args.rate == 0 {
            "closed_loop"
        } else {
            "open_loop"
        },
        connections_requested: args.connections,
        connections_opened,
        connections_failed,
        connections_lost,
        size: payloads.size(),
        binary: args.binary,
        rate_per_connection: args.rate,
        duration_s: measured.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        messages,
        messages_per_sec: per_sec(messages, measured),
        bytes_per_sec: per_sec(messages, measured) * payloads.size() as f64,
        latency: latency.summary(),
        send_lag_max_us: (args.rate > 0)
            .then(|| u64::try_from(send_lag_max.as_micros()).unwrap_or(u64::MAX)),
        errors: errors.total(),
        error_kinds: errors,
    };
    if args.json {
        output::json(&report)?;
    } else {
        print_table(&report);
    }
    Ok(if connections_opened == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_table(r: &EchoReport) {
    let kind = if r.binary { "binary" } else { "text" };
    let mode = if r.rate_per_connection == 0 {
        "closed loop".to_owned()
    } else {
        format!("open loop, {} msg/s per connection", r.rate_per_connection)
    };
    println!("echo {}: {} B {kind}, {mode}", r.url, r.size);
    println!(
        "  window       {:.1} s measured after {:.1} s warmup",
        r.duration_s, r.warmup_s
    );
    println!(
        "  connections  {} requested, {} opened, {} failed, {} lost",
        r.connections_requested, r.connections_opened, r.connections_failed, r.connections_lost
    );
    println!(
        "  messages     {} round trips, {:.0} msg/s, {} payload one way",
        r.messages,
        r.messages_per_sec,
        output::bytes_per_sec(r.bytes_per_sec)
    );
    println!("  latency µs   {}", r.latency.line());
    if let Some(lag) = r.send_lag_max_us {
        println!("  send lag µs  max {lag} behind schedule");
    }
    println!("  errors       {} ({})", r.errors, r.error_kinds.line());
}

fn nanos_since(base: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// One message in flight at a time until the window ends.
async fn closed_loop(mut ws: Ws, payloads: Payloads, w: Window, latency: Latency) -> ConnResult {
    let mut r = ConnResult::new(latency);
    let mut seq = 0;
    'run: loop {
        let sent_at = Instant::now();
        if sent_at >= w.end {
            break;
        }
        let stamp = Stamp {
            seq,
            sent_ns: nanos_since(w.base, sent_at),
        };
        seq += 1;
        match timeout_at(w.end.into(), ws.send(payloads.message(stamp))).await {
            Err(_) => break 'run,
            Ok(Err(e)) => {
                r.fail(ws_error_kind(&e));
                return r;
            }
            Ok(Ok(())) => {}
        }
        let echo = loop {
            match timeout_at(w.end.into(), ws.next()).await {
                Err(_) => break 'run,
                Ok(None | Some(Ok(Message::Close(_)))) => {
                    r.fail("closed_by_peer");
                    return r;
                }
                Ok(Some(Err(e))) => {
                    r.fail(ws_error_kind(&e));
                    return r;
                }
                Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => break m,
                Ok(Some(Ok(_))) => {} // ping (answered by tungstenite), pong, raw frame
            }
        };
        let done = Instant::now();
        match payloads.check(&echo) {
            Ok(got) if got == stamp => {
                if w.counts(sent_at, done) {
                    r.latency.record(done - sent_at);
                    r.messages += 1;
                }
            }
            Ok(_) | Err(_) => r.errors.add("mismatch"),
        }
    }
    if let Err(kind) = close_gracefully(ws).await {
        r.errors.add(kind);
    }
    r
}

/// A sender on a fixed schedule and a reader of echoes, until the window ends or either fails.
async fn open_loop(
    ws: Ws,
    payloads: Payloads,
    w: Window,
    period: Duration,
    offset: Duration,
    latency: Latency,
) -> ConnResult {
    let mut r = ConnResult::new(latency);
    let (mut sink, mut stream) = ws.split();
    let mut send_lag_max = Duration::ZERO;
    let lost = {
        let sender = async {
            // Missed ticks are sent in a burst (tokio's default).
            let mut ticks = tokio::time::interval_at(
                (w.base + offset).into(),
                period.max(Duration::from_nanos(1)),
            );
            let mut seq = 0;
            loop {
                let at = match timeout_at(w.end.into(), ticks.tick()).await {
                    Ok(at) => at.into_std(),
                    Err(_) => return None,
                };
                if at >= w.end {
                    return None;
                }
                let now = Instant::now();
                if at >= w.warmup_end {
                    send_lag_max = send_lag_max.max(now.saturating_duration_since(at));
                }
                let stamp = Stamp {
                    seq,
                    sent_ns: nanos_since(w.base, now),
                };
                seq += 1;
                match timeout_at(w.end.into(), sink.send(payloads.message(stamp))).await {
                    Err(_) => return None,
                    Ok(Err(e)) => return Some(ws_error_kind(&e)),
                    Ok(Ok(())) => {}
                }
            }
        };
        let receiver = async {
            let mut expected = 0u64;
            loop {
                let msg = match timeout_at(w.end.into(), stream.next()).await {
                    Err(_) => return None,
                    Ok(None | Some(Ok(Message::Close(_)))) => return Some("closed_by_peer"),
                    Ok(Some(Err(e))) => return Some(ws_error_kind(&e)),
                    Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => m,
                    Ok(Some(Ok(_))) => continue,
                };
                let done = Instant::now();
                match payloads.check(&msg) {
                    Ok(stamp) => {
                        if stamp.seq != expected {
                            r.errors.add("mismatch");
                        }
                        expected = stamp.seq.saturating_add(1);
                        let sent = w.base + Duration::from_nanos(stamp.sent_ns);
                        if w.counts(sent, done) {
                            r.latency.record(done.saturating_duration_since(sent));
                            r.messages += 1;
                        }
                    }
                    Err(_) => r.errors.add("mismatch"),
                }
            }
        };
        tokio::select! {
            lost = sender => lost,
            lost = receiver => lost,
        }
    };
    r.send_lag_max = send_lag_max;
    match lost {
        Some(kind) => r.fail(kind),
        None => match sink.reunite(stream) {
            Ok(ws) => {
                if let Err(kind) = close_gracefully(ws).await {
                    r.errors.add(kind);
                }
            }
            Err(_) => r.errors.add("close"),
        },
    }
    r
}
