#!/usr/bin/env bash
# Installs what building and testing need on Debian: the firmware and payloads
# the end-to-end tests boot, the image tools they compare against, QEMU for
# the benchmarks and the real-guest harness (kmod, e2fsprogs, ping; mmdebstrap
# builds its cloud image, OpenSSH's client logs in to it), the
# tools the packaging and documentation tests run
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
    acpica-tools mandoc iproute2 nasm kmod e2fsprogs iputils-ping
    mmdebstrap openssh-client
    make binutils dpkg man-db systemd util-linux zsh fish
    gcc g++ libc6-dev
)
missing() {
    local p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"
    done
}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Two passes: installing one package can remove another that was there
# (Debian's QEMU 7.2 system emulator removes a newer qemu-utils from
# backports), which the second pass puts back at the version that fits.
updated=""
for pass in 1 2; do
    mapfile -t need < <(missing)
    [ ${#need[@]} -eq 0 ] && break
    [ -n "$updated" ] || { $SUDO apt-get update -qq; updated=1; }
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
done
mapfile -t need < <(missing)
if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps.sh: still missing after installing: ${need[*]}" >&2
    exit 1
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi

# The unprivileged user VM processes run as, and the empty directory they
# are locked into: the package's own postinst makes them.
$SUDO sh "$(dirname "$0")/../dist/postinst" configure
