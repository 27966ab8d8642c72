//! The relay's I/O shell: moves frames between an accepted client socket and its upstream
//! socket until one side closes, the gateway asks it to close (revocation, expiry, shutdown), or
//! a peer breaks the protocol.
//!
//! Owns the sockets, the read scratch buffer, the timers and the writes. What a frame means is
//! decided by the pure state machine in [`wsguard_policy::frames`] (header rules, sizes,
//! fragments, UTF-8 as it arrives, assembly, compression) and when a socket is due a ping or a
//! close by [`wsguard_policy::liveness`], which takes the instant this shell reads from tokio's
//! clock (so tests run the timers in paused time). Bytes are read into a scratch buffer shared
//! by the thread, checked where they lie and forwarded from there; only an incomplete frame, an
//! assembled client message or bytes a slow peer has not taken are kept per socket, sized to
//! them and freed when drained. Close codes and reasons pass through; an upstream that vanishes
//! gives the client 1011; a client that vanishes gives the upstream [`CloseReason::ClientGone`].
//! It must not decide policy: it asks `judge` about each client message and takes its close
//! reasons from [`CloseReason`].

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use wsguard_policy::deflate::Compression;
use wsguard_policy::frames::{Counters, Ctx, Event, Half, Peer, Reading, frames, missing, other};
pub use wsguard_policy::frames::{Limits, UPSTREAM_LIMITS};
pub use wsguard_policy::liveness::Timing;
use wsguard_policy::liveness::{Liveness, Wake};

use crate::metrics::Metrics;
use crate::policy::{Seen, Verdict};
use crate::reason::CloseReason;
use crate::registry::Traffic;
use crate::wire::{self, Op};

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Largest single read.
const SCRATCH: usize = 64 * 1024;

/// Most bytes of answers (pongs) kept for a peer that does not read them.
const MAX_REPLIES: usize = 64 * 1024;

/// Read rounds per wake-up before yielding to other sockets.
const ROUNDS: usize = 16;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// How a relayed connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The client closed (code, if any).
    ByClient(Option<u16>),
    /// The upstream closed (code, if any).
    ByUpstream(Option<u16>),
    /// The gateway closed it.
    ByGateway(CloseReason),
}

/// A peer: its socket, and what the frame state machine keeps for it ([`Half`]).
struct Side<S> {
    io: S,
    half: Half,
}

impl<S> std::ops::Deref for Side<S> {
    type Target = Half;
    fn deref(&self) -> &Half {
        &self.half
    }
}

impl<S> std::ops::DerefMut for Side<S> {
    fn deref_mut(&mut self) -> &mut Half {
        &mut self.half
    }
}

/// The gateway's counters for one socket: its metrics and its own traffic.
struct SocketCounts<'m> {
    metrics: &'m Metrics,
    traffic: &'m Traffic,
}

impl Counters for SocketCounts<'_> {
    fn up(&self, bytes: u64) {
        self.metrics.messages_up.inc();
        self.metrics.bytes_up.inc_by(bytes);
        self.traffic.up(bytes);
    }

    fn down(&self, bytes: u64, message_end: bool) {
        if message_end {
            self.metrics.messages_down.inc();
        }
        self.metrics.bytes_down.inc_by(bytes);
        self.traffic.down(bytes, message_end);
    }
}

/// Both sides and what the relay tracks about them.
struct Conn<'m, C, U, J> {
    client: Side<C>,
    upstream: Side<U>,
    metrics: &'m Metrics,
    counts: SocketCounts<'m>,
    judge: J,
    activity: u64,
    client_pong: bool,
    upstream_pong: bool,
}

/// Writes as much of `buf` as `io` takes now. `Ok(n)`: bytes taken (may be short: the peer is
/// slow and a wake-up is registered).
fn write_now<S: AsyncWrite + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match Pin::new(&mut *io).poll_write(cx, &buf[done..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => done += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(done)
}

/// Writes what is queued for a side; `Err` if its socket failed (what was queued is dropped).
#[inline]
fn flush<S: AsyncWrite + Unpin>(side: &mut Side<S>, cx: &mut Context<'_>) -> io::Result<()> {
    if !side.waiting() {
        return Ok(());
    }
    let r = flush_inner(side, cx);
    if r.is_err() {
        side.tx = Vec::new();
        side.unflushed = false;
    }
    r
}

fn flush_inner<S: AsyncWrite + Unpin>(side: &mut Side<S>, cx: &mut Context<'_>) -> io::Result<()> {
    if side.tx.is_empty() {
        return push(&mut side.io, &mut side.half.unflushed, cx);
    }
    let n = write_now(&mut side.io, cx, &side.half.tx)?;
    if n == side.tx.len() {
        // Freed, not kept: an idle socket holds no buffer.
        side.tx = Vec::new();
        return push(&mut side.io, &mut side.half.unflushed, cx);
    }
    side.tx.drain(..n);
    Ok(())
}

/// Flushes what the stream holds after a write: a no-op on TCP; TLS may keep records until the
/// socket takes them (then `unflushed` is set, and a wake-up is registered).
fn push<S: AsyncWrite + Unpin>(
    io: &mut S,
    unflushed: &mut bool,
    cx: &mut Context<'_>,
) -> io::Result<()> {
    match Pin::new(io).poll_flush(cx) {
        Poll::Ready(Ok(())) => *unflushed = false,
        Poll::Ready(Err(e)) => return Err(e),
        Poll::Pending => *unflushed = true,
    }
    Ok(())
}

impl<C, U, J> Conn<'_, C, U, J>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    J: FnMut(Seen<'_>) -> Verdict,
{
    /// Relays until something needs the relay's attention, or nothing can move.
    fn poll_events(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        for _ in 0..ROUNDS {
            if !self.client.done && flush(&mut self.client, cx).is_err() {
                self.client.done = true;
                return Poll::Ready(Event::Gone(Peer::Client));
            }
            if !self.upstream.done && flush(&mut self.upstream, cx).is_err() {
                self.upstream.done = true;
                return Poll::Ready(Event::Gone(Peer::Upstream));
            }
            let mut moved = false;
            // A side is read only while what it sends can be written (backpressure); a side
            // being drained for its close is read regardless.
            if readable(&self.client, &self.upstream) {
                match self.round(Peer::Client, cx) {
                    Poll::Ready(Some(ev)) => return Poll::Ready(ev),
                    Poll::Ready(None) => moved = true,
                    Poll::Pending => {}
                }
            }
            if readable(&self.upstream, &self.client) {
                match self.round(Peer::Upstream, cx) {
                    Poll::Ready(Some(ev)) => return Poll::Ready(ev),
                    Poll::Ready(None) => moved = true,
                    Poll::Pending => {}
                }
            }
            if !moved {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One read from `from` and everything it completes. `Ready(None)`: progress, go on.
    fn round(&mut self, from: Peer, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        SCRATCH_BUF.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let pong = match from {
                Peer::Client => &mut self.client_pong,
                Peer::Upstream => &mut self.upstream_pong,
            };
            let mut ctx = Ctx {
                counts: &self.counts,
                judge: &mut self.judge,
                activity: &mut self.activity,
                pong,
            };
            match from {
                Peer::Client => round(
                    from,
                    &mut self.client,
                    &mut self.upstream,
                    &mut ctx,
                    &mut scratch,
                    cx,
                ),
                Peer::Upstream => round(
                    from,
                    &mut self.upstream,
                    &mut self.client,
                    &mut ctx,
                    &mut scratch,
                    cx,
                ),
            }
        })
    }
}

fn readable<S, D>(src: &Side<S>, dst: &Side<D>) -> bool {
    !src.done
        && match src.reading {
            Reading::Relay => !dst.waiting(),
            Reading::Discard => true,
            Reading::Off => false,
        }
}

fn round<S, D, J>(
    peer: Peer,
    src: &mut Side<S>,
    dst: &mut Side<D>,
    ctx: &mut Ctx<'_, J>,
    scratch: &mut [u8],
    cx: &mut Context<'_>,
) -> Poll<Option<Event>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    D: AsyncRead + AsyncWrite + Unpin,
    J: FnMut(Seen<'_>) -> Verdict,
{
    // Read: into the scratch buffer, or after the incomplete frame kept from earlier (unless
    // what is kept is already whole: bytes read along with the handshake).
    let in_scratch = src.partial.is_empty();
    let lacking = (!in_scratch)
        .then(|| missing(&src.partial, src.from))
        .flatten();
    let whole = lacking == Some(0);
    let n = if whole {
        src.partial.len()
    } else if in_scratch {
        let mut rb = ReadBuf::new(scratch);
        match Pin::new(&mut src.io).poll_read(cx, &mut rb) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Some(Event::Gone(peer))),
            Poll::Ready(Ok(())) => rb.filled().len(),
        }
    } else {
        let want = lacking.unwrap_or(16);
        // Zeroed first (no unsafe code); this path only serves frames split across reads.
        let len = src.partial.len();
        let chunk = (want as usize).clamp(4096, SCRATCH);
        src.partial.resize(len + chunk, 0);
        let mut rb = ReadBuf::new(&mut src.half.partial[len..]);
        let r = Pin::new(&mut src.io).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        src.partial.truncate(len + n);
        match r {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Some(Event::Gone(peer))),
            Poll::Ready(Ok(())) => n,
        }
    };
    if n == 0 {
        return Poll::Ready(Some(Event::Gone(peer)));
    }
    let mut partial = std::mem::take(&mut src.partial);
    let buf: &mut [u8] = if in_scratch {
        &mut scratch[..n]
    } else {
        &mut partial[..]
    };
    let (consumed, out, event) = frames(peer, src, dst, ctx, buf);
    // Forward what was checked (in order: the in-place bytes, then anything queued after).
    let mut written = 0;
    if out > 0 {
        if dst.tx.is_empty() {
            match write_now(&mut dst.io, cx, &buf[..out]) {
                Ok(w) => written = w,
                Err(_) => return Poll::Ready(Some(Event::Gone(other(peer)))),
            }
            if written == out && push(&mut dst.io, &mut dst.half.unflushed, cx).is_err() {
                return Poll::Ready(Some(Event::Gone(other(peer))));
            }
        }
        if written < out {
            let rest = &buf[written..out];
            dst.tx.splice(0..0, rest.iter().copied());
        }
    }
    // What follows stays for the next round, even after an event: a socket being closed is
    // still read (discarding data) until its close frame, which may be among these bytes.
    if consumed < buf.len() {
        if in_scratch {
            src.partial = buf[consumed..].to_vec();
        } else {
            partial.drain(..consumed);
            src.partial = partial;
        }
    } else {
        src.scanned = 0;
    }
    if written == out
        && !dst.tx.is_empty()
        && let Err(_e) = flush(dst, cx)
    {
        return Poll::Ready(Some(Event::Gone(other(peer))));
    }
    if !src.tx.is_empty() {
        if src.tx.len() > MAX_REPLIES {
            return Poll::Ready(Some(Event::Fault(peer, CloseReason::Overloaded)));
        }
        if flush(src, cx).is_err() {
            return Poll::Ready(Some(Event::Gone(peer)));
        }
    }
    Poll::Ready(event)
}

/// Now, on tokio's clock (paused in tests that pause it), as a `std` instant.
fn clock_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A timer that may or may not be armed; an unarmed one never fires.
struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Deadline {
    fn new() -> Self {
        Deadline {
            sleep: None,
            armed: false,
        }
    }

    /// Arms it `after` from now, unless already armed.
    fn arm(&mut self, after: Duration) {
        if self.armed {
            return;
        }
        let at = tokio::time::Instant::now() + after;
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = true;
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    fn set(&mut self, on: bool, after: Option<Duration>) {
        match (on, after) {
            (true, Some(a)) => self.arm(a),
            _ => self.disarm(),
        }
    }

    fn poll_fire(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match (&mut self.sleep, self.armed) {
            (Some(s), true) => {
                let r = s.as_mut().poll(cx);
                if r.is_ready() {
                    self.armed = false;
                }
                r
            }
            _ => Poll::Pending,
        }
    }
}

/// A peer's stream, and the bytes already read from it along with its handshake.
#[derive(Debug)]
pub struct Opened<'a, S> {
    /// The stream.
    pub io: &'a mut S,
    /// Read past the handshake, not yet relayed (usually empty: no allocation).
    pub read: Vec<u8>,
    /// permessage-deflate as this peer agreed it (`None`: RSV1 from it is a protocol error,
    /// and nothing is compressed toward it).
    pub deflate: Option<Compression>,
}

/// Relays until the end. The sockets are borrowed, not moved, so that each lives in exactly one
/// place of the socket's task (per-connection memory). `stop` fires when the gateway wants the
/// socket closed; `judge` decides on every client data message (message policy, activity
/// tracking) and sees every client ping and pong (to bound floods; only `Verdict::Close`
/// matters for those).
#[allow(clippy::too_many_arguments)] // each is a distinct input of one relay; a struct would only rename them
pub async fn relay<C, U>(
    client: Opened<'_, C>,
    upstream: Opened<'_, U>,
    stop: oneshot::Receiver<crate::registry::CloseRequest>,
    (metrics, traffic): (&Metrics, &Traffic),
    expires_in: Option<Duration>,
    timing: Timing,
    limits: Limits,
    judge: impl FnMut(Seen<'_>) -> Verdict,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        client: Side {
            io: client.io,
            half: Half::new(client.read, client.deflate, wire::From::Client, limits),
        },
        upstream: Side {
            io: upstream.io,
            half: Half::new(
                upstream.read,
                upstream.deflate,
                wire::From::Server,
                UPSTREAM_LIMITS,
            ),
        },
        metrics,
        counts: SocketCounts { metrics, traffic },
        judge,
        activity: 0,
        client_pong: false,
        upstream_pong: false,
    };
    let mut stop = std::pin::pin!(stop);
    // One timer for expiry and liveness, on tokio's clock (so that tests can run in paused
    // time): it fires when `Liveness` asks to be woken.
    let mut liveness = Liveness::new(clock_now(), timing, expires_in);
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let wake = |l: &Liveness| {
        l.next_wake()
            .map_or_else(far, tokio::time::Instant::from_std)
    };
    let mut timer = std::pin::pin!(tokio::time::sleep_until(wake(&liveness)));
    // Armed only while needed: a peer slow to take what is queued for it, a client message
    // partly received.
    let (mut client_slow, mut upstream_slow, mut assembly) =
        (Deadline::new(), Deadline::new(), Deadline::new());
    let reason = loop {
        let step = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = stop.as_mut().poll(cx) {
                let (reason, asked) = r.unwrap_or((CloseReason::Shutdown, Instant::now()));
                return Poll::Ready(Step::Stop(reason, Some(asked)));
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Timer);
            }
            if let Poll::Ready(ev) = conn.poll_events(cx) {
                return Poll::Ready(Step::Event(ev));
            }
            // Nothing can move: arm (or disarm) the deadlines that say how long it may stay so.
            client_slow.set(conn.client.waiting(), Some(timing.send));
            upstream_slow.set(conn.upstream.waiting(), Some(timing.send));
            assembly.set(conn.client.busy(), conn.client.limits.assembly);
            if client_slow.poll_fire(cx).is_ready() {
                return Poll::Ready(Step::Stop(CloseReason::Overloaded, None));
            }
            if upstream_slow.poll_fire(cx).is_ready() {
                return Poll::Ready(Step::Stop(CloseReason::UpstreamLost, None));
            }
            if assembly.poll_fire(cx).is_ready() {
                return Poll::Ready(Step::Fault(CloseReason::AssemblyTimeout));
            }
            Poll::Pending
        })
        .await;
        if std::mem::take(&mut conn.client_pong) {
            liveness.pong(Peer::Client);
        }
        if std::mem::take(&mut conn.upstream_pong) {
            liveness.pong(Peer::Upstream);
        }
        match step {
            Step::Stop(reason, asked) => {
                return Box::pin(gateway_close(&mut conn, reason, asked)).await;
            }
            Step::Fault(reason) => break Event::Fault(Peer::Client, reason),
            Step::Event(ev) => break ev,
            Step::Timer => match liveness.on_wake(clock_now(), conn.activity) {
                Wake::Close(reason) => {
                    return Box::pin(gateway_close(&mut conn, reason, None)).await;
                }
                Wake::Ping => {
                    conn.client.queue(Op::Ping, b"wsguard");
                    conn.upstream.queue(Op::Ping, b"wsguard");
                    timer.as_mut().reset(wake(&liveness));
                }
                Wake::Nothing => timer.as_mut().reset(wake(&liveness)),
            },
        }
    };
    Box::pin(after_event(&mut conn, reason)).await
}

enum Step {
    Stop(CloseReason, Option<Instant>),
    Timer,
    Fault(CloseReason),
    Event(Event),
}

/// Runs the relay (as set up by the caller's `reading` modes) until `done` says so.
async fn until<C, U, J>(conn: &mut Conn<'_, C, U, J>, mut done: impl FnMut(&Event) -> bool)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    J: FnMut(Seen<'_>) -> Verdict,
{
    loop {
        if conn.client.done && conn.upstream.done {
            return;
        }
        let ev = std::future::poll_fn(|cx| conn.poll_events(cx)).await;
        let peer = match &ev {
            Event::Close(p, ..) | Event::Fault(p, _) | Event::Gone(p) => *p,
            Event::Policy(_) => Peer::Client,
        };
        match peer {
            Peer::Client => conn.client.finished(),
            Peer::Upstream => conn.upstream.finished(),
        }
        if done(&ev) {
            return;
        }
    }
}

/// Writes everything queued for both sides (bounded by the caller's timeout).
async fn drain_tx<C, U, J>(conn: &mut Conn<'_, C, U, J>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(|cx| {
        let c = conn.client.done || flush(&mut conn.client, cx).is_err() || !conn.client.waiting();
        let u = conn.upstream.done
            || flush(&mut conn.upstream, cx).is_err()
            || !conn.upstream.waiting();
        if c && u {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// The gateway closes both sides: the client's close frame first (the moment a revocation takes
/// effect), then both closing handshakes.
async fn gateway_close<C, U, J>(
    conn: &mut Conn<'_, C, U, J>,
    reason: CloseReason,
    revoked_at: Option<Instant>,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    J: FnMut(Seen<'_>) -> Verdict,
{
    conn.client
        .queue_close(Some(reason.close_code()), reason.text());
    conn.upstream
        .queue_close(Some(reason.close_code()), reason.text());
    conn.client.reading = Reading::Discard;
    conn.upstream.reading = Reading::Discard;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        std::future::poll_fn(|cx| {
            if flush(&mut conn.client, cx).is_err() || !conn.client.waiting() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        if let Some(asked) = revoked_at
            && reason == CloseReason::SessionRevoked
            && !conn.client.waiting()
        {
            conn.metrics
                .revocation_close
                .observe(asked.elapsed().as_secs_f64());
        }
        until(conn, |_| false).await;
    })
    .await;
    Ended::ByGateway(reason)
}

/// The closing handshake after an event from the relay.
async fn after_event<C, U, J>(conn: &mut Conn<'_, C, U, J>, ev: Event) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    J: FnMut(Seen<'_>) -> Verdict,
{
    match ev {
        Event::Policy(reason) => gateway_close(conn, reason, None).await,
        Event::Close(closer, code, reason) => {
            // Answer the close, pass it to the other side, wait (bounded) for that side's answer.
            match closer {
                Peer::Client => {
                    conn.client.answer_close(code);
                    conn.upstream.pass_close(code, &reason);
                }
                Peer::Upstream => {
                    conn.upstream.answer_close(code);
                    conn.client.pass_close(code, &reason);
                }
            }
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                until(conn, |_| false).await;
                drain_tx(conn).await;
            })
            .await;
            match closer {
                Peer::Client => Ended::ByClient(code),
                Peer::Upstream => Ended::ByUpstream(code),
            }
        }
        Event::Fault(Peer::Client, reason) => {
            // Replies to what the client sent before its fault are still delivered (as the
            // upstream itself would have): close the upstream first, relay what it sends until
            // its close arrives, then close the client.
            conn.client.reading = Reading::Off;
            conn.client.partial = Vec::new();
            conn.upstream.queue_close(
                Some(CloseReason::ClientGone.close_code()),
                CloseReason::ClientGone.text(),
            );
            let upstream_closed = |ev: &Event| {
                matches!(
                    ev,
                    Event::Close(Peer::Upstream, ..)
                        | Event::Fault(Peer::Upstream, _)
                        | Event::Gone(_)
                )
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, until(conn, upstream_closed)).await;
            conn.upstream.finished();
            conn.client
                .queue_close(Some(reason.close_code()), reason.text());
            conn.client.reading = Reading::Discard;
            let _ = tokio::time::timeout(CLOSE_GRACE, until(conn, |_| false)).await;
            Ended::ByGateway(reason)
        }
        Event::Gone(Peer::Client) => {
            conn.client.finished();
            conn.upstream.queue_close(
                Some(CloseReason::ClientGone.close_code()),
                CloseReason::ClientGone.text(),
            );
            conn.upstream.reading = Reading::Discard;
            let _ = tokio::time::timeout(CLOSE_GRACE, until(conn, |_| false)).await;
            Ended::ByClient(None)
        }
        Event::Fault(Peer::Upstream, _) | Event::Gone(Peer::Upstream) => {
            let reason = CloseReason::UpstreamLost;
            conn.upstream.finished();
            conn.client
                .queue_close(Some(reason.close_code()), reason.text());
            conn.client.reading = Reading::Discard;
            let _ = tokio::time::timeout(CLOSE_GRACE, until(conn, |_| false)).await;
            Ended::ByGateway(reason)
        }
    }
}

#[cfg(test)]
mod tests;
