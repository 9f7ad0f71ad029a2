#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints,
# unit tests, device tests, end-to-end tests on /dev/kvm, and the
# real-guest scenarios. Run as root
# (the end-to-end tests start vmd, which needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

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
