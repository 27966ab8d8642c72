//! Message payloads for the echo load: a 32-byte ASCII header (sequence number and scheduled
//! send time, 16 hex digits each) followed by ASCII filler up to the requested size.
//!
//! Owns building a payload and checking an echo against it. Pure: no I/O and no clock (the send
//! time is passed in as nanoseconds since the run's start).

use tokio_tungstenite::tungstenite::Message;

/// Bytes taken by the header; the smallest payload size.
pub const HEADER_LEN: usize = 32;

/// Builds and checks payloads of one size and kind.
#[derive(Debug, Clone)]
pub struct Payloads {
    /// The whole payload with the header bytes zeroed out as '0'; only the header changes.
    template: String,
    binary: bool,
}

/// What an echo carried, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub sent_ns: u64,
}

/// Why an echo does not match what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("expected a {expected} message, got {got}")]
    Kind {
        expected: &'static str,
        got: &'static str,
    },
    #[error("expected {expected} bytes, got {got}")]
    Length { expected: usize, got: usize },
    #[error("header is not two 16-digit hex numbers")]
    Header,
    #[error("filler bytes differ")]
    Filler,
}

impl Payloads {
    /// Payloads of `size` bytes (at least [`HEADER_LEN`]; smaller sizes are raised to it).
    pub fn new(size: usize, binary: bool) -> Self {
        const FILLER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let size = size.max(HEADER_LEN);
        let template = (0..size)
            .map(|i| {
                if i < HEADER_LEN {
                    '0'
                } else {
                    char::from(FILLER[i % FILLER.len()])
                }
            })
            .collect();
        Self { template, binary }
    }

    /// Size of every payload in bytes.
    pub fn size(&self) -> usize {
        self.template.len()
    }

    /// The message with sequence number `seq` sent at `sent_ns`.
    pub fn message(&self, stamp: Stamp) -> Message {
        let mut s = String::with_capacity(self.template.len());
        s.push_str(&format!("{:016x}{:016x}", stamp.seq, stamp.sent_ns));
        s.push_str(self.template.get(HEADER_LEN..).unwrap_or_default());
        if self.binary {
            Message::Binary(s.into_bytes().into())
        } else {
            Message::Text(s.into())
        }
    }

    /// Checks an echoed data message and returns the stamp it carries.
    pub fn check(&self, msg: &Message) -> Result<Stamp, Mismatch> {
        let (data, got): (&[u8], _) = match msg {
            Message::Text(t) => (t.as_bytes(), "text"),
            Message::Binary(b) => (b, "binary"),
            _ => (&[], "control"),
        };
        let expected = if self.binary { "binary" } else { "text" };
        if got != expected {
            return Err(Mismatch::Kind { expected, got });
        }
        if data.len() != self.template.len() {
            return Err(Mismatch::Length {
                expected: self.template.len(),
                got: data.len(),
            });
        }
        let (header, filler) = data.split_at(HEADER_LEN);
        if filler != &self.template.as_bytes()[HEADER_LEN..] {
            return Err(Mismatch::Filler);
        }
        let hex = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
        };
        match (hex(&header[..16]), hex(&header[16..])) {
            (Some(seq), Some(sent_ns)) => Ok(Stamp { seq, sent_ns }),
            _ => Err(Mismatch::Header),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn round_trip_text_and_binary() {
        for binary in [false, true] {
            let p = Payloads::new(100, binary);
            let stamp = Stamp {
                seq: 7,
                sent_ns: 123_456_789,
            };
            let m = p.message(stamp);
            assert_eq!(m.is_binary(), binary);
            assert_eq!(m.len(), 100);
            assert_eq!(p.check(&m), Ok(stamp));
        }
    }

    #[test]
    fn small_sizes_are_raised_to_the_header() {
        let p = Payloads::new(1, false);
        assert_eq!(p.size(), HEADER_LEN);
        let m = p.message(Stamp {
            seq: u64::MAX,
            sent_ns: 0,
        });
        assert_eq!(m.len(), HEADER_LEN);
        assert_eq!(p.check(&m).unwrap().seq, u64::MAX);
    }

    #[test]
    fn mismatches_are_reported() {
        let p = Payloads::new(64, false);
        let good = p.message(Stamp { seq: 1, sent_ns: 2 });
        let text = good.to_text().unwrap().to_owned();

        let binary = Message::Binary(text.clone().into_bytes().into());
        assert!(matches!(p.check(&binary), Err(Mismatch::Kind { .. })));

        let short = Message::Text(text[..63].to_owned().into());
        assert!(matches!(p.check(&short), Err(Mismatch::Length { .. })));

        let mut filler = text.clone();
        filler.replace_range(40..41, "#");
        assert_eq!(
            p.check(&Message::Text(filler.into())),
            Err(Mismatch::Filler)
        );

        let mut header = text;
        header.replace_range(0..1, "z");
        assert_eq!(
            p.check(&Message::Text(header.into())),
            Err(Mismatch::Header)
        );
    }
}
