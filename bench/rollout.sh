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
BENCH_LABEL="bench/rollout.sh $*" exec "$(dirname "${BASH_SOURCE[0]}")/example.sh" \
  rollout-bench rollout --mode rollout "$@"
