#!/usr/bin/env bash
# Runs every cargo-fuzz target of the disk crate for a short, fixed time
# (FUZZ_SECONDS, default 20 s each). Installs cargo-fuzz when missing.
# cargo-fuzz needs nightly compiler flags (sanitizers); RUSTC_BOOTSTRAP
# lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

cd crates/disk/fuzz
for target in $(cargo fuzz list); do
    echo "fuzz-smoke: $target for ${seconds}s"
    # The corpus grows in corpus/ (not kept); seeds/ holds checked-in
    # starting points (small images made by qemu-img).
    corpora=("corpus/$target")
    mkdir -p "corpus/$target"
    if [ -d "seeds/$target" ]; then
        corpora+=("seeds/$target")
    fi
    # A finding makes cargo fuzz exit non-zero and print the reproducer.
    cargo fuzz run "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -max_len=8192 -rss_limit_mb=4096
done
echo "fuzz-smoke: all targets ran clean"
