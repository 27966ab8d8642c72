#!/usr/bin/env bash
# Side-by-side benchmark, one run on one machine: the same echo backend reached directly (the
# limit), through wsguard (public route and authenticated route), through nginx and through
# HAProxy (plain WebSocket reverse proxies, one worker each, from Debian's packages).
#
# Fairness: every proxy is pinned to CPU $PROXY_CPU with one worker/thread; the load generator
# and the echo backend share CPU $LOAD_CPU. Paths are alternated inside each (size, connections)
# cell, in an order rotated every round (so no path always follows the same one), and the whole
# matrix is run $ROUNDS times (default 5); the report gives each cell's median, and wsguard's
# ratio to each peer round by round. Handshakes run in rounds the same way. Round trips are
# closed loop (each connection sends its next message when the echo of the previous one is back).
#
# Measures: messages/s and latency (p50/p99/p99.9/max) for 64 B / 1 KiB / 64 KiB messages over
# 10 and 1,000 connections; handshakes/s (wsguard: with cookie verification against the SQLite
# store; nginx/HAProxy: plain upgrades); idle RSS per proxied connection at $IDLE_CONNS
# connections; revocation → close latency with 1,000 live sockets; and the public-route
# throughput again with tcpkali2 (an independent generator, crates.io) as a cross-check.
#
# Usage: bench/run.sh                 (full run, about 22 minutes on 2 cores)
#        QUICK=1 bench/run.sh         (short smoke run: 1 s per cell)
# Output: bench/results/latest.{jsonl,md,svg}; the .md table is what BENCHMARKS.md quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-1s}
SIZES=${SIZES:-"64 1024 65536"}
CONNS=${CONNS:-"10 1000"}
IDLE_CONNS=${IDLE_CONNS:-5000}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
if [ -n "${QUICK:-}" ]; then DURATION=1s; WARMUP=1s; IDLE_CONNS=1000; ROUNDS=1; fi

# --- what the run needs -------------------------------------------------------------------
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin
tk2="$root/target/tools/bin/tcpkali2"
[ -x "$tk2" ] || cargo install --quiet --locked tcpkali2 --version 0.4.0 --root "$root/target/tools"
cargo build --quiet --release -p wsguard -p wsguard-bench
wsguard="$root/target/release/wsguard"
gen="$root/target/release/wsguard-bench"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
out="$root/bench/results"
mkdir -p "$out"
results="$out/latest.jsonl"
: > "$results"
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    pkill -f "^$gen " 2>/dev/null || true
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
echo_port=$(free_port); gw_port=$(free_port); admin_port=$(free_port); nginx_port=$(free_port); haproxy_port=$(free_port)

# --- the backend and the proxies ----------------------------------------------------------
taskset -c "$LOAD_CPU" "$wsguard" echo --listen "127.0.0.1:$echo_port" >"$work/echo.log" 2>&1 &
wait_port "$echo_port"

cat > "$work/wsguard.toml" <<TOML
[gateway]
listen = "127.0.0.1:$gw_port"
allowed_origins = ["http://bench.local"]
max_connections = "unlimited"
max_connections_per_ip = "unlimited"
max_connections_per_user = "unlimited"
max_pending_handshakes = "unlimited"
max_pending_handshakes_per_ip = "unlimited"
[admin]
listen = "127.0.0.1:$admin_port"
[[route]]                      # public: no authentication (still origin- and message-checked)
path = "/"
upstream = "ws://127.0.0.1:$echo_port"
public = true
allow_missing_origin = true    # tcpkali2 sends no Origin
[route.messages]
max_message_bytes = 1048576
[[route]]                      # authenticated: session cookie verified on every upgrade
path = "/auth"
upstream = "ws://127.0.0.1:$echo_port"
[route.messages]
max_message_bytes = 1048576
TOML
(cd "$work" && "$wsguard" keygen >/dev/null)
start_wsguard() {
    (cd "$work" && WSGUARD_LOG=warn exec taskset -c "$PROXY_CPU" "$wsguard" serve --threads 1 >>"$work/wsguard.log" 2>&1) &
    wsguard_pid=$!
    wait_port "$gw_port"
}
start_wsguard
token=$(cd "$work" && "$wsguard" session issue --user bench)

cat > "$work/nginx.conf" <<NGINX
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 19500;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
user root root;
events { worker_connections 19000; }
http {
    access_log off;
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    upstream echo { server 127.0.0.1:$echo_port; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }
    }
}
NGINX
start_nginx() {
    taskset -c "$PROXY_CPU" nginx -p "$work" -c "$work/nginx.conf" &
    nginx_pid=$!
    wait_port "$nginx_port"
}
start_nginx

cat > "$work/haproxy.cfg" <<HAPROXY
global
    nbthread 1
    maxconn 9500
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
frontend ws
    bind 127.0.0.1:$haproxy_port
    default_backend echo
backend echo
    server s1 127.0.0.1:$echo_port
HAPROXY
start_haproxy() {
    taskset -c "$PROXY_CPU" haproxy -db -f "$work/haproxy.cfg" >>"$work/haproxy.log" 2>&1 &
    haproxy_pid=$!
    wait_port "$haproxy_port"
}
start_haproxy
# A fresh process of a path's proxy (idle memory is measured on fresh processes: memory a
# process has already grown to would hide the cost of new connections).
restart() {
    case $1 in
        wsguard-*) kill -TERM "$wsguard_pid"; wait "$wsguard_pid" 2>/dev/null || true; start_wsguard ;;
        nginx) kill -QUIT "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true; start_nginx ;;
        haproxy) kill -TERM "$haproxy_pid"; wait "$haproxy_pid" 2>/dev/null || true; start_haproxy ;;
        direct) ;;
    esac
    sleep 0.5
}

declare -A url=(
    [direct]="ws://127.0.0.1:$echo_port/"
    [wsguard-public]="ws://127.0.0.1:$gw_port/"
    [wsguard-auth]="ws://127.0.0.1:$gw_port/auth"
    [nginx]="ws://127.0.0.1:$nginx_port/"
    [haproxy]="ws://127.0.0.1:$haproxy_port/"
)
paths="direct wsguard-public wsguard-auth nginx haproxy"
headers=(-H "Origin: http://bench.local" -H "Cookie: wsguard_session=$token")
# Client sockets spread over several source addresses (one ephemeral port range each).
sources=127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4
genrun() { TOKIO_WORKER_THREADS=1 taskset -c "$LOAD_CPU" "$gen" "$@"; }
record() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(json.loads(sys.argv[2])); print(json.dumps(d))' "$1" "$2" >> "$results"; }

rss_kb() { local t=0; for pid in "$@"; do t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status"))); done; echo "$t"; }
pids_of() {
    case $1 in
        wsguard-*) echo "$wsguard_pid" ;;
        nginx) echo "$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')" ;;
        haproxy) echo "$haproxy_pid" ;;
        direct) pgrep -f "wsguard echo --listen 127.0.0.1:$echo_port" | tr '\n' ' ' ;;
    esac
}

# --- throughput and latency ---------------------------------------------------------------
# CPU time (user + system, clock ticks) of a path's proxy processes; with the load generator
# and the echo backend sharing one core, round trips/s can be capped by that core, so the proxy's
# CPU per message is the fairer measure of its cost.
cpu_ticks() { local t=0; for pid in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)
# One measurement: `kind` (echo or handshakes) of round `round` through path `p`, the generator
# run with the remaining arguments; records its result with the proxy's CPU time meanwhile.
measure() {
    local kind=$1 round=$2 p=$3 c0 c1 r
    shift 3
    # shellcheck disable=SC2046
    c0=$(cpu_ticks $(pids_of "$p"))
    r=$(genrun "$@")
    # shellcheck disable=SC2046
    c1=$(cpu_ticks $(pids_of "$p"))
    record "{\"kind\":\"$kind\",\"round\":$round,\"path\":\"$p\",\"proxy_cpu_s\":$(python3 -c "print(($c1 - $c0) / $hz)")}" "$r"
}
# The paths, rotated by one place per round: round 1 starts with the first, round 2 with the
# second, and so on.
rotated() {
    local -a all
    read -ra all <<<"$paths"
    local k=$((($1 - 1) % ${#all[@]}))
    echo "${all[@]:k} ${all[@]:0:k}"
}
for round in $(seq "$ROUNDS"); do
for conns in $CONNS; do
    for size in $SIZES; do
        for p in $(rotated "$round"); do
            echo "echo (round $round): $p, $conns connections, $size B" >&2
            measure echo "$round" "$p" echo --url "${url[$p]}" "${headers[@]}" --connections "$conns" \
                --size "$size" --binary --duration "$DURATION" --warmup "$WARMUP" --json
        done
    done
done
done

# --- idle memory per proxied connection ---------------------------------------------------
for p in $paths; do
    echo "idle memory: $p, $IDLE_CONNS connections" >&2
    restart "$p"
    # shellcheck disable=SC2046
    before=$(rss_kb $(pids_of "$p"))
    fifo="$work/hold-$p"; mkfifo "$fifo"
    # Started directly (not through a shell function), so that $! is the generator itself.
    TOKIO_WORKER_THREADS=1 taskset -c "$LOAD_CPU" "$gen" hold --url "${url[$p]}" "${headers[@]}" \
        --sources "$sources" --connections "$IDLE_CONNS" --ignore-stdin >"$fifo" 2>"$work/hold-$p.err" &
    hold=$!
    read -r ready n < "$fifo"
    sleep 2   # let the proxies settle (lazy allocations, ping timers)
    # shellcheck disable=SC2046
    after=$(rss_kb $(pids_of "$p"))
    kill -TERM "$hold"; wait "$hold" || true
    [ "$n" -gt 0 ] || { echo "hold through $p opened nothing:" >&2; cat "$work/hold-$p.err" >&2; }
    record "{\"kind\":\"idle_memory\",\"path\":\"$p\"}" \
        "{\"connections\":$n,\"rss_before_kb\":$before,\"rss_after_kb\":$after,\"bytes_per_connection\":$(( (after - before) * 1024 / (n > 0 ? n : 1) ))}"
    sleep 1
done

# --- handshakes/s (rounds, paths rotated like the round trips) -----------------------------
for round in $(seq "$ROUNDS"); do
    for p in $(rotated "$round"); do
        echo "handshakes (round $round): $p" >&2
        measure handshakes "$round" "$p" handshakes --url "${url[$p]}" "${headers[@]}" \
            --sources "$sources" --connections 32 --duration "$DURATION" --json
    done
done

# --- revocation → close with 1,000 live sockets (in-process harness) -------------------------
echo "revocation latency" >&2
rev=$(cargo bench --quiet -p wsguard-gateway --bench revocation 2>/dev/null | grep -o 'p50 .*')
record '{"kind":"revocation"}' "$(python3 -c 'import json,re,sys; m=re.findall(r"([0-9.]+) ms", sys.argv[1]); print(json.dumps({"p50_ms":float(m[0]),"p99_ms":float(m[1]),"max_ms":float(m[2])}))' "$rev")"

# --- cross-check with tcpkali2 (public route vs direct, 64 B and 1 KiB, 10 connections) --------
for size in 64 1024; do
    for p in direct wsguard-public nginx haproxy; do
        hp=${url[$p]#ws://}; hp=${hp%%/*}
        echo "tcpkali2: $p, $size B" >&2
        r=$(TOKIO_WORKER_THREADS=1 taskset -c "$LOAD_CPU" "$tk2" --websocket -c 10 -w 1 -T "${DURATION%s}s" \
            --warmup "${WARMUP%s}s" -s "$size" "$hp" 2>&1 | tr -d "\r" || true)
        rate=$(sed -n 's/^Requests Rate: *\([0-9.]*\).*/\1/p' <<<"$r")
        p99=$(sed -n 's/.*P99: *\([0-9]*\).*/\1/p' <<<"$r" | tail -1)
        record "{\"kind\":\"tcpkali2\",\"path\":\"$p\"}" "{\"size\":$size,\"connections\":10,\"messages_per_sec\":${rate:-0},\"latency_p99_us\":${p99:-0}}"
    done
done

python3 "$root/bench/report.py" "$results" "$out/latest.md" "$out/latest.svg"
echo "wrote $out/latest.md and $out/latest.svg" >&2
# The goals section, for whoever runs this: the same lines as at the top of latest.md.
sed -n '/^### Goals/,/^### Round trips/p' "$out/latest.md" | sed '$d' >&2
