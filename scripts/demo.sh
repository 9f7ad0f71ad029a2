#!/usr/bin/env bash
# Builds vmd and vmctl, sets up what they need on this host, starts the
# daemon on a private socket with an empty configuration, and boots a VM
# with SeaBIOS whose serial console you see. Leave the console with `~.`
# (the VM and the daemon are then stopped). Run as root on a Debian host
# with /dev/kvm and a Rust toolchain.
#
# The set-up, each step only if it is missing: the Debian packages seabios
# (the firmware the VM boots) and, to link the build, gcc and libc6-dev;
# the system user _vmd and the empty directory /var/empty, made by the
# package's own postinst (dist/postinst).
#
# VMD_BIN_DIR: use the vmd and vmctl already built there instead of
# building them. VMD_SOCKET: the control socket (default
# /tmp/vmd-demo.sock); the daemon's log is next to it, named .log.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: run me as root: vmd needs root" >&2
    exit 1
fi
if [ -z "${VMD_BIN_DIR:-}" ] && ! command -v cargo >/dev/null 2>&1; then
    echo "demo.sh: cargo not found: install Rust 1.85 or later (https://rustup.rs), then run me again" >&2
    exit 1
fi

packages=(seabios)
[ -n "${VMD_BIN_DIR:-}" ] || packages+=(gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "demo.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The user VM processes run as and the directory they are locked into.
sh dist/postinst configure

if [ -n "${VMD_BIN_DIR:-}" ]; then
    bin="$(realpath "$VMD_BIN_DIR")"
else
    cargo build --release -p vmd -p vmctl --bins
    bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release"
fi

export VMD_SOCKET="${VMD_SOCKET:-/tmp/vmd-demo.sock}"
log="${VMD_SOCKET%.sock}.log"
# An empty configuration: this daemon runs only the demo's VM, whatever
# /etc/vm.conf holds for the system's own vmd.
"$bin/vmd" -d -f /dev/null >"$log" 2>&1 &
vmd_pid=$!
stop_vmd() {
    kill "$vmd_pid" 2>/dev/null || true
    wait "$vmd_pid" 2>/dev/null || true
}
trap stop_vmd EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
# vmd logs "startup" once it answers on its socket; if it exits instead,
# its log says why.
for _ in $(seq 100); do
    grep -qx startup "$log" && break
    if ! kill -0 "$vmd_pid" 2>/dev/null; then
        echo "demo.sh: vmd did not start:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
if ! grep -qx startup "$log"; then
    echo "demo.sh: vmd did not get ready within 10 seconds; its log ($log):" >&2
    cat "$log" >&2
    exit 1
fi

echo "vmd is running (log: $log); starting a VM. Leave the console with ~."
"$bin/vmctl" start -m 512M -b /usr/share/seabios/bios-256k.bin -c demo
