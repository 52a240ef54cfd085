#!/usr/bin/env bash
# The one command that runs every test of tabby on a fresh machine (README: "Run the tests").
#
# As root it first installs what the tests need from Debian's packages (the real etcd and
# etcdctl for side-by-side and conformance checks, iproute2/iptables/ipset/BIRD for the
# dataplane tests, busybox-static for Docker images built without a registry).
# Then: rustfmt, clippy (-D warnings), every test, rustdoc (-D warnings), every criterion
# bench once (`-- --test`), and every fuzz target briefly on its corpus (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 curl iproute2 iptables ipset bird2 etcd-server etcd-client busybox-static)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi
# Debian's etcd-server package starts a system etcd on 2379; our tests never use it.
if command -v systemctl >/dev/null 2>&1; then systemctl stop etcd >/dev/null 2>&1 || true; fi

step() { echo; echo "== $*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
(cd fuzz && cargo fmt -- --check)

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test"
# The end-to-end tests run the example binaries (etcd, etcdctl, calicoctl, calico-node,
# calico-libnetwork, walkthrough); build them all first, whatever the test runner builds.
cargo build --workspace --all-features --examples
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features --no-fail-fast
    cargo test --workspace --all-features --doc
else
    cargo test --workspace --all-features --no-fail-fast
fi

step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

step "cargo bench -- --test (every bench runs once)"
scripts/bench.sh --test

step "fuzz: every target for ${FUZZ_SECONDS:-15}s on its committed corpus (scripts/fuzz.sh --ci)"
scripts/fuzz.sh --ci "${FUZZ_SECONDS:-15}"

echo
echo "all checks passed"
