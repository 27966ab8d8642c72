#!/usr/bin/env bash
# Instructions the gateway executes per round trip or per handshake (user space), counted by
# valgrind's callgrind: repeatable on a noisy machine, where seconds are not. The gateway runs
# under callgrind on one thread (`serve --threads 1`); `wsguard-bench` drives 10 connections × 1 KiB
# binary round trips through it to `wsguard echo` for 5 s (or, with `handshake`, 8 workers that
# connect, upgrade and close, for 5 s); the count covers only that load (callgrind is zeroed after
# the sockets are up, or after a first second of handshakes) and is divided by the round trips or
# accepted handshakes the gateway's own metrics counted. Under valgrind SHA-1 and SHA-256 run
# without the CPU's SHA instructions, so a handshake's count includes about 20 k instructions
# (the authenticated route) or 6 k (the public one) that take far fewer natively.
#
# Usage: bench/instructions.sh [size] [route: / or /auth]     (default 1024 /)
#        bench/instructions.sh handshake [route: / or /auth]  (default /)
# Needs valgrind (installed from Debian if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}; route=${2:-/}
what=round_trips
if [ "$size" = handshake ]; then what=handshakes; size=0; fi
command -v valgrind >/dev/null || {
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null
}
cargo build --quiet --release -p wsguard -p wsguard-bench
bin=$(pwd)/target/release/wsguard; gen=$(pwd)/target/release/wsguard-bench
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo_port=$(free_port); gw_port=$(free_port); admin_port=$(free_port)
cat > "$work/wsguard.toml" <<TOML
[gateway]
listen = "127.0.0.1:$gw_port"
allowed_origins = ["http://bench.local"]
[admin]
listen = "127.0.0.1:$admin_port"
[[route]]
path = "/"
upstream = "ws://127.0.0.1:$echo_port"
public = true
[route.messages]
max_message_bytes = 1048576
[[route]]
path = "/auth"
upstream = "ws://127.0.0.1:$echo_port"
[route.messages]
max_message_bytes = 1048576
TOML
(cd "$work" && "$bin" keygen >/dev/null)
token=$(cd "$work" && "$bin" session issue --user bench)
"$bin" echo --listen "127.0.0.1:$echo_port" >"$work/echo.log" 2>&1 &
(cd "$work" && WSGUARD_LOG=warn exec valgrind --tool=callgrind \
    --callgrind-out-file="$work/cg.out" "$bin" serve --threads 1 >"$work/serve.log" 2>&1) &
vg=$!
get_metrics() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=2).read().decode())' "$admin_port"; }
if [ "$what" = handshakes ]; then
    metric() { get_metrics | awk '/^wsguard_handshakes_total\{outcome="accepted",reason="ok"\}/ {print $2}'; }
else
    metric() { get_metrics | awk '/^wsguard_messages_total\{direction="client_to_upstream"\}/ {print $2}'; }
fi
for _ in $(seq 300); do get_metrics >/dev/null 2>&1 && break; sleep 0.2; done
if [ "$what" = handshakes ]; then
    # A first second warms the process (allocator arenas, the blocking pool), then is not counted.
    "$gen" handshakes --url "ws://127.0.0.1:$gw_port$route" -H "Origin: http://bench.local" \
        -H "Cookie: wsguard_session=$token" --connections 8 --duration 6.5s --json >"$work/gen.json" &
else
    # Open the sockets first (handshakes are not what is counted), then zero the counters.
    "$gen" echo --url "ws://127.0.0.1:$gw_port$route" -H "Origin: http://bench.local" \
        -H "Cookie: wsguard_session=$token" --connections 10 --size "$size" --binary \
        --duration 7s --warmup 2s --json >"$work/gen.json" &
fi
load=$!
sleep 1.5
callgrind_control -z "$vg" >/dev/null 2>&1
m0=$(metric)
sleep 5
callgrind_control -d "$vg" >/dev/null 2>&1
m1=$(metric)
wait "$load"
kill -INT "$vg"; wait "$vg" 2>/dev/null || true
dump=$(ls "$work"/cg.out.* | head -1)
ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
python3 - "$ir" "$m0" "$m1" "$size" "$route" "$what" <<'PY'
import sys
ir, m0, m1 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
n = m1 - m0
if sys.argv[6] == "handshakes":
    print(f"handshakes on {sys.argv[5]}: {n:.0f} accepted, {ir} instructions, "
          f"{ir / n:.0f} instructions per handshake (user space, gateway process)")
else:
    print(f"{sys.argv[4]} B on {sys.argv[5]}: {n:.0f} round trips, {ir} instructions, "
          f"{ir / n:.0f} instructions per round trip (user space, gateway process)")
PY
