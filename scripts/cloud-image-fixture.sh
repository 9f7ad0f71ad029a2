#!/usr/bin/env bash
# Builds a small Debian 12 cloud image for the real-guest harness's cloud
# scenarios (docs/real-guests.md), from Debian's packages and without loop
# devices or mounts, into DIR (default: $VMD_FIXTURES/real-guest, or
# /var/tmp/vmd-fixtures/real-guest), next to the other fixtures:
#
#   cloud.qcow2    a qcow2 disk as distributions publish them: an MBR with
#                  GRUB in its gap and one ext4 partition holding Debian
#                  with systemd, cloud-init, OpenSSH's server and the cloud
#                  kernel; cloud-init's NoCloud data source is enabled, its
#                  network configuration is rendered for systemd-networkd
#   cloud.version  the kernel package's name
#
# The kernel is the one the other fixtures use (DIR/version, written by
# real-guest-fixture.sh), else the one linux-image-cloud-amd64 names.
# Needs mmdebstrap (scripts/install-deps.sh). Safe to run from several
# processes at once: the first builds, the others wait on the lock.
set -euo pipefail

dir=${1:-${VMD_FIXTURES:-/var/tmp/vmd-fixtures}/real-guest}
# Bump when the recipe changes: an old build is then made again.
RECIPE=1
mkdir -p "$dir"
exec 9>"$dir/.cloud.lock"
flock 9
[ "$(cat "$dir/.cloud-complete" 2>/dev/null)" = "$RECIPE" ] && exit 0
rm -f "$dir/cloud.qcow2" "$dir/cloud.version"

kernel=$(cat "$dir/version" 2>/dev/null || echo linux-image-cloud-amd64)
# The root partition's size: what the packages take and room for the
# first boot's writes; cloud-init grows it to the disk it is given.
ROOT_MIB=1536
START_SECTOR=2048

work=$(mktemp -d "$dir/cloud-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
started=$(date +%s)

# cloud-init 22.4 renders network configuration for the first available
# of ENI (ifupdown), netplan, NetworkManager and systemd-networkd: with
# none of the first three installed it writes systemd-networkd files, and
# networkd is in systemd itself. udev names the interfaces, dbus lets
# hostnamectl set the name cloud-init gives. growpart (cloud-guest-utils,
# with fdisk's sfdisk) and resize2fs grow the root partition and its file
# system to the disk's size.
packages=(
    systemd systemd-sysv udev dbus
    cloud-init cloud-guest-utils fdisk e2fsprogs
    openssh-server sudo iproute2 netbase procps
    initramfs-tools "$kernel"
)
include=$(IFS=,; echo "${packages[*]}")

# The initramfs needs only what mounts the root: virtio-blk and ext4 (a
# small initramfs is quick to read through the BIOS). Written before the
# kernel's package makes it.
essential_hook='mkdir -p "$1/etc/initramfs-tools/conf.d" &&
    printf "MODULES=list\nCOMPRESS=gzip\n" > "$1/etc/initramfs-tools/conf.d/vmd-fixture.conf" &&
    mkdir -p "$1/etc/initramfs-tools" &&
    printf "virtio_pci\nvirtio_blk\next4\n" > "$1/etc/initramfs-tools/modules"'
# The root by label, networkd on at boot (cloud-init writes its files;
# Debian leaves networkd off), and NoCloud as the data source looked for,
# so cloud-init does not spend the boot probing cloud providers' metadata
# addresses. /etc/hostname goes: cloud-init sets the VM's name.
customize_hook='printf "LABEL=cloudroot / ext4 rw,errors=remount-ro 0 1\n" > "$1/etc/fstab" &&
    chroot "$1" systemctl enable systemd-networkd.service &&
    printf "datasource_list: [ NoCloud, None ]\n" > "$1/etc/cloud/cloud.cfg.d/90-vmd-fixture.cfg" &&
    rm -f "$1/etc/hostname" &&
    rm -rf "$1/var/cache/apt/archives"/*.deb "$1/var/lib/apt/lists"/*'

mmdebstrap --mode=unshare --variant=apt --format=tar --quiet \
    --include="$include" \
    --essential-hook="$essential_hook" \
    --customize-hook="$customize_hook" \
    bookworm root.tar \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"

mkdir root
tar -C root --numeric-owner --xattrs --xattrs-include='*' -xpf root.tar
rm root.tar
vmlinuz=$(cd root/boot && ls vmlinuz-*)
initrd=$(cd root/boot && ls initrd.img-*)

# The root file system, then the disk: GRUB's core image in the MBR gap
# (its configuration embedded, as the real-guest fixture's), the ext4
# partition after it. GRUB 2.06 reads ext4 without the orphan_file and
# metadata_csum_seed features, which Debian 12's mke2fs leaves off.
mke2fs -q -t ext4 -L cloudroot -d root part.img "${ROOT_MIB}M" >/dev/null
rm -rf root
disk_sectors=$(( START_SECTOR + ROOT_MIB * 2048 ))
truncate -s $(( disk_sectors * 512 )) disk.img
echo "$START_SECTOR,,83,*" | sfdisk -q disk.img
cat > grub.cfg <<EOF
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
linux (hd0,msdos1)/boot/$vmlinuz root=LABEL=cloudroot rw console=ttyS0,115200
initrd (hd0,msdos1)/boot/$initrd
boot
EOF
GRUB=/usr/lib/grub/i386-pc
grub-mkimage -O i386-pc -p '(hd0,msdos1)/boot/grub' -c grub.cfg -o core.img \
    biosdisk part_msdos ext2 serial terminal linux boot
dd if="$GRUB/boot.img" of=disk.img bs=440 count=1 conv=notrunc status=none
dd if=core.img of=disk.img bs=512 seek=1 conv=notrunc status=none
dd if=part.img of=disk.img bs=512 seek=$START_SECTOR conv=notrunc,sparse status=none
rm part.img
qemu-img convert -f raw -O qcow2 disk.img cloud.qcow2
rm disk.img

mv cloud.qcow2 "$dir/"
echo "$kernel" > "$dir/cloud.version"
echo "$RECIPE" > "$dir/.cloud-complete"
echo "cloud-image-fixture: built $dir/cloud.qcow2 ($(du -m "$dir/cloud.qcow2" | cut -f1) MiB) in $(( $(date +%s) - started )) s" >&2
