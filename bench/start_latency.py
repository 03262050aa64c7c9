#!/usr/bin/env python3
"""Container start latency: through Shoal against plain `docker run`.

Starts one shoal-server and one shoal-agent (release builds) on loopback and,
for TRIALS rounds, measures from the moment a request is sent until Docker
reports the container's `start` event (nanosecond timestamps from
`docker events`, so polling does not blur the figure):
  - shoal:  POST /api/v1/units (one new launched unit), which the engine places
            and the agent creates and starts;
  - docker: `docker run -d --init` of the same image and command.
Rounds alternate between the two so both see the same machine state. Prints a
markdown table (min / median / p90 / max / mean, ms) and writes it to OUT.
Every wait is bounded; every process and container it made is removed.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

IMAGE = "shoal-test/busybox:latest"
TRIALS = int(os.environ.get("TRIALS", "20"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "target", "release"))
OUT = sys.argv[1] if len(sys.argv) > 1 else None
RUN = f"lat{os.getpid()}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


class Events:
    """`docker events` for container starts, read line by line."""

    def __init__(self, label):
        self.proc = subprocess.Popen(
            ["docker", "events", "--filter", "event=start", "--filter", f"label={label}",
             "--format", "{{.TimeNano}} {{index .Actor.Attributes \"name\"}}"],
            stdout=subprocess.PIPE, text=True)

    def next_start(self, name_part, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            nanos, _, name = line.strip().partition(" ")
            if name_part in name:
                return int(nanos)
        raise SystemExit(f"no start event for {name_part}")

    def close(self):
        self.proc.kill()
        self.proc.wait()


def summary(samples):
    s = sorted(samples)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    return [min(s), statistics.median(s), p90, max(s), statistics.mean(s)]


def main():
    procs = []
    data = tempfile.mkdtemp(prefix="shoal-latency.")
    client, peer, local = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{client}"
    logs = open(os.path.join(data, "processes.log"), "w")
    try:
        procs.append(subprocess.Popen(
            [os.path.join(BIN, "shoal-server"), "--name", "n1", "--data-dir", os.path.join(data, "server"),
             "--listen-client-urls", base, "--advertise-client-urls", base,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"n1=http://127.0.0.1:{peer}"],
            stdout=logs, stderr=logs))
        wait_for("the server", lambda: http("GET", f"{base}/health")["health"] == "true")
        machine = f"{RUN}-m1"
        procs.append(subprocess.Popen(
            [os.path.join(BIN, "shoal-agent"), "--server", base, "--machine-id", machine,
             "--state-dir", os.path.join(data, "agent"), "--local-endpoint", f"127.0.0.1:{local}"],
            stdout=logs, stderr=logs))
        wait_for("the agent", lambda: any(m["id"] == machine for m in http("GET", f"{base}/api/v1/machines")))

        shoal_events = Events(f"shoal.machine={machine}")
        docker_events = Events(f"shoal.bench={RUN}")
        shoal, docker = [], []
        for i in range(TRIALS):
            name = f"lat{i}"
            t0 = time.time_ns()
            http("POST", f"{base}/api/v1/units",
                 {"name": name, "image": IMAGE, "command": ["sleep", "600"], "desired": "launched"})
            shoal.append((shoal_events.next_start(f"shoal-{name}-") - t0) / 1e6)

            t0 = time.time_ns()
            subprocess.run(["docker", "run", "-d", "--init", "--name", f"{RUN}-{name}",
                            "--label", f"shoal.bench={RUN}", IMAGE, "sleep", "600"],
                           check=True, stdout=subprocess.DEVNULL)
            docker.append((docker_events.next_start(f"{RUN}-{name}") - t0) / 1e6)
        shoal_events.close()
        docker_events.close()
    finally:
        for p in procs:
            p.kill()
            p.wait()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=shoal.bench={RUN}"],
                             capture_output=True, text=True).stdout.split()
        ids += subprocess.run(["docker", "ps", "-aq", "--filter", f"label=shoal.machine={RUN}-m1"],
                              capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], stdout=subprocess.DEVNULL)
        logs.close()
        shutil.rmtree(data, ignore_errors=True)

    rows = [("Shoal: POST /api/v1/units → container started", summary(shoal)),
            ("`docker run -d --init` → container started", summary(docker))]
    ratio = statistics.median(shoal) / statistics.median(docker)
    lines = [
        "## Container start latency",
        "",
        f"{TRIALS} rounds, alternating; one shoal-server and one shoal-agent (release) on loopback, "
        f"image `{IMAGE}` running `sleep 600`; time from sending the request to Docker's `start` event.",
        "",
        "| path | min ms | median ms | p90 ms | max ms | mean ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, vals in rows:
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    lines += ["", f"Median ratio Shoal / docker run: {ratio:.2f}x"]
    text = "\n".join(lines)
    print(text)
    if OUT:
        with open(OUT, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
