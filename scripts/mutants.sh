#!/usr/bin/env bash
# Mutation testing of the modules where a wrong line does the most harm
# (cargo-mutants, crates.io): each mutant of the named source file is
# built and the tests that guard that module run against it; a mutant that
# no test kills is a line no test really checks. Not part of the test
# command: it takes hours for everything. Usage:
#   scripts/mutants.sh [module ...]     (default: all of them)
# Modules: scaled permissions cpuid sandbox msix virtio-pci qcow2
# Results: target/mutants/<module>/mutants.out (caught.txt, missed.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants

run() {
    local name=$1 package=$2 file=$3
    shift 3
    echo "== $name: $file"
    mkdir -p "target/mutants/$name"
    cargo mutants --package "$package" --file "$file" \
        --output "target/mutants/$name" --test-tool nextest "$@" || true
    local out="target/mutants/$name/mutants.out"
    local caught missed unviable timeout
    caught=$(wc -l < "$out/caught.txt" 2>/dev/null || echo 0)
    missed=$(wc -l < "$out/missed.txt" 2>/dev/null || echo 0)
    unviable=$(wc -l < "$out/unviable.txt" 2>/dev/null || echo 0)
    timeout=$(wc -l < "$out/timeout.txt" 2>/dev/null || echo 0)
    echo "$name: caught $caught of $((caught + missed + timeout)) viable (missed $missed, timeout $timeout, unviable $unviable)"
}

modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=(scaled permissions cpuid sandbox msix virtio-pci qcow2)
for module in "${modules[@]}"; do
    case $module in
    scaled) run scaled scaled crates/scaled/src/lib.rs ;;
    # vmctl is built too (not tested): the integration tests run it
    # against the daemon. --test-package would not build it for the
    # unmutated baseline.
    permissions) run permissions vmd crates/vmd/src/permissions.rs \
        --cargo-arg=--package=vmctl -- -E \
        'package(vmd) & (binary(vmd) | binary(permission_matrix) | binary(hostile_user) | binary(config))' ;;
    cpuid) run cpuid vmm crates/vmm/src/cpuid.rs -- --lib ;;
    sandbox) run sandbox vmm crates/vmm/src/sandbox/syscalls.rs -- --lib ;;
    msix) run msix vmm crates/vmm/src/devices/pci/msix.rs -- \
        -E 'kind(lib) | binary(virtio_pci) | binary(send_receive)' ;;
    virtio-pci) run virtio-pci vmm crates/vmm/src/devices/virtio/pci/common_config.rs -- \
        -E 'kind(lib) | binary(virtio_pci) | binary(send_receive)' ;;
    # Without bad_images (refused headers: open errors only) and qemu-made
    # compressed_clusters (slow; compressed_image_rewritten reads them
    # too), and stopping at the first failure: the whole disk suite, about
    # a minute, for each of 75 mutants would take well over an hour.
    qcow2) run qcow2 disk crates/disk/src/qcow2.rs -- --max-fail=1:immediate -E \
        'kind(lib) | binary(our_writes) | binary(chain) | binary(larger_overlay) | binary(crash) | (binary(qemu_made) & !test(compressed_clusters))' ;;
    *) echo "unknown module $module" >&2; exit 2 ;;
    esac
done
