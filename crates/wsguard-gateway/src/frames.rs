//! A frame-header watch on a client's byte stream: the fragment-count cap and the
//! message-assembly deadline, which the WebSocket codec (it hands over whole messages) cannot
//! see.
//!
//! Owns [`FrameWatch`], an `AsyncRead + AsyncWrite` wrapper that reads each frame's header as
//! the bytes go by (payloads are skipped by arithmetic, never copied or buffered) and fails the
//! read with a [`Violation`] when a fragmented message has too many fragments, or when any
//! message (fragmented, or one frame trickled in slowly) takes too long to complete from its
//! first byte, including when the client simply stops sending mid-message. It does not judge
//! anything else: masking, opcodes, UTF-8 and sizes are the codec's; the relay turns a
//! violation into a close frame.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::reason::CloseReason;

/// Why a client's frames were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// More fragments in one message than allowed.
    #[error("too many fragments in one message")]
    TooManyFragments,
    /// A fragmented message was not completed in time.
    #[error("message not completed in time")]
    AssemblyTimeout,
    /// A text frame still arriving already holds invalid UTF-8.
    #[error("invalid UTF-8 in a text frame")]
    InvalidUtf8,
}

impl Violation {
    /// The close reason the gateway answers with.
    pub fn reason(self) -> CloseReason {
        match self {
            Violation::TooManyFragments => CloseReason::TooManyFragments,
            Violation::AssemblyTimeout => CloseReason::AssemblyTimeout,
            Violation::InvalidUtf8 => CloseReason::InvalidPayload,
        }
    }

    /// The violation carried by an I/O error from a [`FrameWatch`], if any.
    pub fn from_io(e: &io::Error) -> Option<Violation> {
        e.get_ref()?.downcast_ref::<Violation>().copied()
    }
}

/// Limits watched (a fragment count of 0 and no deadline watch nothing).
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Most frames one message may span.
    pub max_fragments: u32,
    /// Most time from a message's first fragment to its last.
    pub assembly_timeout: Option<Duration>,
}

/// The header parser's state: a tiny fixed buffer, no allocation.
#[derive(Debug, Default)]
struct Parser {
    header: [u8; 14],
    have: u8,
    payload_left: u64,
    /// Fragments of the message in progress (0: none in progress).
    fragments: u32,
    /// The message in progress is text.
    text: bool,
    /// The frame in progress carries text (a text frame, or a continuation of a text message).
    frame_text: bool,
    /// The frame's masking key (client frames are masked) and how far into its payload we are.
    mask: [u8; 4],
    payload_pos: u64,
    /// UTF-8 of a text frame that arrives over several reads, checked as it arrives.
    utf8: Utf8,
}

/// Incremental UTF-8 check (the well-formed sequences of Unicode's table 3-7), so that invalid
/// text inside a frame still in flight is refused at once rather than when the frame completes.
/// Only frames that span reads are checked here; whole frames are checked by the codec.
#[derive(Debug, Default, Clone, Copy)]
struct Utf8 {
    /// Continuation bytes still expected, and the range the next one must fall in.
    need: u8,
    lo: u8,
    hi: u8,
    /// Started mid-message: skip continuation bytes left over from earlier frames.
    resync: bool,
}

impl Utf8 {
    fn fresh(mid_message: bool) -> Utf8 {
        Utf8 {
            resync: mid_message,
            ..Utf8::default()
        }
    }

    /// Feeds one byte; false if the text can no longer be valid UTF-8.
    fn step(&mut self, b: u8) -> bool {
        if self.need > 0 {
            if b < self.lo || b > self.hi {
                return false;
            }
            self.need -= 1;
            (self.lo, self.hi) = (0x80, 0xbf);
            return true;
        }
        if self.resync {
            if (0x80..=0xbf).contains(&b) {
                return true;
            }
            self.resync = false;
        }
        (self.need, self.lo, self.hi) = match b {
            0x00..=0x7f => return true,
            0xc2..=0xdf => (1, 0x80, 0xbf),
            0xe0 => (2, 0xa0, 0xbf),
            0xe1..=0xec | 0xee..=0xef => (2, 0x80, 0xbf),
            0xed => (2, 0x80, 0x9f),
            0xf0 => (3, 0x90, 0xbf),
            0xf1..=0xf3 => (3, 0x80, 0xbf),
            0xf4 => (3, 0x80, 0x8f),
            _ => return false,
        };
        true
    }
}

/// What a completed header means for the message in progress.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    None,
    /// A fragmented message started.
    Started,
    /// One more fragment arrived.
    Continued(u32),
    /// The message in progress completed with its last fragment (the count).
    Finished(u32),
}

impl Parser {
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let len7 = self.header[1] & 0x7f;
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        }
    }

    /// Feeds bytes; calls `on` for each completed header. False if a text frame in flight
    /// already holds invalid UTF-8.
    fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Event)) -> bool {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                // A text frame that does not complete in this read: check what has arrived.
                if self.frame_text && (skip as u64) < self.payload_left {
                    for (i, b) in bytes[..skip].iter().enumerate() {
                        let k = self.mask[((self.payload_pos + i as u64) % 4) as usize];
                        if !self.utf8.step(b ^ k) {
                            return false;
                        }
                    }
                }
                self.payload_pos += skip as u64;
                self.payload_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let need = self.header_len();
            let take = (need - usize::from(self.have)).min(bytes.len());
            let at = usize::from(self.have);
            self.header[at..at + take].copy_from_slice(&bytes[..take]);
            self.have += take as u8;
            bytes = &bytes[take..];
            // The length may only now be known (after the second byte).
            if usize::from(self.have) < self.header_len() {
                continue;
            }
            let fin = self.header[0] & 0x80 != 0;
            let opcode = self.header[0] & 0x0f;
            self.payload_left = self.payload_len();
            let hl = self.header_len();
            self.mask = if self.header[1] & 0x80 != 0 {
                [
                    self.header[hl - 4],
                    self.header[hl - 3],
                    self.header[hl - 2],
                    self.header[hl - 1],
                ]
            } else {
                [0; 4]
            };
            self.payload_pos = 0;
            match opcode {
                1 => self.text = true,
                2 => self.text = false,
                _ => {}
            }
            self.frame_text = opcode == 1 || (opcode == 0 && self.text);
            self.utf8 = Utf8::fresh(opcode == 0);
            self.have = 0;
            let event = match (opcode, fin) {
                // Control frames may come between fragments; they are not fragments.
                (8..=15, _) => Event::None,
                (0, _) if self.fragments == 0 => Event::None, // the codec refuses it
                (0, false) => {
                    self.fragments = self.fragments.saturating_add(1);
                    Event::Continued(self.fragments)
                }
                (0, true) => {
                    let n = self.fragments.saturating_add(1);
                    self.fragments = 0;
                    Event::Finished(n)
                }
                (_, false) => {
                    self.fragments = 1;
                    Event::Started
                }
                (_, true) => Event::None,
            };
            on(event);
        }
        true
    }
}

/// The wrapper. Writes pass straight through.
#[derive(Debug)]
pub struct FrameWatch<S> {
    inner: S,
    limits: FrameLimits,
    parser: Parser,
    /// Armed while a fragmented message is in progress; allocated on first use only.
    deadline: Option<Pin<Box<Sleep>>>,
    armed: bool,
    violation: Option<Violation>,
}

impl<S> FrameWatch<S> {
    /// Watches `inner`'s incoming frames.
    pub fn new(inner: S, limits: FrameLimits) -> Self {
        FrameWatch {
            inner,
            limits,
            parser: Parser::default(),
            deadline: None,
            armed: false,
            violation: None,
        }
    }

    fn observe(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let limits = self.limits;
        let mut violation = self.violation;
        let utf8_ok = self.parser.feed(bytes, |event| match event {
            Event::Continued(n) | Event::Finished(n)
                if limits.max_fragments > 0 && n > limits.max_fragments =>
            {
                violation = violation.or(Some(Violation::TooManyFragments));
            }
            _ => {}
        });
        if !utf8_ok {
            violation = violation.or(Some(Violation::InvalidUtf8));
        }
        self.violation = violation;
        // A message is in progress from its first byte until its last: a partial header or
        // payload, or a fragmented message not yet finished. The deadline runs from the moment
        // it starts, however its bytes are spread over reads.
        let busy =
            self.parser.fragments > 0 || self.parser.payload_left > 0 || self.parser.have > 0;
        if !busy {
            self.armed = false;
        } else if !self.armed
            && let Some(after) = self.limits.assembly_timeout
        {
            let at = Instant::now() + after;
            match &mut self.deadline {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
    }
}

fn violated(v: Violation) -> io::Error {
    io::Error::other(v)
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameWatch<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(v) = this.violation {
            return Poll::Ready(Err(violated(v)));
        }
        if this.armed
            && let Some(sleep) = &mut this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            this.violation = Some(Violation::AssemblyTimeout);
            return Poll::Ready(Err(violated(Violation::AssemblyTimeout)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.observe(&buf.filled()[before..]);
        match this.violation {
            Some(v) => Poll::Ready(Err(violated(v))),
            None => Poll::Ready(Ok(())),
        }
    }
}

write_through!(FrameWatch);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A client frame (masked with a zero key) of `opcode` with `len` payload bytes.
    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0; 4]);
        f.extend(std::iter::repeat_n(b'a', len));
        f
    }

    fn events(bytes: &[u8], chunk: usize) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            assert!(p.feed(c, |e| out.push(e)));
        }
        out
    }

    #[test]
    fn headers_are_found_at_any_split() {
        let mut stream = frame(false, 1, 3);
        stream.extend(frame(true, 9, 4)); // a ping between fragments
        stream.extend(frame(false, 0, 200));
        stream.extend(frame(false, 0, 70_000));
        stream.extend(frame(true, 0, 0));
        stream.extend(frame(true, 2, 5));
        let want = vec![
            Event::Started,
            Event::None,
            Event::Continued(2),
            Event::Continued(3),
            Event::Finished(4),
            Event::None,
        ];
        for chunk in [1, 2, 3, 7, 64, 4096, usize::MAX] {
            assert_eq!(events(&stream, chunk), want, "chunk {chunk}");
        }
    }

    /// Reads everything `stream` sends (an empty part is an hour's pause on the paused test
    /// clock) through a watch: the byte count, or the violation.
    #[test]
    fn utf8_check_matches_std_at_every_split() {
        let samples: [&[u8]; 9] = [
            "héllo wörld ✓ 𝄞".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\xe0\x80\xaf",
            b"\xf0\x8f\xbf\xbf",
            b"\xed\x9f\xbf\xee\x80\x80",
            b"\xff",
            b"ok\xf0\x9f\x98",
        ];
        for text in samples {
            let mut u = Utf8::fresh(false);
            let ok = text.iter().all(|b| u.step(*b));
            // Valid, or a valid prefix cut short (complete later): never a false refusal.
            let valid_prefix = match std::str::from_utf8(text) {
                Ok(_) => true,
                Err(e) => e.error_len().is_none(),
            };
            assert_eq!(ok, valid_prefix, "{text:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_utf8_in_a_frame_still_arriving_is_refused_at_once() {
        let mut text = b"valid start ".to_vec();
        text.extend_from_slice(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80");
        text.extend_from_slice(b" and the rest");
        // A masked frame with a non-zero key, sent in chops with pauses between them.
        let key = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut f = vec![0x81u8, 0x80 | text.len() as u8];
        f.extend_from_slice(&key);
        f.extend(text.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        let chops = vec![
            f[..10].to_vec(),
            Vec::new(),
            f[10..32].to_vec(),
            Vec::new(),
            f[32..].to_vec(),
        ];
        // No assembly deadline here: the pauses are long, the refusal must come from the text.
        let patient = FrameLimits {
            assembly_timeout: None,
            ..LIMITS
        };
        assert_eq!(read_all(chops, patient).await, Err(Violation::InvalidUtf8));
        // Valid text in the same chops passes, and binary frames are never read as text.
        let good = "κόσμε and more κόσμε and more".as_bytes();
        let mut g = vec![0x81u8, 0x80 | good.len() as u8];
        g.extend_from_slice(&key);
        g.extend(good.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        let chops = vec![g[..9].to_vec(), Vec::new(), g[9..].to_vec()];
        assert!(read_all(chops, patient).await.is_ok());
        let mut bin = f.clone();
        bin[0] = 0x82;
        let chops = vec![bin[..10].to_vec(), Vec::new(), bin[10..].to_vec()];
        assert!(read_all(chops, patient).await.is_ok());
    }

    async fn read_all(stream: Vec<Vec<u8>>, limits: FrameLimits) -> Result<usize, Violation> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut watch = FrameWatch::new(rx, limits);
        tokio::spawn(async move {
            for part in stream {
                if part.is_empty() {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                tx.write_all(&part).await.unwrap();
            }
        });
        let mut buf = [0u8; 512];
        let mut n = 0;
        let out = loop {
            match watch.read(&mut buf).await {
                Ok(0) => break Ok(n),
                Ok(k) => n += k,
                Err(e) => break Err(Violation::from_io(&e).unwrap()),
            }
        };
        // Sticky: the next read fails the same way.
        if let Err(v) = out {
            let e = watch.read(&mut buf).await.unwrap_err();
            assert_eq!(Violation::from_io(&e), Some(v));
        }
        out
    }

    fn fragments(count: usize) -> Vec<u8> {
        let mut s = frame(false, 1, 1);
        for _ in 2..count {
            s.extend(frame(false, 0, 1));
        }
        s.extend(frame(true, 0, 1));
        s
    }

    const LIMITS: FrameLimits = FrameLimits {
        max_fragments: 4,
        assembly_timeout: Some(Duration::from_secs(10)),
    };

    #[tokio::test(start_paused = true)]
    async fn fragment_cap_at_the_edge() {
        assert_eq!(
            read_all(vec![fragments(4)], LIMITS).await,
            Ok(fragments(4).len())
        );
        assert_eq!(
            read_all(vec![fragments(5)], LIMITS).await,
            Err(Violation::TooManyFragments)
        );
        // The count starts again with each message.
        let mut two = fragments(4);
        two.extend(fragments(4));
        assert_eq!(read_all(vec![two.clone()], LIMITS).await, Ok(two.len()));
    }

    #[tokio::test(start_paused = true)]
    async fn assembly_deadline_even_when_the_client_goes_quiet() {
        // First fragment, then nothing for an hour: the deadline fires while the read waits.
        let stalled = vec![frame(false, 1, 1), Vec::new(), frame(true, 0, 1)];
        assert_eq!(
            read_all(stalled, LIMITS).await,
            Err(Violation::AssemblyTimeout)
        );
        // Whole messages may be any time apart.
        let apart = vec![frame(true, 1, 1), Vec::new(), frame(true, 1, 1)];
        assert!(read_all(apart, LIMITS).await.is_ok());
        // A message completed before the pause disarms the deadline.
        let done = vec![fragments(3), Vec::new(), frame(true, 2, 1)];
        assert!(read_all(done, LIMITS).await.is_ok());
        // One unfragmented frame whose payload stops halfway: the same deadline.
        let big = frame(true, 2, 1000);
        let halfway = vec![big[..500].to_vec(), Vec::new(), big[500..].to_vec()];
        assert_eq!(
            read_all(halfway, LIMITS).await,
            Err(Violation::AssemblyTimeout)
        );
        // Even a header cut in two.
        let cut = vec![big[..1].to_vec(), Vec::new(), big[1..].to_vec()];
        assert_eq!(read_all(cut, LIMITS).await, Err(Violation::AssemblyTimeout));
    }
}
