//! A socket's life on the real clock, end to end: idle sockets and half-open clients are
//! closed, a slow reader is closed without the upstream's output buffered, and an upstream that
//! stops reading is given up on after `send_timeout`. The timers' exact edges are tested in
//! paused time on the relay itself (`src/relay/tests.rs`).
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
async fn idle_sockets_are_closed() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.idle_timeout = Some(Duration::from_millis(300));
        s.gateway.ping_interval = None;
    })
    .await;
    let mut ws = h.connect_as("/", &h.login("alice").await).await;
    assert_eq!(next_close(&mut ws).await, (1008, "idle timeout".into()));
}

#[tokio::test]
async fn half_open_clients_are_detected_by_ping() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.idle_timeout = None;
        s.gateway.ping_interval = Some(Duration::from_millis(100));
        s.gateway.pong_timeout = Duration::from_millis(200);
    })
    .await;
    // A raw client that reads the pings and never answers: to the gateway it is half-open.
    let mut raw = raw_connect(&h, "/", &h.login("alice").await, b"").await;
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (head, payload) = read_frame(&mut raw, wire::From::Server).await.unwrap();
            if head.op == wire::Op::Close {
                return payload;
            }
            assert_eq!(head.op, wire::Op::Ping, "only pings before the close");
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(&close[..2], &1008u16.to_be_bytes());
    assert_eq!(&close[2..], b"pong timeout");
    // A client that answers pings stays (its codec answers while it waits for messages).
    let mut ok = h.connect_as("/", &h.login("bob").await).await;
    // The codec answers pings while it is polled for messages; it surfaces them too.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(deadline, ok.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            other => panic!("nothing but pings for 800 ms, got {other:?}"),
        }
    }
    assert!(pings >= 1, "pinged (every 100 ms) and answered: {pings}");
}

#[tokio::test]
async fn slow_reader_is_closed_and_the_upstream_not_buffered() {
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.send_timeout = Duration::from_millis(500);
        s.gateway.ping_interval = None;
    })
    .await;
    let mut ws = h.connect_as("/", &h.login("alice").await).await;
    ws.send(Message::text("flood")).await.unwrap();
    // Do not read: the upstream floods 64 KiB messages; the gateway stops reading it once the
    // client's socket is full, and closes the client after send_timeout.
    let body = h
        .wait_for_metric(r#"wsguard_closes_total{code="1013",reason="overloaded"} 1"#)
        .await
        .expect("slow reader not closed");
    let relayed = body
        .lines()
        .find(|l| l.starts_with(r#"wsguard_bytes_total{direction="upstream_to_client"}"#))
        .unwrap();
    let bytes: f64 = relayed.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        bytes < 64.0 * 1024.0 * 1024.0,
        "bounded: {bytes} bytes relayed to a client that reads nothing"
    );
}

#[tokio::test]
async fn an_upstream_that_stops_reading_is_closed_after_send_timeout() {
    let stuck = raw_upstream("never_read").await;
    let h = harness_with(Arc::new(MemoryStore::new()), policy(), |s| {
        s.gateway.send_timeout = Duration::from_millis(300);
        s.gateway.ping_interval = None;
        s.routes.push(RouteConfig {
            messages: MessageConfig {
                max_message_bytes: 1 << 20,
                ..Default::default()
            },
            ..RouteConfig::new("/stuck", format!("ws://{stuck}"))
        });
    })
    .await;
    let (mut tx, mut rx) = h
        .connect_as("/stuck", &h.login("alice").await)
        .await
        .split();
    // The client writes faster than the upstream reads (never): once the sockets' buffers are
    // full, the gateway's write to the upstream waits, and after send_timeout it gives up.
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..256 {
            if tx.send(Message::binary(chunk.clone())).await.is_err() {
                return;
            }
        }
    });
    h.wait_for_metric(r#"wsguard_closes_total{code="1011",reason="upstream_lost"} 1"#)
        .await
        .expect("a stuck upstream was not given up on");
    // The client hears about it: a 1011 close, or (its own writes still unread by the gateway
    // when it closed) a reset; either way its socket ends.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the client's socket stays open");
    assert!(matches!(end, Some(1011) | None), "{end:?}");
    writer.abort();
}
