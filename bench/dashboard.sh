#!/usr/bin/env bash
# Dashboard benchmark (issue 5): server-rendered Overview and Topology (first
# byte, whole page, size), time to a hydrated page in headless Chromium, events
# per second the event stream delivers to 100 dashboards, and the compressed
# wasm size, against one real shoal-server (release build) with 1,000
# simulated machines and 10,000 placed unit instances; the issue's targets
# (page < 50 ms, hydrated < 1 s, wasm < 500 KB gzipped) beside the figures.
#
#   bench/dashboard.sh                                  # full size
#   bench/dashboard.sh --machines 200 --instances 1000  # a quick run
#
# Builds `shoal-server` and the `dashboard-bench` example (tests package) in
# release mode unless BUILD=0, runs it (extra arguments go to the bench;
# `--help` lists them) and writes the printed table to
# bench/results/dashboard-<date>.md. The pages hydrate only with the wasm
# package built (scripts/build-frontend, into target/site/pkg); Chromium and
# chromedriver come from Debian's chromium and chromium-driver (without them
# the browser rows say "not measured"; SHOAL_REQUIRE_BROWSER=1 makes that an
# error). The server's log stays in the run dir the bench prints.
set -euo pipefail
BENCH_LABEL="bench/dashboard.sh $*" exec "$(dirname "${BASH_SOURCE[0]}")/example.sh" \
  dashboard-bench dashboard "$@"
