#!/usr/bin/env bash
# The recovery benchmark: bench/cluster-bench.sh recovery (see there). Arguments go to
# tests/examples/cluster-bench; `bench/recovery.sh --help` lists them.
exec "$(dirname "${BASH_SOURCE[0]}")/cluster-bench.sh" recovery "$@"
