//! Messages through the relay: text and binary both ways with the subprotocol, close codes
//! passed on, the message policy's close codes (JSON, kinds, sizes, UTF-8), fragments,
//! control-frame floods and JSON Schemas, and frames checked where they arrive (cut anywhere,
//! re-masked, wire-format faults) as a raw client and a hand-made upstream see them.
//!
//! Each test starts its own gateway (public and admin listeners on free ports) through the
//! harness in `common`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    clippy::collapsible_match
)] // tests: a panic is a failure report

mod common;

use common::*;

#[tokio::test]
async fn relays_text_and_binary_both_ways_with_subprotocol() {
    let h = harness().await;
    let token = h.login("alice").await;
    let cookie = format!("{COOKIE}={token}");
    let mut req = h.url("/room/1?x=1&y=2").into_client_request().unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut()
        .insert("sec-websocket-protocol", "chat.v2, chat".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "chat.v2"
    );
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => assert_eq!(&b[..], &[0u8, 1, 2, 255]),
        other => panic!("{other:?}"),
    }
    let big = "x".repeat(200_000);
    ws.send(Message::text(big.clone())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, big);
    assert_eq!(
        h.rec.last().uri,
        "/room/1?x=1&y=2",
        "path and query preserved"
    );
    // Client close code and reason reach the upstream.
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while ws.next().await.is_some() {}
    })
    .await;
    h.rec
        .wait_for("the close", |seen| {
            seen.last().is_some_and(|s| s.close.is_some())
        })
        .await;
    assert_eq!(h.rec.last().close, Some((4001, "bye".into())));
}

#[tokio::test]
async fn upstream_close_code_reaches_the_client() {
    let h = harness().await;
    let mut ws = h.connect_as("/", &h.login("alice").await).await;
    ws.send(Message::text("upstream-close-4002")).await.unwrap();
    assert_eq!(next_close(&mut ws).await, (4002, "from upstream".into()));
}

#[tokio::test]
async fn message_policy_close_codes() {
    let h = harness().await;
    let token = h.login("alice").await;

    // JSON route: the sender field is set to the authenticated user, whatever the client wrote.
    let mut ws = h.connect_as("/json", &token).await;
    ws.send(Message::text(r#"{"sender":"mallory","text":"hi"}"#))
        .await
        .unwrap();
    let echoed: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(echoed["sender"], "alice");
    assert_eq!(echoed["text"], "hi");
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(next_close(&mut ws).await, (1008, "message refused".into()));

    let mut ws = h.connect_as("/json", &token).await;
    ws.send(Message::text("[[[[[1]]]]]")).await.unwrap();
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "message refused".into()),
        "too deep"
    );

    let mut ws = h.connect_as("/json", &token).await;
    ws.send(Message::text(format!("\"{}\"", "x".repeat(2000))))
        .await
        .unwrap();
    assert_eq!(next_close(&mut ws).await.0, 1009, "over max_message_bytes");

    let mut ws = h.connect_as("/json", &token).await;
    ws.send(Message::binary(vec![1u8, 2])).await.unwrap();
    assert_eq!(next_close(&mut ws).await, (1003, "unsupported data".into()));

    let mut ws = h.connect_as("/text", &token).await;
    ws.send(Message::text("fine")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "fine");
    ws.send(Message::binary(vec![0u8])).await.unwrap();
    assert_eq!(next_close(&mut ws).await.0, 1003);

    // Invalid UTF-8 in a text frame: 1007 (a raw frame, since clients refuse to send one).
    let mut ws = h.connect_as("/", &token).await;
    let bad = tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        vec![0xffu8, 0xfe],
        tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
            tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
        ),
        true,
    );
    ws.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(next_close(&mut ws).await.0, 1007);
}

#[tokio::test]
async fn fragments_ping_floods_and_schemas_are_bounded() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let schema_dir = tempfile::tempdir().unwrap();
    let schema = schema_dir.path().join("chat.schema.json");
    std::fs::write(
        &schema,
        r#"{"type":"object","required":["text","sender"],"additionalProperties":false,
            "properties":{"text":{"type":"string","maxLength":100},"sender":{"type":"string"}}}"#,
    )
    .unwrap();
    let (rec_addr, _) = recording_upstream().await;
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.routes.push(RouteConfig {
            messages: MessageConfig {
                max_fragments: 3,
                assembly_timeout: Duration::from_millis(300),
                control_frames: Rate {
                    per_second: 1,
                    burst: Some(5),
                },
                ..Default::default()
            },
            ..RouteConfig::new("/frames", format!("ws://{rec_addr}"))
        });
        s.routes.push(RouteConfig {
            messages: MessageConfig {
                kind: Kind::Json,
                stamp_sender: Some("sender".into()),
                json_schema: Some(schema.clone()),
                ..Default::default()
            },
            ..RouteConfig::new("/schema", format!("ws://{rec_addr}"))
        });
    })
    .await;
    let token = h.login("alice").await;
    let text = OpCode::Data(Data::Text);
    let cont = OpCode::Data(Data::Continue);

    // Three fragments make one message; a fourth closes the socket.
    let mut ws = h.connect_as("/frames", &token).await;
    for (part, op, fin) in [
        (&b"a"[..], text, false),
        (b"b", cont, false),
        (b"c", cont, true),
    ] {
        ws.send(raw_frame(part, op, fin)).await.unwrap();
    }
    assert_eq!(next_text(&mut ws).await, "abc");
    for (part, op, fin) in [
        (&b"a"[..], text, false),
        (b"b", cont, false),
        (b"c", cont, false),
        (b"d", cont, true),
    ] {
        ws.send(raw_frame(part, op, fin)).await.unwrap();
    }
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "too many fragments".into())
    );

    // A first fragment, then silence: closed at the assembly deadline, not at the idle timeout.
    let mut ws = h.connect_as("/frames", &token).await;
    ws.send(raw_frame(b"start", text, false)).await.unwrap();
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "message not completed in time".into())
    );

    // Pings beyond the control-frame bucket (burst 5): a flood.
    let mut ws = h.connect_as("/frames", &token).await;
    for _ in 0..5 {
        ws.send(Message::Ping(bytes::Bytes::from_static(b"p")))
            .await
            .unwrap();
    }
    ws.send(Message::text("still open")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still open");
    for _ in 0..20 {
        if ws
            .send(Message::Ping(bytes::Bytes::from_static(b"p")))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "too many control frames".into())
    );

    // JSON Schema, checked after stamping: the sender is the authenticated user.
    let mut ws = h.connect_as("/schema", &token).await;
    ws.send(Message::text(r#"{"text":"hello","sender":"mallory"}"#))
        .await
        .unwrap();
    let echoed: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(echoed["sender"], "alice");
    ws.send(Message::text(r#"{"text":"hello","admin":true}"#))
        .await
        .unwrap();
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "message does not match the schema".into())
    );
}

#[tokio::test]
async fn frames_are_checked_where_they_arrive_and_remasked() {
    let report = raw_upstream("report_mask").await;
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.routes.push(RouteConfig {
            messages: MessageConfig {
                assembly_timeout: Duration::from_millis(300),
                ..Default::default()
            },
            ..RouteConfig::new("/report", format!("ws://{report}"))
        });
    })
    .await;
    let token = h.login("alice").await;
    let key = [1, 2, 3, 4];

    // A frame sent in the same write as the upgrade request is relayed, and the upstream
    // gets it masked with a key of the gateway's, not the client's.
    let early = client_frame(wire::Op::Text, true, key, b"early");
    let mut s = raw_connect(&h, "/report", &token, &early).await;
    // The upstream's greeting, sent in the same write as its 101, arrives first.
    assert_eq!(next_raw(&mut s).await.1, b"welcome");
    let (_, body) = next_raw(&mut s).await;
    let body = String::from_utf8(body).unwrap();
    assert!(body.ends_with(" early"), "{body}");
    assert!(
        !body.starts_with("[1, 2, 3, 4]"),
        "client's mask reused: {body}"
    );

    // A frame cut inside its header and its payload, sent in pieces, arrives whole.
    let payload: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
    let f = client_frame(wire::Op::Binary, true, key, &payload);
    for piece in [&f[..1], &f[1..3], &f[3..100], &f[100..]] {
        s.write_all(piece).await.unwrap();
        // Pacing, not a wait: a pause between pieces so the gateway reads them one by one.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, body) = next_raw(&mut s).await;
    assert!(body.ends_with(&payload), "payload changed on the way");

    // Invalid UTF-8 early in a long text frame: closed (1007) before the frame is complete.
    let mut bad = vec![b'x'; 1000];
    bad[5] = 0xff;
    let f = client_frame(wire::Op::Text, true, key, &bad);
    s.write_all(&f[..20]).await.unwrap();
    let (h1, close) = next_raw(&mut s).await;
    assert_eq!(h1.op, wire::Op::Close);
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1007);

    // One frame trickled in and then silence: closed at the assembly deadline.
    let mut s = raw_connect(&h, "/report", &token, &[]).await;
    assert_eq!(next_raw(&mut s).await.1, b"welcome");
    let f = client_frame(wire::Op::Binary, true, key, &[7u8; 100]);
    s.write_all(&f[..30]).await.unwrap();
    let (h2, close) = next_raw(&mut s).await;
    assert_eq!(h2.op, wire::Op::Close);
    assert_eq!(
        (u16::from_be_bytes([close[0], close[1]]), &close[2..]),
        (1008, &b"message not completed in time"[..])
    );

    // A header declaring 1 GiB, alone: refused at once (1009), nothing of it kept.
    let mut s = raw_connect(&h, "/report", &token, &[]).await;
    assert_eq!(next_raw(&mut s).await.1, b"welcome");
    let mut huge = vec![0x82u8, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 30).to_be_bytes());
    huge.extend_from_slice(&key);
    s.write_all(&huge).await.unwrap();
    let (h4, close) = next_raw(&mut s).await;
    assert_eq!(h4.op, wire::Op::Close);
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);

    // Wire-format faults: an unmasked client frame, and RSV bits, are protocol errors (1002).
    for bad in [vec![0x82u8, 0x01, 0x00], vec![0xc2u8, 0x80, 1, 2, 3, 4]] {
        let mut s = raw_connect(&h, "/report", &token, &[]).await;
        assert_eq!(next_raw(&mut s).await.1, b"welcome");
        s.write_all(&bad).await.unwrap();
        let (h3, close) = next_raw(&mut s).await;
        assert_eq!(h3.op, wire::Op::Close);
        assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1002, "{bad:?}");
    }
}
