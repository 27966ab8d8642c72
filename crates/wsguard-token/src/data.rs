//! Session data: the application's JSON object carried in a session.
//!
//! Owns [`SessionData`] and its strict validation: a JSON object, at most [`SessionData::MAX_LEN`]
//! bytes and [`SessionData::MAX_DEPTH`] levels deep, with no duplicate key at any level, stored as
//! compact JSON text (no whitespace outside strings). Also owns the data's one header form
//! ([`SessionData::header_value`]): the same JSON value in visible ASCII, so every byte of it
//! reaches a backend unchanged. It must not interpret the data: the meaning belongs to the
//! application.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::{self, Write as _};

use compact_str::CompactString;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

/// A validated JSON object, kept as compact JSON text.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionData(CompactString);

/// Why session data was refused. Carries no input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Longer than [`SessionData::MAX_LEN`] bytes.
    #[error("session data is longer than {} bytes", SessionData::MAX_LEN)]
    TooLong,
    /// Not valid JSON.
    #[error("session data is not valid JSON")]
    Syntax,
    /// Valid JSON, but not an object.
    #[error("session data must be a JSON object")]
    NotObject,
    /// An object has the same key twice.
    #[error("session data has a duplicate key")]
    DuplicateKey,
    /// Nested deeper than [`SessionData::MAX_DEPTH`].
    #[error("session data is nested deeper than {} levels", SessionData::MAX_DEPTH)]
    TooDeep,
    /// Its header form ([`SessionData::header_value`]) is longer than
    /// [`SessionData::MAX_HEADER_LEN`] bytes: characters outside visible ASCII count six bytes
    /// each (twelve beyond U+FFFF), so the data could not reach a backend.
    #[error(
        "session data is too long to forward: over {} bytes once every character outside \
         visible ASCII is escaped as \\uXXXX",
        SessionData::MAX_HEADER_LEN
    )]
    TooLongToForward,
}

impl SessionData {
    /// Longest accepted data, in bytes of JSON text.
    pub const MAX_LEN: usize = 2048;
    /// Deepest accepted nesting (the top-level object is depth 1).
    pub const MAX_DEPTH: usize = 16;

    /// `{}`.
    pub fn empty() -> Self {
        SessionData(CompactString::const_new("{}"))
    }

    /// Validates JSON text and keeps it in compact form.
    pub fn parse(json: &str) -> Result<Self, DataError> {
        if json.len() > Self::MAX_LEN {
            return Err(DataError::TooLong);
        }
        // The fast path only answers for input without whitespace; otherwise look for some.
        let maybe_spaced = match flat::check(json.as_bytes()) {
            Some(verdict) => verdict.map(|()| false)?,
            None => {
                validate_with_serde(json)?;
                json.bytes()
                    .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            }
        };
        if maybe_spaced {
            // Possibly whitespace between tokens: re-serialize compactly. Rare on the verify path
            // (tokens minted here are already compact).
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|_| DataError::Syntax)?;
            let compact = value.to_string();
            if compact.len() > Self::MAX_LEN {
                return Err(DataError::TooLong);
            }
            return Ok(SessionData(compact.into()));
        }
        Ok(SessionData(CompactString::new(json)))
    }

    /// Longest header form ([`SessionData::header_value`]) in bytes: with the header's name,
    /// the line stays within 8 KiB, the most that common servers (nginx's default
    /// `large_client_header_buffers`) take in one header line.
    pub const MAX_HEADER_LEN: usize = 8000;

    /// The compact JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The data as one HTTP header value: the same JSON value, with every character outside
    /// visible ASCII and space (DEL, and anything beyond U+007F; controls are already escaped in
    /// valid JSON) written as a `\uXXXX` escape (a UTF-16 surrogate pair beyond U+FFFF). Valid
    /// JSON holds such characters only inside strings, where the escape means the same
    /// character, so a backend's JSON parser reads exactly this data back, whatever its HTTP
    /// layer does with bytes outside ASCII. Borrowed when nothing needs escaping (the usual
    /// case). Refused when longer than [`SessionData::MAX_HEADER_LEN`].
    pub fn header_value(&self) -> Result<Cow<'_, str>, DataError> {
        let text = self.as_json();
        let plain = |c: char| (' '..='~').contains(&c);
        let value = if text.chars().all(plain) {
            Cow::Borrowed(text)
        } else {
            let mut out = String::with_capacity(text.len() + 32);
            let mut units = [0u16; 2];
            for c in text.chars() {
                if plain(c) {
                    out.push(c);
                } else {
                    for u in c.encode_utf16(&mut units) {
                        // Writing to a String cannot fail.
                        let _ = write!(out, "\\u{u:04x}");
                    }
                }
            }
            Cow::Owned(out)
        };
        if value.len() > Self::MAX_HEADER_LEN {
            return Err(DataError::TooLongToForward);
        }
        Ok(value)
    }

    /// Validates JSON text for a new session: [`SessionData::parse`], and its header form must
    /// fit ([`SessionData::header_value`]), so every session issued can reach a backend whole.
    pub fn parse_for_issue(json: &str) -> Result<Self, DataError> {
        let data = Self::parse(json)?;
        data.header_value()?;
        Ok(data)
    }

    /// The data as a `serde_json::Value` (an object).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
    }
}

impl Default for SessionData {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionData({} bytes)", self.0.len())
    }
}

/// The general validator: serde_json walks the value, [`Strict`] refuses duplicates and depth.
pub(crate) fn validate_with_serde(json: &str) -> Result<(), DataError> {
    let why = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(json);
    let seed = Strict {
        depth: 0,
        why: &why,
    };
    let parsed = seed.deserialize(&mut de).and_then(|()| de.end());
    match (parsed, why.get()) {
        (Ok(()), None) => Ok(()),
        (_, Some(reason)) => Err(reason),
        (Err(_), None) => Err(DataError::Syntax),
    }
}

/// A fast path for the common shape of session data: a flat object whose keys have no escapes
/// and whose values are scalars (`{"role":"admin","n":3,"beta":true}`), without whitespace.
///
/// [`check`](flat::check) answers `Some(verdict)` only for input it fully understands and
/// `None` for anything else (nesting, escapes, whitespace, odd bytes), which then goes to the
/// serde_json validator. A property test checks that both always agree; the fast path exists
/// because the general one costs ~85 ns of a ~400 ns verification (BENCHMARKS.md).
mod flat {
    use super::DataError;

    pub(super) fn check(b: &[u8]) -> Option<Result<(), DataError>> {
        let mut i = 1;
        if b.first() != Some(&b'{') {
            return None;
        }
        if b.get(1) == Some(&b'}') {
            return (b.len() == 2).then_some(Ok(()));
        }
        let mut keys: [&[u8]; 16] = [&[]; 16];
        let mut n = 0;
        loop {
            let key = string(b, &mut i)?;
            if keys[..n].contains(&key) {
                return Some(Err(DataError::DuplicateKey));
            }
            if n == keys.len() {
                return None;
            }
            keys[n] = key;
            n += 1;
            if b.get(i) != Some(&b':') {
                return None;
            }
            i += 1;
            match b.get(i)? {
                b'"' => {
                    string(b, &mut i)?;
                }
                b't' => literal(b, &mut i, b"true")?,
                b'f' => literal(b, &mut i, b"false")?,
                b'n' => literal(b, &mut i, b"null")?,
                b'-' | b'0'..=b'9' => number(b, &mut i)?,
                _ => return None,
            }
            match b.get(i)? {
                b',' => i += 1,
                b'}' => return (i + 1 == b.len()).then_some(Ok(())),
                _ => return None,
            }
        }
    }

    /// A string without escapes or control characters, starting at `b[*i] == '"'`.
    fn string<'a>(b: &'a [u8], i: &mut usize) -> Option<&'a [u8]> {
        if b.get(*i) != Some(&b'"') {
            return None;
        }
        let start = *i + 1;
        let len = b
            .get(start..)?
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        let end = start + len;
        if b[end] != b'"' {
            return None;
        }
        *i = end + 1;
        Some(&b[start..end])
    }

    fn literal(b: &[u8], i: &mut usize, word: &[u8]) -> Option<()> {
        if b.get(*i..*i + word.len())? != word {
            return None;
        }
        *i += word.len();
        Some(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(b: &[u8], i: &mut usize) -> Option<()> {
        let digits = |i: &mut usize| {
            let n = b
                .get(*i..)
                .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
            *i += n;
            n
        };
        if b.get(*i) == Some(&b'-') {
            *i += 1;
        }
        match b.get(*i)? {
            b'0' => *i += 1,
            b'1'..=b'9' => {
                digits(i);
            }
            _ => return None,
        }
        if b.get(*i) == Some(&b'.') {
            *i += 1;
            if digits(i) == 0 {
                return None;
            }
        }
        if matches!(b.get(*i), Some(b'e' | b'E')) {
            *i += 1;
            if matches!(b.get(*i), Some(b'+' | b'-')) {
                *i += 1;
            }
            if digits(i) == 0 {
                return None;
            }
        }
        Some(())
    }
}

/// Walks a JSON value without building it, refusing duplicate keys and excess depth.
struct Strict<'a> {
    depth: usize,
    why: &'a Cell<Option<DataError>>,
}

impl Strict<'_> {
    fn fail<E: de::Error>(&self, reason: DataError) -> E {
        self.why.set(Some(reason));
        E::custom(reason)
    }

    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.depth == 0 {
            return Err(self.fail(DataError::NotObject));
        }
        Ok(())
    }

    fn child(&self) -> Strict<'_> {
        Strict {
            depth: self.depth + 1,
            why: self.why,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth == 0 {
            return Err(self.fail(DataError::NotObject));
        }
        if self.depth >= SessionData::MAX_DEPTH {
            return Err(self.fail(DataError::TooDeep));
        }
        while seq.next_element_seed(self.child())?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= SessionData::MAX_DEPTH {
            return Err(self.fail(DataError::TooDeep));
        }
        // Objects in session data are small (≤ 2 KiB in all), so a linear scan is cheaper than
        // hashing, and the first 8 keys live on the stack; the worst case is bounded by MAX_LEN.
        let mut keys: SmallVec<[Cow<'de, str>; 8]> = SmallVec::new();
        while let Some(Key(key)) = map.next_key()? {
            if keys.contains(&key) {
                return Err(self.fail(DataError::DuplicateKey));
            }
            keys.push(key);
            map.next_value_seed(self.child())?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy as _;

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
}
