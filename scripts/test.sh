#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints,
# unit tests, device tests, end-to-end tests on /dev/kvm, and the
# real-guest scenarios. Run as root
# (the end-to-end tests start vmd, which needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean run writes about 6 GB (docs/testing.md): say so first if the
# disk may not hold it, rather than fail half an hour in.
free_kib="$(df --output=avail -k . | tail -n 1)"
if [ "$free_kib" -lt $((8 * 1024 * 1024)) ]; then
    echo "test.sh: only $((free_kib / 1024 / 1024)) GB free on $(df --output=target . | tail -n 1); a clean run writes about 6 GB" >&2
fi

./scripts/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run the real binaries.
cargo build --workspace --bins
# A test whose need (root, /dev/kvm, a program) is missing fails here
# instead of skipping (docs/testing.md).
export VMD_TESTS_NO_SKIP=1
cargo nextest run --workspace --no-fail-fast "$@"
# Short fixed-time runs of every crate's fuzz targets.
./scripts/fuzz-smoke.sh
# A real Linux guest drives every device (nested where /dev/kvm is not
# hardware KVM); prints each scenario by name.
./scripts/real-guests.sh
