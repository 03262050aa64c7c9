#!/usr/bin/env bash
# The watch fan-out and recovery benchmarks (tests/examples/cluster-bench)
# against real 3-member clusters on loopback; bench/watch.sh and
# bench/recovery.sh call this with their mode.
#
#   bench/cluster-bench.sh watch [ARGS]      # 10,000 long-poll + 1,000 SSE on Shoal, 10,000 on etcd v2
#   bench/cluster-bench.sh recovery [ARGS]   # 1,000,000 keys, a follower wiped and caught up
#
# Builds `shoal-server` and the example in release mode unless BUILD=0, raises
# the descriptor limit to the hard limit (10,000 watchers need as many sockets
# in the bench and in the member), runs the example (extra arguments go to it;
# `--help` lists them) and writes its table to $RESULTS_DIR/<mode>-<date>.md
# (default bench/results). Needs etcd 3.4 on PATH for the watch anchor and
# sqlite3 for the snapshot size.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
cd "$ROOT"
MODE=${1:?usage: bench/cluster-bench.sh watch|recovery [ARGS]}
shift

if [[ ${BUILD:-1} == 1 ]]; then
  cargo build --release -p server -p tests --bin shoal-server --example cluster-bench
fi
BENCH=$ROOT/target/release/examples/cluster-bench
[[ -x $BENCH ]] || { echo "missing $BENCH: run with BUILD=1" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

DATE=$(date -u +%Y-%m-%dT%H%M)
OUT=$RESULTS_DIR/$MODE-$DATE.md
mkdir -p "$RESULTS_DIR"
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null | head -1) ]]; then REV+="+dirty"; fi
HOST="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
"$BENCH" --mode "$MODE" "$@" | tee "$TMP"
{
  cat "$TMP"
  echo
  echo "Run: \`bench/$MODE.sh $*\` on $DATE UTC, shoal $REV, $HOST;" \
    "load average $LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end" \
    "(other engineers' builds share the machine)."
} >"$OUT"
echo
echo "written to $OUT"
