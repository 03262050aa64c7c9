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
MODE=${1:?usage: bench/cluster-bench.sh watch|recovery [ARGS]}
shift
BENCH_LABEL="bench/$MODE.sh $*" exec "$(dirname "${BASH_SOURCE[0]}")/example.sh" \
  cluster-bench "$MODE" --mode "$MODE" "$@"
