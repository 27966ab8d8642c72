//! The WebSocket wire format as the relay needs it (RFC 6455 §5): frame headers, masking,
//! UTF-8 checked piece by piece, close payloads, and frame encoding.
//!
//! Owns the byte-level rules: which headers are valid (RSV2 and RSV3 never set; RSV1 only on
//! the first frame of a data message, where permessage-deflate marks a compressed message:
//! whether that extension was agreed is the relay's to check; known opcodes; control frames
//! short and final; masked from clients, unmasked from servers; no 64-bit length with the top
//! bit set), which close payloads are valid, and how a frame is written. Pure: no I/O, no clock, no allocation except in [`encode`], which
//! appends to a buffer it is given. It must not decide policy (sizes beyond the protocol's,
//! kinds, rates): that is `policy`'s, and the relay's to apply.

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Continuation of a fragmented message.
    Continue,
    /// First frame of a text message.
    Text,
    /// First frame of a binary message.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Op {
    fn from_bits(b: u8) -> Option<Op> {
        Some(match b {
            0 => Op::Continue,
            1 => Op::Text,
            2 => Op::Binary,
            8 => Op::Close,
            9 => Op::Ping,
            10 => Op::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Op::Continue => 0,
            Op::Text => 1,
            Op::Binary => 2,
            Op::Close => 8,
            Op::Ping => 9,
            Op::Pong => 10,
        }
    }

    /// Close, ping or pong.
    pub fn is_control(self) -> bool {
        matches!(self, Op::Close | Op::Ping | Op::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last frame of its message.
    pub fin: bool,
    /// Opcode.
    pub op: Op,
    /// RSV1: the first frame of a compressed message (permessage-deflate, RFC 7692 §6).
    pub rsv1: bool,
    /// Masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// Payload length as declared.
    pub len: u64,
    /// Length of the header itself (2 to 14 bytes).
    pub header_len: usize,
}

/// A frame that breaks the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// RSV2 or RSV3 set, or RSV1 on a control frame or a continuation.
    Reserved,
    /// Unknown opcode.
    Opcode,
    /// A control frame that is fragmented or longer than 125 bytes.
    Control,
    /// An unmasked frame from a client, or a masked one from a server.
    Masking,
    /// A 64-bit length with its most significant bit set.
    Length,
}

/// Which end sent the frames being parsed (it decides the masking rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// A client: every frame must be masked.
    Client,
    /// A server: no frame may be masked.
    Server,
}

/// Parses the header at the start of `buf`: `Ok(None)` if `buf` does not hold all of it yet.
pub fn parse_header(buf: &[u8], from: From) -> Result<Option<Header>, Malformed> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x30 != 0 {
        return Err(Malformed::Reserved);
    }
    let op = Op::from_bits(b0 & 0x0f).ok_or(Malformed::Opcode)?;
    let rsv1 = b0 & 0x40 != 0;
    if rsv1 && !matches!(op, Op::Text | Op::Binary) {
        return Err(Malformed::Reserved);
    }
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    if masked != (from == From::Client) {
        return Err(Malformed::Masking);
    }
    if op.is_control() && (!fin || b1 & 0x7f > 125) {
        return Err(Malformed::Control);
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let len = u64::from_be_bytes(a);
                if len >> 63 != 0 {
                    return Err(Malformed::Length);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        op,
        rsv1,
        mask,
        len,
        header_len: at,
    }))
}

/// XORs `data` with `key`, starting `offset` bytes into the payload (so a payload can be
/// (un)masked in pieces).
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let mut k = key;
    k.rotate_left(offset % 4);
    let (head, rest) = data.split_at_mut(data.len().min((4 - offset % 4) % 4));
    for (i, b) in head.iter_mut().enumerate() {
        *b ^= k[i];
    }
    // Aligned to the key: 16 bytes at a time, as one 128-bit XOR each.
    let word = u32::from_ne_bytes(key);
    let pattern = u128::from(word) * 0x0000_0001_0000_0001_0000_0001_0000_0001;
    let mut chunks = rest.chunks_exact_mut(16);
    for c in &mut chunks {
        let mut a = [0u8; 16];
        a.copy_from_slice(c);
        c.copy_from_slice(&(u128::from_ne_bytes(a) ^ pattern).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// UTF-8 checked in pieces: a sequence cut between pieces is carried over, and invalid bytes
/// are refused as soon as they are seen (not when the message ends).
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8 {
    carry: [u8; 4],
    carried: u8,
}

impl Utf8 {
    /// Checks the next piece; false if the text can no longer be valid.
    pub fn feed(&mut self, mut piece: &[u8]) -> bool {
        while self.carried > 0 {
            let Some((&b, rest)) = piece.split_first() else {
                return true;
            };
            self.carry[usize::from(self.carried)] = b;
            self.carried += 1;
            piece = rest;
            match std::str::from_utf8(&self.carry[..usize::from(self.carried)]) {
                Ok(_) => self.carried = 0,
                Err(e) if e.error_len().is_some() => return false,
                Err(_) if self.carried == 4 => return false,
                Err(_) => {}
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => true,
            Err(e) if e.error_len().is_some() => false,
            Err(e) => {
                let tail = &piece[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carried = tail.len() as u8;
                true
            }
        }
    }

    /// True if no sequence is left unfinished (checked when a text message ends).
    pub fn complete(&self) -> bool {
        self.carried == 0
    }
}

/// A close frame's payload, checked: `Ok(None)` for an empty one, else its code; `Err` with
/// the close code the frame deserves (1002 for a bad length or code, 1007 for a reason that
/// is not UTF-8).
pub fn close_code(payload: &[u8]) -> Result<Option<u16>, u16> {
    match payload {
        [] => Ok(None),
        [_] => Err(1002),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !close_code_allowed(code) {
                return Err(1002);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(1007);
            }
            Ok(Some(code))
        }
    }
}

/// Codes a peer may put on the wire (RFC 6455 §7.4 and the IANA registry): not 1004–1006,
/// not 1015, nothing reserved or out of range.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// Appends one frame to `out`, masked with `mask` if given.
pub fn encode(out: &mut Vec<u8>, fin: bool, op: Op, mask: Option<[u8; 4]>, payload: &[u8]) {
    frame(out, u8::from(fin) << 7 | op.bits(), mask, payload);
}

/// Appends one whole compressed message (a final frame with RSV1 set, RFC 7692 §6) to `out`,
/// masked with `mask` if given.
pub fn encode_compressed(out: &mut Vec<u8>, op: Op, mask: Option<[u8; 4]>, payload: &[u8]) {
    frame(out, 0x80 | 0x40 | op.bits(), mask, payload);
}

fn frame(out: &mut Vec<u8>, b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) {
    let len = payload.len();
    out.push(b0);
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(m | 126);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let start = out.len() + if mask.is_some() { 4 } else { 0 };
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
    out.extend_from_slice(payload);
    if let Some(k) = mask {
        apply_mask(&mut out[start..], k, 0);
    }
}

/// A close frame's payload: code and reason (the reason cut to fit 123 bytes on a character
/// boundary).
pub fn close_payload(code: u16, reason: &str) -> ([u8; 125], usize) {
    let mut p = [0u8; 125];
    p[..2].copy_from_slice(&code.to_be_bytes());
    let mut n = reason.len().min(123);
    while !reason.is_char_boundary(n) {
        n -= 1;
    }
    p[2..2 + n].copy_from_slice(&reason.as_bytes()[..n]);
    (p, 2 + n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn headers() {
        // Masked 5-byte text frame from a client.
        let h = parse_header(&[0x81, 0x85, 1, 2, 3, 4], From::Client)
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            Header {
                fin: true,
                op: Op::Text,
                rsv1: false,
                mask: Some([1, 2, 3, 4]),
                len: 5,
                header_len: 6
            }
        );
        // Incomplete headers ask for more.
        for cut in [&[0x81][..], &[0x82, 0xfe, 0], &[0x82, 0x85, 1, 2]] {
            assert_eq!(parse_header(cut, From::Client), Ok(None));
        }
        let h = parse_header(&[0x02, 126, 0x01, 0x00], From::Server)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.op, h.len, h.header_len),
            (false, Op::Binary, 256, 4)
        );
        let mut long = vec![0x82, 127];
        long.extend_from_slice(&(1u64 << 20).to_be_bytes());
        assert_eq!(
            parse_header(&long, From::Server).unwrap().unwrap().len,
            1 << 20
        );
        long[2] = 0x80;
        assert_eq!(parse_header(&long, From::Server), Err(Malformed::Length));
    }

    #[test]
    fn protocol_errors() {
        // RSV2, RSV3; RSV1 on a continuation or a control frame.
        for b0 in [0xa1u8, 0x91, 0xc0, 0xc9, 0xca, 0xc8] {
            assert_eq!(
                parse_header(&[b0, 0x80], From::Client),
                Err(Malformed::Reserved),
                "{b0:#x}"
            );
        }
        assert_eq!(
            parse_header(&[0x83, 0x80], From::Client),
            Err(Malformed::Opcode)
        );
        assert_eq!(
            parse_header(&[0x8b, 0x80], From::Client),
            Err(Malformed::Opcode)
        );
        assert_eq!(
            parse_header(&[0x09, 0x80], From::Client),
            Err(Malformed::Control)
        );
        assert_eq!(
            parse_header(&[0x89, 0xfe], From::Client),
            Err(Malformed::Control)
        );
        assert_eq!(
            parse_header(&[0x81, 0x00], From::Client),
            Err(Malformed::Masking)
        );
        assert_eq!(
            parse_header(&[0x81, 0x80], From::Server),
            Err(Malformed::Masking)
        );
    }

    #[test]
    fn close_payloads() {
        assert_eq!(close_code(&[]), Ok(None));
        assert_eq!(close_code(&[3]), Err(1002));
        assert_eq!(close_code(&1000u16.to_be_bytes()), Ok(Some(1000)));
        for bad in [
            0u16, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535,
        ] {
            assert_eq!(close_code(&bad.to_be_bytes()), Err(1002), "{bad}");
        }
        for good in [1000u16, 1003, 1007, 1011, 1012, 1013, 3000, 4999] {
            assert_eq!(close_code(&good.to_be_bytes()), Ok(Some(good)), "{good}");
        }
        assert_eq!(close_code(&[0x03, 0xe8, 0xff]), Err(1007));
        let (p, n) = close_payload(1008, &"é".repeat(100));
        assert_eq!(n, 2 + 122);
        assert_eq!(close_code(&p[..n]), Ok(Some(1008)));
    }

    #[test]
    fn rsv1_marks_the_first_frame_of_a_data_message() {
        for (b0, op) in [(0xc1u8, Op::Text), (0x42, Op::Binary)] {
            let h = parse_header(&[b0, 0x80, 0, 0, 0, 0], From::Client)
                .unwrap()
                .unwrap();
            assert_eq!((h.op, h.rsv1), (op, true));
        }
        let mut out = Vec::new();
        encode_compressed(&mut out, Op::Text, None, b"xy");
        let h = parse_header(&out, From::Server).unwrap().unwrap();
        assert_eq!((h.fin, h.op, h.rsv1, h.len), (true, Op::Text, true, 2));
        assert_eq!(&out[h.header_len..], b"xy");
    }

    #[test]
    fn encode_round_trips() {
        for len in [0usize, 5, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for mask in [None, Some([9, 8, 7, 6])] {
                let mut out = Vec::new();
                encode(&mut out, true, Op::Binary, mask, &payload);
                let from = if mask.is_some() {
                    From::Client
                } else {
                    From::Server
                };
                let h = parse_header(&out, from).unwrap().unwrap();
                assert_eq!((h.len as usize, h.header_len + len), (len, out.len()));
                let body = &mut out[h.header_len..];
                if let Some(k) = h.mask {
                    apply_mask(body, k, 0);
                }
                assert_eq!(body, &payload[..]);
            }
        }
    }

    proptest! {
        #[test]
        fn header_split_anywhere_asks_for_more(
            len in prop_oneof![0usize..126, 126usize..70_000],
            key in any::<[u8; 4]>(),
            masked in any::<bool>(),
        ) {
            let mut out = Vec::new();
            let mask = masked.then_some(key);
            encode(&mut out, true, Op::Binary, mask, &vec![0u8; len]);
            let from = if masked { From::Client } else { From::Server };
            let h = parse_header(&out, from).unwrap().unwrap();
            for cut in 0..h.header_len {
                prop_assert_eq!(parse_header(&out[..cut], from), Ok(None));
            }
            prop_assert_eq!(parse_header(&out[..h.header_len], from), Ok(Some(h)));
            prop_assert_eq!((h.len as usize, h.mask), (len, mask));
        }

        #[test]
        fn masking_in_pieces_equals_masking_at_once(
            data in proptest::collection::vec(any::<u8>(), 0..100),
            key in any::<[u8; 4]>(),
            cuts in proptest::collection::vec(0usize..100, 0..4),
        ) {
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut pieces = data.clone();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut at = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                apply_mask(&mut pieces[at..c], key, at);
                at = c;
            }
            prop_assert_eq!(&whole, &pieces);
            let naive: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            prop_assert_eq!(whole, naive);
        }

        #[test]
        fn utf8_in_pieces_agrees_with_std(
            data in proptest::collection::vec(any::<u8>(), 0..40),
            text in "\\PC{0,12}",
            cut1 in 0usize..60, cut2 in 0usize..60,
            use_text in any::<bool>(),
        ) {
            let bytes = if use_text { text.into_bytes() } else { data };
            let (a, b) = (cut1.min(bytes.len()), cut2.min(bytes.len()));
            let (a, b) = (a.min(b), a.max(b));
            let mut u = Utf8::default();
            let ok = u.feed(&bytes[..a]) && u.feed(&bytes[a..b]) && u.feed(&bytes[b..]) && u.complete();
            prop_assert_eq!(ok, std::str::from_utf8(&bytes).is_ok());
        }
    }

    #[test]
    fn utf8_fails_fast() {
        // Invalid in the first piece: refused before the rest arrives.
        let mut u = Utf8::default();
        assert!(!u.feed(&[b'a', 0xff]));
        // A cut sequence is fine until it cannot complete.
        let mut u = Utf8::default();
        assert!(u.feed("κ".as_bytes().split_at(1).0));
        assert!(!u.complete());
        assert!(!u.feed(b"a"));
        // Surrogates and overlongs are refused at their second byte.
        let mut u = Utf8::default();
        assert!(!u.feed(&[0xed, 0xa0]));
        let mut u = Utf8::default();
        assert!(!u.feed(&[0xc0]) || !u.feed(&[0x80]));
    }
}
