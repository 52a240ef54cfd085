#!/usr/bin/env bash
# compare-etcd.sh: our etcd example against Debian's etcd 3.4, side by side on this machine.
#
#   benches/compare-etcd.sh            # full matrix, prints the comparison table
#
# Both servers run with default durability (every write fsynced before it is
# acknowledged), on 127.0.0.1 only, one after the other with the same load:
#   3 members: PUT c1, PUT c16, PUT c64 (64-byte values, connections spread over all
#              members, leader first, so c1 goes to the leader), GET c16, GET quorum=true c16
#   1 member:  PUT c1, PUT c16, PUT c64
# Each case: WARMUP seconds of load (discarded), then DURATION seconds measured. GETs read
# bench/k0..k<KEYS-1>, written first by a sequential fill. Load: wrk + benches/v2_keys.lua,
# one wrk process per member, latency quantiles pooled by request count.
# Afterwards: RSS of every member (after the 3-member matrix) and each data dir's size.
#
# Env:
#   WARMUP=3 DURATION=10 KEYS=100000      per-case timing and key space
#   SERVERS="etcd tabby"                  which servers to run (order = run order)
#   CASES3="put1 put16 put64 get16 getq16" CASES1="put1 put16 put64"   (empty = skip)
#   WORKDIR=/tmp/tabby-compare            data dirs, logs, raw wrk output (wiped first)
#   ETCD_BIN=etcd  TABBY_BIN=<built here>  binaries (TABBY_BIN unset: cargo build --profile release-lto)
#   ETCD_ARGS / TABBY_ARGS                extra flags for every member
#   SOAK=<seconds>                        instead of the matrix: PUT c64 on 3 members of
#                                         tabby for that long, printing ops/s and every
#                                         member's RSS every SOAK_STEP (default 30) seconds
# Ports (no test uses them): etcd clients 24591-24593, peers 24691-24693;
# ours clients 24791-24793, peers 24891-24893.
# As root, installs the Debian packages etcd-server and wrk when they are missing.
# Every process started here is stopped on exit (trap), whatever happens.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LUA=$ROOT/benches/v2_keys.lua
WARMUP=${WARMUP:-3}
DURATION=${DURATION:-10}
KEYS=${KEYS:-100000}
SERVERS=${SERVERS:-etcd tabby}
CASES3=${CASES3-put1 put16 put64 get16 getq16}
CASES1=${CASES1-put1 put16 put64}
WORKDIR=${WORKDIR:-/tmp/tabby-compare}
ETCD_BIN=${ETCD_BIN:-etcd}
SOAK=${SOAK:-}
SOAK_STEP=${SOAK_STEP:-30}

log() { echo "compare-etcd: $*" >&2; }
die() { log "$*"; exit 1; }

# --- prerequisites -------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v "$ETCD_BIN" >/dev/null || need+=(etcd-server)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Debian's package starts a system etcd on 2379; nothing here uses it.
    if command -v systemctl >/dev/null; then systemctl stop etcd >/dev/null 2>&1 || true; fi
  else
    die "missing ${need[*]} (run as root to install them with apt-get)"
  fi
fi
if [[ -z ${TABBY_BIN:-} ]]; then
  log "building the etcd example (release-lto: fat LTO, one codegen unit)"
  (cd "$ROOT" && cargo build --profile release-lto --example etcd --quiet)
  TABBY_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release-lto/examples/etcd
fi
[[ -x $TABBY_BIN ]] || die "no binary at $TABBY_BIN"

# --- clusters ------------------------------------------------------------------------
PIDS=()
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"

# start_cluster KIND N: starts N members; sets EPS (client URLs), DIRS, PIDS.
start_cluster() {
  local kind=$1 n=$2 cbase pbase bin extra ic="" i
  case $kind in
    etcd) cbase=24591 pbase=24691 bin=$ETCD_BIN extra=${ETCD_ARGS:-} ;;
    tabby) cbase=24791 pbase=24891 bin=$TABBY_BIN extra=${TABBY_ARGS:-} ;;
  esac
  EPS=() DIRS=()
  for ((i = 0; i < n; i++)); do
    ic+="${ic:+,}m$i=http://127.0.0.1:$((pbase + i))"
  done
  for ((i = 0; i < n; i++)); do
    local dir=$WORKDIR/$kind-$n/m$i cport=$((cbase + i)) pport=$((pbase + i))
    mkdir -p "$(dirname "$dir")"
    local args=(--name "m$i" --data-dir "$dir"
      --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport"
      --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport"
      --initial-cluster "$ic" --initial-cluster-token "compare-$kind" --initial-cluster-state new)
    [[ $kind == etcd ]] && args+=(--enable-v2=true)
    # shellcheck disable=SC2086
    "$bin" "${args[@]}" $extra >"$WORKDIR/$kind-$n-m$i.log" 2>&1 &
    PIDS+=($!)
    EPS+=("http://127.0.0.1:$cport")
    DIRS+=("$dir")
  done
  local deadline=$((SECONDS + 60)) e
  for e in "${EPS[@]}"; do
    until curl -sf -m 2 "$e/health" 2>/dev/null | grep -q '"health":"true"'; do
      ((SECONDS < deadline)) || die "$kind member $e not healthy; see $WORKDIR/$kind-$n-*.log"
      sleep 0.2
    done
  done
  # Leader first (so a single connection goes to the leader).
  local leader="" rest=()
  for e in "${EPS[@]}"; do
    if [[ -z $leader ]] && curl -s -m 2 "$e/v2/stats/self" | grep -q '"state":"StateLeader"'; then
      leader=$e
    else
      rest+=("$e")
    fi
  done
  [[ -n $leader ]] && EPS=("$leader" ${rest[@]+"${rest[@]}"})
  log "$kind: $n member(s) up, leader ${leader:-unknown}"
}

# --- load ----------------------------------------------------------------------------
# cpu_ticks: CPU time (user + system, clock ticks) used so far by every running member.
cpu_ticks() {
  local pid total=0
  for pid in "${PIDS[@]}"; do
    # Fields 14 and 15 of /proc/PID/stat (after the parenthesised command name).
    total=$((total + $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# run_load MODE CONNS SECONDS TAG: one wrk per endpoint (connections split, remainder to the
# first = leader); prints "ops p50_ms p99_ms errors cpu_us_per_op" merged over the processes
# (cpu_us_per_op: CPU time of all members during the run, per successful request).
run_load() {
  local mode=$1 conns=$2 secs=$3 tag=$4 n=${#EPS[@]} i c pids=()
  for ((i = 0; i < n; i++)); do
    c=$((conns / n + (i < conns % n ? 1 : 0)))
    ((c > 0)) || continue
    wrk -t1 -c"$c" -d"${secs}s" --timeout 5s -s "$LUA" "${EPS[$i]}/" -- "$mode" "$KEYS" \
      >"$WORKDIR/$tag.$i.out" 2>&1 &
    pids+=($!)
  done
  local t0 t1
  t0=$(cpu_ticks)
  for i in "${pids[@]}"; do wait "$i" || die "wrk failed: $(cat "$WORKDIR/$tag".*.out)"; done
  t1=$(cpu_ticks)
  python3 - "$((t1 - t0))" "$(getconf CLK_TCK)" "$WORKDIR/$tag".*.out <<'PY'
import sys
ticks, hz = int(sys.argv[1]), int(sys.argv[2])
del sys.argv[1:3]
total_ok = 0
ops = 0.0
errors = 0
pool = []
for path in sys.argv[1:]:
    stat, pct = None, []
    for line in open(path):
        if line.startswith("STAT "):
            stat = dict(kv.split("=") for kv in line.split()[1:])
        elif line.startswith("PCT "):
            _, p, us = line.split()
            pct.append((float(p), int(us)))
    if stat is None:
        sys.exit("no STAT line in " + path + ":\n" + open(path).read())
    ok, total = int(stat["ok"]), int(stat["total"])
    ops += ok / float(stat["secs"])
    total_ok += ok
    errors += int(stat["non2xx"]) + int(stat["sockerr"])
    # Pool the quantile grids: each point stands for the slice of this process's
    # requests between the previous grid point and itself (the grid is 0.5 apart, then
    # 0.1 above 99.5), so its weight is that slice's width times the process's count.
    prev = 0.0
    for p, us in sorted(pct):
        if p >= 100:
            break  # wrk reports 0 for the 100th percentile
        pool.append((us, total * (p - prev) / 100.0))
        prev = p
pool.sort()
whole = sum(w for _, w in pool)
def quantile(q):
    acc = 0.0
    for us, w in pool:
        acc += w
        if acc >= q * whole - 1e-9:
            return us / 1000.0
    return float("nan")
cpu = ticks / hz * 1e6 / total_ok if total_ok else float("nan")
print(f"{ops:.0f} {quantile(0.5):.2f} {quantile(0.99):.2f} {errors} {cpu:.0f}")
PY
}

# fill: writes bench/k0..k<KEYS-1> once (sequentially, 16 connections to the first member).
fill() {
  local done=$WORKDIR/filled t0=$SECONDS
  rm -f "$done"
  wrk -t1 -c16 -d3600s --timeout 5s -s "$LUA" "${EPS[0]}/" -- fill "$KEYS" 16 "$done" \
    >"$WORKDIR/fill.out" 2>&1 &
  local pid=$!
  while [[ ! -e $done ]] && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [[ -e $done ]] || die "fill failed: $(cat "$WORKDIR/fill.out")"
  # wrk generates one request to validate the script before the run: k0 was never sent.
  curl -sf -o /dev/null -X PUT "${EPS[0]}/v2/keys/bench/k0" -d value=fill || die "PUT k0 failed"
  log "filled $KEYS keys in $((SECONDS - t0)) s ($(cat "$done") non-2xx)"
}

declare -A RESULT
run_case() { # KIND N CASE
  local kind=$1 n=$2 case=$3 mode conns
  case $case in
    put*) mode=put conns=${case#put} ;;
    getq*) mode=getq conns=${case#getq} ;;
    get*) mode=get conns=${case#get} ;;
    *) die "unknown case $case" ;;
  esac
  if [[ $mode != put && ! -e $WORKDIR/filled-$kind-$n ]]; then
    fill
    touch "$WORKDIR/filled-$kind-$n"
  fi
  ((WARMUP > 0)) && run_load "$mode" "$conns" "$WARMUP" "$kind-$n-$case-warm" >/dev/null
  RESULT[$kind,$n,$case]=$(run_load "$mode" "$conns" "$DURATION" "$kind-$n-$case")
  log "$kind $n member(s) $case: ${RESULT[$kind,$n,$case]} (ops/s p50 p99 errors cpu-us/op)"
}

rss_mb() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }
du_mb() { du -sb "$1" 2>/dev/null | awk '{printf "%.1f", $1 / 1048576}'; }

# --- soak ----------------------------------------------------------------------------
if [[ -n $SOAK ]]; then
  start_cluster tabby 3
  log "soak: PUT c64 for $SOAK s, a line every $SOAK_STEP s"
  printf '%8s %10s %8s %8s %7s  %-18s %s\n' elapsed ops/s p50_ms p99_ms errors "RSS MB per member" \
    "data dir MB per member"
  elapsed=0 total_err=0
  while ((elapsed < SOAK)); do
    read -r ops p50 p99 err _ < <(run_load put 64 "$SOAK_STEP" soak)
    elapsed=$((elapsed + SOAK_STEP))
    total_err=$((total_err + err))
    rss=""
    for pid in "${PIDS[@]}"; do rss+="$(rss_mb "$pid") "; done
    sizes=""
    for d in "${DIRS[@]}"; do sizes+="$(du_mb "$d") "; done
    printf '%8s %10s %8s %8s %7s  %-18s %s\n' "$elapsed" "$ops" "$p50" "$p99" "$err" "$rss" "$sizes"
  done
  echo "errors total: $total_err"
  exit 0
fi

# --- matrix --------------------------------------------------------------------------
declare -A RSS DISK
for n in 3 1; do
  [[ $n == 3 ]] && cases=$CASES3 || cases=$CASES1
  [[ -n $cases ]] || continue
  for kind in $SERVERS; do
    start_cluster "$kind" "$n"
    for c in $cases; do run_case "$kind" "$n" "$c"; done
    RSS[$kind,$n]="" DISK[$kind,$n]=""
    for pid in "${PIDS[@]}"; do RSS[$kind,$n]+="$(rss_mb "$pid") "; done
    for d in "${DIRS[@]}"; do DISK[$kind,$n]+="$(du_mb "$d") "; done
    cleanup
  done
done

# --- table ---------------------------------------------------------------------------
a=${SERVERS%% *} b=${SERVERS##* }
echo
echo "$(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); warm-up ${WARMUP}s, measured ${DURATION}s"
echo "etcd: $("$ETCD_BIN" --version 2>/dev/null | head -1 | sed 's/etcd Version: //'); tabby: $TABBY_BIN"
echo
row() { printf '| %-24s | %10s | %10s | %6s | %-15s | %-15s | %9s | %9s | %7s |\n' "$@"; }
row case "$a ops/s" "$b ops/s" ratio "$a p50/p99 ms" "$b p50/p99 ms" "$a cpu/op" "$b cpu/op" errors
row "---" "---:" "---:" "---:" "---" "---" "---:" "---:" "---"
for n in 3 1; do
  [[ $n == 3 ]] && cases=$CASES3 || cases=$CASES1
  for c in $cases; do
    [[ -n ${RESULT[$a,$n,$c]:-} && -n ${RESULT[$b,$n,$c]:-} ]] || continue
    read -r ao ap50 ap99 aerr acpu <<<"${RESULT[$a,$n,$c]}"
    read -r bo bp50 bp99 berr bcpu <<<"${RESULT[$b,$n,$c]}"
    case $c in
      put*) label="PUT c${c#put}" ;;
      getq*) label="GET quorum c${c#getq}" ;;
      get*) label="GET c${c#get}" ;;
    esac
    ratio=$(awk -v x="$bo" -v y="$ao" 'BEGIN { if (y > 0) printf "%.2fx", x / y; else print "-" }')
    row "$n member(s) $label" "$ao" "$bo" "$ratio" "$ap50 / $ap99" "$bp50 / $bp99" "${acpu} us" "${bcpu} us" "$aerr / $berr"
  done
done
echo "(cpu/op: CPU time of all members during the measured run per successful request)"
echo
for n in 3 1; do
  for kind in $SERVERS; do
    [[ -n ${RSS[$kind,$n]:-} ]] || continue
    echo "$n member(s) $kind: RSS after the matrix (MB per member): ${RSS[$kind,$n]}; data dir (MB per member): ${DISK[$kind,$n]}"
  done
done
