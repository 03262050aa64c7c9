#!/usr/bin/env bash
# Payload download benchmark: 10 agents download a 256 MiB payload from one real
# shoal-server (release build) on loopback at once, against the disk's own
# write speed measured in the same run.
#
#   bench/download.sh                          # 10 clients, 256 MiB
#   bench/download.sh --clients 4 --size-mib 64   # a quick run
#
# Builds the `shoal-server` binary and the `rollout-bench` example (tests package,
# which holds both update benchmarks) in release mode unless BUILD=0, runs it in
# `--mode download` (every extra argument goes to the bench; `--help` lists them),
# and writes the printed table to bench/results/download-<date>.md. The downloads
# use the agent's own download code into a disk image slot per client; the
# reference writes the same bytes to plain files with no network. Every file is
# in the run dir the bench prints (/tmp/shoal-download.*) and removed at the end
# except the server's log; the run is bounded by --timeout (default 170 s).
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
OUT=$RESULTS_DIR/download-$DATE.md
mkdir -p "$RESULTS_DIR"
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null | head -1) ]]; then REV+="+dirty"; fi
HOST="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"

TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
"$BENCH" --mode download "$@" | tee "$TMP"
{
  cat "$TMP"
  echo
  echo "Run: \`bench/download.sh $*\` on $DATE UTC, shoal $REV, $HOST."
} >"$OUT"
echo
echo "written to $OUT"
