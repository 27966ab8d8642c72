#!/usr/bin/env python3
"""Turns bench/run.sh's JSON lines into the Markdown tables quoted in BENCHMARKS.md, headed by
issue 5's goals judged on them, and an SVG chart (throughput and p99 latency per path). Standard
library only; reads one results file, writes two files, computes ratios within the one run it
is given."""

import json
import statistics
import sys
from collections import defaultdict

PATHS = ["direct", "wsguard-public", "wsguard-auth", "nginx", "haproxy"]
COLORS = {"direct": "#888888", "wsguard-public": "#1f77b4", "wsguard-auth": "#17becf",
          "nginx": "#2ca02c", "haproxy": "#d62728"}


def size_label(n):
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} B"


def fmt_rate(x):
    return f"{x / 1e3:.1f} k" if x < 1e6 else f"{x / 1e6:.2f} M"


def cpu_per_msg(r):
    """Proxy CPU microseconds per round trip, over warmup + window."""
    if "proxy_cpu_s" not in r or not r["messages_per_sec"]:
        return None
    msgs = r["messages_per_sec"] * (r["duration_s"] + r["warmup_s"])
    return r["proxy_cpu_s"] * 1e6 / msgs


def cpu_per_handshake(r):
    """Proxy CPU microseconds per handshake, over warmup + window."""
    if "proxy_cpu_s" not in r or not r["handshakes_per_sec"]:
        return None
    n = r["handshakes_per_sec"] * (r["duration_s"] + r["warmup_s"])
    return r["proxy_cpu_s"] * 1e6 / n


def round_by_round(rows):
    """wsguard against each peer, one round at a time: the paths of a round run back to back, so
    their ratio is less exposed than a ratio of medians to the machine slowing down for a while."""
    by_round = defaultdict(dict)
    for r in rows:
        if r["kind"] == "echo" and r["size"] < 65536:
            by_round[(r["connections_requested"], r["size"])].setdefault(r.get("round", 1), {})[r["path"]] = r
    if not by_round:
        return []
    md = ["### wsguard against nginx and HAProxy, round by round (64 B and 1 KiB)\n",
          "For each round, wsguard's msgs/s over the peer's in that same round; the median of those "
          "ratios, and in how many rounds wsguard was at least level.\n",
          "| connections | size | path | vs nginx (median of rounds) | rounds ≥ nginx | vs HAProxy (median of rounds) | rounds ≥ HAProxy |",
          "|---|---|---|---|---|---|---|"]
    for (conns, size) in sorted(by_round):
        rounds = by_round[(conns, size)].values()
        for p in ("wsguard-public", "wsguard-auth"):
            cells = []
            for peer in ("nginx", "haproxy"):
                ratios = [r[p]["messages_per_sec"] / r[peer]["messages_per_sec"]
                          for r in rounds if p in r and peer in r and r[peer]["messages_per_sec"]]
                if ratios:
                    won = sum(1 for x in ratios if x >= 1.0)
                    cells += [f"{statistics.median(ratios):.2f}", f"{won}/{len(ratios)}"]
                else:
                    cells += ["—", "—"]
            md.append(f"| {conns} | {size_label(size)} | {p} | " + " | ".join(cells) + " |")
    md.append("")
    return md


def goals(echo, hs, mem, rounds):
    """Issue 5's goals, judged on this run's medians: what is met, and by how much."""
    md = ["### Goals (issue 5) in this run\n",
          "From the medians below. A cell is a (connections, size) pair at 64 B or 1 KiB, for each "
          "wsguard route: 8 in all.\n"]
    if rounds < 3:
        md.append(f"**{rounds} round(s) only (a smoke run such as `QUICK=1`): these verdicts are "
                  "noise, not a measurement.**\n")
    cells = [(c, s) for (c, s) in sorted(echo) if s < 65536]
    routes = ("wsguard-public", "wsguard-auth")
    for peer, name in (("nginx", "nginx"), ("haproxy", "HAProxy")):
        ratios = [(echo[k][p]["messages_per_sec"] / echo[k][peer]["messages_per_sec"], k, p)
                  for k in cells for p in routes if p in echo[k] and peer in echo[k]]
        if ratios:
            met = sum(1 for r, _, _ in ratios if r >= 1.0)
            low, (c, s), p = min(ratios)
            md.append(f"- msgs/s ≥ {name}: {met} of {len(ratios)} cells "
                      f"(lowest {low:.3f}: {p}, {c} × {size_label(s)}).")
    worst, none = None, []
    for k in cells:
        cell = echo[k]
        if not all(x in cell for x in ("direct", "nginx")):
            continue
        base = cell["direct"]["latency_p99_us"]
        n_added = cell["nginx"]["latency_p99_us"] - base
        for p in routes:
            if p not in cell:
                continue
            added = cell[p]["latency_p99_us"] - base
            if n_added <= 0:
                none.append(f"{p}, {k[0]} × {size_label(k[1])}")
            elif worst is None or added / n_added > worst[0]:
                worst = (added / n_added, p, k)
    if worst is not None:
        verdict = "met" if worst[0] <= 2.0 else "not met"
        md.append(f"- added p99 ≤ 2× nginx's: {verdict} where nginx's added p99 is above zero "
                  f"(worst {worst[0]:.2f}×: {worst[1]}, {worst[2][0]} × {size_label(worst[2][1])}).")
    if none:
        md.append(f"- added p99: no ratio where nginx's p99 was at or below direct's ({'; '.join(none)}).")
    if "wsguard-auth" in hs and "nginx" in hs:
        r = hs["wsguard-auth"]["handshakes_per_sec"] / hs["nginx"]["handshakes_per_sec"]
        md.append(f"- authenticated handshakes/s ≥ nginx's plain upgrades/s: {'met' if r >= 1.0 else 'not met'} "
                  f"({r:.2f}).")
    if "nginx" in mem:
        n = mem["nginx"]["bytes_per_connection"]
        parts = [f"{p} {mem[p]['bytes_per_connection'] / n:.2f}" for p in routes if p in mem]
        ok = all(mem[p]["bytes_per_connection"] <= n for p in routes if p in mem)
        md.append(f"- idle memory per connection ≤ nginx's: {'met' if ok else 'not met'} "
                  f"({', '.join(parts)} of nginx's).")
    md.append("")
    return md


def main(src, md_out, svg_out):
    rows = [json.loads(line) for line in open(src) if line.strip()]
    runs = defaultdict(list)
    for r in rows:
        if r["kind"] == "echo":
            runs[(r["connections_requested"], r["size"], r["path"])].append(r)
    # One row per cell and path: the median of each figure over the rounds.
    echo = defaultdict(dict)
    rounds = 0
    for (conns, size, path), rs in runs.items():
        rounds = max(rounds, len(rs))
        med = dict(rs[0])
        for k in ("messages_per_sec", "latency_p50_us", "latency_p99_us", "latency_p999_us",
                  "latency_max_us", "proxy_cpu_s"):
            vals = [x[k] for x in rs if x.get(k) is not None]
            if vals:
                med[k] = statistics.median(vals)
        med["errors"] = sum(x["errors"] for x in rs)
        med["rate_range"] = (min(x["messages_per_sec"] for x in rs), max(x["messages_per_sec"] for x in rs))
        echo[(conns, size)][path] = med
    md = []
    md.append("### Round trips (closed loop, binary messages echoed)\n")
    md.append(f"Each figure is the median of {rounds} rounds (paths alternated within each cell in an "
              "order rotated every round, the whole matrix repeated); *range* is the lowest and highest msgs/s of the rounds. Ratios are "
              "against the same cell of the same run. *added p99* is the path's p99 minus the direct p99.\n")
    md.append("*proxy CPU µs/msg* is the proxy's CPU time (user + system) over the run, warmup included, "
              "per round trip (for `direct`: the echo backend's). Each round trip crosses the proxy twice.\n")
    md.append("| connections | size | path | msgs/s | range | vs direct | vs nginx | proxy CPU µs/msg | vs nginx "
              "| p50 µs | p99 µs | p99.9 µs | max µs | added p99 µs | errors |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (conns, size) in sorted(echo):
        cell = echo[(conns, size)]
        direct = cell.get("direct")
        nginx = cell.get("nginx")
        for p in PATHS:
            r = cell.get(p)
            if not r:
                continue
            vs_d = r["messages_per_sec"] / direct["messages_per_sec"] if direct else float("nan")
            vs_n = r["messages_per_sec"] / nginx["messages_per_sec"] if nginx else float("nan")
            added = r["latency_p99_us"] - direct["latency_p99_us"] if direct else 0
            cpu = cpu_per_msg(r)
            ncpu = cpu_per_msg(nginx) if nginx else None
            cpu_s = f"{cpu:.2f}" if cpu is not None else "—"
            cpu_vs = f"{cpu / ncpu:.2f}" if cpu is not None and ncpu else "—"
            lo, hi = r["rate_range"]
            md.append(f"| {conns} | {size_label(size)} | {p} | {fmt_rate(r['messages_per_sec'])} | "
                      f"{lo / 1e3:.0f}–{hi / 1e3:.0f} k | {vs_d:.2f} | {vs_n:.2f} | {cpu_s} | {cpu_vs} | {r['latency_p50_us']} | "
                      f"{r['latency_p99_us']} | {r['latency_p999_us']} | {r['latency_max_us']} | {added} | "
                      f"{r['errors']} |")
    md.append("")
    md.extend(round_by_round(rows))

    hs_runs = defaultdict(list)
    for r in rows:
        if r["kind"] == "handshakes":
            hs_runs[r["path"]].append(r)
    if hs_runs:
        hs_rounds = max(len(rs) for rs in hs_runs.values())
        md.append("### Handshakes (32 concurrent workers: connect, upgrade, close)\n")
        md.append(f"Each figure is the median of {hs_rounds} rounds (paths rotated every round); *range* is "
                  "the lowest and highest handshakes/s of the rounds. *proxy CPU µs/handshake*: the proxy's "
                  "CPU time over the run, warmup included, per handshake (for `direct`: the echo backend's); "
                  "the generator's core caps handshakes/s for every path alike, so this is the fairer "
                  "measure of what a handshake costs.\n")
        md.append("| path | handshakes/s | range | vs nginx | proxy CPU µs/handshake | vs nginx | p50 µs | p99 µs | refusals | errors |")
        md.append("|---|---|---|---|---|---|---|---|---|---|")
        hs = {}
        for p, rs in hs_runs.items():
            med = {k: statistics.median(x[k] for x in rs)
                   for k in ("handshakes_per_sec", "latency_p50_us", "latency_p99_us")}
            cpus = [c for c in (cpu_per_handshake(x) for x in rs) if c is not None]
            med["cpu"] = statistics.median(cpus) if cpus else None
            med["range"] = (min(x["handshakes_per_sec"] for x in rs), max(x["handshakes_per_sec"] for x in rs))
            med["refusals"] = sum(x["refusals"] for x in rs)
            med["errors"] = sum(x["errors"] for x in rs)
            hs[p] = med
        n = hs.get("nginx", {}).get("handshakes_per_sec")
        ncpu = hs.get("nginx", {}).get("cpu")
        for p in PATHS:
            r = hs.get(p)
            if r:
                ratio = f"{r['handshakes_per_sec'] / n:.2f}" if n else "—"
                cpu = r["cpu"]
                cpu_s = f"{cpu:.0f}" if cpu is not None else "—"
                cpu_vs = f"{cpu / ncpu:.2f}" if cpu is not None and ncpu else "—"
                lo, hi = r["range"]
                md.append(f"| {p} | {fmt_rate(r['handshakes_per_sec'])} | {lo / 1e3:.1f}–{hi / 1e3:.1f} k | {ratio} | "
                          f"{cpu_s} | {cpu_vs} | {r['latency_p50_us']:.0f} | {r['latency_p99_us']:.0f} | "
                          f"{r['refusals']} | {r['errors']} |")
        md.append("")

    mem = {r["path"]: r for r in rows if r["kind"] == "idle_memory"}
    if mem:
        md.append("### Idle memory per connection (RSS of the proxy's processes, before and after)\n")
        md.append("| path | connections | RSS before | RSS after | per connection | vs nginx |")
        md.append("|---|---|---|---|---|---|")
        n = mem.get("nginx", {}).get("bytes_per_connection")
        for p in PATHS:
            r = mem.get(p)
            if r:
                ratio = f"{r['bytes_per_connection'] / n:.2f}" if n else "—"
                name = "direct (the echo backend itself)" if p == "direct" else p
                md.append(f"| {name} | {r['connections']} | {r['rss_before_kb'] / 1024:.1f} MiB | "
                          f"{r['rss_after_kb'] / 1024:.1f} MiB | {r['bytes_per_connection'] / 1024:.2f} KiB | {ratio} |")
        md.append("")

    rev = [r for r in rows if r["kind"] == "revocation"]
    if rev:
        r = rev[-1]
        md.append("### Revocation → close frame, 1,000 other live sockets\n")
        md.append(f"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, max {r['max_ms']:.3f} ms\n")

    tk = [r for r in rows if r["kind"] == "tcpkali2"]
    if tk:
        md.append("### Cross-check: tcpkali2 (10 connections, its own message loop)\n")
        md.append("| size | path | msgs/s (tcpkali2) | msgs/s (wsguard-bench, same cell) | p99 µs (tcpkali2) |")
        md.append("|---|---|---|---|---|")
        for r in tk:
            ours = echo.get((10, r["size"]), {}).get(r["path"])
            ours_s = fmt_rate(ours["messages_per_sec"]) if ours else "—"
            md.append(f"| {size_label(r['size'])} | {r['path']} | {fmt_rate(r['messages_per_sec'])} | {ours_s} | "
                      f"{r['latency_p99_us']} |")
        md.append("")

    md = goals(echo, hs if hs_runs else {}, mem, rounds) + md
    with open(md_out, "w") as f:
        f.write("\n".join(md) + "\n")
    with open(svg_out, "w") as f:
        f.write(svg(echo))


def svg(echo):
    cells = sorted(echo)
    width, bar, gap, top, h = 70 + len(cells) * (len(PATHS) * 14 + 30), 14, 30, 40, 220
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{2 * h + 160}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="100%" height="100%" fill="white"/>']

    import math

    def panel(y0, title, value, unit, log=False):
        out.append(f'<text x="10" y="{y0 - 15}" font-size="13">{title}</text>')
        vals = [value(r) for c in cells for r in echo[c].values()]
        vmax = max(vals, default=1) or 1
        lo = 10 ** math.floor(math.log10(max(min(vals, default=1), 1)))
        hi = 10 ** math.ceil(math.log10(vmax))

        def height(v):
            if log:
                return max(1, int(h * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))))
            return max(1, int(h * v / vmax))

        for i, c in enumerate(cells):
            x0 = 60 + i * (len(PATHS) * bar + gap)
            for j, p in enumerate(PATHS):
                r = echo[c].get(p)
                if not r:
                    continue
                v = value(r)
                bh = height(v)
                out.append(f'<rect x="{x0 + j * bar}" y="{y0 + h - bh}" width="{bar - 2}" height="{bh}" '
                           f'fill="{COLORS[p]}"><title>{p}: {v:.0f} {unit}</title></rect>')
            out.append(f'<text x="{x0}" y="{y0 + h + 14}">{c[0]}c {size_label(c[1])}</text>')
        out.append(f'<line x1="45" y1="{y0 + h}" x2="{width - 5}" y2="{y0 + h}" stroke="black"/>')
        if log:
            t = lo
            while t <= hi:
                y = y0 + h - height(t)
                label = f"{t / 1000:.0f} ms" if t >= 1000 else f"{t:.0f} µs"
                out.append(f'<line x1="45" y1="{y}" x2="{width - 5}" y2="{y}" stroke="#dddddd"/>'
                           f'<text x="2" y="{y + 4}">{label}</text>')
                t *= 10
        else:
            out.append(f'<text x="5" y="{y0 + 10}">{vmax / 1000:.0f} k</text>')

    panel(top, "Round trips per second (higher is better)", lambda r: r["messages_per_sec"], "msgs/s")
    panel(top + h + 70, "p99 latency, log scale (lower is better)", lambda r: r["latency_p99_us"], "µs",
          log=True)
    ly = 2 * h + 145
    for j, p in enumerate(PATHS):
        out.append(f'<rect x="{50 + j * 120}" y="{ly - 10}" width="10" height="10" fill="{COLORS[p]}"/>'
                   f'<text x="{64 + j * 120}" y="{ly}">{p}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main(*sys.argv[1:4])
