//! The cost of permessage-deflate per message, through the relay: a client message goes to the
//! upstream and the upstream's answer of the same size comes back, once uncompressed and once
//! with the client having agreed compression (its message arrives compressed and is inflated
//! for the upstream, which did not agree; the answer is compressed for the client). Both
//! measured in the same run, on the same in-memory streams, so their ratio is the cost.
//!
//! `cargo bench -p wsguard-gateway --bench compression -- --warm-up-time 1 --measurement-time 4`
//!
//! Messages: chat-like JSON of 1 KiB and 16 KiB (a running id and varying text, about 5 to 1
//! under deflate). Frames are made once before measuring; the client and upstream ends only
//! move bytes, so the difference is the gateway's. Also prints the heap held by the thread's
//! deflate state and by an idle compressed socket (a counting allocator).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failure report

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use wsguard_gateway::deflate::{Codec, Compression};
use wsguard_gateway::metrics::Metrics;
use wsguard_gateway::policy::Verdict;
use wsguard_gateway::relay::{Limits, Opened, Timing, relay};
use wsguard_gateway::wire::{self, Op};

/// Counts live heap bytes, to measure what the codec and a socket hold.
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn live() -> isize {
    ALLOC.allocated() as isize
}

const AGREED: Compression = Compression {
    send_window: 15,
    recv_window: 15,
};

fn chat(len: usize) -> Vec<u8> {
    let mut s = String::new();
    let mut i = 0u32;
    while s.len() < len {
        s.push_str(&format!(
            "{{\"id\":{i},\"room\":\"general\",\"sender\":\"user-{}\",\"text\":\"message {}\"}},",
            i % 17,
            i.wrapping_mul(7919) % 10007
        ));
        i += 1;
    }
    s.truncate(len);
    s.into_bytes()
}

/// One relay between in-memory streams, with the frames of one round trip made in advance.
struct Setup {
    client: DuplexStream,
    upstream: DuplexStream,
    to_gateway: Vec<u8>,
    to_upstream_len: usize,
    answer: Vec<u8>,
    to_client_len: usize,
}

fn start(rt: &tokio::runtime::Runtime, payload: &[u8], compressed: bool) -> Setup {
    let _guard = rt.enter();
    let (client, gw_client) = tokio::io::duplex(1 << 20);
    let (gw_upstream, upstream) = tokio::io::duplex(1 << 20);
    let mut codec = Codec::default();
    let mut to_gateway = Vec::new();
    if compressed {
        let packed = codec.deflate(payload, 15).unwrap();
        wire::encode_compressed(&mut to_gateway, Op::Text, Some([1, 2, 3, 4]), &packed);
    } else {
        wire::encode(&mut to_gateway, true, Op::Text, Some([1, 2, 3, 4]), payload);
    }
    let mut answer = Vec::new();
    wire::encode(&mut answer, true, Op::Text, None, payload);
    let mut masked = Vec::new();
    wire::encode(&mut masked, true, Op::Text, Some([0; 4]), payload);
    let to_client_len = if compressed {
        let mut out = Vec::new();
        wire::encode_compressed(
            &mut out,
            Op::Text,
            None,
            &codec.deflate(payload, 15).unwrap(),
        );
        out.len()
    } else {
        answer.len()
    };
    let agreed = compressed.then_some(AGREED);
    let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
    static TRAFFIC: wsguard_gateway::registry::Traffic = wsguard_gateway::registry::Traffic::new();
    let gw_client: &'static mut DuplexStream = Box::leak(Box::new(gw_client));
    let gw_upstream: &'static mut DuplexStream = Box::leak(Box::new(gw_upstream));
    let (stop_tx, stop) = tokio::sync::oneshot::channel();
    Box::leak(Box::new(stop_tx));
    tokio::spawn(relay(
        Opened {
            io: gw_client,
            read: Vec::new(),
            deflate: agreed,
        },
        Opened {
            io: gw_upstream,
            read: Vec::new(),
            deflate: None,
        },
        stop,
        (metrics, &TRAFFIC),
        None,
        Timing {
            idle: None,
            ping: None,
            pong: Duration::from_secs(60),
            send: Duration::from_secs(60),
        },
        Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
            max_fragments: 64,
            assembly: None,
            max_inflate_ratio: Some(100),
        },
        |_| Verdict::Forward,
    ));
    Setup {
        client,
        upstream,
        to_gateway,
        to_upstream_len: masked.len(),
        answer,
        to_client_len,
    }
}

async fn round_trip(s: &mut Setup, buf: &mut [u8]) {
    s.client.write_all(&s.to_gateway).await.unwrap();
    s.upstream
        .read_exact(&mut buf[..s.to_upstream_len])
        .await
        .unwrap();
    s.upstream.write_all(&s.answer).await.unwrap();
    s.client
        .read_exact(&mut buf[..s.to_client_len])
        .await
        .unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    memory(&rt);
    let mut group = c.benchmark_group("round_trip");
    for len in [1024usize, 16 * 1024] {
        let payload = chat(len);
        let packed = Codec::default().deflate(&payload, 15).unwrap().len();
        eprintln!(
            "{len} B of chat JSON deflate to {packed} B ({:.1} to 1)",
            len as f64 / packed as f64
        );
        for (name, compressed) in [("plain", false), ("deflate", true)] {
            let mut s = start(&rt, &payload, compressed);
            let mut buf = vec![0u8; 1 << 20];
            group.bench_with_input(BenchmarkId::new(name, len), &len, |b, _| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let t = Instant::now();
                        for _ in 0..iters {
                            round_trip(&mut s, &mut buf).await;
                        }
                        t.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

/// Heap held by the thread's deflate state after its first message each way, and by a
/// compressed socket once idle (both after the buffers of the round trip are freed).
fn memory(rt: &tokio::runtime::Runtime) {
    let payload = chat(1024);
    let mut buf = vec![0u8; 1 << 20];
    let mut first = start(rt, &payload, false);
    rt.block_on(round_trip(&mut first, &mut buf));
    let settle = || {
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
        live()
    };
    let before = settle();
    let mut plain = start(rt, &payload, false);
    rt.block_on(round_trip(&mut plain, &mut buf));
    let plain_socket = settle() - before;
    let before = settle();
    let mut z = start(rt, &payload, true);
    rt.block_on(round_trip(&mut z, &mut buf));
    let first_compressed = settle() - before;
    let before = settle();
    let mut z2 = start(rt, &payload, true);
    rt.block_on(round_trip(&mut z2, &mut buf));
    let next_compressed = settle() - before;
    eprintln!(
        "heap: an idle plain socket (relay and test streams) {plain_socket} B; the first \
         compressed socket {first_compressed} B (with the thread's deflate state); each further \
         compressed socket {next_compressed} B, so the thread's state is {} B",
        first_compressed - next_compressed
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
