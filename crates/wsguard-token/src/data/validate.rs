//! Parsing session data: [`SessionData::parse`] and the general validator.
//!
//! Owns the order of the checks (length bound, then the fast path of `flat.rs` or the general
//! validator, then compaction) and the general validator itself: serde_json walks the value
//! without building it, and [`Strict`] refuses a non-object, duplicate keys (escaped or not) and
//! nesting past [`SessionData::MAX_DEPTH`]. It must not keep anything of a refused input.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use compact_str::CompactString;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use smallvec::SmallVec;

use super::flat;
use super::{DataError, SessionData};

impl SessionData {
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
}

/// The general validator: serde_json walks the value, [`Strict`] refuses duplicates and depth.
pub(super) fn validate_with_serde(json: &str) -> Result<(), DataError> {
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
