#!/usr/bin/env python3
"""Assembles bench/report.sh's run dir into one markdown report with an SVG
bar chart per benchmark (Python 3 standard library only).

  report.py RUN_DIR OUT.md

RUN_DIR holds, per benchmark NAME: NAME.status (first line: ok, failed or
skipped, then a note), NAME.md (its table), NAME.cmd (the command run) and
machine-readable figures where the benchmark writes them (keyspace.jsonl,
watch.json, recovery.json). Charts go next to OUT.md as OUT-stem-NAME.svg.
"""

import html
import json
import os
import re
import statistics
import sys

# Benchmarks in report order: (name, title).
BENCHES = [
    ("keyspace", "Key space: Shoal vs etcd 3.4 (wrk)"),
    ("failover", "Failover: leader SIGKILL → first successful write"),
    ("watch", "Watch fan-out: write → delivery"),
    ("recovery", "Recovery: a wiped member catches up from a snapshot"),
    ("placement", "Placement at scale"),
    ("rollout", "OS update rollout"),
    ("download", "Payload download"),
    ("start-latency", "Container start latency"),
    ("dashboard", "Dashboard"),
]

COLORS = {"Shoal": "#2b6cb0", "etcd": "#dd6b20"}
OTHER_COLORS = ["#718096", "#38a169", "#805ad5", "#d69e2e"]


# ---------------------------------------------------------------- SVG

def bar_chart(title, unit, groups):
    """Horizontal grouped bars: groups = [(label, [(series, value or None)])]."""
    series = []
    for _, bars in groups:
        for s, _ in bars:
            if s not in series:
                series.append(s)
    color = {}
    spare = iter(OTHER_COLORS * 4)
    for s in series:
        color[s] = COLORS.get(s) or next(spare)
    values = [v for _, bars in groups for _, v in bars if v is not None]
    top = max(values) if values else 1.0
    top = top if top > 0 else 1.0
    label_w, bar_w, bar_h, gap = 300, 380, 16, 12
    width = label_w + bar_w + 110
    y = 46
    parts = []
    for label, bars in groups:
        parts.append(f'<text x="{label_w - 8}" y="{y + bar_h - 3}" text-anchor="end">'
                     f'{html.escape(label)}</text>')
        for s, v in bars:
            w = 0 if v is None else max(1.0, bar_w * v / top)
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                         f'fill="{color[s]}"><title>{html.escape(s)}: {fmt(v, unit)}</title></rect>')
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 3}">'
                         f'{html.escape(fmt(v, unit))}</text>')
            y += bar_h + 2
        y += gap
    legend = []
    lx = label_w
    for s in series:
        legend.append(f'<rect x="{lx}" y="26" width="12" height="12" fill="{color[s]}"/>'
                      f'<text x="{lx + 16}" y="36">{html.escape(s)}</text>')
        lx += 24 + 8 * len(s)
    height = y + 10
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">'
            f'<rect width="100%" height="100%" fill="white"/>'
            f'<text x="8" y="16" font-size="14" font-weight="bold">{html.escape(title)}</text>'
            + "".join(legend) + "".join(parts) + "</svg>\n")


def fmt(v, unit):
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f} {unit}"
    return f"{v:.2f} {unit}"


# ---------------------------------------------------------------- figures

def read(run, name, ext):
    path = os.path.join(run, f"{name}.{ext}")
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def keyspace_results(run, name):
    """bench/keyspace.sh's raw results (RESULTS_JSONL) of run NAME, by system and key."""
    text = read(run, name, "jsonl") or ""
    res = {}
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            res.setdefault(r["system"], {})[r["key"]] = r["value"]
    return res


def chart_keyspace(run):
    res = keyspace_results(run, "keyspace")
    groups = []
    for key, label in (("put_c64", "PUT, 64 connections"), ("put_c1", "PUT, 1 connection"),
                       ("get_c64", "GET (serializable), 64 conn."),
                       ("qget_c64", "quorum GET, 64 conn.")):
        bars = [(name, (res.get(sys_, {}).get(key) or {}).get("ok_rps"))
                for sys_, name in (("shoal", "Shoal"), ("etcd", "etcd"))]
        if any(v is not None for _, v in bars):
            groups.append((label, bars))
    return ("requests per second (2xx), higher is better", "req/s", groups)


def chart_failover(run):
    res = keyspace_results(run, "failover")
    groups = {"median": [], "worst": []}
    for sys_, name in (("shoal", "Shoal"), ("etcd", "etcd")):
        t = (res.get(sys_, {}).get("failover") or {}).get("times_ms") or []
        groups["median"].append((name, statistics.median(t) if t else None))
        groups["worst"].append((name, max(t) if t else None))
    trials = [len((res.get(s, {}).get("failover") or {}).get("times_ms") or [])
              for s in ("shoal", "etcd")]
    return (f"SIGKILL → first 2xx write ({trials[0]} / {trials[1]} trials), lower is better",
            "ms", list(groups.items()))


def chart_watch(run):
    data = json.loads(read(run, "watch", "json") or "{}")
    groups = []
    by = {}
    for r in data.get("watch", []):
        by[(r["system"], r["longpoll"], r["sse"])] = r
    lp_alone = [r for (s, l, e), r in by.items() if l and not e]
    for pct in ("p50", "p99"):
        if lp_alone:
            n = lp_alone[0]["longpoll"]
            bars = [({"shoal": "Shoal", "etcd": "etcd"}[r["system"]],
                     r["longpoll_latency"][f"{pct}_ms"]) for r in lp_alone]
            groups.append((f"{n:,} long-poll, {pct}", bars))
    for (s, l, e), r in by.items():
        if s != "shoal" or not e:
            continue
        for pct in ("p50", "p99"):
            if l:
                groups.append((f"{l:,} long-poll + {e:,} SSE: long-poll {pct}",
                               [("Shoal", r["longpoll_latency"][f"{pct}_ms"])]))
                groups.append((f"{l:,} long-poll + {e:,} SSE: SSE {pct}",
                               [("Shoal", r["sse_latency"][f"{pct}_ms"])]))
            else:
                groups.append((f"{e:,} SSE alone, {pct}", [("Shoal", r["sse_latency"][f"{pct}_ms"])]))
    return ("write → delivery latency, lower is better (etcd has no SSE)", "ms", groups)


def chart_recovery(run):
    results = json.loads(read(run, "recovery", "json") or "{}").get("recovery") or []
    names = {"shoal": "Shoal", "etcd": "etcd"}
    groups = []
    for key, label in (("load_secs", "load the keys"), ("healthy_secs", "restart → /health true"),
                       ("caught_up_secs", "restart → caught up")):
        groups.append((label, [(names.get(r["system"], r["system"]), r.get(key))
                               for r in results]))
    keys = results[0]["keys"] if results else 0
    return (f"{keys:,} keys, seconds, lower is better", "s", groups)


NUM = re.compile(r"~?(-?[\d,]*\.?\d+)\s*(µs|ms|s|MB/s|/s)?")


def number(cell):
    """(value, unit) of the first number in a table cell, or (None, None)."""
    m = NUM.search(cell.replace("**", ""))
    if not m:
        return None, None
    return float(m.group(1).replace(",", "")), m.group(2)


def table_rows(md):
    """Cells of every markdown table row, header and separator rows excluded."""
    rows = []
    for line in md.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.fullmatch(r"\|[\s\-|:]+\|", line):
            continue
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def chart_placement(run):
    groups = []
    for cells in table_rows(read(run, "placement", "md") or ""):
        if cells[0].startswith("placements per second") and "per core" not in cells[0]:
            groups.append(("placements per second", [
                ("Shoal", number(cells[1])[0]),
                ("Nomad C1M (published, not run here)", number(cells[2])[0] if len(cells) > 2 else None)]))
    return ("placements per second, higher is better", "/s", groups)


def chart_rollout(run):
    groups = []
    for cells in table_rows(read(run, "rollout", "md") or ""):
        if cells[0].startswith("ideal:"):
            groups.append(("rollout wall time", [("ideal (reboot + health only)", number(cells[1])[0])]))
        elif cells[0].startswith("measured wall time"):
            if groups:
                groups[-1][1].insert(0, ("Shoal", number(cells[1])[0]))
    return ("rollout wall time against the ideal, lower is better", "s", groups)


def chart_download(run):
    bars = []
    for cells in table_rows(read(run, "download", "md") or ""):
        if len(cells) >= 5 and "MB/s" in cells[1]:
            label = cells[0].split(":")[0].strip("` ")
            name = "Shoal" if label.startswith("download") else label
            bars.append((name, number(cells[1])[0]))
    return ("aggregate MB/s (median round), higher is better", "MB/s",
            [("throughput", bars)] if bars else [])


def chart_start_latency(run):
    rows = [c for c in table_rows(read(run, "start-latency", "md") or "")
            if len(c) >= 4 and number(c[2])[0] is not None]
    groups = []
    for i, what in ((2, "median"), (3, "p90")):
        groups.append((what, [("Shoal" if "shoal" in c[0].lower() else c[0], number(c[i])[0])
                              for c in rows]))
    return ("ms from request to the container's start event, lower is better", "ms",
            groups if rows else [])


def chart_dashboard(run):
    """Medians against the issue's targets: server-rendered pages and hydration."""
    groups = []
    for cells in table_rows(read(run, "dashboard", "md") or ""):
        if len(cells) < 3:
            continue
        target = number(cells[2])[0]
        parts = cells[0].split(",")
        if "whole page" in cells[0]:
            label = parts[0]
        elif "→ hydrated" in cells[0]:
            label = f"{parts[0]}, {parts[1].split(':')[0].strip()}"
        else:
            continue
        groups.append((f"{label}, median", [("Shoal", number(cells[1])[0]), ("target", target)]))
    return ("ms, median against the target (lower is better)", "ms", groups)


CHARTS = {
    "keyspace": chart_keyspace, "failover": chart_failover, "watch": chart_watch,
    "recovery": chart_recovery, "placement": chart_placement, "rollout": chart_rollout,
    "download": chart_download, "start-latency": chart_start_latency,
    "dashboard": chart_dashboard,
}


def demote(md):
    """The part's own headings become level 3 and below; its first title is dropped."""
    out = []
    for line in md.splitlines():
        if line.startswith("#"):
            if not out and line.startswith("# "):
                continue
            line = "##" + line
        out.append(line)
    return "\n".join(out).strip() + "\n"


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    run, out = argv[1], argv[2]
    stem = os.path.splitext(os.path.basename(out))[0]
    meta = json.loads(read(run, "meta", "json") or "{}")
    lines = [f"# Shoal benchmark report — {meta.get('date', '')}", ""]
    lines.append(f"Mode: **{meta.get('mode', 'full')}**. Host: {meta.get('host', '?')}. "
                 f"Shoal {meta.get('rev', '?')}, etcd {meta.get('etcd', '?')}. "
                 f"Load average (1/5/15 min) at start {meta.get('load_start', '?')}, "
                 f"at end {meta.get('load_end', '?')}.")
    lines.append("")
    lines.append("**The machine was shared**: other engineers compiled on it during the run, "
                 "so absolute figures are pessimistic and noisy; each anchor (etcd, docker run, "
                 "plain disk writes) ran in the same run on the same loaded machine, one system "
                 "at a time. Every process ran on loopback.")
    lines.append("")
    lines.append("| benchmark | status | seconds |")
    lines.append("|---|---|---|")
    for name, title in BENCHES:
        st = (read(run, name, "status") or "").splitlines()
        if st:
            lines.append(f"| [{title}](#{name}) | {html.escape(' '.join(st[:2]))} | "
                         f"{(read(run, name, 'secs') or '?').strip()} |")
    lines.append("")
    for name, title in BENCHES:
        st = (read(run, name, "status") or "").splitlines()
        if not st:
            continue
        lines.append(f'<a id="{name}"></a>')
        lines.append(f"## {title}")
        lines.append("")
        cmd = (read(run, name, "cmd") or "").strip()
        if cmd:
            lines.append(f"`{cmd}` — {' '.join(st[:2])}")
            lines.append("")
        md = read(run, name, "md")
        if name in CHARTS and md is not None and st[0] == "ok":
            try:
                ctitle, unit, groups = CHARTS[name](run)
            except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
                groups, ctitle, unit = [], f"no chart: {e}", ""
            if groups:
                svg = f"{stem}-{name}.svg"
                with open(os.path.join(os.path.dirname(out) or ".", svg), "w") as f:
                    f.write(bar_chart(f"{title}: {ctitle}", unit, groups))
                lines.append(f"![{title}]({svg})")
                lines.append("")
        if md:
            lines.append(demote(md))
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
