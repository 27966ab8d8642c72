//! The relay: moves messages between an accepted client socket and its upstream socket until
//! one side closes, the gateway asks it to close (revocation, expiry, shutdown), or a peer
//! breaks the protocol.
//!
//! Owns close-code mapping for relay errors and the closing handshake in both directions:
//! close codes and reasons pass through; an upstream that vanishes gives the client 1011; a
//! client that vanishes gives the upstream 1001. It must not decide policy: the close reasons it
//! sends come from [`CloseReason`].

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::metrics::Metrics;
use crate::policy::Verdict;
use crate::reason::CloseReason;

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

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

fn frame(reason: CloseReason) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(reason.close_code()),
        reason: reason.text().into(),
    }
}

/// Maps a read error from a peer to the close reason the gateway answers it with.
fn error_reason(e: &WsError) -> Option<CloseReason> {
    match e {
        WsError::Capacity(_) => Some(CloseReason::MessageTooBig),
        WsError::Utf8(_) => Some(CloseReason::InvalidPayload),
        WsError::Protocol(_) | WsError::AttackAttempt => Some(CloseReason::ProtocolError),
        // Fragment cap and assembly deadline (the frame watch on the client's stream).
        WsError::Io(e) => {
            crate::frames::Violation::from_io(e).map(crate::frames::Violation::reason)
        }
        // I/O errors and resets: the peer is gone, there is no one to send a close to.
        _ => None,
    }
}

/// Sends a close frame and waits (bounded) for the peer's reply, discarding anything else.
async fn close_and_drain<S>(ws: &mut WebSocketStream<S>, frame: Option<CloseFrame>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(frame).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

fn going_away() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Away,
        reason: "client gone".into(),
    }
}

/// Closes `upstream` (1001) and forwards its remaining data messages to `client` until the
/// upstream's close arrives, bounded by [`CLOSE_GRACE`].
async fn close_relaying<C, U>(upstream: &mut WebSocketStream<U>, client: &mut WebSocketStream<C>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if upstream.close(Some(going_away())).await.is_err() {
            return;
        }
        while let Some(Ok(m)) = upstream.next().await {
            if (m.is_text() || m.is_binary()) && client.send(m).await.is_err() {
                return;
            }
        }
    })
    .await;
}

/// Sends `m`, giving the peer `limit` to take it. The deadline timer is armed only if the send
/// does not complete at once (the common case costs no timer).
async fn send_within<S>(
    limit: Duration,
    ws: &mut WebSocketStream<S>,
    m: Message,
) -> Result<Result<(), WsError>, tokio::time::error::Elapsed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut send = std::pin::pin!(ws.send(m));
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(send.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => tokio::time::timeout(limit, send).await,
    }
}

/// Liveness and backpressure settings of a relayed socket.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Close (1008 `idle timeout`) after this long without a data message in either direction.
    pub idle: Option<Duration>,
    /// Ping both peers this often.
    pub ping: Option<Duration>,
    /// A peer that has not answered a ping within this is gone (half-open): close both sides.
    pub pong: Duration,
    /// A peer that does not accept a message within this is too slow: close it (1013). Until
    /// then the other side is simply not read (bounded buffers, natural backpressure).
    pub send: Duration,
}

/// How often liveness is checked, given the timing.
fn tick_period(t: &Timing) -> Option<Duration> {
    let candidates = [t.ping, t.idle.map(|i| i / 4)];
    candidates
        .into_iter()
        .flatten()
        .min()
        .map(|d| d.max(Duration::from_millis(10)))
}

/// Relays until the end. The sockets are borrowed, not moved, so that each lives in exactly one
/// place of the socket's task (per-connection memory). `stop` fires when the gateway wants the socket closed; `judge` decides
/// on every client data message (message policy, activity tracking) and sees every client
/// ping and pong (to bound floods; only `Verdict::Close` matters for those).
#[allow(clippy::too_many_arguments)] // each is a distinct input of one relay; a struct would only rename them
pub async fn relay<C, U>(
    client: &mut WebSocketStream<C>,
    upstream: &mut WebSocketStream<U>,
    stop: oneshot::Receiver<crate::registry::CloseRequest>,
    metrics: &Metrics,
    expires_in: Option<Duration>,
    timing: Timing,
    mut judge: impl FnMut(Message) -> Verdict,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    // Closing paths are boxed: their state is allocated only when a socket closes, so the
    // relay's own state (alive for the whole socket) stays small.
    let mut stop = std::pin::pin!(stop);
    let expiry = async {
        match expires_in {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let mut expiry = std::pin::pin!(expiry);
    // Liveness without per-message timers: data messages bump a counter; a ticker notices when
    // it stopped moving, and sends pings.
    let period = tick_period(&timing);
    let mut ticker = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.reset();
    let start = Instant::now();
    let (mut activity, mut seen_activity, mut quiet_since) = (0u64, 0u64, start);
    let (mut next_ping, mut client_pong_due, mut upstream_pong_due) = (
        timing.ping.map(|p| start + p),
        None::<Instant>,
        None::<Instant>,
    );
    loop {
        tokio::select! {
            biased;
            request = &mut stop => {
                let (reason, asked) = request.unwrap_or((CloseReason::Shutdown, Instant::now()));
                return Box::pin(gateway_close(client, upstream, reason, Some((asked, metrics)))).await;
            }
            () = &mut expiry => {
                return Box::pin(gateway_close(client, upstream, CloseReason::SessionExpired, None)).await;
            }
            _ = ticker.tick(), if period.is_some() => {
                let now = Instant::now();
                if activity != seen_activity {
                    (seen_activity, quiet_since) = (activity, now);
                }
                if timing.idle.is_some_and(|idle| now.duration_since(quiet_since) >= idle) {
                    return Box::pin(gateway_close(client, upstream, CloseReason::Idle, None)).await;
                }
                if client_pong_due.is_some_and(|d| now >= d) || upstream_pong_due.is_some_and(|d| now >= d) {
                    return Box::pin(gateway_close(client, upstream, CloseReason::NoPong, None)).await;
                }
                if let (Some(p), Some(at)) = (timing.ping, next_ping) && now >= at {
                    next_ping = Some(now + p);
                    let ping = || Message::Ping(bytes::Bytes::from_static(b"wsguard"));
                    let sent = tokio::time::timeout(timing.send, async {
                        client.send(ping()).await.is_ok() && upstream.send(ping()).await.is_ok()
                    });
                    if !matches!(sent.await, Ok(true)) {
                        return Box::pin(gateway_close(client, upstream, CloseReason::Overloaded, None)).await;
                    }
                    client_pong_due = client_pong_due.or(Some(now + timing.pong));
                    upstream_pong_due = upstream_pong_due.or(Some(now + timing.pong));
                }
            }
            msg = client.next() => match msg {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => match judge(m) {
                    Verdict::Forward(m) => {
                        activity += 1;
                        metrics.messages_up.inc();
                        metrics.bytes_up.inc_by(m.len() as u64);
                        match send_within(timing.send, upstream, m).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => {
                                Box::pin(close_and_drain(client, Some(frame(CloseReason::UpstreamLost)))).await;
                                return Ended::ByGateway(CloseReason::UpstreamLost);
                            }
                            Err(_) => return Box::pin(gateway_close(client, upstream, CloseReason::UpstreamLost, None)).await,
                        }
                    }
                    Verdict::Drop => {}
                    Verdict::Close(reason) => return Box::pin(gateway_close(client, upstream, reason, None)).await,
                },
                // Pings are answered by the client-side codec; both count against the
                // control-frame bound (ping floods).
                Some(Ok(m @ (Message::Ping(_) | Message::Pong(_)))) => {
                    if m.is_pong() {
                        client_pong_due = None;
                    }
                    if let Verdict::Close(reason) = judge(m) {
                        return Box::pin(gateway_close(client, upstream, reason, None)).await;
                    }
                }
                Some(Ok(Message::Frame(_))) => {}
                Some(Ok(Message::Close(f))) => {
                    let code = f.as_ref().map(|f| u16::from(f.code));
                    // The client-side codec has already answered the close; pass it upstream.
                    Box::pin(close_and_drain(upstream, f)).await;
                    let _ = tokio::time::timeout(CLOSE_GRACE, client.flush()).await;
                    return Ended::ByClient(code);
                }
                Some(Err(e)) => {
                    let Some(reason) = error_reason(&e) else {
                        Box::pin(close_and_drain(upstream, Some(going_away()))).await;
                        return Ended::ByClient(None);
                    };
                    // Replies to what the client sent before its fault are still delivered
                    // (as the upstream itself would have): close the upstream first, relay what
                    // it sends until its close arrives, then close the client.
                    Box::pin(close_relaying(upstream, client)).await;
                    Box::pin(close_and_drain(client, Some(frame(reason)))).await;
                    return Ended::ByGateway(reason);
                }
                None => {
                    Box::pin(close_and_drain(upstream, Some(going_away()))).await;
                    return Ended::ByClient(None);
                }
            },
            msg = upstream.next() => match msg {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    activity += 1;
                    metrics.messages_down.inc();
                    metrics.bytes_down.inc_by(m.len() as u64);
                    // A client that does not take the message in time is too slow: while we
                    // wait, the upstream is not read, so memory stays bounded.
                    match send_within(timing.send, client, m).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => {
                            Box::pin(close_and_drain(upstream, Some(going_away()))).await;
                            return Ended::ByClient(None);
                        }
                        Err(_) => return Box::pin(gateway_close(client, upstream, CloseReason::Overloaded, None)).await,
                    }
                }
                Some(Ok(Message::Pong(_))) => upstream_pong_due = None,
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(f))) => {
                    let code = f.as_ref().map(|f| u16::from(f.code));
                    let _ = tokio::time::timeout(CLOSE_GRACE, upstream.flush()).await;
                    Box::pin(close_and_drain(client, f)).await;
                    return Ended::ByUpstream(code);
                }
                Some(Err(_)) | None => {
                    Box::pin(close_and_drain(client, Some(frame(CloseReason::UpstreamLost)))).await;
                    return Ended::ByGateway(CloseReason::UpstreamLost);
                }
            },
        }
    }
}

async fn gateway_close<C, U>(
    client: &mut WebSocketStream<C>,
    upstream: &mut WebSocketStream<U>,
    reason: CloseReason,
    revoked_at: Option<(std::time::Instant, &Metrics)>,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    // The client's close frame first: that is the moment a revocation takes effect.
    let sent = tokio::time::timeout(CLOSE_GRACE, client.close(Some(frame(reason)))).await;
    if let (Ok(Ok(())), Some((asked, metrics))) = (sent, revoked_at)
        && reason == CloseReason::SessionRevoked
    {
        metrics
            .revocation_close
            .observe(asked.elapsed().as_secs_f64());
    }
    let drain_client = async {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = client.next().await {}
        })
        .await;
    };
    tokio::join!(drain_client, close_and_drain(upstream, Some(frame(reason))));
    Ended::ByGateway(reason)
}
