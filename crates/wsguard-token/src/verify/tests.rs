//! Unit tests for every rejection reason and every lifetime boundary.

use super::*;
use crate::keyfile::{KeyFile, KeyFileEntry, UnixTime};
use crate::mac::sign_parts;
use crate::{SessionData, SessionId, UserId};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

const T0: u64 = 1_764_000_000;

fn policy() -> TokenPolicy {
    TokenPolicy {
        max_age: 1000,
        idle_timeout: 100,
        future_leeway: 5,
        accept_legacy_tokens: false,
    }
}

fn verifier() -> Verifier {
    Verifier::new(Arc::new(KeyRing::ephemeral()), policy())
}

fn claims(at: u64) -> Claims {
    Claims::new(
        SessionId::generate(),
        UserId::parse("alice").unwrap(),
        SessionData::parse(r#"{"role":"admin"}"#).unwrap(),
        at,
    )
}

/// Signs an arbitrary payload with the verifier's signing key, as a v1 token.
fn sign_raw(v: &Verifier, payload: &[u8]) -> String {
    let (kid, key) = v.keys.signing();
    let head = format!("v1.{kid}.");
    let tag = sign_parts(key, &[head.as_bytes(), payload]);
    let mut t = format!("{head}{}", URL_SAFE_NO_PAD.encode(payload));
    t.push('.');
    t.push_str(&URL_SAFE_NO_PAD.encode(tag));
    t
}

fn payload(sid: &str, uid: &str, data: &str, created: &str, last_active: &str) -> String {
    format!(
        r#"{{"sid":{sid},"uid":{uid},"data":{data},"created":{created},"last_active":{last_active}}}"#
    )
}

const SID: &str = r#""AAAAAAAAAAAAAAAAAAAAAA""#;

fn malformed(m: Malformed) -> Result<(), Rejection> {
    Err(Rejection::Malformed(m))
}

fn verdict(v: &Verifier, token: &str, now: u64) -> Result<(), Rejection> {
    v.verify(token, now).map(|_| ())
}

#[test]
fn issue_then_verify_round_trips() {
    let v = verifier();
    let c = claims(T0);
    let token = v.issue(&c);
    let ok = v.verify(&token, T0).unwrap();
    assert_eq!(ok.claims(), &c);
    assert_eq!(
        ok.format(),
        &Format::V1 {
            key_id: v.keys().signing_key_id().clone()
        }
    );
    assert!(token.starts_with("v1.ephemeral."));
}

#[test]
fn token_is_a_valid_cookie_value() {
    let v = verifier();
    let mut c = claims(T0);
    c.uid = UserId::parse(r#"we"ird\user;,"#).unwrap();
    c.data = SessionData::parse(r#"{"q":"a \"b\"; c=d, e"}"#).unwrap();
    let token = v.issue(&c);
    // RFC 6265 cookie-octet, and we use only base64url and '.'.
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
        "{token}"
    );
    assert_eq!(v.verify(&token, T0).unwrap().claims(), &c);
}

#[test]
fn expiry_boundary_is_exact() {
    let v = verifier();
    let mut c = claims(T0);
    // Keep it active so only the absolute age can fail.
    c.last_active = T0 + 950;
    let token = v.issue(&c);
    assert!(
        v.verify(&token, T0 + 999).is_ok(),
        "valid at the last second"
    );
    assert_eq!(verdict(&v, &token, T0 + 1000), Err(Rejection::Expired));
    assert_eq!(verdict(&v, &token, u64::MAX), Err(Rejection::Expired));
}

#[test]
fn idle_boundary_is_exact_and_slides_with_known_activity() {
    let v = verifier();
    let token = v.issue(&claims(T0));
    assert!(
        v.verify(&token, T0 + 99).is_ok(),
        "valid at the last second"
    );
    assert_eq!(verdict(&v, &token, T0 + 100), Err(Rejection::Idle));
    // With later activity known (e.g. from the store), the window slides.
    let signed = v.verify_signature(&token, T0 + 150).unwrap();
    let ok = signed.check_lifetime(T0 + 60, T0 + 159).unwrap();
    assert_eq!(ok.last_active(), T0 + 60);
    let signed = v.verify_signature(&token, T0 + 160).unwrap();
    assert_eq!(
        signed.check_lifetime(T0 + 60, T0 + 160).unwrap_err(),
        Rejection::Idle
    );
    // An older store value never shortens the token's own.
    let signed = v.verify_signature(&token, T0 + 10).unwrap();
    assert_eq!(signed.check_lifetime(0, T0 + 10).unwrap().last_active(), T0);
}

#[test]
fn future_boundary_is_exact() {
    let v = verifier();
    let token = v.issue(&claims(T0));
    assert!(v.verify(&token, T0 - 5).is_ok(), "within leeway");
    assert_eq!(verdict(&v, &token, T0 - 6), Err(Rejection::IssuedInFuture));
    let mut c = claims(T0);
    c.last_active = T0 + 50;
    let token = v.issue(&c);
    assert!(v.verify(&token, T0 + 45).is_ok());
    assert_eq!(verdict(&v, &token, T0 + 44), Err(Rejection::IssuedInFuture));
}

#[test]
fn length_bound_is_checked_first() {
    let v = verifier();
    assert_eq!(verdict(&v, "", T0), malformed(Malformed::Empty));
    let long = format!("v1.k.{}", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(verdict(&v, &long, T0), malformed(Malformed::TooLong));
    let at_bound = &long[..MAX_TOKEN_LEN];
    assert_ne!(verdict(&v, at_bound, T0), malformed(Malformed::TooLong));
}

#[test]
fn structure_errors() {
    let v = verifier();
    let good = v.issue(&claims(T0));
    let (kid_part, _) = good[3..].split_once('.').unwrap();
    for bad in [
        "hello".to_string(),
        "v2.k.AAAA.AAAA".into(),
        "V1.k.AAAA.AAAA".into(),
        "v1.".into(),
        "v1.k".into(),
        "v1.k.AAAA".into(),
        format!("v1.k..{}", "A".repeat(43)),
        format!(" {good}"),
    ] {
        assert_eq!(
            verdict(&v, &bad, T0),
            malformed(Malformed::Structure),
            "{bad}"
        );
    }
    // A separator where the fixed-length tag should start is missing: an encoding defect.
    for bad in [
        "v1.k..tag".to_string(),
        format!("{good}.extra"),
        format!("{good}x"),
    ] {
        assert_eq!(
            verdict(&v, &bad, T0),
            malformed(Malformed::Encoding),
            "{bad}"
        );
    }
    let bad_kid = good.replacen(kid_part, "bad!kid", 1);
    assert_eq!(verdict(&v, &bad_kid, T0), malformed(Malformed::KeyId));
    let empty_kid = good.replacen(kid_part, "", 1);
    assert_eq!(verdict(&v, &empty_kid, T0), malformed(Malformed::KeyId));
}

#[test]
fn tag_encoding_errors() {
    let v = verifier();
    let good = v.issue(&claims(T0));
    let (signed, tag) = good.rsplit_once('.').unwrap();
    assert_eq!(
        verdict(&v, &format!("{signed}.{}", &tag[..42]), T0),
        malformed(Malformed::Encoding)
    );
    assert_eq!(
        verdict(&v, &format!("{signed}.{tag}="), T0),
        malformed(Malformed::Encoding)
    );
    assert_eq!(
        verdict(&v, &format!("{signed}.{}+", &tag[..42]), T0),
        malformed(Malformed::Encoding)
    );
    // Non-canonical last symbol: same 32 bytes, different text.
    let last = tag.as_bytes()[42];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let pos = alphabet.iter().position(|&c| c == last).unwrap();
    let twin = alphabet[(pos & !3) | ((pos + 1) & 3)] as char;
    let bad = format!("{signed}.{}{twin}", &tag[..42]);
    assert_eq!(verdict(&v, &bad, T0), malformed(Malformed::Encoding));
}

#[test]
fn signature_errors() {
    let v = verifier();
    let good = v.issue(&claims(T0));
    let (signed, tag) = good.rsplit_once('.').unwrap();
    let mut t = tag.as_bytes().to_vec();
    t[0] = if t[0] == b'A' { b'B' } else { b'A' };
    let forged = format!("{signed}.{}", String::from_utf8(t).unwrap());
    assert_eq!(verdict(&v, &forged, T0), Err(Rejection::BadSignature));
    // Another verifier's key with the same id.
    let other = verifier();
    assert_eq!(verdict(&other, &good, T0), Err(Rejection::BadSignature));
    // A payload swapped in from another token.
    let other_token = v.issue(&claims(T0));
    let swapped = format!(
        "{}.{}",
        other_token.rsplit_once('.').unwrap().0,
        good.rsplit_once('.').unwrap().1
    );
    assert_eq!(verdict(&v, &swapped, T0), Err(Rejection::BadSignature));
}

#[test]
fn unknown_and_retired_keys() {
    let secret = |b: u8| URL_SAFE_NO_PAD.encode([b; 32]);
    let file = |old_until: Option<u64>| KeyFile {
        legacy_secret: None,
        keys: vec![
            KeyFileEntry {
                id: "new".into(),
                secret: secret(1),
                verify_until: None,
            },
            KeyFileEntry {
                id: "old".into(),
                secret: secret(2),
                verify_until: old_until.map(UnixTime),
            },
        ]
        .into_iter()
        .filter(|k| k.id == "new" || old_until.is_some())
        .collect(),
    };
    // Before rotation, "old" was the signing key.
    let before = Verifier::new(
        Arc::new(
            KeyRing::from_file(&KeyFile {
                legacy_secret: None,
                keys: vec![KeyFileEntry {
                    id: "old".into(),
                    secret: secret(2),
                    verify_until: None,
                }],
            })
            .unwrap(),
        ),
        TokenPolicy {
            max_age: 10_000,
            idle_timeout: 10_000,
            ..policy()
        },
    );
    let old_token = before.issue(&claims(T0));
    let after = Verifier::new(
        Arc::new(KeyRing::from_file(&file(Some(T0 + 500))).unwrap()),
        *before.policy(),
    );
    assert!(
        after.verify(&old_token, T0 + 499).is_ok(),
        "verify-only key still accepted"
    );
    assert_eq!(
        verdict(&after, &old_token, T0 + 500),
        Err(Rejection::UnknownKey)
    );
    let new_token = after.issue(&claims(T0));
    assert!(new_token.starts_with("v1.new."));
    assert!(after.verify(&new_token, T0 + 600).is_ok());
    // Ring without the old key at all.
    let dropped = Verifier::new(
        Arc::new(KeyRing::from_file(&file(None)).unwrap()),
        *before.policy(),
    );
    assert_eq!(
        verdict(&dropped, &old_token, T0),
        Err(Rejection::UnknownKey)
    );
}

#[test]
fn strict_payload_parse() {
    let v = verifier();
    let ok = payload(SID, r#""bob""#, "{}", "1764000000", "1764000000");
    assert!(v.verify(&sign_raw(&v, ok.as_bytes()), T0).is_ok());

    let p = Malformed::Payload;
    let cases: Vec<(String, Malformed)> = vec![
        // duplicate, unknown, missing fields
        (ok.replacen("{", r#"{"uid":"eve","#, 1), p),
        (
            ok.replacen(r#""data":{}"#, r#""data":{},"admin":true"#, 1),
            p,
        ),
        (ok.replacen(r#","uid":"bob""#, "", 1), p),
        (ok.replacen(r#","data":{}"#, "", 1), p),
        (ok.replacen(r#","last_active":1764000000"#, "", 1), p),
        // wrong types
        (
            payload(
                "12345678901234567890",
                r#""bob""#,
                "{}",
                "1764000000",
                "1764000000",
            ),
            p,
        ),
        (payload(SID, "42", "{}", "1764000000", "1764000000"), p),
        (
            payload(SID, r#"["bob"]"#, "{}", "1764000000", "1764000000"),
            p,
        ),
        (
            payload(SID, r#""bob""#, "[]", "1764000000", "1764000000"),
            p,
        ),
        (
            payload(SID, r#""bob""#, r#""x""#, "1764000000", "1764000000"),
            p,
        ),
        (
            payload(SID, r#""bob""#, "null", "1764000000", "1764000000"),
            p,
        ),
        // invalid ids and data
        (
            payload(r#""short""#, r#""bob""#, "{}", "1764000000", "1764000000"),
            p,
        ),
        (payload(SID, r#""""#, "{}", "1764000000", "1764000000"), p),
        (
            payload(SID, r#""bob smith""#, "{}", "1764000000", "1764000000"),
            p,
        ),
        (
            payload(
                SID,
                r#""bob""#,
                r#"{"a":1,"a":2}"#,
                "1764000000",
                "1764000000",
            ),
            p,
        ),
        // not JSON, trailing bytes
        (format!("{ok}{{}}"), p),
        ("not json".into(), p),
        (ok.replacen("1764000000", "1764000000,", 1), p),
        // not canonical: whitespace, member order, leading zeros
        (format!("{ok} "), p),
        (ok.replacen(r#""uid":"bob""#, r#""uid": "bob""#, 1), p),
        (
            payload(SID, r#""bob""#, "{}", "1764000000", "1764000000").replacen(
                r#""sid":"AAAAAAAAAAAAAAAAAAAAAA","uid":"bob""#,
                r#""uid":"bob","sid":"AAAAAAAAAAAAAAAAAAAAAA""#,
                1,
            ),
            p,
        ),
        (
            payload(SID, r#""bob""#, "{}", "01764000000", "1764000000"),
            Malformed::Timestamp,
        ),
        (
            payload(SID, r#""bob""#, "{}", "+1764000000", "1764000000"),
            Malformed::Timestamp,
        ),
        // control characters and bad escapes in the uid string
        (
            payload(SID, r#""bo\u0001b""#, "{}", "1764000000", "1764000000"),
            p,
        ),
        (
            payload(SID, "\"bo\x01b\"", "{}", "1764000000", "1764000000"),
            p,
        ),
        (
            payload(SID, r#""bo\qb""#, "{}", "1764000000", "1764000000"),
            p,
        ),
        (payload(SID, r#""bob"#, "{}", "1764000000", "1764000000"), p),
        // timestamps
        (
            payload(SID, r#""bob""#, "{}", "1764000000.5", "1764000000"),
            Malformed::Timestamp,
        ),
        (
            payload(SID, r#""bob""#, "{}", "1.764e9", "1764000000"),
            Malformed::Timestamp,
        ),
        (
            payload(SID, r#""bob""#, "{}", "-1", "1764000000"),
            Malformed::Timestamp,
        ),
        (
            payload(SID, r#""bob""#, "{}", r#""1764000000""#, "1764000000"),
            Malformed::Timestamp,
        ),
        (
            payload(SID, r#""bob""#, "{}", "null", "1764000000"),
            Malformed::Timestamp,
        ),
        (
            payload(
                SID,
                r#""bob""#,
                "{}",
                "1764000000",
                "99999999999999999999999",
            ),
            Malformed::Timestamp,
        ),
        (
            payload(SID, r#""bob""#, "{}", "1764000000", "253402300800"),
            Malformed::Timestamp,
        ),
        (
            payload(SID, r#""bob""#, "{}", "1764000001", "1764000000"),
            Malformed::Timestamp,
        ),
    ];
    for (json, want) in cases {
        let token = sign_raw(&v, json.as_bytes());
        assert_eq!(verdict(&v, &token, T0), malformed(want), "{json}");
    }
    let not_utf8 = sign_raw(&v, b"{\"sid\":\"\xff\"}");
    assert_eq!(verdict(&v, &not_utf8, T0), malformed(p));
}

#[test]
fn escaped_uid_is_unescaped() {
    let v = verifier();
    let p = payload(SID, r#""a\"b\\c\u0041""#, "{}", "1764000000", "1764000000");
    let ok = v.verify(&sign_raw(&v, p.as_bytes()), T0).unwrap();
    assert_eq!(ok.claims().uid.as_str(), r#"a"b\cA"#);
}

#[test]
fn data_containing_the_member_names_is_parsed_correctly() {
    let v = verifier();
    let data = r#"{"x":",\"created\":1,\"last_active\":2}","created":{"last_active":3}}"#;
    let p = payload(SID, r#""bob""#, data, "1764000000", "1764000000");
    let ok = v.verify(&sign_raw(&v, p.as_bytes()), T0).unwrap();
    assert_eq!(ok.claims().data.as_json(), data);
    assert_eq!(ok.claims().created, T0);
}

#[test]
fn largest_timestamp_is_accepted_as_a_value() {
    let v = Verifier::new(
        Arc::new(KeyRing::ephemeral()),
        TokenPolicy {
            max_age: u64::MAX,
            idle_timeout: u64::MAX,
            ..policy()
        },
    );
    let p = payload(SID, r#""bob""#, "{}", "253402300799", "253402300799");
    assert!(
        v.verify(&sign_raw(&v, p.as_bytes()), 253_402_300_799)
            .is_ok()
    );
}

/// What the tutorial's Python mints: `json.dumps(session, separators=(",", ":"))`, `.`, hex tag.
fn legacy_token(secret: &[u8], json: &str) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), json.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{json}.{hex}")
}

fn legacy_verifier(accept: bool) -> Verifier {
    Verifier::new(
        Arc::new(KeyRing::ephemeral().with_legacy_secret(b"tutorial-secret")),
        TokenPolicy {
            accept_legacy_tokens: accept,
            ..policy()
        },
    )
}

#[test]
fn legacy_tokens_only_when_enabled() {
    let json = r#"{"sid":"3q2-7wAAAAAAAAAAAAAAAA","uid":42,"data":{"theme":"dark"},"created":1764000000.25,"last_active":1764000010.9}"#;
    let token = legacy_token(b"tutorial-secret", json);
    let on = legacy_verifier(true);
    let ok = on.verify(&token, T0 + 20).unwrap();
    assert_eq!(ok.format(), &Format::Legacy);
    assert_eq!(ok.claims().uid.as_str(), "42");
    assert_eq!(ok.claims().created, T0);
    assert_eq!(ok.claims().last_active, T0 + 10);
    assert_eq!(ok.claims().data.as_json(), r#"{"theme":"dark"}"#);

    let off = legacy_verifier(false);
    assert_eq!(
        verdict(&off, &token, T0),
        malformed(Malformed::LegacyNotAccepted)
    );
    // Enabled but no secret configured.
    let no_secret = Verifier::new(
        Arc::new(KeyRing::ephemeral()),
        TokenPolicy {
            accept_legacy_tokens: true,
            ..policy()
        },
    );
    assert_eq!(
        verdict(&no_secret, &token, T0),
        malformed(Malformed::LegacyNotAccepted)
    );

    // Tampered payload, wrong secret, uppercase hex.
    let tampered = token.replacen("\"uid\":42", "\"uid\":43", 1);
    assert_eq!(
        verdict(&on, &tampered, T0 + 20),
        Err(Rejection::BadSignature)
    );
    let wrong = legacy_token(b"other-secret", json);
    assert_eq!(verdict(&on, &wrong, T0 + 20), Err(Rejection::BadSignature));
    let (p, hex) = token.rsplit_once('.').unwrap();
    let upper = format!("{p}.{}", hex.to_uppercase());
    assert_eq!(
        verdict(&on, &upper, T0 + 20),
        malformed(Malformed::Encoding)
    );
    // Lifetimes apply to legacy tokens too.
    assert_eq!(verdict(&on, &token, T0 + 1000), Err(Rejection::Expired));
}

#[test]
fn legacy_payload_is_still_strict() {
    let on = legacy_verifier(true);
    for json in [
        r#"{"sid":"3q2-7wAAAAAAAAAAAAAAAA","uid":"a","data":{},"created":1,"last_active":1,"admin":true}"#,
        r#"{"sid":"3q2-7wAAAAAAAAAAAAAAAA","uid":"a","uid":"b","data":{},"created":1,"last_active":1}"#,
        r#"{"sid":"3q2-7wAAAAAAAAAAAAAAAA","uid":"a","data":{},"created":1}"#,
        r#"{"sid":"3q2-7wAAAAAAAAAAAAAAAA","uid":-1,"data":{},"created":1,"last_active":1}"#,
    ] {
        let token = legacy_token(b"tutorial-secret", json);
        assert_eq!(
            verdict(&on, &token, T0),
            malformed(Malformed::Payload),
            "{json}"
        );
    }
    let neg =
        r#"{"sid":"3q2-7wAAAAAAAAAAAAAAAA","uid":"a","data":{},"created":-5.0,"last_active":1}"#;
    assert_eq!(
        verdict(&on, &legacy_token(b"tutorial-secret", neg), T0),
        malformed(Malformed::Timestamp)
    );
}

#[test]
fn debug_output_never_contains_key_material() {
    let mut file = KeyFile::default();
    file.rotate(T0, 100);
    file.legacy_secret = Some("legacy-pass-phrase".into());
    let ring = KeyRing::from_file(&file).unwrap();
    let v = Verifier::new(Arc::new(ring), policy());
    let shown = format!("{v:?}");
    assert!(!shown.contains(&file.keys[0].secret), "{shown}");
    assert!(!shown.contains("legacy-pass-phrase"), "{shown}");
    assert!(shown.contains(&file.keys[0].id), "{shown}");
}
