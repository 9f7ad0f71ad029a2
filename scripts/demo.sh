#!/usr/bin/env bash
# Builds vmd and vmctl, starts the daemon on a private socket, and boots a
# VM with SeaBIOS whose serial console you see. Leave the console with `~.`
# (the VM and the daemon are then stopped). Run as root on a host with
# /dev/kvm.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg-query -W -f='${Status}' seabios 2>/dev/null | grep -q 'ok installed'; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq seabios
fi
cargo build --release --bins
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release"

export VMD_SOCKET="${VMD_SOCKET:-/tmp/vmd-demo.sock}"
log=/tmp/vmd-demo.log
"$bin/vmd" -d >"$log" 2>&1 &
vmd_pid=$!
trap 'kill "$vmd_pid" 2>/dev/null; wait "$vmd_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    [ -S "$VMD_SOCKET" ] && break
    sleep 0.1
done

echo "vmd is running (log: $log); starting a VM. Leave the console with ~."
"$bin/vmctl" start -m 512M -b /usr/share/seabios/bios-256k.bin -c demo
