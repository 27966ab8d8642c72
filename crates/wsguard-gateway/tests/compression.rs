//! permessage-deflate (RFC 7692) through a live gateway, with a compressing client made by
//! hand (tungstenite has no permessage-deflate): its frames are deflated with `flate2` and
//! framed with `wire`. Routes with `compression = true` negotiate it with the client and the
//! upstream, inflate client messages within `max_message_bytes` and the ratio bound, apply the
//! message policy to the inflated message, and compress toward whichever side agreed; a route
//! without it never negotiates it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const KEY: [u8; 4] = [5, 6, 7, 8];

/// A message as a compressing client sends it: deflated (no context kept), without the
/// 4-byte tail (RFC 7692 §7.2.1).
fn deflate(data: &[u8], level: u32) -> Vec<u8> {
    let mut c = Compress::new_with_window_bits(Compression::new(level), false, 15);
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new_with_window_bits(false, 15);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// A compressed message as frames: the first with RSV1, cut into `parts` fragments.
fn compressed_frames(op: wire::Op, packed: &[u8], parts: usize) -> Vec<u8> {
    let size = packed.len().div_ceil(parts).max(1);
    let chunks: Vec<&[u8]> = packed.chunks(size).collect();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let at = out.len();
        let op = if i == 0 { op } else { wire::Op::Continue };
        wire::encode(&mut out, i + 1 == chunks.len(), op, Some(KEY), c);
        if i == 0 {
            out[at] |= 0x40;
        }
    }
    out
}

/// Opens a socket by hand with `extensions` offered; returns it and the answer's head.
async fn open(
    h: &Harness,
    path: &str,
    token: &str,
    extensions: Option<&str>,
) -> (TcpStream, String) {
    let mut s = TcpStream::connect(h.running.public_addr).await.unwrap();
    let offer = extensions.map_or(String::new(), |e| {
        format!("Sec-WebSocket-Extensions: {e}\r\n")
    });
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: {ORIGIN}\r\nCookie: {COOKIE}={token}\r\n{offer}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read_exact(&mut b).await.is_err() {
            break;
        }
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The next message from the gateway: (RSV1 set, opcode, payload inflated if it was set).
async fn next_message(s: &mut TcpStream) -> (bool, wire::Op, Vec<u8>) {
    let (h, payload) =
        tokio::time::timeout(Duration::from_secs(5), read_frame(s, wire::From::Server))
            .await
            .expect("a frame in time")
            .expect("a frame");
    assert!(h.fin, "whole messages");
    let payload = if h.rsv1 { inflate(&payload) } else { payload };
    (h.rsv1, h.op, payload)
}

async fn next_close(s: &mut TcpStream) -> (u16, String) {
    let (rsv1, op, payload) = next_message(s).await;
    assert!(!rsv1);
    assert_eq!(op, wire::Op::Close, "{}", String::from_utf8_lossy(&payload));
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        String::from_utf8_lossy(&payload[2..]).into_owned(),
    )
}

/// A hand-made upstream that agrees permessage-deflate with `answer` and echoes every data
/// frame exactly as it arrived (unmasked): a compressed message comes back compressed.
async fn deflate_echo(answer: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let key = header(&head, "sec-websocket-key").unwrap();
                let reply = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\
                     Sec-WebSocket-Extensions: {answer}\r\n\r\n",
                    wsguard_gateway::handshake::accept_key(key)
                );
                s.write_all(reply.as_bytes()).await.unwrap();
                while let Some((h, payload)) = read_frame(&mut s, wire::From::Client).await {
                    let mut out = Vec::new();
                    wire::encode(&mut out, h.fin, h.op, None, &payload);
                    out[0] |= u8::from(h.rsv1) << 6;
                    if s.write_all(&out).await.is_err() || h.op == wire::Op::Close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn gateway() -> Harness {
    let pmd = deflate_echo("permessage-deflate; server_no_context_takeover").await;
    let bad = deflate_echo("permessage-deflate").await;
    harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        let rec = s.routes[0]
            .upstream
            .clone()
            .expect("the root route has one upstream");
        let route = |path: &str, upstream: String, messages: MessageConfig| RouteConfig {
            compression: true,
            messages,
            ..RouteConfig::new(path, upstream)
        };
        let json = MessageConfig {
            kind: Kind::Json,
            stamp_sender: Some("sender".into()),
            ..Default::default()
        };
        s.routes.extend([
            route("/z", rec.clone(), MessageConfig::default()),
            route("/z-json", rec.clone(), json.clone()),
            route(
                "/z-small",
                rec.clone(),
                MessageConfig {
                    max_message_bytes: 1024,
                    ..Default::default()
                },
            ),
            route(
                "/z-big",
                rec.clone(),
                MessageConfig {
                    max_message_bytes: 32 << 20,
                    ..Default::default()
                },
            ),
            route("/zz", format!("ws://{pmd}"), MessageConfig::default()),
            route("/zz-json", format!("ws://{pmd}"), json),
            route("/zz-bad", format!("ws://{bad}"), MessageConfig::default()),
        ]);
    })
    .await
}

#[tokio::test]
async fn negotiation_outcomes() {
    let h = gateway().await;
    let token = h.login("alice").await;
    let answer_of = |head: &str| header(head, "sec-websocket-extensions").map(str::to_owned);

    // A browser's offer on a compression route: accepted without context takeover, and the
    // upstream is offered permessage-deflate (this one, tungstenite, declines it).
    let (_s, head) = open(&h, "/z", &token, Some(OFFER)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(answer_of(&head).as_deref(), Some(ANSWER));
    assert_eq!(h.rec.header("sec-websocket-extensions"), [ANSWER]);

    // The client's server_max_window_bits is kept; a bad offer is declined for the next one.
    let (_s, head) = open(
        &h,
        "/z",
        &token,
        Some("permessage-deflate; server_max_window_bits=10"),
    )
    .await;
    assert_eq!(
        answer_of(&head),
        Some(format!("{ANSWER}; server_max_window_bits=10"))
    );
    let (_s, head) = open(
        &h,
        "/z",
        &token,
        Some("permessage-deflate; client_no_context_takeover; client_no_context_takeover, permessage-deflate"),
    )
    .await;
    assert_eq!(answer_of(&head).as_deref(), Some(ANSWER));

    // Nothing acceptable offered (a bad parameter, a broken list, nothing): no extension, and
    // the upstream is not offered one either.
    for offer in [
        Some("permessage-deflate; server_max_window_bits=16"),
        Some("permessage-deflate; x=\"unterminated"),
        Some("x-webkit-deflate-frame"),
        None,
    ] {
        let (_s, head) = open(&h, "/z", &token, offer).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(answer_of(&head), None, "{offer:?}");
        assert!(
            h.rec.header("sec-websocket-extensions").is_empty(),
            "{offer:?}"
        );
    }

    // A route without `compression` never negotiates it, nor offers it upstream.
    let (_s, head) = open(&h, "/", &token, Some(OFFER)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(answer_of(&head), None);
    assert!(h.rec.header("sec-websocket-extensions").is_empty());

    // An upstream that agrees permessage-deflate: accepted as valid for the offer made.
    let (_s, head) = open(&h, "/zz", &token, Some(OFFER)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // One whose answer does not match the offer (it would keep a context): 502.
    let (_s, head) = open(&h, "/zz-bad", &token, Some(OFFER)).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    // Without a client offer the upstream is not offered compression, so the same upstream's
    // unasked extension is refused as on any route.
    let (_s, head) = open(&h, "/zz", &token, None).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
}

#[tokio::test]
async fn compressed_messages_are_inflated_checked_and_compressed_back() {
    let h = gateway().await;
    let token = h.login("alice").await;
    let text = "a chat message that compresses well, ".repeat(20);

    // To an upstream that declined compression: the upstream gets plain text (tungstenite
    // would refuse RSV1), and its echo comes back compressed.
    let (mut s, _) = open(&h, "/z", &token, Some(OFFER)).await;
    for parts in [1, 3] {
        let frames = compressed_frames(wire::Op::Text, &deflate(text.as_bytes(), 6), parts);
        s.write_all(&frames).await.unwrap();
        let (rsv1, op, payload) = next_message(&mut s).await;
        assert_eq!((rsv1, op), (true, wire::Op::Text));
        assert_eq!(payload, text.as_bytes());
    }
    // A short echo goes back compressed too; control frames never are.
    s.write_all(&compressed_frames(wire::Op::Binary, &deflate(b"hi", 6), 1))
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut s).await,
        (true, wire::Op::Binary, b"hi".to_vec())
    );
    let mut ping = Vec::new();
    wire::encode(&mut ping, true, wire::Op::Ping, Some(KEY), b"p");
    s.write_all(&ping).await.unwrap();
    assert_eq!(
        next_message(&mut s).await,
        (false, wire::Op::Pong, b"p".to_vec())
    );

    // To an upstream that agreed: the compressed message passes as it came (the echo keeps
    // RSV1 as it arrived) and returns compressed.
    let (mut s, _) = open(&h, "/zz", &token, Some(OFFER)).await;
    for parts in [1, 4] {
        let frames = compressed_frames(wire::Op::Text, &deflate(text.as_bytes(), 6), parts);
        s.write_all(&frames).await.unwrap();
        assert_eq!(
            next_message(&mut s).await,
            (true, wire::Op::Text, text.as_bytes().to_vec())
        );
    }

    // Text is checked once inflated: invalid UTF-8 inside a compressed message is 1007.
    let (mut s, _) = open(&h, "/z", &token, Some(OFFER)).await;
    let bad = [b"ok ".repeat(30), vec![0xff]].concat();
    s.write_all(&compressed_frames(wire::Op::Text, &deflate(&bad, 6), 2))
        .await
        .unwrap();
    assert_eq!(next_close(&mut s).await, (1007, "invalid utf-8".into()));

    // Bytes that are not deflate: 1007.
    let (mut s, _) = open(&h, "/z", &token, Some(OFFER)).await;
    s.write_all(&compressed_frames(wire::Op::Binary, &[0xff; 8], 1))
        .await
        .unwrap();
    assert_eq!(
        next_close(&mut s).await,
        (1007, "invalid compressed data".into())
    );

    // RSV1 where compression was not agreed: a protocol error.
    let (mut s, _) = open(&h, "/z", &token, None).await;
    s.write_all(&compressed_frames(wire::Op::Text, &deflate(b"hello", 6), 1))
        .await
        .unwrap();
    assert_eq!(next_close(&mut s).await, (1002, "protocol error".into()));
}

#[tokio::test]
async fn max_message_bytes_and_the_ratio_bound_apply_to_the_inflated_message() {
    let h = gateway().await;
    let token = h.login("alice").await;

    // 1,024 bytes inflated pass on a route of max_message_bytes = 1024; 1,025 do not, though
    // both arrive as a few dozen bytes.
    let (mut s, _) = open(&h, "/z-small", &token, Some(OFFER)).await;
    let at = "x".repeat(1024);
    let packed = deflate(at.as_bytes(), 6);
    assert!(packed.len() < 64);
    s.write_all(&compressed_frames(wire::Op::Text, &packed, 1))
        .await
        .unwrap();
    assert_eq!(next_message(&mut s).await.2, at.as_bytes());
    let over = "x".repeat(1025);
    s.write_all(&compressed_frames(
        wire::Op::Text,
        &deflate(over.as_bytes(), 6),
        2,
    ))
    .await
    .unwrap();
    assert_eq!(next_close(&mut s).await, (1009, "message too big".into()));

    // A deflate bomb: 8 MiB of zeros in about 8 KiB, under a 32 MiB message bound. It is
    // refused by the ratio bound (default 100): the close is the first thing the client gets
    // (the echo upstream never had the message), and the upstream is told the client is gone.
    let (mut s, _) = open(&h, "/z-big", &token, Some(OFFER)).await;
    let bomb = deflate(&vec![0u8; 8 << 20], 9);
    assert!(bomb.len() < 10 << 10, "{}", bomb.len());
    s.write_all(&compressed_frames(wire::Op::Binary, &bomb, 4))
        .await
        .unwrap();
    assert_eq!(
        next_close(&mut s).await,
        (1009, "compression ratio too high".into())
    );
    h.rec
        .wait_for("a close frame on the bomb's socket", |seen| {
            seen.last().is_some_and(|s| s.close.is_some())
        })
        .await;
    assert_eq!(h.rec.last().close, Some((1001, "client gone".into())));

    // Ordinary chat traffic (a ratio of about 10) passes.
    let (mut s, _) = open(&h, "/z-big", &token, Some(OFFER)).await;
    let chat: String = (0..5000)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"room\":\"general\",\"text\":\"message {}\"}} ",
                i * 7919 % 10007
            )
        })
        .collect();
    let packed = deflate(chat.as_bytes(), 9);
    let ratio = chat.len() / packed.len();
    assert!((5..100).contains(&ratio), "{ratio}");
    s.write_all(&compressed_frames(wire::Op::Text, &packed, 3))
        .await
        .unwrap();
    assert!(
        next_message(&mut s).await.2 == chat.as_bytes(),
        "echoed whole"
    );
}

#[tokio::test]
async fn the_sender_is_stamped_on_the_inflated_message_and_compressed_again() {
    let h = gateway().await;
    let token = h.login("alice").await;
    let spoofed = format!(
        "{{\"sender\":\"mallory\",\"text\":\"{}\"}}",
        "hello everyone ".repeat(10)
    );
    let stamped = format!(
        "{{\"sender\":\"alice\",\"text\":\"{}\"}}",
        "hello everyone ".repeat(10)
    );
    let packed = deflate(spoofed.as_bytes(), 6);

    // Upstream without compression: it gets the stamped message, and it comes back compressed.
    let (mut s, _) = open(&h, "/z-json", &token, Some(OFFER)).await;
    s.write_all(&compressed_frames(wire::Op::Text, &packed, 2))
        .await
        .unwrap();
    let (rsv1, _, payload) = next_message(&mut s).await;
    assert!(rsv1);
    assert_eq!(String::from_utf8(payload).unwrap(), stamped);

    // Upstream with compression: the rewritten message is compressed toward it (the echo
    // returns it with the RSV1 it arrived with).
    let (mut s, _) = open(&h, "/zz-json", &token, Some(OFFER)).await;
    s.write_all(&compressed_frames(wire::Op::Text, &packed, 1))
        .await
        .unwrap();
    let (rsv1, _, payload) = next_message(&mut s).await;
    assert!(rsv1, "recompressed toward the upstream");
    assert_eq!(String::from_utf8(payload).unwrap(), stamped);

    // Not JSON once inflated: refused as on any JSON route.
    s.write_all(&compressed_frames(
        wire::Op::Text,
        &deflate(b"not json at all", 6),
        1,
    ))
    .await
    .unwrap();
    assert_eq!(next_close(&mut s).await, (1008, "message refused".into()));
}
