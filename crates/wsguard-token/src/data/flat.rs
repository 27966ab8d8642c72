//! The fast path of session data validation, for the common shape: a flat object whose keys
//! have no escapes and whose values are scalars (`{"role":"admin","n":3,"beta":true}`), without
//! whitespace.
//!
//! [`check`] answers `Some(verdict)` only for input it fully understands and `None` for anything
//! else (nesting, escapes, whitespace, odd bytes), which then goes to the serde_json validator
//! (`validate.rs`). A property test checks that both always agree; the fast path exists because
//! the general one costs ~85 ns of a ~400 ns verification (BENCHMARKS.md). It must never accept
//! what the general validator refuses.

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
