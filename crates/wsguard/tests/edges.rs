//! The handshake's edges through the real binary: `wsguard serve` in front of an upstream that
//! records each handshake it receives, attacked with raw requests (path tricks against a
//! public and a private route, forged client addresses, bodies on upgrades), and identity bytes
//! issued through `wsguard session issue` reaching the upstream whole.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use common::*;

/// A gateway with a public route `/` and a private route `/ws`, both to one recording upstream.
async fn gateway(dir: &std::path::Path) -> (Proc, String, Heads) {
    let (upstream, heads) = recording_upstream().await;
    std::fs::write(
        dir.join("wsguard.toml"),
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nallowed_origins = [\"{ORIGIN}\"]\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[route]]\npath = \"/\"\nupstream = \"ws://{upstream}\"\npublic = true\n\n\
             [[route]]\npath = \"/ws\"\nupstream = \"ws://{upstream}\"\n"
        ),
    )
    .unwrap();
    assert!(run(dir, &["keygen"]).status.success());
    let (proc, addr, _) = serve(dir);
    (proc, addr, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_the_private_route_anonymously() {
    let dir = tempfile::tempdir().unwrap();
    let (_gw, addr, heads) = gateway(dir.path()).await;
    for (target, want) in [
        ("/pub/../ws", 401),
        ("/pub/%2e%2e/ws", 401),
        ("/pub/.%2E/ws/x", 401),
        ("/pub//../ws", 401),
        ("/pub/..;/ws", 400),
        ("/pub%2f..%2fws", 400),
        ("/pub\\..\\ws", 400),
        ("/pub/%5c../ws", 400),
        ("/WS", 400),
        ("/ws.", 400),
        ("/pub/%c0%ae%c0%ae/ws", 400),
        ("/pub/\u{e9}", 400),
        ("http://evil.example/pub", 400),
    ] {
        let before = heads.count();
        assert_eq!(status(&addr, &upgrade(target, "")).await, want, "{target}");
        assert_eq!(heads.count(), before, "{target} reached the upstream");
    }
    // What is let through goes upstream in the normal form that was matched, without the
    // gateway's ticket parameter.
    for (target, upstream) in [
        ("/pub/a/../b", "/pub/b"),
        ("/wsx", "/wsx"),
        ("/pub/%7e?ticket=x&q=1", "/pub/~?q=1"),
        ("http://gw.example/pub", "/pub"),
    ] {
        assert_eq!(status(&addr, &upgrade(target, "")).await, 101, "{target}");
        assert_eq!(heads.target(), upstream, "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_addresses_and_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let (_gw, addr, heads) = gateway(dir.path()).await;
    let spoofs = "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
                  Forwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n\
                  X-Original-URL: /ws\r\nX-Wsguard-User: admin\r\n";
    assert_eq!(status(&addr, &upgrade("/chat", spoofs)).await, 101);
    assert_eq!(heads.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(heads.header("x-forwarded-host"), ["gw.example"]);
    assert_eq!(heads.header("x-forwarded-proto"), ["http"]);
    assert_eq!(
        heads.header("forwarded"),
        ["for=127.0.0.1;host=\"gw.example\";proto=http"]
    );
    for gone in ["x-real-ip", "x-original-url", "x-wsguard-user"] {
        assert!(heads.header(gone).is_empty(), "{gone}");
    }
    let before = heads.count();
    for framing in [
        "Content-Length: 5\r\n\r\nhello",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    ] {
        let request = upgrade("/chat", framing).replacen("\r\n\r\n", "\r\n", 1);
        assert_eq!(status(&addr, &request).await, 400, "{framing:?}");
    }
    for hosts in ["", "Host: a\r\nHost: b\r\n", "Host: a@b\r\n"] {
        let request = upgrade("/chat", "").replace("Host: gw.example\r\n", hosts);
        assert_eq!(status(&addr, &request).await, 400, "{hosts:?}");
    }
    assert_eq!(heads.count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_bytes_reach_the_upstream_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_gw, addr, heads) = gateway(dir.path()).await;
    let data = "{\"readonly\":true,\"note\":\"a\u{7f}b \u{e9}\u{1f512}\"}";
    let issued = run(
        dir.path(),
        &[
            "session",
            "issue",
            "--user",
            "alice@example.com",
            "--data",
            data,
        ],
    );
    assert!(issued.status.success(), "{issued:?}");
    let token = String::from_utf8(issued.stdout).unwrap().trim().to_owned();
    let cookie = format!("Cookie: wsguard_session={token}\r\n");
    assert_eq!(status(&addr, &upgrade("/ws", &cookie)).await, 101);
    assert_eq!(heads.header("x-wsguard-user"), ["alice@example.com"]);
    let sent = heads.header("x-wsguard-data");
    assert_eq!(
        sent,
        [r#"{"readonly":true,"note":"a\u007fb \u00e9\ud83d\udd12"}"#]
    );
    let back: serde_json::Value = serde_json::from_str(&sent[0]).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(data).unwrap()
    );
    // Data that no header could carry is refused when issued, with the reason.
    let long = format!("{{\"a\":\"{}\"}}", "\u{7f}".repeat(1400));
    let refused = run(
        dir.path(),
        &["session", "issue", "--user", "bob", "--data", &long],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("too long to forward"), "{stderr}");
}
