#!/usr/bin/env bash
# Disk benchmark, side by side with QEMU on the same files: conversion of a
# 1 GiB half-sparse image (our `vmctl create -i` path against `qemu-img
# convert`, both directions) and 4 KiB requests through our block layer
# against `qemu-img bench`. Prints times and ratios (qemu time / our time;
# above 1 means faster than QEMU). Needs qemu-utils and ~3 GiB of space in
# the work directory (default: /dev/shm when large enough, else /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

work="${1:-}"
if [ -z "$work" ]; then
    if [ "$(df --output=avail -k /dev/shm 2>/dev/null | tail -1)" -gt $((4 * 1024 * 1024)) ] 2>/dev/null; then
        work=/dev/shm/disk-bench
    else
        work=/tmp/disk-bench
    fi
fi
requests="${2:-200000}"
command -v qemu-img >/dev/null || { echo "disk-bench: qemu-img missing (apt-get install qemu-utils)" >&2; exit 1; }
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
echo "disk-bench: work directory $work, $(nproc) CPUs, $(qemu-img --version | head -1)"
cargo run --release -q -p disk --example bench -- "$work" "$requests"
