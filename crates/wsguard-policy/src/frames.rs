//! The frame state machine of a relayed socket, over byte slices: what the relay does with the
//! bytes one read brings from a peer, and what it queues for the other.
//!
//! Owns the per-side state kept between reads ([`Half`]: an incomplete frame, a fragmented or
//! compressed message being assembled, UTF-8 of text as it arrives, bytes queued for the peer,
//! the closing handshake's reading mode), and [`frames`]: every complete frame in a read is
//! checked where it lies (header rules, sizes against the declared length, fragment order and
//! count, UTF-8), control frames answered, client messages judged whole by the route's policy
//! (inflated first when compressed, within the bounds), and the frames to forward moved to the
//! start of the buffer (client frames remasked with the gateway's key) or queued. It does no
//! I/O and reads no clock: the gateway's relay reads the sockets, writes what this module says,
//! and keeps the time (`liveness.rs` decides on it).

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::deflate::{self, Compression};
use crate::policy::{Seen, Verdict};
use crate::reason::CloseReason;
use crate::wire::{self, Op};

/// Where a relayed socket's traffic is counted (the gateway's metrics and the socket's own
/// counters).
pub trait Counters {
    /// A client message of `bytes` payload bytes went upstream.
    fn up(&self, bytes: u64);
    /// `bytes` payload bytes of an upstream frame went to the client; `message_end` when the
    /// frame ends a message.
    fn down(&self, bytes: u64, message_end: bool);
}

/// Counts nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCounters;

impl Counters for NoCounters {
    fn up(&self, _: u64) {}
    fn down(&self, _: u64, _: bool) {}
}

thread_local! {
    /// Deflate state shared by the thread's sockets, used one whole message at a time.
    static CODEC: RefCell<deflate::Codec> = RefCell::new(deflate::Codec::default());
    static MASK_STATE: Cell<u64> = Cell::new({
        let mut seed = [0u8; 8];
        // Masks protect intermediaries on the upstream path from client-chosen bytes: they need
        // to be unpredictable to clients, which never see them, not secret from the upstream.
        let _ = getrandom::fill(&mut seed);
        u64::from_ne_bytes(seed) | 1
    });
}

/// A fresh masking key (xorshift64*, seeded from the OS per thread).
pub fn mask_key() -> [u8; 4] {
    MASK_STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let b = (v >> 32) as u32;
        b.to_ne_bytes()
    })
}

/// Frame and message bounds for the client's side (the upstream's side is trusted more: its
/// frames are checked against the protocol and [`UPSTREAM_LIMITS`] only).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame.
    pub max_frame: u64,
    /// Largest message after reassembly.
    pub max_message: u64,
    /// Most frames one message may span (0: no bound).
    pub max_fragments: u32,
    /// Most time from a message's first byte to its last.
    pub assembly: Option<Duration>,
    /// Most a compressed message may inflate, as a multiple of its compressed size (past
    /// [`deflate::RATIO_FLOOR`]); `max_message` bounds its inflated size.
    pub max_inflate_ratio: Option<u32>,
}

/// Bounds on what an upstream may send: large, but not unbounded.
pub const UPSTREAM_LIMITS: Limits = Limits {
    max_frame: 16 << 20,
    max_message: 64 << 20,
    max_fragments: 0,
    assembly: None,
    max_inflate_ratio: None,
};

/// What reading a side does with its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Forward data, answer pings.
    Relay,
    /// Read and discard until the peer's close (a closing handshake in progress).
    Discard,
    /// Do not read.
    Off,
}

/// A data message in progress on one side.
#[derive(Debug, Clone, Copy)]
pub struct Msg {
    pub text: bool,
    pub compressed: bool,
    pub fragments: u32,
    pub len: u64,
}

/// One peer: what is kept for it between reads and writes (its socket is the caller's).
pub struct Half {
    pub from: wire::From,
    pub limits: Limits,
    pub reading: Reading,
    /// Read but not yet processed (an incomplete frame and what follows); usually empty.
    pub partial: Vec<u8>,
    /// Payload bytes of the frame at the head of `partial` already unmasked and checked.
    pub scanned: usize,
    /// Waiting to be written to this peer; usually empty.
    pub tx: Vec<u8>,
    /// The fragmented message in progress, if any.
    pub msg: Option<Msg>,
    pub utf8: wire::Utf8,
    /// A fragmented client message being assembled, or a compressed message of either side.
    pub assembled: Vec<u8>,
    /// permessage-deflate as this peer agreed it.
    pub deflate: Option<Compression>,
    /// Its close frame has arrived, or it is gone.
    pub done: bool,
    /// Written but not yet flushed by the stream (TLS may hold records when the socket is full).
    pub unflushed: bool,
}

impl Half {
    /// A fresh side: `read` holds bytes that came with the handshake.
    pub fn new(
        read: Vec<u8>,
        deflate: Option<Compression>,
        from: wire::From,
        limits: Limits,
    ) -> Self {
        Half {
            from,
            limits,
            reading: Reading::Relay,
            partial: read,
            scanned: 0,
            tx: Vec::new(),
            msg: None,
            utf8: wire::Utf8::default(),
            assembled: Vec::new(),
            deflate,
            done: false,
            unflushed: false,
        }
    }

    /// Bytes for this peer are waiting for it to take them.
    #[inline]
    pub fn waiting(&self) -> bool {
        !self.tx.is_empty() || self.unflushed
    }

    /// A message (or a frame of one) is partly received.
    pub fn busy(&self) -> bool {
        !self.partial.is_empty() || self.msg.is_some()
    }

    /// Queues a frame to this peer (masked if the peer is a server).
    pub fn queue(&mut self, op: Op, payload: &[u8]) {
        let mask = (self.from == wire::From::Server).then(mask_key);
        wire::encode(&mut self.tx, true, op, mask, payload);
    }

    /// `payload` deflated for this peer, if it agreed permessage-deflate (at a window zlib can
    /// produce). Every whole message is compressed, short ones too (a few bytes more): RFC 7692
    /// allows plain messages, but some clients (Autobahn's kosoku) mishandle them once
    /// compression is agreed.
    pub fn deflated(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let agreed = self.deflate?;
        CODEC.with(|c| c.borrow_mut().deflate(payload, agreed.send_window))
    }

    /// Queues one whole data message to this peer: compressed if `compress` and
    /// [`Self::deflated`] gives it, else as it is.
    pub fn queue_message(&mut self, op: Op, payload: &[u8], compress: bool) {
        let mask = (self.from == wire::From::Server).then(mask_key);
        match compress.then(|| self.deflated(payload)).flatten() {
            Some(packed) => wire::encode_compressed(&mut self.tx, op, mask, &packed),
            None => wire::encode(&mut self.tx, true, op, mask, payload),
        }
    }

    /// Its close frame arrived: answer it (with its code) and read it no more.
    pub fn answer_close(&mut self, code: Option<u16>) {
        self.queue_close(code, "");
        self.finished();
    }

    /// The other side closed: pass its close on, and read this side until its answer.
    pub fn pass_close(&mut self, code: Option<u16>, reason: &str) {
        self.queue_close(code, reason);
        self.reading = Reading::Discard;
    }

    /// Nothing more is read from this side.
    pub fn finished(&mut self) {
        self.done = true;
        self.reading = Reading::Off;
    }

    pub fn queue_close(&mut self, code: Option<u16>, reason: &str) {
        match code {
            Some(c) => {
                let (p, n) = wire::close_payload(c, reason);
                self.queue(Op::Close, &p[..n]);
            }
            None => self.queue(Op::Close, &[]),
        }
    }
}

/// Something that ends relaying as usual.
#[derive(Debug)]
pub enum Event {
    /// A peer's (valid) close frame: code and reason.
    Close(Peer, Option<u16>, String),
    /// A peer broke the protocol or a bound.
    Fault(Peer, CloseReason),
    /// The policy closes the socket.
    Policy(CloseReason),
    /// A peer's stream ended or failed.
    Gone(Peer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Client,
    Upstream,
}

/// What one frame turned out to be, once checked.
enum Frame {
    /// Forward the bytes where they lie (remasked if needed).
    InPlace,
    /// Already queued (or dropped); skip its bytes.
    Skip,
    /// Stop here.
    End(Event),
}

/// Every wire-format fault is a protocol error (1002).
fn fault_for(_: wire::Malformed) -> CloseReason {
    CloseReason::ProtocolError
}

fn close_reason_for(code: u16) -> CloseReason {
    if code == 1007 {
        CloseReason::InvalidPayload
    } else {
        CloseReason::ProtocolError
    }
}

/// What a round needs besides the two sides.
pub struct Ctx<'a, J> {
    /// Where what passes is counted.
    pub counts: &'a dyn Counters,
    pub judge: &'a mut J,
    pub activity: &'a mut u64,
    pub pong: &'a mut bool,
}

/// How many bytes the frame at the start of `buf` still lacks: 0 when it is whole (or already
/// known to be bad), `None` while its header is incomplete.
pub fn missing(buf: &[u8], from: wire::From) -> Option<u64> {
    match wire::parse_header(buf, from) {
        Ok(Some(h)) => Some((h.header_len as u64 + h.len).saturating_sub(buf.len() as u64)),
        Ok(None) => None,
        Err(_) => Some(0),
    }
}

pub fn other(p: Peer) -> Peer {
    match p {
        Peer::Client => Peer::Upstream,
        Peer::Upstream => Peer::Client,
    }
}

/// Checks the frames in `buf` (the bytes of one read, after anything kept from before).
/// Returns how many bytes were consumed, how many bytes at the start of `buf` are now frames to
/// forward as they lie (forwarded frames are moved down over skipped ones), and what stopped it.
pub fn frames<J>(
    peer: Peer,
    src: &mut Half,
    dst: &mut Half,
    ctx: &mut Ctx<'_, J>,
    buf: &mut [u8],
) -> (usize, usize, Option<Event>)
where
    J: FnMut(Seen<'_>) -> Verdict,
{
    let (mut pos, mut out) = (0usize, 0usize);
    // Once something is queued for `dst`, later frames must queue behind it.
    let mut queued = false;
    while pos < buf.len() {
        let h = match wire::parse_header(&buf[pos..], src.from) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(m) => return (pos, out, Some(Event::Fault(peer, fault_for(m)))),
        };
        if let Err(r) = check_header(src, &h) {
            return (pos, out, Some(Event::Fault(peer, r)));
        }
        let total = h.header_len + h.len as usize;
        let body = pos + h.header_len;
        let avail = (buf.len() - body).min(h.len as usize);
        // Unmask and check what has arrived (text fails fast, even inside a frame).
        if src.scanned == 0 || avail > src.scanned {
            if src.scanned == 0 && matches!(h.op, Op::Text | Op::Binary) {
                src.utf8 = wire::Utf8::default();
            }
            let piece = &mut buf[body + src.scanned..body + avail];
            if let Some(k) = h.mask {
                wire::apply_mask(piece, k, src.scanned);
            }
            // Compressed text is checked once inflated.
            if is_text(src, &h) && !is_compressed(src, &h) && !src.utf8.feed(piece) {
                return (
                    pos,
                    out,
                    Some(Event::Fault(peer, CloseReason::InvalidPayload)),
                );
            }
            src.scanned = avail;
        }
        if avail < h.len as usize {
            break;
        }
        src.scanned = 0;
        let frame = one_frame(peer, src, dst, ctx, &h, &mut buf[pos..pos + total]);
        match frame {
            Frame::InPlace if !queued => {
                if out != pos {
                    buf.copy_within(pos..pos + total, out);
                }
                out += total;
            }
            Frame::InPlace => dst.tx.extend_from_slice(&buf[pos..pos + total]),
            Frame::Skip => {
                queued |= !dst.tx.is_empty();
            }
            Frame::End(ev) => return (pos + total, out, Some(ev)),
        }
        pos += total;
    }
    (pos, out, None)
}

fn is_text(src: &Half, h: &wire::Header) -> bool {
    match h.op {
        Op::Text => true,
        Op::Continue => src.msg.is_some_and(|m| m.text),
        _ => false,
    }
}

/// Whether a data frame belongs to a compressed message (RSV1 on the message's first frame).
fn is_compressed(src: &Half, h: &wire::Header) -> bool {
    match h.op {
        Op::Text | Op::Binary => h.rsv1,
        Op::Continue => src.msg.is_some_and(|m| m.compressed),
        _ => false,
    }
}

/// Header rules beyond the wire format: compression agreed, sizes (of compressed payloads as
/// they arrive; inflated sizes are bounded as they inflate), fragment order and count.
fn check_header(src: &Half, h: &wire::Header) -> Result<(), CloseReason> {
    if h.rsv1 && src.deflate.is_none() {
        return Err(CloseReason::ProtocolError);
    }
    let l = src.limits;
    if h.len > l.max_frame {
        return Err(CloseReason::MessageTooBig);
    }
    match (h.op, src.msg) {
        (Op::Continue, None) | (Op::Text | Op::Binary, Some(_)) => Err(CloseReason::ProtocolError),
        (Op::Continue, Some(m)) => {
            if m.len + h.len > l.max_message {
                Err(CloseReason::MessageTooBig)
            } else if l.max_fragments > 0 && m.fragments >= l.max_fragments {
                Err(CloseReason::TooManyFragments)
            } else {
                Ok(())
            }
        }
        (Op::Text | Op::Binary, None) if h.len > l.max_message => Err(CloseReason::MessageTooBig),
        _ => Ok(()),
    }
}

/// Acts on one complete frame (`frame`: header and unmasked payload).
fn one_frame<J>(
    peer: Peer,
    src: &mut Half,
    dst: &mut Half,
    ctx: &mut Ctx<'_, J>,
    h: &wire::Header,
    frame: &mut [u8],
) -> Frame
where
    J: FnMut(Seen<'_>) -> Verdict,
{
    let payload_at = h.header_len;
    match h.op {
        Op::Ping | Op::Pong => {
            if peer == Peer::Client
                && let Verdict::Close(r) = (ctx.judge)(Seen::Control)
            {
                return Frame::End(Event::Policy(r));
            }
            if h.op == Op::Ping {
                if src.reading == Reading::Relay {
                    src.queue(Op::Pong, &frame[payload_at..]);
                }
            } else {
                *ctx.pong = true;
            }
            Frame::Skip
        }
        Op::Close => match wire::close_code(&frame[payload_at..]) {
            Err(code) => Frame::End(Event::Fault(peer, close_reason_for(code))),
            Ok(code) => {
                let reason =
                    String::from_utf8_lossy(&frame[payload_at + 2.min(frame.len() - payload_at)..]);
                Frame::End(Event::Close(peer, code, reason.into_owned()))
            }
        },
        Op::Text | Op::Binary | Op::Continue => {
            let text = is_text(src, h);
            let compressed = is_compressed(src, h);
            let fragmented = !h.fin || h.op == Op::Continue;
            // Text arrives checked, except compressed text: that is checked once inflated.
            let unfinished_text = |src: &Half| text && !compressed && !src.utf8.complete();
            if fragmented {
                let m = src.msg.get_or_insert(Msg {
                    text,
                    compressed,
                    fragments: 0,
                    len: 0,
                });
                m.fragments += 1;
                m.len += h.len;
                if h.fin {
                    src.msg = None;
                    if unfinished_text(src) {
                        return Frame::End(Event::Fault(peer, CloseReason::InvalidPayload));
                    }
                }
            } else if unfinished_text(src) {
                return Frame::End(Event::Fault(peer, CloseReason::InvalidPayload));
            }
            if src.reading == Reading::Discard {
                src.assembled = Vec::new();
                return Frame::Skip;
            }
            if compressed {
                return compressed_message(peer, src, dst, ctx, h, frame, text);
            }
            let op = if text { Op::Text } else { Op::Binary };
            match peer {
                Peer::Upstream => {
                    // Upstream frames go out as they came (servers do not mask), or a whole
                    // message compressed for a client that agreed it.
                    if h.fin {
                        *ctx.activity += 1;
                    }
                    ctx.counts.down(h.len, h.fin);
                    if !fragmented && let Some(packed) = dst.deflated(&frame[payload_at..]) {
                        wire::encode_compressed(&mut dst.tx, op, None, &packed);
                        return Frame::Skip;
                    }
                    Frame::InPlace
                }
                Peer::Client if fragmented => {
                    src.assembled.extend_from_slice(&frame[payload_at..]);
                    if !h.fin {
                        return Frame::Skip;
                    }
                    let whole = std::mem::take(&mut src.assembled);
                    let verdict = judge(ctx, text, &whole);
                    upstream_gets(dst, verdict, false, |dst| {
                        wire::encode(&mut dst.tx, true, op, Some(mask_key()), &whole);
                        Frame::Skip
                    })
                }
                Peer::Client => {
                    let (head, payload) = frame.split_at_mut(payload_at);
                    let verdict = judge(ctx, text, payload);
                    upstream_gets(dst, verdict, false, |_| remask(head, payload))
                }
            }
        }
    }
}

/// The last frame of a compressed message (either peer) completes it: the message is inflated
/// within the side's bounds by the thread's codec, its text checked as UTF-8, and sent on: a
/// client's after the policy's verdict, an upstream's to the client. It stays compressed as
/// it came when the other side agreed a window it fits; otherwise it is sent as
/// [`Side::queue_message`] decides. Earlier frames are kept in `assembled`.
fn compressed_message<J>(
    peer: Peer,
    src: &mut Half,
    dst: &mut Half,
    ctx: &mut Ctx<'_, J>,
    h: &wire::Header,
    frame: &mut [u8],
    text: bool,
) -> Frame
where
    J: FnMut(Seen<'_>) -> Verdict,
{
    let payload_at = h.header_len;
    let fragmented = !h.fin || h.op == Op::Continue;
    if fragmented {
        src.assembled.extend_from_slice(&frame[payload_at..]);
        if !h.fin {
            return Frame::Skip;
        }
    }
    let assembled = std::mem::take(&mut src.assembled);
    let packed = if fragmented {
        &assembled[..]
    } else {
        &frame[payload_at..]
    };
    let bound = deflate::Bound {
        max_len: usize::try_from(src.limits.max_message).unwrap_or(usize::MAX),
        max_ratio: src.limits.max_inflate_ratio,
    };
    let message = match CODEC.with(|c| c.borrow_mut().inflate(packed, bound)) {
        Ok(m) => m,
        Err(e) => return Frame::End(Event::Fault(peer, inflate_fault(e))),
    };
    if text && std::str::from_utf8(&message).is_err() {
        return Frame::End(Event::Fault(peer, CloseReason::InvalidPayload));
    }
    let op = if text { Op::Text } else { Op::Binary };
    let passes = matches!((src.deflate, dst.deflate), (Some(a), Some(b)) if a.passes_to(b));
    match peer {
        Peer::Upstream => {
            *ctx.activity += 1;
            ctx.counts.down(message.len() as u64, true);
            if !passes {
                dst.queue_message(op, &message, true);
                Frame::Skip
            } else if fragmented {
                wire::encode_compressed(&mut dst.tx, op, None, &assembled);
                Frame::Skip
            } else {
                Frame::InPlace
            }
        }
        Peer::Client => {
            let verdict = judge(ctx, text, &message);
            upstream_gets(dst, verdict, true, |dst| {
                if !passes {
                    dst.queue_message(op, &message, true);
                    Frame::Skip
                } else if fragmented {
                    wire::encode_compressed(&mut dst.tx, op, Some(mask_key()), &assembled);
                    Frame::Skip
                } else {
                    let (head, payload) = frame.split_at_mut(payload_at);
                    remask(head, payload)
                }
            })
        }
    }
}

fn inflate_fault(e: deflate::InflateError) -> CloseReason {
    match e {
        deflate::InflateError::TooBig => CloseReason::MessageTooBig,
        deflate::InflateError::Ratio => CloseReason::InflateRatio,
        deflate::InflateError::Corrupt => CloseReason::BadCompression,
    }
}

/// Asks the policy about a whole client message, and counts what it lets through.
fn judge<J>(ctx: &mut Ctx<'_, J>, text: bool, message: &[u8]) -> Verdict
where
    J: FnMut(Seen<'_>) -> Verdict,
{
    let verdict = (ctx.judge)(if text {
        Seen::Text(message)
    } else {
        Seen::Binary(message)
    });
    let sent = match &verdict {
        Verdict::Forward => message.len(),
        Verdict::Rewrite(t) => t.len(),
        Verdict::Drop | Verdict::Close(_) => return verdict,
    };
    *ctx.activity += 1;
    ctx.counts.up(sent as u64);
    verdict
}

/// What the upstream gets for a judged client message: `forward` sends it as it came; a
/// rewritten one (sender stamped) goes as one new text message, compressed again if the
/// client's was (and the upstream agreed).
fn upstream_gets(
    dst: &mut Half,
    verdict: Verdict,
    was_compressed: bool,
    forward: impl FnOnce(&mut Half) -> Frame,
) -> Frame {
    match verdict {
        Verdict::Forward => forward(dst),
        Verdict::Rewrite(t) => {
            dst.queue_message(Op::Text, &t, was_compressed);
            Frame::Skip
        }
        Verdict::Drop => Frame::Skip,
        Verdict::Close(r) => Frame::End(Event::Policy(r)),
    }
}

/// Forwards a client frame where it lies: a fresh mask of the gateway's written into its
/// header (`head`) and applied to its unmasked payload.
fn remask(head: &mut [u8], payload: &mut [u8]) -> Frame {
    let key = mask_key();
    let at = head.len() - 4;
    head[at..].copy_from_slice(&key);
    wire::apply_mask(payload, key, 0);
    Frame::InPlace
}
