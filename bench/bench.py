#!/usr/bin/env python3
"""Helpers for bench/keyspace.sh (Python 3 standard library only).

Subcommands:
  ports N                      print N free loopback TCP ports in 30000-39999
  leader URL...                print the index of the member that reports StateLeader
  term URL...                  print the highest raft term any member reports
  prefill URL N                PUT bench/k0..k<N-1> (64-byte values) through URL
  watch SECS INTERVAL URL...   poll every member, print JSON with leader/term changes
  wrk FILE                     parse wrk --latency output, print JSON
  record RESULTS SYS KEY JSON  append one result (JSON value) to the results file
  table RESULTS OUT.md         print the markdown table and write it to OUT.md
"""

import concurrent.futures
import http.client
import json
import random
import re
import socket
import statistics
import sys
import threading
import time
import urllib.parse


# ---------------------------------------------------------------- ports

def free_ports(n):
    """N distinct ports in 30000-39999 that nothing listens on or is bound to."""
    chosen = []
    tries = 0
    while len(chosen) < n:
        tries += 1
        if tries > 5000:
            sys.exit("could not find free ports")
        port = random.randint(30000, 39999)
        if port in chosen:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        # Also refuse a port something already accepts connections on (any address).
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(0.2)
        try:
            if c.connect_ex(("127.0.0.1", port)) == 0:
                continue
        finally:
            c.close()
        chosen.append(port)
    return chosen


# ---------------------------------------------------------------- http

def request(url, method="GET", body=None, headers=None, timeout=1.0):
    """(status, headers dict lower-cased, body bytes) or raises OSError."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def self_stats(url):
    """(state, leader id, term or None) from /v2/stats/self plus X-Raft-Term."""
    status, _, data = request(url + "/v2/stats/self")
    if status != 200:
        raise OSError(f"stats/self: HTTP {status}")
    st = json.loads(data)
    term = st.get("term")
    if term is None:
        # etcd's stats/self has no term; every v2 keys response carries it.
        _, hdrs, _ = request(url + "/v2/keys/")
        term = hdrs.get("x-raft-term")
    return st.get("state"), st.get("leaderInfo", {}).get("leader", ""), (
        int(term) if term is not None else None)


def cmd_leader(urls):
    for i, url in enumerate(urls):
        try:
            state, _, _ = self_stats(url)
        except (OSError, ValueError):
            continue
        if state == "StateLeader":
            print(i)
            return 0
    return 1


def cmd_term(urls):
    terms = []
    for url in urls:
        try:
            terms.append(self_stats(url)[2] or 0)
        except (OSError, ValueError):
            pass
    print(max(terms) if terms else -1)
    return 0


def cmd_prefill(url, n):
    u = urllib.parse.urlsplit(url)
    body = "value=" + "v" * 64
    hdrs = {"Content-Type": "application/x-www-form-urlencoded"}
    ok = 0
    bad = 0
    lock = threading.Lock()
    keys = iter(range(n))

    def worker():
        nonlocal ok, bad
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        while True:
            with lock:
                k = next(keys, None)
            if k is None:
                break
            try:
                conn.request("PUT", f"/v2/keys/bench/k{k}", body=body, headers=hdrs)
                resp = conn.getresponse()
                resp.read()
                good = 200 <= resp.status < 300
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
                good = False
            with lock:
                if good:
                    ok += 1
                else:
                    bad += 1
        conn.close()

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        for f in [pool.submit(worker) for _ in range(64)]:
            f.result()
    print(json.dumps({"ok": ok, "failed": bad, "seconds": round(time.monotonic() - t0, 2)}))
    return 0 if bad == 0 else 1


def cmd_watch(secs, interval, urls):
    """Poll every member; count changes of the cluster's term and of each member's leader."""
    end = time.monotonic() + secs
    last_leader = [None] * len(urls)
    last_term = None
    leader_changes = 0
    term_changes = 0
    no_leader_polls = 0
    errors = 0
    polls = 0
    terms_seen = set()
    while time.monotonic() < end:
        tick = time.monotonic()
        polls += 1
        terms = []
        for i, url in enumerate(urls):
            try:
                state, leader, term = self_stats(url)
            except (OSError, ValueError, http.client.HTTPException):
                errors += 1
                continue
            if not leader or leader in ("0",):
                no_leader_polls += 1
            elif last_leader[i] is not None and leader != last_leader[i]:
                leader_changes += 1
            if leader:
                last_leader[i] = leader
            if term is not None:
                terms.append(term)
                terms_seen.add(term)
        if terms:
            t = max(terms)
            if last_term is not None and t != last_term:
                term_changes += 1
            last_term = t
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    print(json.dumps({
        "polls": polls, "errors": errors, "term_changes": term_changes,
        "leader_changes": leader_changes, "no_leader_polls": no_leader_polls,
        "terms": sorted(terms_seen),
    }))
    return 0


# ---------------------------------------------------------------- wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        return None
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(text):
    out = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": 0,
           "non2xx": 0, "socket_errors": 0, "seconds": None}
    m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text)
    if m:
        out["requests"] = int(m.group(1))
        out["seconds"] = to_ms(m.group(2) + m.group(3)) / 1e3
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(r"^\s*" + pct + r"%\s+(\S+)", text, re.M)
        if m:
            out[key] = to_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = sum(int(x) for x in m.groups())
    failed = out["non2xx"] + out["socket_errors"]
    total = out["requests"] + out["socket_errors"]
    out["failed_frac"] = (failed / total) if total else 1.0
    # wrk's Requests/sec counts error answers too; this is the rate of 2xx/3xx ones.
    if out["seconds"]:
        out["ok_rps"] = max(0, out["requests"] - out["non2xx"]) / out["seconds"]
    else:
        out["ok_rps"] = None
    out["valid"] = out["rps"] is not None and out["failed_frac"] < 0.5
    return out


# ---------------------------------------------------------------- results

def load(path):
    res = {}
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    res.setdefault(r["system"], {})[r["key"]] = r["value"]
    except FileNotFoundError:
        pass
    return res


def fmt_num(x):
    if x is None:
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}"


def fmt_ms(x):
    if x is None:
        return "n/a"
    return f"{x:.2f} ms" if x < 1000 else f"{x / 1000:.2f} s"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def cmd_table(path, out):
    res = load(path)
    sh, et = res.get("shoal", {}), res.get("etcd", {})
    rows = []
    notes = []

    def rate_cell(r):
        if not r:
            return "n/a", None
        if not r["valid"]:
            return f"INVALID ({r['failed_frac']:.0%} failed)", None
        cell = fmt_num(r["rps"])
        if r["non2xx"] or r["socket_errors"]:
            cell += f" ({r['non2xx']} non-2xx, {r['socket_errors']} sock err)"
        return cell, r["rps"]

    def wrk_rows(label, key, lat=True):
        a, b = sh.get(key), et.get(key)
        ca, va = rate_cell(a)
        cb, vb = rate_cell(b)
        rows.append((f"{label}/s", ca, cb, ratio(va, vb)))
        if lat:
            pa = (a or {}).get("p50_ms"), (a or {}).get("p99_ms")
            pb = (b or {}).get("p50_ms"), (b or {}).get("p99_ms")
            cell_a = f"{fmt_ms(pa[0])} / {fmt_ms(pa[1])}" if a else "n/a"
            cell_b = f"{fmt_ms(pb[0])} / {fmt_ms(pb[1])}" if b else "n/a"
            rat = (f"{ratio(pa[0], pb[0])} / {ratio(pa[1], pb[1])}"
                   if a and b and a["valid"] and b["valid"] else "n/a")
            rows.append((f"{label} p50 / p99", cell_a, cell_b, rat))

    wrk_rows("PUT c64", "put_c64")
    wrk_rows("PUT c1", "put_c1")
    wrk_rows("GET c64 (serializable)", "get_c64")
    wrk_rows("quorum GET c64", "qget_c64")

    def non2xx_cell(s):
        parts = []
        for key in ("put_c64", "put_c1", "get_c64", "qget_c64"):
            r = s.get(key)
            if r:
                parts.append(f"{r['non2xx'] + r['socket_errors']}/{r['requests']}")
        return " · ".join(parts) if parts else "n/a"

    rows.append(("failed requests (non-2xx + socket err) / total: PUT c64 · PUT c1 · GET · qGET",
                 non2xx_cell(sh), non2xx_cell(et), ""))

    ra, rb = sh.get("rss_kb"), et.get("rss_kb")
    rows.append(("peak RSS (max member VmHWM)",
                 f"{ra / 1024:.1f} MiB" if ra else "n/a",
                 f"{rb / 1024:.1f} MiB" if rb else "n/a", ratio(ra, rb)))

    def fo(s, key):
        f = s.get("failover")
        if not f or not f.get(key):
            return None, None, "n/a"
        t = f[key]
        med, worst = statistics.median(t), max(t)
        cell = f"{fmt_ms(med)} / {fmt_ms(worst)} (n={len(t)}"
        if f.get("failed"):
            cell += f", {f['failed']} trials never wrote"
        return med, worst, cell + ")"

    for key, label in (
            ("times_ms", "failover SIGKILL→first 2xx write, retry loop (curl -m 1), median / worst"),
            ("probe_times_ms", "failover SIGKILL→earliest 2xx incl. a probe every 100 ms, median / worst")):
        ma, wa, ca = fo(sh, key)
        mb, wb, cb = fo(et, key)
        rows.append((label, ca, cb, f"{ratio(ma, mb)} / {ratio(wa, wb)}"))

    def spur(s):
        w = s.get("idle_watch")
        if not w:
            return "n/a"
        return (f"{w['term_changes']} term, {w['leader_changes']} leader changes"
                f" in {w['seconds']} s idle")

    rows.append(("spurious elections (idle watch)", spur(sh), spur(et), ""))

    def loaded(s):
        a, b = s.get("term_before_load"), s.get("term_after_load")
        if a is None or b is None:
            return "n/a"
        return f"term {a} → {b}"

    rows.append(("term during load phase (before → after)", loaded(sh), loaded(et), ""))

    for s_name, s in (("shoal", sh), ("etcd", et)):
        if s.get("prefill"):
            p = s["prefill"]
            notes.append(f"{s_name}: prefill of 10,000 keys: {p['ok']} ok, {p['failed']} failed,"
                         f" {p['seconds']} s")
        if s.get("failover", {}).get("times_ms"):
            f = s["failover"]
            notes.append(f"{s_name}: failover trials, retry loop (ms): "
                         + ", ".join(f"{t:.0f}" for t in f["times_ms"])
                         + "; earliest incl. probes (ms): "
                         + ", ".join(f"{t:.0f}" for t in f.get("probe_times_ms", [])))

    meta = res.get("meta", {})
    lines = []
    if meta:
        lines.append(f"# Shoal vs etcd {meta.get('etcd_version', '')} keyspace benchmark — "
                     f"{meta.get('date', '')}")
        lines.append("")
        lines.append(f"Host: {meta.get('host', '')}; wrk duration {meta.get('duration', '')}; "
                     f"{meta.get('timing', 'each system with its default timing')}; "
                     f"Shoal {meta.get('shoal_rev', '')}; 3 members each on loopback, "
                     f"one system at a time; loads against the leader's client URL. "
                     f"Load average at start {meta.get('load_start', '?')}, "
                     f"at end {meta.get('load_end', '?')}.")
        lines.append("")
    lines.append("| metric | Shoal | etcd | Shoal/etcd |")
    lines.append("|---|---|---|---|")
    for r in rows:
        if r[1] == r[2] == "n/a":
            continue  # a phase that did not run (PHASES)
        lines.append("| " + " | ".join(r) + " |")
    if notes:
        lines.append("")
        for n in notes:
            lines.append(f"- {n}")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(out, "w") as f:
        f.write(text)
    return 0


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        print(" ".join(map(str, free_ports(int(args[0])))))
        return 0
    if cmd == "leader":
        return cmd_leader(args)
    if cmd == "term":
        return cmd_term(args)
    if cmd == "prefill":
        return cmd_prefill(args[0], int(args[1]))
    if cmd == "watch":
        return cmd_watch(float(args[0]), float(args[1]), args[2:])
    if cmd == "wrk":
        with open(args[0]) as f:
            print(json.dumps(parse_wrk(f.read())))
        return 0
    if cmd == "record":
        with open(args[0], "a") as f:
            f.write(json.dumps({"system": args[1], "key": args[2],
                                "value": json.loads(args[3])}) + "\n")
        return 0
    if cmd == "table":
        return cmd_table(args[0], args[1])
    sys.exit(f"unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
