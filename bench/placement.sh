#!/usr/bin/env bash
# Placement benchmark: the fleet engine at scale against one real shoal-server
# (release build) on loopback, with simulated machines (no Docker).
#
#   bench/placement.sh                         # 1000 machines, 90 x 100 replicas + 1 global, 100 die
#   bench/placement.sh --machines 200 --units 18 --kill 20   # a quick run
#
# Builds the `shoal-server` binary and the `placement-bench` example (tests package) in
# release mode unless BUILD=0, runs it (every extra argument goes to the bench;
# `--help` lists them), and writes the printed table to
# bench/results/placement-<date>.md. The server's log stays in the run dir the
# bench prints (/tmp/shoal-placement.*); the whole run is bounded by --timeout
# (default 600 s) and the server is killed when the bench exits.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RESULTS_DIR=${RESULTS_DIR:-$HERE/results} # bench/report.sh points it elsewhere
cd "$ROOT"

if [[ ${BUILD:-1} == 1 ]]; then
  cargo build --release -p server -p tests --bin shoal-server --example placement-bench
fi

BENCH=$ROOT/target/release/examples/placement-bench
[[ -x $BENCH ]] || { echo "missing $BENCH: run with BUILD=1" >&2; exit 1; }

DATE=$(date -u +%Y-%m-%dT%H%M)
OUT=$RESULTS_DIR/placement-$DATE.md
mkdir -p "$RESULTS_DIR"
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null | head -1) ]]; then REV+="+dirty"; fi
HOST="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"

TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
"$BENCH" "$@" | tee "$TMP"
{
  cat "$TMP"
  echo
  echo "Run: \`bench/placement.sh $*\` on $DATE UTC, shoal $REV, $HOST."
} >"$OUT"
echo
echo "written to $OUT"
