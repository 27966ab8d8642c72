#!/usr/bin/env bash
# Runs the Autobahn WebSocket test cases (via `kosoku`, Autobahn's cases under Python 3) through
# the gateway: kosoku → wsguard (public route) → `wsguard echo`. Twice: every case but the
# compression ones (12.*, 13.*) through a route without `compression` (permessage-deflate never
# negotiated), then 12.* and 13.* through a second gateway whose route has `compression = true`
# (kosoku compresses, wsguard inflates for the echo, which does not, and compresses its answers).
# Each run prints its own count line.
#
# Fails if any case fails or passes only non-strictly. (6.4.3 and 6.4.4 send invalid UTF-8 inside
# ONE frame in several TCP chops: the relay checks text as its bytes arrive, even inside a frame,
# so they fail fast and pass strictly.)
#
# Usage: scripts/autobahn.sh [path/to/wsguard]     (default: target/debug/wsguard, built if missing)
#
# kosoku is installed (pinned) into a virtual environment, target/autobahn-venv (under
# $CARGO_TARGET_DIR if set, or $WSGUARD_AUTOBAHN_VENV), created on the first run and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
bin=${1:-$target/debug/wsguard}
kosoku_version=0.1.0
[ -x "$bin" ] || cargo build -p wsguard
bin=$(realpath "$bin")
# kosoku lives in a virtual environment of its own, kept under target/ and reused: a distribution's
# Python refuses `pip install` into itself (PEP 668, "externally managed"). Debian's python3 needs
# the python3-venv package for `python3 -m venv` (.ci/run installs it).
venv=${WSGUARD_AUTOBAHN_VENV:-$target/autobahn-venv}
if ! "$venv/bin/python" -c 'import kosoku' 2>/dev/null; then
    python3 -m venv --clear "$venv" || {
        echo "autobahn.sh: \`python3 -m venv\` failed: install python3-venv (Debian/Ubuntu)" >&2
        exit 2
    }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kosoku==$kosoku_version"
fi
kosoku=$(realpath "$venv/bin/kosoku")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo_port=$(free_port); gw_port=$(free_port); admin_port=$(free_port)
cat > "$work/wsguard.toml" <<TOML
[gateway]
listen = "127.0.0.1:$gw_port"
allow_missing_origin = true
[admin]
listen = "127.0.0.1:$admin_port"
[[route]]
path = "/"
upstream = "ws://127.0.0.1:$echo_port"
public = true
[route.messages]
max_message_bytes = 67108864
# Case 9.3.* sends 4 MiB in 64-byte fragments: lift the fragment cap for the conformance run.
max_fragments = 1000000
assembly_timeout = "60s"
TOML
(cd "$work" && "$bin" keygen >/dev/null)
(cd "$work" && exec "$bin" echo --listen "127.0.0.1:$echo_port" >echo.log 2>&1) &
(cd "$work" && exec "$bin" serve >serve.log 2>&1) &
for _ in $(seq 100); do
    grep -q 'wsguard listening' "$work/serve.log" 2>/dev/null && break
    sleep 0.1
done
# The same gateway with permessage-deflate on its route, for the compression cases.
z_port=$(free_port); z_admin_port=$(free_port)
mkdir "$work/z"
sed -e "s/127.0.0.1:$gw_port/127.0.0.1:$z_port/" -e "s/127.0.0.1:$admin_port/127.0.0.1:$z_admin_port/" \
    -e 's/^public = true$/public = true\ncompression = true/' "$work/wsguard.toml" >"$work/z/wsguard.toml"
grep -q '^compression = true$' "$work/z/wsguard.toml"
(cd "$work/z" && "$bin" keygen >/dev/null)
(cd "$work/z" && exec "$bin" serve >serve.log 2>&1) &
for _ in $(seq 100); do
    grep -q 'wsguard listening' "$work/z/serve.log" 2>/dev/null && break
    sleep 0.1
done
(cd "$work" && "$kosoku" -m fuzzingclient -x '12.*' -x '13.*' -p 2 "127.0.0.1:$gw_port" -o reports >kosoku.out 2>&1) || true
tail -n 1 "$work/kosoku.out"
(cd "$work/z" && "$kosoku" -m fuzzingclient -i '12.*' -i '13.*' -p 2 "127.0.0.1:$z_port" -o reports >kosoku.out 2>&1) || true
tail -n 1 "$work/z/kosoku.out"
status=0
for run in "$work/reports:without compression" "$work/z/reports:with compression = true"; do
python3 - "${run%%:*}" "${run#*:}" <<'PY' || status=1
import glob, json, sys
known = set()
counts, bad = {}, []
for f in glob.glob(sys.argv[1] + "/*case_*.json"):
    d = json.load(open(f))
    case = d.get("id") or f.rsplit("case_", 1)[1][:-5].replace("_", ".")
    b, bc = d.get("behavior"), d.get("behaviorClose")
    counts[b] = counts.get(b, 0) + 1
    if b in ("FAILED", "ERROR") or bc in ("FAILED", "ERROR") or (b == "NON-STRICT" and case not in known):
        bad.append((case, b, bc))
print(f"autobahn through wsguard ({sys.argv[2]}):", ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
if not counts or bad:
    print("not passing:", sorted(bad) or "no reports")
    sys.exit(1)
PY
done
exit $status
