#!/usr/bin/env bash
# Start or stop a 3-member cluster of our etcd-compatible member on loopback.
#
#   scripts/cluster.sh start [--dir DIR] [--bin PATH] [-- EXTRA ETCD FLAGS...]
#   scripts/cluster.sh stop  [--dir DIR] [--wipe]
#   scripts/cluster.sh status [--dir DIR]
#
# Ports (as bench/README.md expects): clients 23791-23793, peers 23891-23893 (override
# with CLUSTER_CLIENT_PORTS / CLUSTER_PEER_PORTS, three space-separated ports each).
# Data dirs DIR/node1..node3 (default DIR=/tmp/anchor-rust), logs DIR/node<i>.log,
# PIDs one per line in DIR/pids. `start` waits until every member reports healthy and
# prints ENDPOINTS=<comma-separated client URLs> last. `stop` sends SIGTERM to exactly the
# recorded PIDs (only if their command line still names DIR), then SIGKILL after 10 s.
# The binary defaults to target/release/examples/etcd (built with
# `cargo build --release --example etcd` if missing).
set -euo pipefail

cmd=${1:-}
[ $# -gt 0 ] && shift
DIR=/tmp/anchor-rust
BIN=""
WIPE=0
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift ;;
    --bin) BIN=$2; shift ;;
    --wipe) WIPE=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIDS=$DIR/pids
CPORTS=(${CLUSTER_CLIENT_PORTS:-23791 23792 23793})
PPORTS=(${CLUSTER_PEER_PORTS:-23891 23892 23893})

stop() {
  [ -f "$PIDS" ] || { echo "no cluster recorded in $DIR"; return 0; }
  local live=()
  while read -r pid; do
    [ -n "$pid" ] || continue
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$DIR/"; then
      kill -TERM "$pid" && live+=("$pid")
    fi
  done < "$PIDS"
  for pid in "${live[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  done
  rm -f "$PIDS"
  echo "stopped ${#live[@]} member(s)"
  if [ "$WIPE" = 1 ]; then rm -rf "$DIR"; fi
}

start() {
  if [ -f "$PIDS" ]; then
    while read -r pid; do
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "cluster in $DIR already running (pid $pid); run '$0 stop --dir $DIR' first" >&2
        exit 1
      fi
    done < "$PIDS"
  fi
  if [ -z "$BIN" ]; then
    BIN=$ROOT/target/release/examples/etcd
    if [ ! -x "$BIN" ]; then
      (cd "$ROOT" && cargo build --release --example etcd >&2)
    fi
  fi
  rm -rf "$DIR"/node1 "$DIR"/node2 "$DIR"/node3
  mkdir -p "$DIR"
  : > "$PIDS"
  local ic="" eps=""
  for i in 0 1 2; do
    ic="${ic:+$ic,}node$((i + 1))=http://127.0.0.1:${PPORTS[$i]}"
  done
  for i in 0 1 2; do
    local n=node$((i + 1)) c=${CPORTS[$i]} p=${PPORTS[$i]}
    "$BIN" --name "$n" --data-dir "$DIR/$n" \
      --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
      --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
      --initial-cluster "$ic" --initial-cluster-token tabby-bench --initial-cluster-state new \
      ${EXTRA[@]+"${EXTRA[@]}"} > "$DIR/$n.log" 2>&1 &
    echo $! >> "$PIDS"
    eps="${eps:+$eps,}http://127.0.0.1:$c"
  done
  local deadline=$((SECONDS + 30))
  for i in 0 1 2; do
    local c=${CPORTS[$i]} n=node$((i + 1)) pid
    pid=$(sed -n "$((i + 1))p" "$PIDS")
    until curl -sf "http://127.0.0.1:$c/v2/stats/self" 2>/dev/null | grep -q "\"name\":\"$n\""; do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "$n exited; see $DIR/$n.log:" >&2
        tail -3 "$DIR/$n.log" >&2
        stop >/dev/null
        exit 1
      fi
      if [ $SECONDS -gt $deadline ]; then
        echo "$n (port $c) did not answer as itself; see $DIR/$n.log" >&2
        exit 1
      fi
      sleep 0.2
    done
  done
  for c in "${CPORTS[@]}"; do
    until curl -sf "http://127.0.0.1:$c/health" 2>/dev/null | grep -q '"health":"true"'; do
      if [ $SECONDS -gt $deadline ]; then
        echo "member on port $c did not become healthy; see $DIR/*.log" >&2
        exit 1
      fi
      sleep 0.2
    done
  done
  echo "cluster up (pids: $(tr '\n' ' ' < "$PIDS"))"
  echo "ENDPOINTS=$eps"
}

status() {
  for c in "${CPORTS[@]}"; do
    printf '%s ' "http://127.0.0.1:$c"
    curl -s -m 2 "http://127.0.0.1:$c/health" || printf 'unreachable'
    echo
  done
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
