#!/usr/bin/env bash
# Key-space benchmark: a 3-member Shoal cluster against a 3-member etcd 3.4
# cluster (v2 API), on loopback, one after the other on the same machine.
#
#   bench/keyspace.sh                 # defaults: DURATION=10s TRIALS=20 IDLE_WATCH=10
#   DURATION=5s TRIALS=3 bench/keyspace.sh
#   PHASES=failover bench/keyspace.sh # only the failover trials
#
# Both systems run with the same --heartbeat-interval HEARTBEAT_MS (100) and
# --election-timeout ELECTION_MS (1000): etcd's defaults, which Shoal takes too.
#
# Env: DURATION (wrk -d), TRIALS (failover trials per system), IDLE_WATCH
# (seconds of idle leader watch), FO_TIMEOUT (curl -m per failover write, 1),
# FO_PROBE_INTERVAL (seconds between overlapping failover probes, 0.1), SYSTEMS ("shoal etcd"), SHOAL_BIN, ETCD_BIN,
# BUILD=1 (run `cargo build --release -p server` first), KEEP=1 (keep data dirs),
# PHASES ("load failover"), RESULTS_DIR (bench/results), RESULTS_JSONL (also copy
# the raw results there, for bench/report.sh).
# Needs: wrk, curl, python3, etcd 3.4. Writes $RESULTS_DIR/keyspace-<date>.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DURATION=${DURATION:-10s}
TRIALS=${TRIALS:-20}
HEARTBEAT_MS=${HEARTBEAT_MS:-100}
ELECTION_MS=${ELECTION_MS:-1000}
PHASES=${PHASES:-load failover}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
IDLE_WATCH=${IDLE_WATCH:-10}
FO_TIMEOUT=${FO_TIMEOUT:-1}                # curl -m for each failover write attempt
FO_PROBE_INTERVAL=${FO_PROBE_INTERVAL:-0.1} # extra overlapping probe writes
SYSTEMS=${SYSTEMS:-shoal etcd}
SHOAL_BIN=${SHOAL_BIN:-$ROOT/target/release/shoal-server}
ETCD_BIN=${ETCD_BIN:-etcd}
PY="python3 $HERE/bench.py"

for tool in wrk curl python3 "$ETCD_BIN"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
if [[ " $SYSTEMS " == *" shoal "* && ( ${BUILD:-0} == 1 || ! -x $SHOAL_BIN ) ]]; then
  (cd "$ROOT" && cargo build --release -p server)
fi

RUN=$(mktemp -d "${TMPDIR:-/tmp}/shoal-bench.XXXXXX")
LOGS=$RUN/logs
RESULTS=$RUN/results.jsonl
mkdir -p "$LOGS" "$RUN/data"

ALL_PIDS=()       # every member process this script started
MEMBER_PIDS=()    # the current cluster's members
CLIENT_URLS=()
PROBLEMS=()       # one-line notes about anything odd, printed at the end

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cleanup() {
  local rc=$?
  for pid in "${ALL_PIDS[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
  done
  for pid in "${ALL_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ ${KEEP:-0} != 1 ]]; then rm -rf "$RUN/data"; fi
  echo "bench: server logs and raw wrk output kept in $LOGS" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { $PY record "$RESULTS" "$1" "$2" "$3"; }

problem() {
  log "PROBLEM: $*"
  PROBLEMS+=("$*")
}

show_tails() { # tag: last lines of each member's log of one cluster
  local f
  for f in "$LOGS/$1"-n*.log; do
    [[ -e $f ]] || continue
    echo "---- tail $f" >&2
    tail -n 15 "$f" >&2
  done
}

# start_cluster SYSTEM TAG: start 3 members on fresh ports and data dirs.
start_cluster() {
  local sys=$1 tag=$2 ports i cluster="" bin extra=()
  read -r -a ports <<<"$($PY ports 6)"
  for i in 1 2 3; do
    cluster+="${cluster:+,}n$i=http://127.0.0.1:${ports[$((i + 2))]}"
  done
  if [[ $sys == shoal ]]; then bin=$SHOAL_BIN; else bin=$ETCD_BIN; extra=(--enable-v2); fi
  MEMBER_PIDS=()
  CLIENT_URLS=()
  for i in 1 2 3; do
    local cp=${ports[$((i - 1))]} pp=${ports[$((i + 2))]}
    local dir=$RUN/data/$tag-n$i
    mkdir -p "$dir"
    "$bin" --name "n$i" --data-dir "$dir" \
      --listen-client-urls "http://127.0.0.1:$cp" \
      --advertise-client-urls "http://127.0.0.1:$cp" \
      --listen-peer-urls "http://127.0.0.1:$pp" \
      --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token "bench-$tag" "${extra[@]}" \
      --heartbeat-interval "$HEARTBEAT_MS" --election-timeout "$ELECTION_MS" \
      >"$LOGS/$tag-n$i.log" 2>&1 &
    MEMBER_PIDS+=("$!")
    ALL_PIDS+=("$!")
    CLIENT_URLS+=("http://127.0.0.1:$cp")
  done
}

# wait_healthy TAG: all members answer /health true and one is leader; sets LEADER.
wait_healthy() {
  local tag=$1 deadline=$((SECONDS + 30)) url ok pid
  while ((SECONDS < deadline)); do
    for pid in "${MEMBER_PIDS[@]}"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        problem "$tag: member pid $pid exited during start-up"
        show_tails "$tag"
        return 1
      fi
    done
    ok=1
    for url in "${CLIENT_URLS[@]}"; do
      curl -sf -m 1 "$url/health" 2>/dev/null | grep -q '"health":"true"' || { ok=0; break; }
    done
    if ((ok)) && LEADER=$($PY leader "${CLIENT_URLS[@]}"); then
      return 0
    fi
    sleep 0.1
  done
  problem "$tag: cluster not healthy within 30 s"
  show_tails "$tag"
  return 1
}

# stop_cluster: SIGTERM the members still alive, SIGKILL after 5 s; reap them.
stop_cluster() {
  local pid i
  for pid in "${MEMBER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 50); do
    local alive=0
    for pid in "${MEMBER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${MEMBER_PIDS[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  MEMBER_PIDS=()
}

check_alive() { # tag: report members that died
  local tag=$1 i
  for i in 0 1 2; do
    if ! kill -0 "${MEMBER_PIDS[$i]}" 2>/dev/null; then
      problem "$tag: member n$((i + 1)) (pid ${MEMBER_PIDS[$i]}) died"
      show_tails "$tag"
    fi
  done
}

# run_wrk SYSTEM KEY THREADS CONNS SCRIPT [ARG]
run_wrk() {
  local sys=$1 key=$2 t=$3 c=$4 script=$5 arg=${6:-} out json
  out=$LOGS/$sys-$key.wrk.txt
  log "$sys: wrk $key (-t$t -c$c -d$DURATION) against ${CLIENT_URLS[$LEADER]}"
  wrk -t"$t" -c"$c" -d"$DURATION" --latency -s "$HERE/$script" \
    "${CLIENT_URLS[$LEADER]}" ${arg:+-- "$arg"} >"$out" 2>&1 || problem "$sys $key: wrk exited $?"
  json=$($PY wrk "$out")
  record "$sys" "$key" "$json"
  log "$sys: $key: $json"
  if [[ $json == *'"valid": false'* ]]; then
    problem "$sys $key: most requests failed: $json"
    show_tails "$sys-load"
  elif [[ $json != *'"non2xx": 0,'* || $json != *'"socket_errors": 0,'* ]]; then
    problem "$sys $key: some requests failed: $json"
  fi
}

bench_load() {
  local sys=$1 tag=$1-load w pid rss max=0 pre t0 t1
  log "$sys: starting 3-member cluster ($tag)"
  start_cluster "$sys" "$tag"
  wait_healthy "$tag" || return 0
  log "$sys: healthy, leader n$((LEADER + 1)); idle watch ${IDLE_WATCH}s"
  w=$($PY watch "$IDLE_WATCH" 0.2 "${CLIENT_URLS[@]}")
  record "$sys" idle_watch "${w%\}}, \"seconds\": $IDLE_WATCH}"
  log "$sys: idle watch: $w"
  [[ $w == *'"term_changes": 0,'*'"leader_changes": 0,'* ]] || problem "$sys: leader/term change on an idle cluster: $w"
  LEADER=$($PY leader "${CLIENT_URLS[@]}") || { problem "$sys: no leader after idle watch"; show_tails "$tag"; }

  log "$sys: prefilling bench/k0..k9999"
  pre=$($PY prefill "${CLIENT_URLS[$LEADER]}" 10000) || problem "$sys: prefill had failures: $pre"
  record "$sys" prefill "$pre"
  log "$sys: prefill: $pre"
  t0=$($PY term "${CLIENT_URLS[@]}")
  record "$sys" term_before_load "$t0"

  run_wrk "$sys" put_c64 2 64 put.lua
  run_wrk "$sys" put_c1 1 1 put.lua
  run_wrk "$sys" get_c64 2 64 get.lua
  run_wrk "$sys" qget_c64 2 64 get.lua quorum

  t1=$($PY term "${CLIENT_URLS[@]}")
  record "$sys" term_after_load "$t1"
  [[ $t0 == "$t1" ]] || problem "$sys: raft term changed during the load runs ($t0 -> $t1)"
  check_alive "$tag"
  for pid in "${MEMBER_PIDS[@]}"; do
    rss=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    ((rss > max)) && max=$rss
  done
  record "$sys" rss_kb "$max"
  log "$sys: peak RSS (max VmHWM) ${max} kB"
  stop_cluster
}

# One failover trial; sets FO_MS to the milliseconds from SIGKILL to the first
# 2xx write. (Not run in a subshell, so cleanup knows every pid it started.)
failover_trial() {
  local sys=$1 n=$2 tag=$1-fo$2 survivor code t0 now i attempts=0 lead_pid
  start_cluster "$sys" "$tag"
  wait_healthy "$tag" || { stop_cluster; return 1; }
  for i in $(seq 20); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 -X PUT -d value=before \
      "${CLIENT_URLS[$LEADER]}/v2/keys/failover" || true)
    [[ $code == 2* ]] && break
    sleep 0.1
  done
  [[ $code == 2* ]] || { problem "$tag: initial write failed ($code)"; stop_cluster; return 1; }
  survivor=$(((LEADER + 1) % 3))
  lead_pid=${MEMBER_PIDS[$LEADER]}
  local att=$LOGS/$tag-attempts.txt probes=$LOGS/$tag-probes.txt stop=$RUN/$tag.stop url
  url="${CLIENT_URLS[$survivor]}/v2/keys/failover"
  : >"$att"
  : >"$probes"
  t0=$(date +%s%N)
  kill -9 "$lead_pid"
  wait "$lead_pid" 2>/dev/null || true # reap it now, so bash prints no "Killed" notice
  # Probes: a fresh PUT every FO_PROBE_INTERVAL s, each with its own timeout, so a
  # request stuck on the dead leader does not hide a leader elected meanwhile.
  (
    while [[ ! -e $stop ]]; do
      (
        c=$(curl -s -o /dev/null -w '%{http_code}' -m "$FO_TIMEOUT" -X PUT -d value=probe "$url" || true)
        echo "$((($(date +%s%N) - t0) / 1000000)) $c" >>"$probes"
      ) &
      sleep "$FO_PROBE_INTERVAL"
    done
    wait
  ) &
  local prober=$!
  ALL_PIDS+=("$prober")
  # The measured loop: one client retrying immediately, each try with a short timeout.
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -m "$FO_TIMEOUT" -X PUT -d value=after "$url" || true)
    now=$(date +%s%N)
    attempts=$((attempts + 1))
    echo "$(((now - t0) / 1000000)) $code" >>"$att"
    [[ $code == 2* ]] && break
    if ((now - t0 > 30000000000)); then
      problem "$tag: no successful write within 30 s of killing the leader"
      touch "$stop"
      wait "$prober" || true
      show_tails "$tag"
      stop_cluster
      return 1
    fi
  done
  touch "$stop"
  wait "$prober" || true
  local ms=$(((now - t0) / 1000000)) codes pcodes probe_ms killed_at
  killed_at=$(date -u -d "@${t0:0:10}.${t0:10:6}" +%H:%M:%S.%6N)
  codes=$(awk '{print $2}' "$att" | sort | uniq -c | awk '{printf "%s%sx%s", sep, $1, $2; sep=" "}')
  pcodes=$(awk '{print $2}' "$probes" | sort | uniq -c | awk '{printf "%s%sx%s", sep, $1, $2; sep=" "}')
  # earliest 2xx answer from either the loop or a probe
  probe_ms=$(cat "$att" "$probes" | awk '$2 ~ /^2/ {print $1}' | sort -n | head -1)
  log "$tag: killed leader n$((LEADER + 1)) (pid $lead_pid) at $killed_at UTC; n$((survivor + 1)) accepted a write after ${ms} ms" \
    "(retry loop: $attempts tries: $codes); earliest 2xx incl. probes ${probe_ms} ms (probes: $pcodes)"
  stop_cluster
  FO_MS=$ms
  FO_PROBE_MS=$probe_ms
}

bench_failover() {
  local sys=$1 n times=() ptimes=() failed=0
  for n in $(seq "$TRIALS"); do
    if failover_trial "$sys" "$n"; then
      times+=("$FO_MS")
      ptimes+=("$FO_PROBE_MS")
    else
      failed=$((failed + 1))
    fi
  done
  local list plist
  list=$(IFS=,; echo "${times[*]:-}")
  plist=$(IFS=,; echo "${ptimes[*]:-}")
  record "$sys" failover "{\"times_ms\": [${list}], \"probe_times_ms\": [${plist}], \"failed\": $failed}"
}

# ---------------------------------------------------------------- main

DATE=$(date +%Y-%m-%dT%H%M)
ETCD_VERSION=$("$ETCD_BIN" --version | awk '/etcd Version/ {print $3}')
SHOAL_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(cd "$ROOT" && git status --porcelain 2>/dev/null | head -1) ]]; then SHOAL_REV+="+dirty"; fi
HOST="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
record meta date "\"$DATE\""
record meta etcd_version "\"$ETCD_VERSION\""
record meta shoal_rev "\"$SHOAL_REV (binary built $(date -r "$SHOAL_BIN" +%Y-%m-%dT%H:%M 2>/dev/null || echo never))\""
record meta host "\"$HOST\""
record meta duration "\"$DURATION\""
record meta timing "\"--heartbeat-interval $HEARTBEAT_MS --election-timeout $ELECTION_MS on both\""
record meta load_start "\"$(cut -d' ' -f1-3 /proc/loadavg)\""
log "run dir $RUN; DURATION=$DURATION TRIALS=$TRIALS IDLE_WATCH=$IDLE_WATCH"

if [[ " $PHASES " == *" load "* ]]; then
  for sys in $SYSTEMS; do
    bench_load "$sys"
  done
fi
if [[ " $PHASES " == *" failover "* ]]; then
  for sys in $SYSTEMS; do
    log "$sys: $TRIALS failover trials"
    bench_failover "$sys"
  done
fi

record meta load_end "\"$(cut -d' ' -f1-3 /proc/loadavg)\""
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/keyspace-$DATE.md
echo
$PY table "$RESULTS" "$OUT"
if ((${#PROBLEMS[@]})); then
  {
    echo
    echo "Problems seen:"
    for p in "${PROBLEMS[@]}"; do echo "- $p"; done
  } | tee -a "$OUT"
fi
if [[ -n ${RESULTS_JSONL:-} ]]; then cp "$RESULTS" "$RESULTS_JSONL"; fi
echo
echo "written to $OUT"
