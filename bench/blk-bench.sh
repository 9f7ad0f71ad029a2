#!/usr/bin/env bash
# Device-level virtio-blk benchmark (no guest): requests through a split
# virtqueue in guest memory into raw and qcow2 images (clusters allocated),
# 4 KiB random and 1 MiB sequential, next to a plain pread/pwrite loop on
# the same file as the limit. Prints MiB/s and the ratio device/limit
# (goal: >= 0.9 for raw, >= 0.8 for qcow2). Arguments: work directory
# (default /dev/shm when it has room, else /tmp) and image size in MiB
# (default 256).
set -euo pipefail
cd "$(dirname "$0")/.."

work="${1:-}"
if [ -z "$work" ]; then
    if [ "$(df --output=avail -k /dev/shm 2>/dev/null | tail -1)" -gt $((1024 * 1024)) ] 2>/dev/null; then
        work=/dev/shm/blk-bench
    else
        work=/tmp/blk-bench
    fi
fi
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
echo "blk-bench: $(nproc) CPUs"
cargo run --release -q -p vmm --example blk_bench -- "$work" "${2:-256}"
