#!/usr/bin/env bash
# The one entry point for every crate's criterion suites (wal, raft-kv, ipam, calico-model
# and the root package).
#
#   scripts/bench.sh                      # every suite, full criterion runs
#   scripts/bench.sh --test               # every benchmark once, as a test (what CI runs)
#   scripts/bench.sh append               # criterion arguments: here a name filter
#   BENCH_CARGO_ARGS="-p wal" scripts/bench.sh --save-baseline before
#
# Every argument goes to criterion (after cargo's `--`); BENCH_CARGO_ARGS adds cargo
# options (e.g. `-p <crate>`, `--bench <name>`), which narrow the run instead of
# `--workspace`. Reports land in $CARGO_TARGET_DIR/criterion (default target/criterion).
# The side-by-side comparison with etcd is a separate script: benches/compare-etcd.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC2206
cargo_args=(${BENCH_CARGO_ARGS:-})
if ((${#cargo_args[@]} == 0)); then
    cargo_args=(--workspace)
fi
exec cargo bench "${cargo_args[@]}" --all-features -- "$@"
