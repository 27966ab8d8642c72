//! The message policy's tests: kinds, JSON depth and schema, stamping, every rate on a clock
//! the test drives, control frames, reload of per-user buckets, and configuration errors.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use governor::clock::FakeRelativeClock;

use std::sync::Arc;

use super::*;
use crate::reason::CloseReason;

fn policy(cfg: MessageConfig) -> (Arc<RoutePolicy<FakeRelativeClock>>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (RoutePolicy::with_clock(cfg, clock.clone()), clock)
}

fn text(s: &str) -> Seen<'_> {
    Seen::Text(s.as_bytes())
}

#[test]
fn kinds() {
    let (p, _) = policy(MessageConfig {
        kind: Kind::Text,
        ..Default::default()
    });
    let c = p.connection(Some("alice"));
    assert_eq!(c.judge(text("hi")), Verdict::Forward);
    assert_eq!(
        c.judge(Seen::Binary(&[1u8])),
        Verdict::Close(CloseReason::UnsupportedData)
    );
    let (p, _) = policy(MessageConfig {
        kind: Kind::Binary,
        ..Default::default()
    });
    assert_eq!(
        p.connection(None).judge(text("hi")),
        Verdict::Close(CloseReason::UnsupportedData)
    );
}

#[test]
fn json_mode_and_depth() {
    let (p, _) = policy(MessageConfig {
        kind: Kind::Json,
        json_max_depth: 3,
        ..Default::default()
    });
    let c = p.connection(Some("alice"));
    for ok in [r#"{"a":[1,{"b":2}]}"#, "1", r#""[[[[""#, "[]"] {
        assert_eq!(c.judge(text(ok)), Verdict::Forward, "{ok}");
    }
    for bad in [
        r#"{"a":[1,{"b":[2]}]}"#,
        "{",
        "nope",
        r#"{"a":1}{"b":2}"#,
        "",
    ] {
        assert_eq!(
            c.judge(text(bad)),
            Verdict::Close(CloseReason::PolicyViolation),
            "{bad}"
        );
    }
    assert_eq!(
        c.judge(Seen::Binary(b"1")),
        Verdict::Close(CloseReason::UnsupportedData)
    );
    let deep = "[".repeat(100_000);
    assert_eq!(
        c.judge(text(&deep)),
        Verdict::Close(CloseReason::PolicyViolation)
    );
}

#[test]
fn sender_is_stamped_over_what_the_client_wrote() {
    let cfg = MessageConfig {
        kind: Kind::Json,
        stamp_sender: Some("sender".into()),
        ..Default::default()
    };
    let (p, _) = policy(cfg);
    let c = p.connection(Some("alice"));
    let Verdict::Rewrite(t) = c.judge(text(r#"{"sender":"bob","msg":"hi"}"#)) else {
        panic!("not rewritten")
    };
    let v: serde_json::Value = serde_json::from_slice(&t).unwrap();
    assert_eq!(v["sender"], "alice");
    assert_eq!(v["msg"], "hi");
    // Non-object JSON passes unchanged.
    assert_eq!(c.judge(text("[1]")), Verdict::Forward);
}

#[test]
fn connection_rate_limit_edges() {
    let cfg = MessageConfig {
        connection_messages: Some(Rate {
            per_second: 10,
            burst: Some(3),
        }),
        ..Default::default()
    };
    let (p, clock) = policy(cfg);
    let c = p.connection(Some("alice"));
    for _ in 0..3 {
        assert_eq!(c.judge(text("x")), Verdict::Forward);
    }
    assert_eq!(
        c.judge(text("x")),
        Verdict::Close(CloseReason::RateLimited),
        "burst exhausted"
    );
    clock.advance(Duration::from_millis(99));
    assert_eq!(
        c.judge(text("x")),
        Verdict::Close(CloseReason::RateLimited),
        "1 ms before a token"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(c.judge(text("x")), Verdict::Forward, "one token per 100 ms");
}

#[test]
fn byte_rate_and_drop_action() {
    let cfg = MessageConfig {
        max_message_bytes: 10,
        connection_bytes: Some(Rate {
            per_second: 10,
            burst: Some(10),
        }),
        on_limit: OnLimit::Drop,
        ..Default::default()
    };
    cfg.validate("route[0].messages").unwrap();
    let (p, clock) = policy(cfg);
    let c = p.connection(None);
    assert_eq!(c.judge(text("123456")), Verdict::Forward);
    assert_eq!(c.judge(text("12345")), Verdict::Drop, "6 + 5 > 10");
    assert_eq!(c.judge(text("1234")), Verdict::Forward);
    clock.advance(Duration::from_secs(1));
    assert_eq!(c.judge(text("1234567890")), Verdict::Forward);
}

#[test]
fn user_limit_is_shared_across_sockets() {
    let cfg = MessageConfig {
        user_messages: Some(Rate {
            per_second: 1,
            burst: Some(2),
        }),
        ..Default::default()
    };
    let (p, _) = policy(cfg);
    let (a, b, other) = (
        p.connection(Some("alice")),
        p.connection(Some("alice")),
        p.connection(Some("bob")),
    );
    assert!(matches!(a.judge(text("1")), Verdict::Forward));
    assert!(matches!(b.judge(text("2")), Verdict::Forward));
    assert_eq!(a.judge(text("3")), Verdict::Close(CloseReason::RateLimited));
    assert!(
        matches!(other.judge(text("x")), Verdict::Forward),
        "per user"
    );
}

#[test]
fn a_reloaded_route_keeps_its_users_budgets_unless_the_rate_changed() {
    let rate = |burst| MessageConfig {
        user_messages: Some(Rate {
            per_second: 1,
            burst: Some(burst),
        }),
        ..Default::default()
    };
    let clock = FakeRelativeClock::default();
    let before = RoutePolicy::with_clock(rate(2), clock.clone());
    let old_socket = before.connection(Some("alice"));
    assert!(matches!(old_socket.judge(text("1")), Verdict::Forward));
    // Reloaded with the same rate: a socket opened after the reload shares alice's bucket
    // with the one opened before.
    let mut after = RoutePolicy::with_clock(rate(2), clock.clone());
    assert!(after.keep_user_buckets(&before));
    let new_socket = after.connection(Some("alice"));
    assert!(matches!(new_socket.judge(text("2")), Verdict::Forward));
    assert_eq!(
        new_socket.judge(text("3")),
        Verdict::Close(CloseReason::RateLimited),
        "one budget across the reload"
    );
    // Reloaded with another rate: new buckets, under the new rate.
    let mut changed = RoutePolicy::with_clock(rate(3), clock.clone());
    assert!(!changed.keep_user_buckets(&before));
    let third = changed.connection(Some("alice"));
    for n in 0..3 {
        assert!(matches!(third.judge(text("x")), Verdict::Forward), "{n}");
    }
    // A policy already shared by sockets is left as it is.
    let _socket = changed.connection(Some("bob"));
    assert!(!changed.keep_user_buckets(&RoutePolicy::with_clock(rate(3), clock)));
}

#[test]
fn config_errors_name_the_key() {
    let bad = [
        (
            MessageConfig {
                max_message_bytes: 0,
                ..Default::default()
            },
            "max_message_bytes",
        ),
        (
            MessageConfig {
                max_frame_bytes: Some(1 << 20),
                ..Default::default()
            },
            "max_frame_bytes",
        ),
        (
            MessageConfig {
                stamp_sender: Some("s".into()),
                ..Default::default()
            },
            "stamp_sender",
        ),
        (
            MessageConfig {
                connection_messages: Some(Rate {
                    per_second: 0,
                    burst: None,
                }),
                ..Default::default()
            },
            "connection_messages",
        ),
        (
            MessageConfig {
                user_bytes: Some(Rate {
                    per_second: 100,
                    burst: None,
                }),
                ..Default::default()
            },
            "user_bytes",
        ),
    ];
    for (cfg, key) in bad {
        let e = cfg.validate("route[0].messages").unwrap_err();
        assert_eq!(e.0[0].key, format!("route[0].messages.{key}"), "{e}");
    }
}
