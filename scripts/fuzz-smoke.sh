#!/usr/bin/env bash
# Runs every cargo-fuzz target found under crates/*/fuzz for a short fixed
# time each (FUZZ_SECONDS, default 20) and fails if any of them finds a
# crash. Installs cargo-fuzz if it is missing. cargo-fuzz needs nightly
# compiler flags; RUSTC_BOOTSTRAP=1 allows them on the stable toolchain.
#
# Optional per target, next to its fuzz crate: dicts/<target>.dict (a
# libFuzzer dictionary) and seeds/<target>/ (read-only seed inputs).
#
# Every fuzz crate builds into one directory, target/fuzz (under
# CARGO_TARGET_DIR if set): the crates share most of their dependencies
# (libfuzzer-sys, vmm, disk), so one directory holds one build of each:
# 1.1 GB on a clean clone, where a directory per crate took 2.1 GB.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")/fuzz"
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

status=0
ran=0
for fuzz_dir in crates/*/fuzz; do
    [ -f "$fuzz_dir/Cargo.toml" ] || continue
    crate_dir="$(dirname "$fuzz_dir")"
    for target in $(cd "$crate_dir" && cargo fuzz list); do
        args=()
        corpus="$fuzz_dir/corpus/$target"
        mkdir -p "$corpus"
        args+=("$(realpath "$corpus")")
        [ -d "$fuzz_dir/seeds/$target" ] && args+=("$(realpath "$fuzz_dir/seeds/$target")")
        libfuzzer=(-max_total_time="$seconds" -max_len=8192 -rss_limit_mb=4096)
        [ -f "$fuzz_dir/dicts/$target.dict" ] && libfuzzer+=(-dict="$(realpath "$fuzz_dir/dicts/$target.dict")")
        echo "fuzz-smoke: $crate_dir $target for ${seconds}s"
        if (cd "$crate_dir" && cargo fuzz run --target-dir "$target_dir" "$target" "${args[@]}" -- "${libfuzzer[@]}"); then
            ran=$((ran + 1))
        else
            echo "fuzz-smoke: $crate_dir $target FAILED" >&2
            status=1
        fi
    done
done
echo "fuzz-smoke: $ran target(s) passed"
exit "$status"
