//! Unit tests of session data: bounds, duplicates, depth, the fast path against the general
//! validator, and the header form.

use std::borrow::Cow;

use proptest::strategy::Strategy as _;

use super::validate::validate_with_serde;
use super::*;

#[test]
fn accepts_objects_and_keeps_them_compact() {
    assert_eq!(SessionData::parse("{}").unwrap().as_json(), "{}");
    let d = SessionData::parse(r#"{"role":"admin","n":[1,2,{"x":null}]}"#).unwrap();
    assert_eq!(d.as_json(), r#"{"role":"admin","n":[1,2,{"x":null}]}"#);
    let spaced = SessionData::parse("{ \"a\" :\n 1 }").unwrap();
    assert_eq!(spaced.as_json(), r#"{"a":1}"#);
}

#[test]
fn refuses_non_objects() {
    for bad in ["[]", "1", "\"s\"", "null", "true"] {
        assert_eq!(SessionData::parse(bad), Err(DataError::NotObject), "{bad}");
    }
}

#[test]
fn refuses_bad_json() {
    for bad in ["", "{", "{\"a\":}", "{} {}", "{\"a\":1,}", "{'a':1}"] {
        assert_eq!(SessionData::parse(bad), Err(DataError::Syntax), "{bad:?}");
    }
}

#[test]
fn refuses_duplicate_keys_at_any_depth_even_when_escaped() {
    assert_eq!(
        SessionData::parse(r#"{"a":1,"a":2}"#),
        Err(DataError::DuplicateKey)
    );
    assert_eq!(
        SessionData::parse(r#"{"x":{"a":1,"b":{"c":1,"c":1}}}"#),
        Err(DataError::DuplicateKey)
    );
    assert_eq!(
        SessionData::parse(r#"{"a":1,"\u0061":2}"#),
        Err(DataError::DuplicateKey)
    );
    // Same key in sibling objects is fine.
    assert!(SessionData::parse(r#"{"x":{"a":1},"y":{"a":1}}"#).is_ok());
}

#[test]
fn depth_bound() {
    let nest = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    assert!(SessionData::parse(&nest(SessionData::MAX_DEPTH)).is_ok());
    assert_eq!(
        SessionData::parse(&nest(SessionData::MAX_DEPTH + 1)),
        Err(DataError::TooDeep)
    );
    let arrays = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    assert_eq!(SessionData::parse(&arrays), Err(DataError::TooDeep));
}

#[test]
fn fast_path_agrees_with_serde_on_tricky_inputs() {
    for input in [
        "{}",
        "{ }",
        "{}x",
        "{\"a\":1}",
        "{\"a\":01}",
        "{\"a\":-0}",
        "{\"a\":-}",
        "{\"a\":1.}",
        "{\"a\":1.5e}",
        "{\"a\":1.5e+3}",
        "{\"a\":1E9}",
        "{\"a\":tru}",
        "{\"a\":true,}",
        "{\"a\":null,\"a\":null}",
        "{\"a\":\"x\\\"y\"}",
        "{\"a\":\"\u{1}\"}",
        "{\"\":0}",
        "{\"a\":[1]}",
        "{\"a\":{}}",
        "{\"a\" :1}",
        "{\"a\":1}}",
        "{,}",
        "{\"a\"}",
        "{\"a\":}",
        "{\"é\":\"ü\"}",
        "{\"a\":+1}",
        "{\"a\":.5}",
        "{\"a\":NaN}",
        "{\"a\":1,\"b\":2,\"a\":3}",
    ] {
        if let Some(fast) = flat::check(input.as_bytes()) {
            assert_eq!(fast, validate_with_serde(input), "{input}");
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 4096, ..Default::default() })]

    /// Random strings over JSON's alphabet: the fast path, where it answers, agrees.
    #[test]
    fn fast_path_agrees_on_random_text(input in r#"\{[{}\[\]":,0-9a-c\-+.eE tfrulns\\]{0,30}"#) {
        if let Some(fast) = flat::check(input.as_bytes()) {
            proptest::prop_assert_eq!(fast, validate_with_serde(&input), "{}", input);
        }
    }

    /// Near-valid flat objects built from pieces: the fast path answers most, and agrees.
    #[test]
    fn fast_path_agrees_on_flat_objects(
        members in proptest::collection::vec(
            (r#"[a-c"\\]{0,3}"#, proptest::sample::select(vec![
                "1", "-1", "0", "01", "1.5", "1e5", "1E+5", "-", "1.", "true", "false", "null",
                "nul", "\"x\"", "\"\\\"\"", "[]", "{}", "\"\u{7}\"",
            ])),
            0..5,
        ),
        trailing in proptest::sample::select(vec!["", ",", " ", "}"]),
    ) {
        let body: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let input = format!("{{{}}}{trailing}", body.join(","));
        if let Some(fast) = flat::check(input.as_bytes()) {
            proptest::prop_assert_eq!(fast, validate_with_serde(&input), "{}", input);
        }
    }
}

/// The header form is the same JSON value in visible ASCII: DEL, C1 controls, other
/// non-ASCII and characters beyond U+FFFF (as surrogate pairs) are escaped, an escaped
/// control stays escaped, and data that needs nothing is borrowed as it is.
#[test]
fn header_value_is_the_same_json_in_visible_ascii() {
    let cases = [
        r#"{"role":"admin","readonly":true}"#,
        "{\"a\":\"x\u{7f}y\"}",
        r#"{"a":"\u0001\n\t\"\\"}"#,
        "{\"name\":\"Zoë\",\"city\":\"東京\",\"emoji\":\"🔒\"}",
        "{\"sep\":\"\u{2028}\u{85}\u{a0}\"}",
        "{\"ключ\":{\"deep\":[\"\u{7f}\",1,null]}}",
    ];
    for json in cases {
        let data = SessionData::parse(json).unwrap();
        let header = data.header_value().unwrap();
        assert!(
            header.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{header}"
        );
        let back: serde_json::Value = serde_json::from_str(&header).unwrap();
        assert_eq!(back, data.to_value(), "{json}");
    }
    let plain = SessionData::parse(r#"{"a":"b c"}"#).unwrap();
    assert!(matches!(plain.header_value(), Ok(Cow::Borrowed(_))));
    let del = SessionData::parse("{\"a\":\"\u{7f}\"}").unwrap();
    assert_eq!(del.header_value().unwrap(), r#"{"a":"\u007f"}"#);
    let astral = SessionData::parse("{\"a\":\"🔒\"}").unwrap();
    assert_eq!(astral.header_value().unwrap(), r#"{"a":"\ud83d\udd12"}"#);
}

/// What cannot be carried is refused when a session is issued, and only then: `parse` (the
/// verify path) still takes it, so the gateway must refuse it itself.
#[test]
fn data_too_long_to_forward_is_refused_at_issue() {
    // 1,400 DELs: 1,408 bytes of JSON, 8,408 bytes escaped.
    let json = format!("{{\"a\":\"{}\"}}", "\u{7f}".repeat(1400));
    assert!(json.len() <= SessionData::MAX_LEN);
    let data = SessionData::parse(&json).unwrap();
    assert_eq!(data.header_value(), Err(DataError::TooLongToForward));
    assert_eq!(
        SessionData::parse_for_issue(&json),
        Err(DataError::TooLongToForward)
    );
    // The longest that fits: 1,332 DELs escape to 7,992 bytes, 8,000 with the rest.
    let json = format!("{{\"a\":\"{}\"}}", "\u{7f}".repeat(1332));
    let data = SessionData::parse_for_issue(&json).unwrap();
    assert_eq!(
        data.header_value().unwrap().len(),
        SessionData::MAX_HEADER_LEN
    );
}

proptest::proptest! {
    /// For any session data that can be issued, the header form is visible ASCII and parses
    /// back to the same JSON value.
    #[test]
    fn header_value_round_trips(
        members in proptest::collection::btree_map(
            "\\PC{0,8}|[\u{0}-\u{a0}]{0,8}",
            proptest::prop_oneof![
                "\\PC{0,12}".prop_map(serde_json::Value::from),
                "[\u{0}-\u{ff}\u{2028}\u{1f512}]{0,12}".prop_map(serde_json::Value::from),
                proptest::num::i64::ANY.prop_map(serde_json::Value::from),
                proptest::bool::ANY.prop_map(serde_json::Value::from),
            ],
            0..6,
        ),
    ) {
        let value = serde_json::Value::Object(members.into_iter().collect());
        let Ok(data) = SessionData::parse_for_issue(&value.to_string()) else {
            return Ok(());
        };
        let header = data.header_value().unwrap();
        proptest::prop_assert!(header.bytes().all(|b| (0x20..0x7f).contains(&b)));
        let back: serde_json::Value = serde_json::from_str(&header).unwrap();
        proptest::prop_assert_eq!(back, value);
    }
}

#[test]
fn length_bound() {
    let fits = format!("{{\"a\":\"{}\"}}", "x".repeat(SessionData::MAX_LEN - 8));
    assert_eq!(fits.len(), SessionData::MAX_LEN);
    assert!(SessionData::parse(&fits).is_ok());
    let over = format!("{{\"a\":\"{}\"}}", "x".repeat(SessionData::MAX_LEN - 7));
    assert_eq!(SessionData::parse(&over), Err(DataError::TooLong));
}
