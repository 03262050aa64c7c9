#!/usr/bin/env bash
# The watch benchmark: bench/cluster-bench.sh watch (see there). Arguments go to
# tests/examples/cluster-bench; `bench/watch.sh --help` lists them.
exec "$(dirname "${BASH_SOURCE[0]}")/cluster-bench.sh" watch "$@"
