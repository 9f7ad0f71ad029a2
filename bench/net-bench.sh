#!/usr/bin/env bash
# Device-level virtio-net benchmark (no guest): frames through split
# virtqueues in guest memory, served by the real network handler to and
# from a tap, next to a plain writev/readv loop on a tap with the same
# frames in the same buffer layout as the device. 64-byte frames (packets/s)
# and 64 KiB TSO frames (Gbit/s), transmit and receive; prints the ratio
# device/limit (goal: >= 0.8). Runs as root, in a network namespace of its
# own. Arguments pick patterns (tx, rx, 64-byte, TSO).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -q -p vmm --example net_bench -- "$@"
