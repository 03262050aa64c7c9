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
BENCH_LABEL="bench/download.sh $*" exec "$(dirname "${BASH_SOURCE[0]}")/example.sh" \
  rollout-bench download --mode download "$@"
