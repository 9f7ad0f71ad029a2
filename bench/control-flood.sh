#!/usr/bin/env bash
# Control-socket flood: root's `vmctl status` latency on a quiet vmd and
# while clients (uid nobody) flood requests and never read their replies;
# medians, p90, max and the ratio. Usage: bench/control-flood.sh
# [clients] [samples]   (root, /dev/kvm not needed)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --example control-flood -p vmd -p vmctl
VMD_BIN_DIR="$PWD/target/release" exec target/release/examples/control-flood "${1:-20}" "${2:-30}"
