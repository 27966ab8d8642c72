#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

const BOTH_WAYS: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn offer(values: &[&str]) -> Option<(Compression, String)> {
    answer(values.iter().map(|v| v.as_bytes()))
}

fn windows(send: u8, recv: u8) -> Compression {
    Compression {
        send_window: send,
        recv_window: recv,
    }
}

#[test]
fn offers_are_answered_without_context_takeover() {
    let plain = Some((windows(15, 15), BOTH_WAYS.to_owned()));
    // Firefox, Chrome and Safari send the first two.
    assert_eq!(offer(&["permessage-deflate"]), plain);
    assert_eq!(
        offer(&["permessage-deflate; client_max_window_bits"]),
        plain
    );
    assert_eq!(
        offer(&["permessage-deflate; client_no_context_takeover; server_no_context_takeover"]),
        plain
    );
    assert_eq!(offer(&["PerMessage-Deflate"]), plain, "names in any case");
    // The server's window is kept as asked; the client's is what it says it uses.
    assert_eq!(
        offer(&["permessage-deflate; server_max_window_bits=10"]),
        Some((
            windows(10, 15),
            format!("{BOTH_WAYS}; server_max_window_bits=10")
        ))
    );
    assert_eq!(
        offer(&["permessage-deflate;server_max_window_bits=\"9\"; client_max_window_bits=12"]),
        Some((
            windows(9, 12),
            format!("{BOTH_WAYS}; server_max_window_bits=9")
        ))
    );
    assert_eq!(
        offer(&["permessage-deflate; server_max_window_bits=8"]).map(|a| a.0),
        Some(windows(8, 15))
    );
    // Other extensions are passed over; lists span header lines; empty elements are skipped.
    assert_eq!(
        offer(&["x-webkit-deflate-frame", ", permessage-deflate ,"]),
        plain
    );
    assert_eq!(offer(&["foo; a=1; b=\"x\", bar"]), None);
    assert_eq!(offer(&[]), None);
}

#[test]
fn a_bad_offer_is_declined_and_the_next_one_considered() {
    for bad in [
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; server_max_window_bits=1O",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"x\"",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; a; b; c; d; e; f; g; h; i",
    ] {
        assert_eq!(offer(&[bad]), None, "{bad}");
        assert_eq!(
            offer(&[bad, "permessage-deflate; server_max_window_bits=12"]),
            Some((
                windows(12, 15),
                format!("{BOTH_WAYS}; server_max_window_bits=12")
            )),
            "{bad} then a good offer"
        );
    }
}

#[test]
fn a_list_that_breaks_the_grammar_is_no_offer_at_all() {
    for bad in [
        "permessage-deflate;",
        "permessage-deflate; =1",
        "permessage-deflate; a=\"b",
        "permessage-deflate; a=\"b c\"",
        "permessage-deflate; a=",
        "permessage-deflate; client_max_window_bits=\"\"",
        "permessage-deflate garbage",
        "permessage-deflate; server_max_window_bits=1 0",
        "\"permessage-deflate\"",
        "permessage-deflate\u{e9}",
    ] {
        assert_eq!(offer(&["permessage-deflate", bad]), None, "{bad}");
    }
    let many = vec!["x"; MAX_EXTENSIONS].join(", ") + ", permessage-deflate";
    assert_eq!(offer(&[&many]), None, "too many extensions");
    let enough = vec!["x"; MAX_EXTENSIONS - 1].join(", ") + ", permessage-deflate";
    assert!(offer(&[&enough]).is_some());
}

fn upstream(values: &[&str]) -> Result<Option<Compression>, &'static str> {
    check_answer(values.iter().map(|v| v.as_bytes()))
}

#[test]
fn an_upstream_answer_must_accept_what_was_offered() {
    assert_eq!(upstream(&[]), Ok(None));
    assert_eq!(upstream(&[UPSTREAM_OFFER]), Ok(Some(windows(15, 15))));
    assert_eq!(
        upstream(&["permessage-deflate; server_no_context_takeover"]),
        Ok(Some(windows(15, 15)))
    );
    assert_eq!(
        upstream(&["permessage-deflate; server_no_context_takeover; server_max_window_bits=9"]),
        Ok(Some(windows(15, 9)))
    );
    for bad in [
        // It would keep a context between messages: each could not be inflated alone.
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover",
        // Not offered.
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=20",
        "permessage-deflate; server_no_context_takeover; foo",
        "permessage-deflate; server_no_context_takeover;",
        "",
    ] {
        assert!(upstream(&[bad]).is_err(), "{bad:?}");
    }
    assert!(upstream(&[UPSTREAM_OFFER, "x"]).is_err());
}

const NO_RATIO: Bound = Bound {
    max_len: 64 << 20,
    max_ratio: None,
};

fn text(n: usize) -> Vec<u8> {
    let words = [
        "chat ",
        "message ",
        "{\"sender\":\"alice\"} ",
        "hello ",
        "wsguard ",
    ];
    let mut v = Vec::with_capacity(n + 32);
    let mut i = 0usize;
    while v.len() < n {
        v.extend_from_slice(words[i.wrapping_mul(7919) % words.len()].as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

#[test]
fn messages_round_trip_at_every_window() {
    let mut codec = Codec::default();
    for window in 9..=15 {
        for n in [0usize, 1, 63, 64, 1000, 70_000] {
            let data = text(n);
            let packed = codec.deflate(&data, window).unwrap();
            assert!(!packed.ends_with(&TAIL), "the tail is removed");
            assert_eq!(
                codec.inflate(&packed, NO_RATIO).unwrap(),
                data,
                "{window} {n}"
            );
        }
    }
    assert_eq!(codec.deflate(b"abc", 8), None, "zlib cannot produce 8 bits");
    assert_eq!(codec.deflate(b"abc", 16), None);
    // Text compresses several times.
    let big = text(16 * 1024);
    assert!(codec.deflate(&big, 15).unwrap().len() * 4 < big.len());
}

/// A stream with a final block (what a sender that ends each message does) inflates; bytes
/// after that block do not.
#[test]
fn a_final_block_ends_the_message() {
    let mut c = Compress::new_with_window_bits(Level::new(6), false, 15);
    let mut packed = Vec::with_capacity(256);
    c.compress_vec(b"the end", &mut packed, FlushCompress::Finish)
        .unwrap();
    let mut codec = Codec::default();
    assert_eq!(codec.inflate(&packed, NO_RATIO).unwrap(), b"the end");
    packed.push(0);
    assert_eq!(codec.inflate(&packed, NO_RATIO), Err(InflateError::Corrupt));
}

#[test]
fn corrupt_streams_and_kept_contexts_are_refused() {
    let mut codec = Codec::default();
    for bad in [
        &[0xffu8, 0xff, 0xff][..],
        &[0x07],
        &[0x02, 0x00, 0x00, 0x01],
    ] {
        assert_eq!(
            codec.inflate(bad, NO_RATIO),
            Err(InflateError::Corrupt),
            "{bad:?}"
        );
    }
    // A sender that keeps its context refers back to the previous message: that cannot be
    // inflated alone, and is refused rather than misread.
    let mut c = Compress::new_with_window_bits(Level::new(6), false, 15);
    let msg = text(300);
    let mut first = Vec::with_capacity(1024);
    c.compress_vec(&msg, &mut first, FlushCompress::Sync)
        .unwrap();
    let mut second = Vec::with_capacity(1024);
    c.compress_vec(&msg, &mut second, FlushCompress::Sync)
        .unwrap();
    second.truncate(second.len() - 4);
    assert!(second.len() < 20, "the second refers to the first");
    assert_eq!(codec.inflate(&second, NO_RATIO), Err(InflateError::Corrupt));
    // The codec is reset for the next message.
    let ok = codec.deflate(&msg, 15).unwrap();
    assert_eq!(codec.inflate(&ok, NO_RATIO).unwrap(), msg);
}

/// 16 MiB of zeros deflate to about 16 KiB: refused at the size bound or the ratio bound,
/// whichever is lower, never inflated beyond it.
#[test]
fn bombs_stop_at_the_bound() {
    let mut codec = Codec::default();
    // Made at the highest level (about 1,000 to 1), as an attacker would.
    let mut c = Compress::new_with_window_bits(Level::best(), false, 15);
    let mut bomb = Vec::with_capacity(128 << 10);
    c.compress_vec(&vec![0u8; 16 << 20], &mut bomb, FlushCompress::Sync)
        .unwrap();
    assert!(bomb.len() < 20 << 10, "{}", bomb.len());
    let by_size = Bound {
        max_len: 1 << 20,
        max_ratio: None,
    };
    assert_eq!(codec.inflate(&bomb, by_size), Err(InflateError::TooBig));
    let by_ratio = Bound {
        max_len: 64 << 20,
        max_ratio: Some(100),
    };
    assert_eq!(codec.inflate(&bomb, by_ratio), Err(InflateError::Ratio));
    // The ratio bound leaves short messages alone, and ordinary text far below it.
    let small = codec.deflate(&[0u8; RATIO_FLOOR], 15).unwrap();
    let strict = Bound {
        max_len: 1 << 20,
        max_ratio: Some(1),
    };
    assert_eq!(codec.inflate(&small, strict).unwrap().len(), RATIO_FLOOR);
    let chat = text(60_000);
    let packed = codec.deflate(&chat, 15).unwrap();
    let default = Bound {
        max_len: 64 << 10,
        max_ratio: Some(100),
    };
    assert_eq!(codec.inflate(&packed, default).unwrap(), chat);
    // Exactly at the size bound passes; one byte over does not.
    let at = Bound {
        max_len: chat.len(),
        max_ratio: None,
    };
    assert!(codec.inflate(&packed, at).is_ok());
    let under = Bound {
        max_len: chat.len() - 1,
        max_ratio: None,
    };
    assert_eq!(codec.inflate(&packed, under), Err(InflateError::TooBig));
}

proptest! {
    #[test]
    fn any_header_is_judged_without_panic(
        values in proptest::collection::vec(
            prop_oneof![
                "[ -~]{0,80}",
                "(permessage-deflate|x)(; ?(server|client)_(no_context_takeover|max_window_bits)(=\"?[0-9]{1,2}\"?)?){0,4}(, ?)?",
            ],
            0..4,
        ),
    ) {
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        if let Some((c, header)) = answer(refs.iter().copied()) {
            prop_assert!((8..=15).contains(&c.send_window) && (8..=15).contains(&c.recv_window));
            // What the gateway answers, the gateway itself would read as a valid answer.
            prop_assert!(answer([header.as_bytes()]).is_some());
        }
        if let Ok(Some(c)) = check_answer(refs.iter().copied()) {
            prop_assert!((8..=15).contains(&c.recv_window));
        }
    }

    #[test]
    fn any_bytes_inflate_within_the_bound_or_are_refused(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        max_len in 0usize..20_000,
        ratio in proptest::option::of(1u32..50),
    ) {
        let mut codec = Codec::default();
        let bound = Bound { max_len, max_ratio: ratio };
        if let Ok(out) = codec.inflate(&data, bound) {
            prop_assert!(out.len() <= max_len);
            if let Some(r) = ratio {
                prop_assert!(out.len() <= (data.len() * r as usize).max(RATIO_FLOOR));
            }
        }
    }

    #[test]
    fn what_is_deflated_inflates_back_however_it_was_split(
        data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..3000),
            (0usize..20_000).prop_map(text),
        ],
        window in 9u8..=15,
        cuts in proptest::collection::vec(any::<usize>(), 0..4),
    ) {
        let mut codec = Codec::default();
        let packed = codec.deflate(&data, window).unwrap();
        // The relay joins a fragmented message's payloads before inflating: any split of the
        // compressed bytes gives the same message.
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (packed.len() + 1)).collect();
        cuts.sort_unstable();
        let mut joined = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([packed.len()]) {
            joined.extend_from_slice(&packed[at..c]);
            at = c;
        }
        prop_assert_eq!(codec.inflate(&joined, NO_RATIO).unwrap(), data);
    }
}
