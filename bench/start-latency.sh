#!/usr/bin/env bash
# Container start latency through Shoal (submit -> engine -> agent -> Docker)
# against plain `docker run`, on this machine's Docker engine.
#
#   bench/start-latency.sh            # TRIALS=20
#   TRIALS=5 BUILD=0 bench/start-latency.sh
#
# Needs a running dockerd and the test image (scripts/test-image). Builds the
# release binaries unless BUILD=0; writes bench/results/start-latency-<date>.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RESULTS_DIR=${RESULTS_DIR:-$HERE/results} # bench/report.sh points it elsewhere
cd "$ROOT"
if [[ ${BUILD:-1} == 1 ]]; then
  cargo build --release -p server -p node-agent
fi
bash scripts/test-image
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/start-latency-$(date -u +%Y-%m-%dT%H%M).md
python3 "$HERE/start_latency.py" "$OUT"
echo "written to $OUT"
