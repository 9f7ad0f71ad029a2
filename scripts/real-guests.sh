#!/usr/bin/env bash
# The real-guest scenarios (docs/real-guests.md): a stock Linux guest's own
# drivers use every device of vmd. Builds vmd, vmctl and the harness
# (release: the nested layer runs them under an emulator), then runs every
# scenario, directly on hardware KVM or nested under QEMU's emulator where
# /dev/kvm cannot run a stock kernel, and prints each by name. Run as root.
# VMD_REAL_GUESTS=direct|nested overrides the choice; VMD_REAL_GUESTS_GROUPS
# (e.g. main,cloud) runs only the groups it names.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p vmd -p vmctl -p realguest
exec ./target/release/realguest "$@"
