//! permessage-deflate (RFC 7692) for routes with `compression = true`: what is agreed with each
//! peer, and one message inflated or deflated at a time.
//!
//! Owns the negotiation (the client's offers parsed and answered, the offer made to the
//! upstream and the check of its answer) and the per-message codec ([`Codec`]): inflating with
//! a hard bound on the inflated size and on the ratio of inflated to compressed bytes, checked
//! as the output grows in bounded chunks, never past the bound; deflating a whole message. Both
//! directions are always agreed without context takeover, so no compression state outlives a
//! message: the relay keeps one [`Codec`] per thread, and a socket keeps none. Deflate itself is
//! `flate2` (the `zlib-rs` backend, which honours window sizes). Pure: no I/O, no clock; it
//! must not decide policy (the relay applies the bounds it is given).

use flate2::{Compress, Compression as Level, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name.
pub const NAME: &str = "permessage-deflate";

/// What the gateway offers an upstream: neither side keeps a compression context between
/// messages (so the gateway inflates each message of the upstream's on its own), and the
/// gateway's own window is not limited (no `client_max_window_bits`, so the upstream may not
/// ask for a smaller one).
pub const UPSTREAM_OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Most extensions read from one offer list, and most parameters of one extension: a browser
/// sends one or two offers of a few parameters.
const MAX_EXTENSIONS: usize = 16;
const MAX_PARAMS: usize = 8;

/// Deflate level used toward a peer: zlib's fastest. A proxy compresses every message of every
/// compressed socket; level 1 costs a fraction of the default level's time and keeps most of
/// its gain on chat-sized text.
const LEVEL: u32 = 1;

/// Output grows by at most this much at a time while inflating.
const CHUNK: usize = 16 * 1024;

/// Inflated sizes up to this are never refused for their ratio (short messages compress well
/// and cost nothing).
pub const RATIO_FLOOR: usize = 4096;

/// What one peer agreed: the LZ77 windows (8 to 15 bits) of each direction. Both directions
/// are without context takeover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// Largest window the gateway may use when it compresses toward this peer. At 8 bits
    /// (which zlib cannot produce) the gateway sends this peer uncompressed messages only.
    pub send_window: u8,
    /// Largest window this peer compresses with (what it sends can pass on unchanged to a
    /// peer whose `send_window` is at least this).
    pub recv_window: u8,
}

impl Compression {
    /// Whether a message this side compressed may go to `to` as it is (its window fits).
    pub fn passes_to(self, to: Compression) -> bool {
        self.recv_window <= to.send_window
    }
}

/// A parameter's value: absent, a window size (`8` to `15`, no leading zero), or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    None,
    Window(u8),
    Other,
}

/// One extension of a list: its name and up to [`MAX_PARAMS`] parameters (more: `overflow`).
#[derive(Debug)]
struct Extension<'a> {
    name: &'a [u8],
    params: [(&'a [u8], Value); MAX_PARAMS],
    count: usize,
    overflow: bool,
}

impl Extension<'_> {
    fn params(&self) -> &[(&[u8], Value)] {
        &self.params[..self.count]
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A cursor over one header value (RFC 6455 §9.1 grammar: a list of `token *(";" token
/// ["=" (token / quoted-string)])`, with optional whitespace around separators).
struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ows(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        (self.at > start).then(|| &self.s[start..self.at])
    }

    /// A parameter value: a token, or a quoted string whose content, unescaped, is a token
    /// (RFC 6455 §9.1).
    fn value(&mut self) -> Option<Value> {
        let classify = |digits: &mut dyn Iterator<Item = u8>| {
            let mut v = [0u8; 3];
            let mut n = 0;
            for d in digits {
                if n == v.len() {
                    return Value::Other;
                }
                v[n] = d;
                n += 1;
            }
            match &v[..n] {
                [d @ b'8'..=b'9'] => Value::Window(d - b'0'),
                [b'1', d @ b'0'..=b'5'] => Value::Window(10 + d - b'0'),
                _ => Value::Other,
            }
        };
        if self.peek() == Some(b'"') {
            self.at += 1;
            let start = self.at;
            let mut unescaped_len = 0usize;
            loop {
                match self.peek()? {
                    b'"' => break,
                    b'\\' => {
                        self.at += 1;
                        if !is_tchar(self.peek()?) {
                            return None;
                        }
                    }
                    b if !is_tchar(b) => return None,
                    _ => {}
                }
                unescaped_len += 1;
                self.at += 1;
            }
            let inner = &self.s[start..self.at];
            self.at += 1;
            if unescaped_len == 0 {
                return None;
            }
            Some(classify(&mut inner.iter().copied().filter(|&b| b != b'\\')))
        } else {
            let t = self.token()?;
            Some(classify(&mut t.iter().copied()))
        }
    }

    /// The next extension of the list; `Err(())` if the value breaks the grammar.
    fn extension(&mut self) -> Result<Option<Extension<'a>>, ()> {
        self.skip_ows();
        // Empty list elements (`a, , b`) are allowed and skipped (RFC 9110 §5.6.1).
        while self.peek() == Some(b',') {
            self.at += 1;
            self.skip_ows();
        }
        if self.peek().is_none() {
            return Ok(None);
        }
        let name = self.token().ok_or(())?;
        let mut ext = Extension {
            name,
            params: [(&[][..], Value::None); MAX_PARAMS],
            count: 0,
            overflow: false,
        };
        loop {
            self.skip_ows();
            match self.peek() {
                None => return Ok(Some(ext)),
                Some(b',') => {
                    self.at += 1;
                    return Ok(Some(ext));
                }
                Some(b';') => {
                    self.at += 1;
                    self.skip_ows();
                    let pname = self.token().ok_or(())?;
                    self.skip_ows();
                    let value = if self.peek() == Some(b'=') {
                        self.at += 1;
                        self.skip_ows();
                        self.value().ok_or(())?
                    } else {
                        Value::None
                    };
                    if ext.count == MAX_PARAMS {
                        ext.overflow = true;
                    } else {
                        ext.params[ext.count] = (pname, value);
                        ext.count += 1;
                    }
                }
                Some(_) => return Err(()),
            }
        }
    }
}

/// Every extension in the header values, in order; `Err(())` if one value breaks the grammar
/// or the list is longer than [`MAX_EXTENSIONS`].
fn extensions<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    mut each: impl FnMut(&Extension<'a>),
) -> Result<usize, ()> {
    let mut n = 0;
    for v in values {
        let mut c = Cursor { s: v, at: 0 };
        while let Some(ext) = c.extension()? {
            n += 1;
            if n > MAX_EXTENSIONS {
                return Err(());
            }
            each(&ext);
        }
    }
    Ok(n)
}

/// The four parameters of RFC 7692 §7.1, read from one offer or answer. `None` if a parameter
/// is unknown, repeated or has a value it may not have (the offer is then declined, the answer
/// refused).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in an offer only).
    client_max_window_bits: Option<Option<u8>>,
}

fn params(ext: &Extension<'_>) -> Option<Params> {
    if ext.overflow {
        return None;
    }
    let mut p = Params::default();
    let mut seen = [false; 4];
    for &(name, value) in ext.params() {
        let i = match name {
            b"server_no_context_takeover" => 0,
            b"client_no_context_takeover" => 1,
            b"server_max_window_bits" => 2,
            b"client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[i], true) {
            return None;
        }
        match (i, value) {
            (0, Value::None) => p.server_no_context_takeover = true,
            (1, Value::None) => p.client_no_context_takeover = true,
            (2, Value::Window(w)) => p.server_max_window_bits = Some(w),
            (3, Value::None) => p.client_max_window_bits = Some(None),
            (3, Value::Window(w)) => p.client_max_window_bits = Some(Some(w)),
            _ => return None,
        }
    }
    Some(p)
}

fn is_deflate(ext: &Extension<'_>) -> bool {
    ext.name.eq_ignore_ascii_case(NAME.as_bytes())
}

/// The gateway's answer to a client's `Sec-WebSocket-Extensions` values: the first
/// permessage-deflate offer it can accept (RFC 7692 §5: an offer with an unknown, repeated or
/// invalid parameter is declined, and the next one considered), with the response header's
/// value. `None`: no offer accepted (or a list that breaks the grammar): no extension.
///
/// The answer always asks for no context takeover both ways (§7.1.1: a server may, even if
/// the offer did not), and keeps the client's `server_max_window_bits` if it named one. It
/// never limits the client's window (the gateway inflates with the largest).
pub fn answer<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<(Compression, String)> {
    let mut chosen = None;
    let parsed = extensions(values, |ext| {
        if chosen.is_none() && is_deflate(ext) {
            chosen = params(ext);
        }
    });
    let p = chosen.filter(|_| parsed.is_ok())?;
    let mut header = String::from(UPSTREAM_OFFER);
    if let Some(w) = p.server_max_window_bits {
        header.push_str(&format!("; server_max_window_bits={w}"));
    }
    let agreed = Compression {
        send_window: p.server_max_window_bits.unwrap_or(15),
        recv_window: p.client_max_window_bits.flatten().unwrap_or(15),
    };
    Some((agreed, header))
}

/// Checks an upstream's answer to [`UPSTREAM_OFFER`] (its `Sec-WebSocket-Extensions` values):
/// `Ok(None)` if it enabled no extension; `Ok(Some(_))` if it accepted the offer as made
/// (permessage-deflate alone, `server_no_context_takeover` present, no `client_max_window_bits`
/// since none was offered, no other or repeated parameter); otherwise `Err` with why.
pub fn check_answer<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<Compression>, &'static str> {
    let mut found: Vec<Option<Params>> = Vec::new();
    let (mut other, mut lines) = (false, 0usize);
    let values = values.into_iter().inspect(|_| lines += 1);
    let n = extensions(values, |ext| {
        if is_deflate(ext) {
            found.push(params(ext));
        } else {
            other = true;
        }
    })
    .map_err(|()| "malformed extension answer")?;
    match (n, other, found.as_slice()) {
        (0, ..) if lines == 0 => Ok(None),
        (0, ..) => Err("empty extension answer"),
        (1, false, [Some(p)]) => {
            if !p.server_no_context_takeover {
                Err("permessage-deflate without server_no_context_takeover")
            } else if p.client_max_window_bits.is_some() {
                Err("client_max_window_bits not offered")
            } else {
                Ok(Some(Compression {
                    send_window: 15,
                    recv_window: p.server_max_window_bits.unwrap_or(15),
                }))
            }
        }
        (1, false, _) => Err("invalid permessage-deflate parameters"),
        _ => Err("extension not offered"),
    }
}

/// How far a compressed message may inflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Largest inflated message, bytes.
    pub max_len: usize,
    /// Largest ratio of inflated to compressed bytes, once past [`RATIO_FLOOR`] (`None`: no
    /// ratio bound).
    pub max_ratio: Option<u32>,
}

impl Bound {
    /// The most bytes a message of `compressed` bytes may inflate to.
    fn limit(self, compressed: usize) -> usize {
        match self.max_ratio {
            None => self.max_len,
            Some(r) => self
                .max_len
                .min(compressed.saturating_mul(r as usize).max(RATIO_FLOOR)),
        }
    }
}

/// Why a compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// Inflates past [`Bound::max_len`].
    TooBig,
    /// Inflates past [`Bound::max_ratio`] times its compressed size.
    Ratio,
    /// Not a valid deflate stream (or one that used a context the sender may not keep).
    Corrupt,
}

/// The end of every compressed message, removed by the sender (RFC 7692 §7.2.1) and put back
/// before inflating (§7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A thread's deflate state, created on first use and reset for every message (no context
/// takeover): an inflater, and a compressor per window size used.
#[derive(Default)]
pub struct Codec {
    inflater: Option<Decompress>,
    compressors: [Option<Compress>; 7],
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Codec {
    /// Inflates one whole compressed message (its payloads, joined), within `bound`: the
    /// output grows [`CHUNK`] bytes at a time and never beyond the bound plus one byte, so a
    /// bomb costs at most that much work and memory before it is refused.
    pub fn inflate(&mut self, data: &[u8], bound: Bound) -> Result<Vec<u8>, InflateError> {
        let limit = bound.limit(data.len());
        let d = self
            .inflater
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        d.reset(false);
        let mut out: Vec<u8> = Vec::new();
        let mut ended = false;
        for (part, tail) in [(data, false), (&TAIL[..], true)] {
            let mut at = 0;
            while !ended {
                if out.len() == out.capacity() {
                    if out.len() > limit {
                        break;
                    }
                    out.reserve_exact(CHUNK.min(limit + 1 - out.len()));
                }
                let (in_before, out_before) = (d.total_in(), out.len());
                let status = d
                    .decompress_vec(&part[at..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                let consumed = (d.total_in() - in_before) as usize;
                at += consumed;
                if out.len() > limit {
                    break;
                }
                let room = out.len() < out.capacity();
                match status {
                    // A final block: nothing may follow in the message (the tail may).
                    Status::StreamEnd if at < part.len() && !tail => {
                        return Err(InflateError::Corrupt);
                    }
                    Status::StreamEnd => ended = true,
                    _ if at == part.len() && room => break,
                    // No progress with room and input left: a stream it cannot read on.
                    _ if consumed == 0 && out.len() == out_before && room => {
                        return Err(InflateError::Corrupt);
                    }
                    _ => {}
                }
            }
            if out.len() > limit {
                return Err(if out.len() > bound.max_len {
                    InflateError::TooBig
                } else {
                    InflateError::Ratio
                });
            }
        }
        Ok(out)
    }

    /// Deflates one whole message for a peer whose window is `window` bits, without the
    /// tail (RFC 7692 §7.2.1). `None` if the window is one zlib cannot produce (8 bits): the
    /// message then goes uncompressed.
    pub fn deflate(&mut self, data: &[u8], window: u8) -> Option<Vec<u8>> {
        let slot = self
            .compressors
            .get_mut(usize::from(window.checked_sub(9)?))?;
        let c = slot.get_or_insert_with(|| {
            Compress::new_with_window_bits(Level::new(LEVEL), false, window)
        });
        c.reset();
        // Incompressible data grows by 5 bytes per stored block of up to 64 KiB.
        let mut out = Vec::with_capacity(data.len() + data.len() / 1024 + 64);
        let mut at = 0;
        loop {
            let before = c.total_in();
            c.compress_vec(&data[at..], &mut out, FlushCompress::Sync)
                .ok()?;
            at += (c.total_in() - before) as usize;
            if at == data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests;
