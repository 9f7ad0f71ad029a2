#!/usr/bin/env bash
# Real-guest benchmark (as root; measured, never asserted, not part of the
# test suite): the real-guest fixture kernel and initramfs boot under our
# vmd and under QEMU with KVM, side by side with the same memory, one vCPU,
# a raw virtio-blk disk, a virtio-net NIC on a tap, a virtio-scsi CD and a
# virtio-rng. Where /dev/kvm cannot run a stock kernel (PVM), both run
# inside one outer guest under qemu-system-x86_64 -accel tcg -cpu max.
# Rounds alternate (vmd, QEMU, vmd, ...). Measures: start to the guest's
# "@@guest ready", guest dd with O_DIRECT on /dev/vda (4 KiB and 1 MiB
# blocks, write and read), busybox nc guest->host and host->guest. Prints
# every sample, then per measure both medians and the ratio vmd/QEMU.
#
# Arguments go to `realguest bench`: --rounds N (default 5), --vmd-dir DIR
# (a vmd and vmctl other than this tree's release build, e.g. one from
# before a change), --shmem-thp never|advise|... (the outer guest's
# /sys/kernel/mm/transparent_hugepage/shmem_enabled, default advise; see
# man/vmd.8, "Guest memory"), --outer-npt on|off (whether the outer KVM
# gives its guests nested paging, as KVM on hardware does: default on; the
# scenarios run with it off, docs/real-guests.md), --keep DIR (where
# the outer guest's images and the transcript go). A run of 5 rounds takes 15-30 minutes on 2 cores.
# Nested, the rounds an outer guest that died did not finish run in a new
# one (four outer guests at most); a round cut in half is dropped whole.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p vmd -p vmctl -p realguest
exec ./target/release/realguest bench "$@"
