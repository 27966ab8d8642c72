//! Tests of the relay over in-memory streams: messages cut anywhere arrive whole and re-masked,
//! pings are answered, compressed messages are inflated, bounded and compressed back, and bytes
//! a stream holds are flushed as its peer reads; and its timers in tokio's paused time (idle
//! timeout, pings and pongs, the assembly deadline, session expiry), each close to the instant.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::deflate;

const TIMING: Timing = Timing {
    idle: None,
    ping: None,
    pong: Duration::from_secs(10),
    send: Duration::from_secs(10),
};

const LIMITS: Limits = Limits {
    max_frame: 1 << 20,
    max_message: 1 << 20,
    max_fragments: 0,
    assembly: None,
    max_inflate_ratio: None,
};

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S, from: wire::From) -> (wire::Header, Vec<u8>) {
    let mut buf = Vec::new();
    let h = loop {
        if let Some(h) = wire::parse_header(&buf, from).unwrap() {
            break h;
        }
        buf.push(s.read_u8().await.unwrap());
    };
    let mut payload = vec![0u8; h.len as usize];
    s.read_exact(&mut payload).await.unwrap();
    if let Some(k) = h.mask {
        wire::apply_mask(&mut payload, k, 0);
    }
    (h, payload)
}

/// Counters no test reads.
static NO_TRAFFIC: Traffic = Traffic::new();

/// The relay between two test streams: nothing read with a handshake, no expiry, every
/// message forwarded.
fn plain_relay<'a, C, U>(
    client: &'a mut C,
    upstream: &'a mut U,
    stop: oneshot::Receiver<crate::registry::CloseRequest>,
    metrics: &'a Metrics,
) -> impl Future<Output = Ended> + 'a
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    relay(
        Opened {
            io: client,
            read: Vec::new(),
            deflate: None,
        },
        Opened {
            io: upstream,
            read: Vec::new(),
            deflate: None,
        },
        stop,
        (metrics, &NO_TRAFFIC),
        None,
        TIMING,
        LIMITS,
        |_| Verdict::Forward,
    )
}

/// What a client sends in a test: data messages (text or binary, possibly fragmented) and
/// pings between them.
#[derive(Debug, Clone)]
enum Sent {
    Data { text: bool, parts: Vec<Vec<u8>> },
    Ping(Vec<u8>),
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        (
            any::<bool>(),
            proptest::collection::vec("[a-zé€😀]{0,40}", 1..4)
        )
            .prop_map(|(text, parts)| Sent::Data {
                text,
                parts: parts.into_iter().map(String::into_bytes).collect(),
            }),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Sent::Ping),
    ]
}

/// Sends `script` as client frames in chunks cut at `cuts`, through the relay, and checks
/// that the upstream receives each data message whole, in order, masked with a key that is
/// not the client's, that pings are answered to the client, and that a close passes both ways.
fn relays_whole_messages(script: Vec<Sent>, cuts: Vec<usize>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut client_end, mut gw_client) = tokio::io::duplex(1 << 20);
        let (mut gw_upstream, mut upstream_end) = tokio::io::duplex(1 << 20);
        let metrics = Metrics::new();
        let (_stop_tx, stop) = oneshot::channel();
        let key = [9, 9, 9, 9];
        let mut bytes = Vec::new();
        let mut pings = Vec::new();
        for s in &script {
            match s {
                Sent::Data { text, parts } => {
                    for (i, p) in parts.iter().enumerate() {
                        let op = match (i, text) {
                            (0, true) => Op::Text,
                            (0, false) => Op::Binary,
                            _ => Op::Continue,
                        };
                        wire::encode(&mut bytes, i + 1 == parts.len(), op, Some(key), p);
                    }
                }
                Sent::Ping(p) => {
                    wire::encode(&mut bytes, true, Op::Ping, Some(key), p);
                    pings.push(p.clone());
                }
            }
        }
        let (close, n) = wire::close_payload(1000, "bye");
        wire::encode(&mut bytes, true, Op::Close, Some(key), &close[..n]);
        let relay = plain_relay(&mut gw_client, &mut gw_upstream, stop, &metrics);
        let client = async {
            let mut at = 0;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            for c in cuts.into_iter().chain([bytes.len()]) {
                client_end.write_all(&bytes[at..c.max(at)]).await.unwrap();
                at = c.max(at);
                tokio::task::yield_now().await;
            }
            // Pongs for the pings, in order, then the close answered.
            for p in &pings {
                let (h, payload) = read_frame(&mut client_end, wire::From::Server).await;
                assert_eq!((h.op, &payload), (Op::Pong, p));
            }
            let (h, payload) = read_frame(&mut client_end, wire::From::Server).await;
            assert_eq!(h.op, Op::Close);
            assert_eq!(wire::close_code(&payload), Ok(Some(1000)));
        };
        let upstream = async {
            for s in &script {
                let Sent::Data { text, parts } = s else {
                    continue;
                };
                let (h, payload) = read_frame(&mut upstream_end, wire::From::Client).await;
                assert_eq!(h.op, if *text { Op::Text } else { Op::Binary });
                assert!(h.fin, "messages arrive whole");
                assert_ne!(h.mask, Some(key), "the gateway masks with its own key");
                assert_eq!(payload, parts.concat());
            }
            let (h, payload) = read_frame(&mut upstream_end, wire::From::Client).await;
            assert_eq!(h.op, Op::Close);
            assert_eq!(&payload[..], &close[..n]);
            let mut answer = Vec::new();
            wire::encode(&mut answer, true, Op::Close, None, &payload);
            upstream_end.write_all(&answer).await.unwrap();
        };
        let (ended, (), ()) = tokio::join!(relay, client, upstream);
        assert_eq!(ended, Ended::ByClient(Some(1000)));
    });
}

/// A stream that, like TLS, takes written bytes into a buffer of its own and passes them on
/// only as its transport takes them, so that a write can succeed while bytes are still held.
/// Only `poll_flush` (or a later write) moves them on.
struct Holding<S> {
    inner: S,
    held: Vec<u8>,
}

impl<S: AsyncWrite + Unpin> Holding<S> {
    /// Moves held bytes to the transport while it takes them.
    fn pass_on(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.held) {
                Poll::Ready(Ok(n)) => {
                    self.held.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Holding<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Holding<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Takes everything, then passes on what the transport takes now.
        self.held.extend_from_slice(buf);
        let _ = self.pass_on(cx);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.pass_on(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.pass_on(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A message to a client whose stream holds written bytes (as TLS does) behind a transport
/// that takes 64 bytes at a time: the relay must flush again each time the transport moves,
/// although it has nothing new to write. Otherwise the message never arrives whole.
#[test]
fn bytes_a_stream_holds_are_flushed_as_the_peer_reads() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true) // the client's sleep ends once the relay has nothing left to do
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut client_end, gw_client) = tokio::io::duplex(64);
        let mut gw_client = Holding {
            inner: gw_client,
            held: Vec::new(),
        };
        let (mut gw_upstream, mut upstream_end) = tokio::io::duplex(1 << 20);
        let metrics = Metrics::new();
        let (_stop_tx, stop) = oneshot::channel();
        let relay = plain_relay(&mut gw_client, &mut gw_upstream, stop, &metrics);
        let message: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let upstream = async {
            let mut frame = Vec::new();
            wire::encode(&mut frame, true, Op::Binary, None, &message);
            upstream_end.write_all(&frame).await.unwrap();
        };
        let client = async {
            // Let the relay write (and the stream hold) the whole frame first: in paused time
            // this sleep ends only when no task can move, so the relay has written all it can.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (h, payload) = read_frame(&mut client_end, wire::From::Server).await;
            assert_eq!(h.op, Op::Binary);
            assert_eq!(payload, message);
        };
        let both = async {
            tokio::time::timeout(Duration::from_secs(10), async {
                tokio::join!(upstream, client);
            })
            .await
            .expect("the held bytes reached the client");
        };
        tokio::select! {
            ended = relay => panic!("relay ended: {ended:?}"),
            () = both => {}
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn messages_arrive_whole_however_the_bytes_are_cut(
        script in proptest::collection::vec(sent(), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        relays_whole_messages(script, cuts);
    }
}

const AGREED: Compression = Compression {
    send_window: 15,
    recv_window: 15,
};

/// Compressed client messages, fragmented and cut anywhere across reads, reach an upstream
/// that did not agree compression whole and inflated; with an upstream that agreed, they
/// pass as they came (one frame, RSV1). Upstream messages reach the compressing client
/// compressed, and inflate to what was sent.
fn relays_compressed_messages(
    texts: Vec<String>,
    parts: usize,
    cuts: Vec<usize>,
    upstream_agreed: bool,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut client_end, mut gw_client) = tokio::io::duplex(1 << 20);
        let (mut gw_upstream, mut upstream_end) = tokio::io::duplex(1 << 20);
        let metrics = Metrics::new();
        let (_stop_tx, stop) = oneshot::channel();
        let mut codec = deflate::Codec::default();
        let key = [7, 7, 7, 7];
        let mut bytes = Vec::new();
        for t in &texts {
            let packed = codec.deflate(t.as_bytes(), 15).unwrap();
            let n = parts.clamp(1, packed.len().max(1));
            let size = packed.len().div_ceil(n).max(1);
            let chunks: Vec<&[u8]> = if packed.is_empty() {
                vec![&[]]
            } else {
                packed.chunks(size).collect()
            };
            for (i, c) in chunks.iter().enumerate() {
                let last = i + 1 == chunks.len();
                if i == 0 {
                    let mut f = Vec::new();
                    wire::encode(&mut f, last, Op::Text, Some(key), c);
                    f[0] |= 0x40;
                    bytes.extend_from_slice(&f);
                } else {
                    wire::encode(&mut bytes, last, Op::Continue, Some(key), c);
                }
            }
        }
        let (close, n) = wire::close_payload(1000, "bye");
        let mut close_frame = Vec::new();
        wire::encode(&mut close_frame, true, Op::Close, Some(key), &close[..n]);
        let relay = relay(
            Opened {
                io: &mut gw_client,
                read: Vec::new(),
                deflate: Some(AGREED),
            },
            Opened {
                io: &mut gw_upstream,
                read: Vec::new(),
                deflate: upstream_agreed.then_some(AGREED),
            },
            stop,
            (&metrics, &NO_TRAFFIC),
            None,
            TIMING,
            Limits {
                max_inflate_ratio: Some(100),
                ..LIMITS
            },
            |_| Verdict::Forward,
        );
        let client = async {
            let mut at = 0;
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            for c in cuts.into_iter().chain([bytes.len()]) {
                client_end.write_all(&bytes[at..c.max(at)]).await.unwrap();
                at = c.max(at);
                tokio::task::yield_now().await;
            }
            // The upstream echoes each message uncompressed: it comes back compressed.
            let mut codec = deflate::Codec::default();
            for t in &texts {
                let mut buf = Vec::new();
                let h = loop {
                    if let Some(h) = wire::parse_header(&buf, wire::From::Server).unwrap() {
                        break h;
                    }
                    buf.push(client_end.read_u8().await.unwrap());
                };
                let mut payload = vec![0u8; h.len as usize];
                client_end.read_exact(&mut payload).await.unwrap();
                assert!(h.rsv1, "{h:?} {}", t.len());
                let got = if h.rsv1 {
                    codec
                        .inflate(
                            &payload,
                            deflate::Bound {
                                max_len: 1 << 20,
                                max_ratio: None,
                            },
                        )
                        .unwrap()
                } else {
                    payload
                };
                assert_eq!(got, t.as_bytes());
            }
            client_end.write_all(&close_frame).await.unwrap();
            let (h, _) = read_frame(&mut client_end, wire::From::Server).await;
            assert_eq!(h.op, Op::Close);
        };
        let upstream = async {
            let mut codec = deflate::Codec::default();
            for t in &texts {
                let mut buf = Vec::new();
                let h = loop {
                    if let Some(h) = wire::parse_header(&buf, wire::From::Client).unwrap() {
                        break h;
                    }
                    buf.push(upstream_end.read_u8().await.unwrap());
                };
                let mut payload = vec![0u8; h.len as usize];
                upstream_end.read_exact(&mut payload).await.unwrap();
                wire::apply_mask(&mut payload, h.mask.unwrap(), 0);
                assert!(h.fin && h.op == Op::Text, "messages arrive whole");
                assert_eq!(
                    h.rsv1, upstream_agreed,
                    "compressed only toward an upstream that agreed"
                );
                let got = if h.rsv1 {
                    codec
                        .inflate(
                            &payload,
                            deflate::Bound {
                                max_len: 1 << 20,
                                max_ratio: None,
                            },
                        )
                        .unwrap()
                } else {
                    payload
                };
                assert_eq!(got, t.as_bytes());
                let mut echo = Vec::new();
                wire::encode(&mut echo, true, Op::Text, None, t.as_bytes());
                upstream_end.write_all(&echo).await.unwrap();
            }
            let (h, payload) = read_frame(&mut upstream_end, wire::From::Client).await;
            assert_eq!(h.op, Op::Close);
            let mut answer = Vec::new();
            wire::encode(&mut answer, true, Op::Close, None, &payload);
            upstream_end.write_all(&answer).await.unwrap();
        };
        let (ended, (), ()) = tokio::join!(relay, client, upstream);
        assert_eq!(ended, Ended::ByClient(Some(1000)));
    });
}

#[test]
fn compressed_messages_one_byte_at_a_time() {
    let texts = vec![
        "héllo ".repeat(50),
        "short".into(),
        String::new(),
        "€".repeat(3000),
    ];
    relays_compressed_messages(texts.clone(), 3, (0..3000).collect(), false);
    relays_compressed_messages(texts, 1, (0..3000).step_by(7).collect(), true);
}

/// A compressed message is refused for what it inflates to: past `max_message`, past the
/// ratio, not deflate, or not UTF-8 once inflated; RSV1 from a side that did not agree
/// compression is a protocol error.
#[test]
fn compressed_messages_are_bounded_and_checked_once_inflated() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true) // the closing handshakes wait out their grace at once
        .build()
        .unwrap();
    let mut codec = deflate::Codec::default();
    // Random hex digits (xorshift): they compress about two to one, far from the ratio
    // bound, so only the size bound applies (1.5 MiB inflated, under 1 MiB on the wire).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..3 << 19)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"0123456789abcdef"[(x % 16) as usize]
        })
        .collect();
    let packed_at = |level: u32, data: &[u8]| {
        let mut c =
            flate2::Compress::new_with_window_bits(flate2::Compression::new(level), false, 15);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        out
    };
    let big = packed_at(6, &noise);
    assert!(big.len() < 1 << 20, "within max_frame: {}", big.len());
    let bomb = packed_at(9, &vec![b'a'; 900_000]);
    let bad_utf8 = codec.deflate(&[b'a', 0xff, b'b'].repeat(40), 15).unwrap();
    let cases: [(&[u8], Option<Compression>, CloseReason); 5] = [
        (&big, Some(AGREED), CloseReason::MessageTooBig),
        (&bomb, Some(AGREED), CloseReason::InflateRatio),
        (
            &[0xff, 0xff, 0xff],
            Some(AGREED),
            CloseReason::BadCompression,
        ),
        (&bad_utf8, Some(AGREED), CloseReason::InvalidPayload),
        (&bad_utf8, None, CloseReason::ProtocolError),
    ];
    for (payload, agreed, reason) in cases {
        rt.block_on(async {
            // Room for the whole frame: the client's write never waits for the relay.
            let (mut client_end, mut gw_client) = tokio::io::duplex(4 << 20);
            let (mut gw_upstream, _upstream_end) = tokio::io::duplex(1 << 20);
            let metrics = Metrics::new();
            let (_stop_tx, stop) = oneshot::channel();
            let mut frame = Vec::new();
            wire::encode(&mut frame, true, Op::Text, Some([1, 2, 3, 4]), payload);
            frame[0] |= 0x40;
            let send = async {
                client_end.write_all(&frame).await.unwrap();
                client_end
            };
            let relay = relay(
                Opened {
                    io: &mut gw_client,
                    read: Vec::new(),
                    deflate: agreed,
                },
                Opened {
                    io: &mut gw_upstream,
                    read: Vec::new(),
                    deflate: None,
                },
                stop,
                (&metrics, &NO_TRAFFIC),
                None,
                TIMING,
                Limits {
                    max_inflate_ratio: Some(100),
                    ..LIMITS
                },
                |_| Verdict::Forward,
            );
            let (ended, _client_end) = tokio::join!(relay, send);
            assert_eq!(ended, Ended::ByGateway(reason), "{reason:?}");
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn compressed_messages_arrive_whole_however_the_bytes_are_cut(
        texts in proptest::collection::vec("[a-zé€ ]{0,200}", 0..5),
        parts in 1usize..5,
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        upstream_agreed in any::<bool>(),
    ) {
        relays_compressed_messages(texts, parts, cuts, upstream_agreed);
    }
}

#[test]
fn one_byte_at_a_time() {
    let script = vec![
        Sent::Data {
            text: true,
            parts: vec!["héllo".into(), " wörld".into()],
        },
        Sent::Ping(b"p".to_vec()),
        Sent::Data {
            text: false,
            parts: vec![vec![0, 1, 2, 255]],
        },
    ];
    relays_whole_messages(script, (0..200).collect());
}

// The relay's timers, in tokio's paused time: the clock moves only when every task waits, and
// then straight to the next timer, so each close is checked to the instant (nothing a
// millisecond before its deadline, then the close at the deadline itself).

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

/// The test's two peers of a relay started at `t0`.
struct Peers {
    client: tokio::io::DuplexStream,
    upstream: tokio::io::DuplexStream,
    t0: tokio::time::Instant,
}

/// Runs the relay (`timing`, `limits`, session ending `expires_in` after the start) beside
/// `script`, which plays both peers; returns how the relay ended.
async fn timed<F, Fut>(
    timing: Timing,
    limits: Limits,
    expires_in: Option<Duration>,
    script: F,
) -> Ended
where
    F: FnOnce(Peers) -> Fut,
    Fut: Future<Output = ()>,
{
    let (client, mut gw_client) = tokio::io::duplex(1 << 16);
    let (mut gw_upstream, upstream) = tokio::io::duplex(1 << 16);
    let metrics = Metrics::new();
    // Kept until the end: a dropped sender would ask the relay to close (shutdown).
    let (_stop_tx, stop) = oneshot::channel();
    let t0 = tokio::time::Instant::now();
    let relay = relay(
        Opened {
            io: &mut gw_client,
            read: Vec::new(),
            deflate: None,
        },
        Opened {
            io: &mut gw_upstream,
            read: Vec::new(),
            deflate: None,
        },
        stop,
        (&metrics, &NO_TRAFFIC),
        expires_in,
        timing,
        limits,
        |_| Verdict::Forward,
    );
    let peers = Peers {
        client,
        upstream,
        t0,
    };
    // A timer that never fires would leave the clock jumping to the relay's far-off wake-up
    // forever: an hour of paused time ends the test with a failure instead.
    let (ended, ()) = tokio::time::timeout(HOUR, async { tokio::join!(relay, script(peers)) })
        .await
        .expect("the relay and its peers were still waiting an hour (paused) after the start");
    ended
}

/// Lets the relay act on everything due by now (time does not move meanwhile).
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// Whether nothing has arrived on `s` so far.
fn nothing_on(s: &mut tokio::io::DuplexStream) -> bool {
    let mut b = [0u8; 1];
    futures_util::FutureExt::now_or_never(s.read(&mut b)).is_none()
}

/// Sleeps until a millisecond before `at`, then checks that neither peer has got anything.
async fn quiet_until_just_before(p: &mut Peers, at: Duration, what: &str) {
    tokio::time::sleep_until(p.t0 + at - MS).await;
    settle().await;
    assert!(
        nothing_on(&mut p.client),
        "client got a frame before {what}"
    );
    assert!(
        nothing_on(&mut p.upstream),
        "upstream got a frame before {what}"
    );
}

/// The next frame to the client, and when it came (since `t0`).
async fn to_client(p: &mut Peers) -> (wire::Header, Vec<u8>, Duration) {
    let (h, payload) = read_frame(&mut p.client, wire::From::Server).await;
    (h, payload, p.t0.elapsed())
}

/// The next frame to the upstream, and when it came (since `t0`).
async fn to_upstream(p: &mut Peers) -> (wire::Header, Vec<u8>, Duration) {
    let (h, payload) = read_frame(&mut p.upstream, wire::From::Client).await;
    (h, payload, p.t0.elapsed())
}

/// Asserts a close frame with `reason`'s code and text.
fn assert_close(h: &wire::Header, payload: &[u8], reason: CloseReason) {
    assert_eq!(h.op, Op::Close, "{reason:?}");
    assert_eq!(wire::close_code(payload), Ok(Some(reason.close_code())));
    assert_eq!(&payload[2..], reason.text().as_bytes());
}

/// A frame as a client sends it (masked).
async fn client_sends(p: &mut Peers, op: Op, fin: bool, payload: &[u8]) {
    let mut f = Vec::new();
    wire::encode(&mut f, fin, op, Some([3, 1, 4, 1]), payload);
    p.client.write_all(&f).await.unwrap();
}

/// A frame as the upstream sends it (unmasked).
async fn upstream_sends(p: &mut Peers, op: Op, payload: &[u8]) {
    let mut f = Vec::new();
    wire::encode(&mut f, true, op, None, payload);
    p.upstream.write_all(&f).await.unwrap();
}

/// Both peers receive the gateway's close for `reason` exactly `at` after the start, and
/// answer it.
async fn both_closed_at(p: &mut Peers, at: Duration, reason: CloseReason) {
    let (h, payload, when) = to_client(p).await;
    assert_close(&h, &payload, reason);
    assert_eq!(when, at, "the client's close for {reason:?}");
    let (h, payload, when) = to_upstream(p).await;
    assert_close(&h, &payload, reason);
    assert_eq!(when, at, "the upstream's close for {reason:?}");
    client_sends(p, Op::Close, true, &payload).await;
    upstream_sends(p, Op::Close, &payload).await;
}

const QUIET: Timing = Timing {
    idle: None,
    ping: None,
    pong: Duration::from_secs(10),
    send: Duration::from_secs(10),
};

#[tokio::test(start_paused = true)]
async fn an_idle_socket_is_closed_at_the_idle_timeout_and_not_before() {
    let timing = Timing {
        idle: Some(60 * SEC),
        ..QUIET
    };
    let ended = timed(timing, LIMITS, None, |mut p| async move {
        quiet_until_just_before(&mut p, 60 * SEC, "the idle timeout").await;
        both_closed_at(&mut p, 60 * SEC, CloseReason::Idle).await;
    })
    .await;
    assert_eq!(ended, Ended::ByGateway(CloseReason::Idle));
}

#[tokio::test(start_paused = true)]
async fn a_message_puts_the_idle_close_off() {
    let timing = Timing {
        idle: Some(60 * SEC),
        ..QUIET
    };
    let ended = timed(timing, LIMITS, None, |mut p| async move {
        tokio::time::sleep_until(p.t0 + 20 * SEC).await;
        client_sends(&mut p, Op::Text, true, b"still here").await;
        let (h, payload, _) = to_upstream(&mut p).await;
        assert_eq!((h.op, &payload[..]), (Op::Text, &b"still here"[..]));
        // Idleness is checked four times per timeout: the close comes within a quarter of it
        // after a full timeout of quiet, never sooner.
        quiet_until_just_before(&mut p, 80 * SEC, "a full timeout after the message").await;
        let (h, payload, when) = to_client(&mut p).await;
        assert_close(&h, &payload, CloseReason::Idle);
        assert!(
            (80 * SEC..=95 * SEC).contains(&when),
            "closed {when:?} after the start"
        );
        let (h, payload, _) = to_upstream(&mut p).await;
        assert_close(&h, &payload, CloseReason::Idle);
        client_sends(&mut p, Op::Close, true, &payload).await;
        upstream_sends(&mut p, Op::Close, &payload).await;
    })
    .await;
    assert_eq!(ended, Ended::ByGateway(CloseReason::Idle));
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_owes_a_pong_past_the_pong_timeout_closes_both_sides() {
    // A pong timeout shorter than the ping interval is acted on at its own deadline, not at
    // the next ping.
    let timing = Timing {
        ping: Some(10 * SEC),
        pong: 4 * SEC,
        ..QUIET
    };
    let ended = timed(timing, LIMITS, None, |mut p| async move {
        quiet_until_just_before(&mut p, 10 * SEC, "the ping interval").await;
        // Both peers are pinged at the interval.
        let (h, payload, when) = to_client(&mut p).await;
        assert_eq!(
            (h.op, &payload[..], when),
            (Op::Ping, &b"wsguard"[..], 10 * SEC)
        );
        let (h, payload, when) = to_upstream(&mut p).await;
        assert_eq!(
            (h.op, &payload[..], when),
            (Op::Ping, &b"wsguard"[..], 10 * SEC)
        );
        // The client answers; the upstream never does: each peer owes its own pong.
        client_sends(&mut p, Op::Pong, true, b"wsguard").await;
        quiet_until_just_before(&mut p, 14 * SEC, "the pong timeout").await;
        both_closed_at(&mut p, 14 * SEC, CloseReason::NoPong).await;
    })
    .await;
    assert_eq!(ended, Ended::ByGateway(CloseReason::NoPong));
}

#[tokio::test(start_paused = true)]
async fn pongs_keep_a_socket_alive_and_pings_keep_their_rhythm() {
    let timing = Timing {
        ping: Some(10 * SEC),
        pong: 4 * SEC,
        ..QUIET
    };
    let ended = timed(timing, LIMITS, None, |mut p| async move {
        // Five rounds answered by both peers, a second after each ping: no close at the pong
        // deadlines they met, and the pings come every interval to the instant.
        for round in 1..=5u32 {
            let (h, _, when) = to_client(&mut p).await;
            assert_eq!((h.op, when), (Op::Ping, 10 * SEC * round), "round {round}");
            let (h, _, when) = to_upstream(&mut p).await;
            assert_eq!((h.op, when), (Op::Ping, 10 * SEC * round), "round {round}");
            tokio::time::sleep(SEC).await;
            client_sends(&mut p, Op::Pong, true, b"wsguard").await;
            upstream_sends(&mut p, Op::Pong, b"wsguard").await;
        }
        // Then silence: the ping at 60 s goes unanswered, and the pong timeout ends it.
        let (h, _, when) = to_client(&mut p).await;
        assert_eq!((h.op, when), (Op::Ping, 60 * SEC), "a ping, not a close");
        let (h, _, _) = to_upstream(&mut p).await;
        assert_eq!(h.op, Op::Ping);
        quiet_until_just_before(&mut p, 64 * SEC, "the pong timeout").await;
        both_closed_at(&mut p, 64 * SEC, CloseReason::NoPong).await;
    })
    .await;
    assert_eq!(ended, Ended::ByGateway(CloseReason::NoPong));
}

#[tokio::test(start_paused = true)]
async fn a_message_not_completed_in_time_closes_at_its_assembly_deadline() {
    let limits = Limits {
        assembly: Some(5 * SEC),
        ..LIMITS
    };
    let ended = timed(QUIET, limits, None, |mut p| async move {
        // A message whole within the deadline passes.
        client_sends(&mut p, Op::Text, false, b"hel").await;
        tokio::time::sleep_until(p.t0 + 3 * SEC).await;
        client_sends(&mut p, Op::Continue, true, b"lo").await;
        let (h, payload, when) = to_upstream(&mut p).await;
        assert_eq!((h.op, h.fin, &payload[..]), (Op::Text, true, &b"hello"[..]));
        assert_eq!(when, 3 * SEC);
        // The next one has its own deadline, counted from its first byte: a later fragment
        // does not put it off.
        tokio::time::sleep_until(p.t0 + 4 * SEC).await;
        client_sends(&mut p, Op::Binary, false, b"wor").await;
        tokio::time::sleep_until(p.t0 + 6 * SEC).await;
        client_sends(&mut p, Op::Continue, false, b"l").await;
        quiet_until_just_before(&mut p, 9 * SEC, "the assembly deadline").await;
        // The upstream is told the client is gone first; once it answers, the client hears why.
        let (h, payload, when) = to_upstream(&mut p).await;
        assert_close(&h, &payload, CloseReason::ClientGone);
        assert_eq!(when, 9 * SEC);
        upstream_sends(&mut p, Op::Close, &payload).await;
        let (h, payload, when) = to_client(&mut p).await;
        assert_close(&h, &payload, CloseReason::AssemblyTimeout);
        assert_eq!(when, 9 * SEC);
        client_sends(&mut p, Op::Close, true, &payload).await;
    })
    .await;
    assert_eq!(ended, Ended::ByGateway(CloseReason::AssemblyTimeout));
}

#[tokio::test(start_paused = true)]
async fn a_socket_closes_when_its_session_expires_to_the_instant() {
    let ended = timed(QUIET, LIMITS, Some(30 * SEC), |mut p| async move {
        quiet_until_just_before(&mut p, 30 * SEC, "the session's expiry").await;
        both_closed_at(&mut p, 30 * SEC, CloseReason::SessionExpired).await;
    })
    .await;
    assert_eq!(ended, Ended::ByGateway(CloseReason::SessionExpired));
}
