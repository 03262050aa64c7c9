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
BENCH_LABEL="bench/placement.sh $*" exec "$(dirname "${BASH_SOURCE[0]}")/example.sh" \
  placement-bench placement "$@"
