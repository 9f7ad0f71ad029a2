#!/usr/bin/env bash
# Start-up benchmark, vmd against QEMU on the same machine: time from the
# start command to the first console byte, and VMM memory without guest
# RAM. Usage: bench/startup.sh [runs]   (root, /dev/kvm, qemu-system-x86)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --example startup-bench -p vmd -p vmctl
exec target/release/examples/startup-bench "${1:-7}"
