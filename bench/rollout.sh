#!/usr/bin/env bash
# Rollout benchmark: an OS update rolled out across simulated hosts against one
# real shoal-server (release build) on loopback, N reboots at a time.
#
#   bench/rollout.sh                                  # 50 hosts, N = 5, reboot 2 s, health 1 s, check-in every 250 ms
#   bench/rollout.sh --interval-ms 100 --reboot-ms 1000   # other timings
#
# Builds the `shoal-server` binary and the `rollout-bench` example (tests package) in
# release mode unless BUILD=0, runs it in `--mode rollout` (every extra argument
# goes to the bench; `--help` lists them), and writes the printed table to
# bench/results/rollout-<date>.md. The simulated hosts speak the agent's update
# protocol (check-ins, the reboot semaphore, leases) but do not download the
# payload; bench/download.sh measures that. The server's log stays in the run dir
# the bench prints (/tmp/shoal-rollout.*); the run is bounded by --timeout
# (default 170 s) and the server is killed when the bench exits.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RESULTS_DIR=${RESULTS_DIR:-$HERE/results} # bench/report.sh points it elsewhere
cd "$ROOT"

if [[ ${BUILD:-1} == 1 ]]; then
  cargo build --release -p server -p tests --bin shoal-server --example rollout-bench
fi

BENCH=$ROOT/target/release/examples/rollout-bench
[[ -x $BENCH ]] || { echo "missing $BENCH: run with BUILD=1" >&2; exit 1; }

DATE=$(date -u +%Y-%m-%dT%H%M)
OUT=$RESULTS_DIR/rollout-$DATE.md
mkdir -p "$RESULTS_DIR"
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null | head -1) ]]; then REV+="+dirty"; fi
HOST="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"

TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
"$BENCH" --mode rollout "$@" | tee "$TMP"
{
  cat "$TMP"
  echo
  echo "Run: \`bench/rollout.sh $*\` on $DATE UTC, shoal $REV, $HOST."
} >"$OUT"
echo
echo "written to $OUT"
