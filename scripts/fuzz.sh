#!/usr/bin/env bash
# Runs tabby's cargo-fuzz targets (fuzz/fuzz_targets/) one after another (README: "Fuzzing").
#
#   scripts/fuzz.sh [--ci] [seconds-per-target] [target...]
#
# Default: every target for 600 s each, one libFuzzer job each, starting from and adding to
# the committed corpus fuzz/corpus/<target>/ (minimize before committing:
# `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz cmin -O <target>`).
# --ci: the bounded run of scripts/test.sh — new inputs go to a temporary directory (the
# committed corpus is only read), at most FUZZ_CI_RUNS executions per target, libFuzzer
# seed FUZZ_SEED (default 1).
# Any crash, panic, leak, timeout or out-of-memory fails the script (exit 1) and leaves
# the input in fuzz/artifacts/<target>/; replay it with
# `fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/<file>`.
#
# The toolchain here is stable; cargo-fuzz passes nightly-only flags to rustc
# (`-Zsanitizer=address`, sanitizer-coverage options), so the build runs with
# RUSTC_BOOTSTRAP=1, which lets a stable compiler accept them. Nothing else is unstable:
# the libraries themselves build on stable.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

ci=0
if [ "${1:-}" = "--ci" ]; then
    ci=1
    shift
fi
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(wal_decode wal_model ipam_ops http_request peer_decode snapshot_decode calico_json libnetwork_json)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
echo "== cargo fuzz build -O (all targets)"
cargo fuzz build -O

bin=target/x86_64-unknown-linux-gnu/release
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # peer_decode: a frame header claims up to 1 GiB; allocating that before the bytes
    # arrive must be a finding, so its malloc limit is well below that.
    limits=(-rss_limit_mb=4096)
    if [ "$t" = peer_decode ]; then limits+=(-malloc_limit_mb=256); fi
    if [ $ci = 1 ]; then
        scratch=$(mktemp -d)
        dirs=("$scratch" "corpus/$t")
        # A fixed seed makes the CI run repeatable: the same inputs in the same order on
        # every machine (a faster one gets further along the same sequence). Exploration
        # with fresh seeds is the default mode's job.
        extra=(-runs="${FUZZ_CI_RUNS:-500000}" -seed="${FUZZ_SEED:-1}")
    else
        scratch=""
        dirs=("corpus/$t")
        extra=()
    fi
    echo "== $t: ${seconds}s on corpus/$t ($(find "corpus/$t" -type f | wc -l) inputs)"
    if "$bin/$t" -max_total_time="$seconds" -timeout=10 "${limits[@]}" "${extra[@]}" \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "${dirs[@]}" \
        >"artifacts/$t/last-run.log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^Done' "artifacts/$t/last-run.log" | tr '\n' ' '
        echo
    else
        echo "!! $t failed; the end of its log (fuzz/artifacts/$t/last-run.log):"
        tail -n 40 "artifacts/$t/last-run.log"
        failed+=("$t")
    fi
    if [ -n "$scratch" ]; then rm -rf "$scratch"; fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets failed: ${failed[*]}"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran clean"
