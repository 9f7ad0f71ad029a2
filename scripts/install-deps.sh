#!/usr/bin/env bash
# Installs what building and testing need on Debian: the firmware and payloads
# the end-to-end tests boot, the image tools they compare against, QEMU for
# the benchmarks, the tools the packaging and documentation tests run
# (mandoc, make, dpkg-deb, systemd-analyze, man, the shells whose
# completions are tested), the C compilers Rust links with and cargo-fuzz's
# libFuzzer is built with, and cargo-nextest. Installs only what is missing;
# Rust itself comes from rustup.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps.sh: cargo not found: install Rust 1.85 or later (https://rustup.rs), then run me again" >&2
    exit 1
fi

packages=(
    seabios qemu-utils qemu-system-x86
    grub-pc-bin grub-common mtools dosfstools fdisk xorriso
    ipxe ipxe-qemu busybox-static cpio lz4
    acpica-tools mandoc iproute2 nasm
    make binutils dpkg man-db systemd util-linux zsh fish
    gcc g++ libc6-dev
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi

# The unprivileged user VM processes run as, and the empty directory they
# are locked into: the package's own postinst makes them.
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO sh "$(dirname "$0")/../dist/postinst" configure
