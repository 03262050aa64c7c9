#!/usr/bin/env bash
# Every benchmark of the project, one markdown report with an SVG chart each:
#
#   bench/report.sh            # full sizes (about an hour on 2 cores)
#   bench/report.sh --quick    # small sizes, a few minutes
#
# Runs, one after the other: key space vs etcd 3.4 (bench/keyspace.sh, load
# phase), failover vs etcd (its failover phase, same heartbeat and election
# timeout on both), watch fan-out vs etcd v2 watchers and recovery from a wiped
# data dir (tests/examples/cluster-bench), placement (bench/placement.sh),
# rollout and download (bench/rollout.sh, bench/download.sh), container start
# latency vs docker run (bench/start-latency.sh, skipped without Docker), and
# the dashboard (bench/dashboard.sh). Writes bench/results/report-<date>.md and
# report-<date>-<bench>.svg; each benchmark's own table and log stay in the
# run dir it prints. A benchmark that fails is marked so and the rest still run.
#
# Env: BUILD=0 skips the release build; ONLY="watch recovery" runs a subset;
# BENCH_TIMEOUT (seconds per benchmark, default 3600).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

MODE=full
case ${1:-} in
  --quick) MODE=quick ;;
  "") ;;
  *) echo "usage: bench/report.sh [--quick]" >&2; exit 2 ;;
esac
ONLY=${ONLY:-keyspace failover watch recovery placement rollout download start-latency dashboard}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-3600}

if [[ $MODE == quick ]]; then
  KEYSPACE_ENV=(DURATION=3s IDLE_WATCH=3)
  FAILOVER_ENV=(TRIALS=5)
  WATCH_ARGS=(--longpoll 1000 --sse 100 --writes 5)
  RECOVERY_ARGS=(--keys 20000)
  PLACEMENT_ARGS=(--machines 200 --units 18 --kill 20 --hold 5)
  ROLLOUT_ARGS=(--hosts 10 --reboot-ms 500 --health-ms 250 --warmup-secs 1 --steady-secs 2)
  DOWNLOAD_ARGS=(--clients 4 --size-mib 32 --rounds 1)
  LATENCY_ENV=(TRIALS=5)
  DASHBOARD_ARGS=(--machines 200 --instances 1000)
else
  KEYSPACE_ENV=(DURATION=10s IDLE_WATCH=10)
  FAILOVER_ENV=(TRIALS=20)
  WATCH_ARGS=(--longpoll 10000 --sse 1000 --writes 20)
  RECOVERY_ARGS=(--keys 1000000)
  PLACEMENT_ARGS=()
  ROLLOUT_ARGS=()
  DOWNLOAD_ARGS=()
  LATENCY_ENV=(TRIALS=20)
  DASHBOARD_ARGS=()
fi

for tool in python3 curl wrk etcd; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (.ci/run installs it)" >&2; exit 1; }
done
if [[ ${BUILD:-1} == 1 ]]; then
  cargo build --release -p server -p node-agent -p tests \
    --bin shoal-server --bin shoal-agent \
    --example cluster-bench --example placement-bench --example rollout-bench \
    --example dashboard-bench || exit 1
fi
# 10,000 watchers need 10,000 descriptors in the bench and in the member.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DATE=$(date -u +%Y-%m-%dT%H%M)
RUN=$(mktemp -d "${TMPDIR:-/tmp}/shoal-report.XXXXXX")
PARTS=$RUN/parts
mkdir -p "$PARTS" "$HERE/results"
echo "report: run dir $RUN ($MODE)" >&2
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null | head -1) ]]; then REV+="+dirty"; fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# run NAME CMD...: runs one benchmark with a timeout; its stdout is its table
# unless it prints "written to FILE", then FILE is. Records status and time.
run() {
  local name=$1 t0 rc file
  shift
  if [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  echo "report: === $name: $*" >&2
  printf '%s\n' "$*" >"$RUN/$name.cmd"
  t0=$SECONDS
  timeout --kill-after=30 "$BENCH_TIMEOUT" env RESULTS_DIR="$PARTS" BUILD=0 "$@" \
    >"$RUN/$name.out" 2> >(tee "$RUN/$name.log" >&2)
  rc=$?
  echo $((SECONDS - t0)) >"$RUN/$name.secs"
  file=$(sed -n 's/^written to //p' "$RUN/$name.out" | tail -1)
  if [[ -n $file && -f $file ]]; then cp "$file" "$RUN/$name.md"; else cp "$RUN/$name.out" "$RUN/$name.md"; fi
  if ((rc == 0)); then
    echo ok >"$RUN/$name.status"
  else
    printf 'failed\nexit %s; last log lines in %s\n' "$rc" "$RUN/$name.log" >"$RUN/$name.status"
    { echo; echo '```'; tail -n 15 "$RUN/$name.log"; echo '```'; } >>"$RUN/$name.md"
  fi
}

skip() { # NAME WHY
  if [[ " $ONLY " != *" $1 "* ]]; then return 0; fi
  printf 'skipped\n%s\n' "$2" >"$RUN/$1.status"
  echo "report: === $1 skipped: $2" >&2
}

run keyspace env "${KEYSPACE_ENV[@]}" PHASES=load RESULTS_JSONL="$RUN/keyspace.jsonl" bench/keyspace.sh
run failover env "${FAILOVER_ENV[@]}" PHASES=failover RESULTS_JSONL="$RUN/failover.jsonl" bench/keyspace.sh
run watch bench/watch.sh "${WATCH_ARGS[@]}" --json "$RUN/watch.json"
run recovery bench/recovery.sh "${RECOVERY_ARGS[@]}" --json "$RUN/recovery.json"
run placement bench/placement.sh "${PLACEMENT_ARGS[@]}"
run rollout bench/rollout.sh "${ROLLOUT_ARGS[@]}"
run download bench/download.sh "${DOWNLOAD_ARGS[@]}"
if docker info >/dev/null 2>&1; then
  run start-latency env "${LATENCY_ENV[@]}" bench/start-latency.sh
else
  skip start-latency "no Docker engine reachable (docker info failed)"
fi
run dashboard bench/dashboard.sh "${DASHBOARD_ARGS[@]}"

python3 - "$RUN/meta.json" <<EOF
import json, sys
json.dump({"date": "$DATE UTC", "mode": "$MODE", "rev": "$REV",
           "host": "$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)",
           "etcd": "$(etcd --version | awk '/etcd Version/ {print $3}')",
           "load_start": "$LOAD_START", "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)"},
          open(sys.argv[1], "w"))
EOF
python3 "$HERE/report.py" "$RUN" "$HERE/results/report-$DATE.md"
