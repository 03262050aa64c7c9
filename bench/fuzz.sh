#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and keeps a table
# of what each did.
#
#   bench/fuzz.sh [SECONDS]      # default 60 seconds per target
#   FUZZ_DEV=1 bench/fuzz.sh 60  # unoptimized build
#
# Installs cargo-fuzz when missing (`cargo install cargo-fuzz --locked`),
# builds each target with the nightly toolchain (address sanitizer, target
# dir fuzz/target, outside the workspace's) and runs it right after with
# libFuzzer's -max_total_time on its corpus in fuzz/corpus/TARGET (kept
# between runs, gitignored) plus the committed seeds of fuzz/seeds/TARGET.
# Prints target / seconds / executions / result and writes the table to
# $RESULTS_DIR/fuzz-<date>.md (default bench/results). A crash leaves its
# input in fuzz/artifacts/TARGET/ (named in the table; `cargo +nightly fuzz
# run TARGET FILE` replays it) and makes the script exit 1 after the remaining
# targets ran. FUZZ_TARGETS="unit_spec gpt" runs only those.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
DURATION=${1:-60}
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "usage: bench/fuzz.sh [SECONDS]" >&2; exit 2; }
cd "$ROOT"

# The GPT target XORs its input onto a 34-sector primary and 33-sector backup GPT.
declare -A MAX_LEN=([keys]=4096 [unit_spec]=4096 [manifest]=4096 [gpt]=34304)
# The features a target needs (fuzz/Cargo.toml): the api-only ones build without
# the agent's and the server's dependency trees.
declare -A FEATURES=([gpt]=agent [keys]=server)
read -ra TARGETS <<<"${FUZZ_TARGETS:-unit_spec manifest gpt keys}"
FUZZ=(cargo +nightly fuzz)
# 16 codegen units: a build of the server's dependency tree in minutes, not
# tens of them. FUZZ_DEV=1 builds without optimizations (a cold build about
# twice as fast, each execution several times slower).
BUILD_FLAGS=(--fuzz-dir fuzz --target-dir fuzz/target --codegen-units 16)
MODE="release (-O, debug assertions)"
if [[ ${FUZZ_DEV:-0} == 1 ]]; then
  BUILD_FLAGS=(--fuzz-dir fuzz --target-dir fuzz/target --dev)
  MODE="dev (unoptimized)"
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

DATE=$(date -u +%Y-%m-%dT%H%M)
OUT=$RESULTS_DIR/fuzz-$DATE.md
mkdir -p "$RESULTS_DIR"
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain 2>/dev/null | head -1) ]]; then REV+="+dirty"; fi
HOST="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

TABLE="| target | seconds | executions | result |"$'\n'"| --- | ---: | ---: | --- |"
CRASHED=0
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  CORPORA=("fuzz/corpus/$t")
  if [[ -d fuzz/seeds/$t ]]; then CORPORA+=("fuzz/seeds/$t"); fi
  FLAGS=("${BUILD_FLAGS[@]}")
  if [[ -n ${FEATURES[$t]:-} ]]; then FLAGS+=(--features "${FEATURES[$t]}"); fi
  "${FUZZ[@]}" build "${FLAGS[@]}" "$t"
  START=$(date +%s.%N)
  STATUS=0
  "${FUZZ[@]}" run "${FLAGS[@]}" "$t" "${CORPORA[@]}" -- \
    -max_total_time="$DURATION" -max_len="${MAX_LEN[$t]}" -timeout=10 \
    -print_final_stats=1 >"$LOG" 2>&1 || STATUS=$?
  SECS=$(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  EXECS=$(awk -F': *' '/^stat::number_of_executed_units/ { n = $2 } END { print n }' "$LOG")
  if [[ -z $EXECS ]]; then
    EXECS=$(grep -oE '^#[0-9]+' "$LOG" | tail -1 | tr -d '#' || true)
  fi
  if [[ $STATUS == 0 ]]; then
    RESULT="no crash"
  else
    CRASHED=1
    ARTIFACT=$(grep -oE 'fuzz/artifacts/[^ ]+' "$LOG" | head -1 || true)
    WHY=$(grep -m1 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$LOG" | cut -c1-160 || true)
    RESULT="crash (exit $STATUS): ${WHY:-see log} ${ARTIFACT:+, input $ARTIFACT}"
    tail -40 "$LOG" >&2
  fi
  TABLE+=$'\n'"| $t | $SECS | ${EXECS:-?} | $RESULT |"
  echo "$t: $SECS s, ${EXECS:-?} executions, $RESULT"
done

{
  echo "$TABLE"
  echo
  echo "Run: \`bench/fuzz.sh $DURATION\` on $DATE UTC, shoal $REV, $HOST;" \
    "libFuzzer -max_total_time=$DURATION per target (seconds include start-up)," \
    "$MODE build, address sanitizer; load average $LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
} >"$OUT"
echo
echo "$TABLE"
echo
echo "written to $OUT"
exit "$CRASHED"
