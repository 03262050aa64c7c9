#!/usr/bin/env bash
# Runs one benchmark driver of tests/examples and keeps its table: what
# bench/placement.sh, rollout.sh, download.sh, watch.sh and recovery.sh share.
#
#   bench/example.sh EXAMPLE NAME [ARGS...]
#
# Builds `shoal-server` and the example in release mode unless BUILD=0, raises
# the descriptor limit to the hard limit (the watch benchmark needs 10,000
# sockets), runs target/release/examples/EXAMPLE with ARGS, and writes what it
# printed, with a line saying how it was run (revision, host, load average
# before and after), to $RESULTS_DIR/NAME-<date>.md (default bench/results;
# bench/report.sh points it elsewhere). $BENCH_LABEL names the calling script.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
cd "$ROOT"
EXAMPLE=${1:?usage: bench/example.sh EXAMPLE NAME [ARGS...]}
NAME=${2:?usage: bench/example.sh EXAMPLE NAME [ARGS...]}
shift 2
LABEL=${BENCH_LABEL:-bench/example.sh $EXAMPLE $NAME}

if [[ ${BUILD:-1} == 1 ]]; then
  cargo build --release -p server -p tests --bin shoal-server --example "$EXAMPLE"
fi
BENCH=$ROOT/target/release/examples/$EXAMPLE
[[ -x $BENCH ]] || { echo "missing $BENCH: run with BUILD=1" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DATE=$(date -u +%Y-%m-%dT%H%M)
OUT=$RESULTS_DIR/$NAME-$DATE.md
mkdir -p "$RESULTS_DIR"
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null | head -1) ]]; then REV+="+dirty"; fi
HOST="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
"$BENCH" "$@" | tee "$TMP"
{
  cat "$TMP"
  echo
  echo "Run: \`$LABEL\` on $DATE UTC, shoal $REV, $HOST;" \
    "load average $LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
} >"$OUT"
echo
echo "written to $OUT"
