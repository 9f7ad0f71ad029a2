#!/usr/bin/env bash
# Real-guest boot soak (as root; counted, never asserted, not part of the
# test suite): the real-guest benchmark's guest (fixture kernel and
# initramfs, 512 MiB, one vCPU unless --cpus, virtio-blk, -net, -scsi CD,
# -rng) boots again and again under our vmd and under QEMU with KVM, alternating
# (vmd, QEMU, vmd, ...). Each try: boot to the guest's "@@guest ready",
# `reboot -f` in the guest, the next "@@guest ready", 64 MiB written and
# read with O_DIRECT on /dev/vda, then the VM ends. A try that restarted
# unasked (a triple fault: the kernel's banner twice, or vmd's log),
# hung (no "@@guest ready" in 150 s) or whose VM went away counts as a
# death; the console's and vmd's last lines are kept for each. Where
# /dev/kvm cannot run a stock kernel (PVM), both sides run inside outer
# guests under qemu-system-x86_64 -accel tcg -cpu max, --per-outer pairs in
# each; the count says whether the nested deaths come from the emulation
# underneath (QEMU's guests die too) or from vmd.
#
# Arguments go to `realguest soak`: --pairs N (tries a side, default 20),
# --per-outer K (pairs per outer guest, default 8; about a minute a pair),
# --minutes M (start no new outer guest after M minutes), --cpus C (vCPUs
# a guest, default 1, as the benchmark's), --trace (the outer kernel traces
# its KVM's exits; a try that reset prints those before each shutdown
# exit), --hold-kvm (the runner keeps one idle KVM VM for the whole outer
# guest, so the outer kernel does not switch SVM on and off around every
# guest boot), --side vmd|qemu (tries on that side only), --qemu-ram memfd (QEMU's
# guest RAM a memfd, as vmd's, not anonymous memory), --shmem-thp MODE (the
# outer kernel's shmem_enabled, as the benchmark's), --outer-npt on|off
# (whether the outer KVM gives its guests nested paging; default on, as
# KVM on hardware; the resets on 4 KiB pages need it: docs/real-guests.md), --vmd-dir DIR,
# --fixtures DIR, --keep DIR (outer images and soak-transcript-N.log).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p vmd -p vmctl -p realguest
exec ./target/release/realguest soak "$@"
