#!/usr/bin/env bash
# Send/receive benchmark, vmd against QEMU on the same machine: a 2 GiB
# guest with 512 MiB touched, sent to a file and received; stream
# throughput, stream size, time from receive to running, with ratios.
# Usage: bench/migrate-bench.sh [runs]   (root, /dev/kvm, qemu-system-x86,
# nasm)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --example migrate-bench -p vmd -p vmctl
exec "${CARGO_TARGET_DIR:-target}/release/examples/migrate-bench" "${1:-3}"
