#!/usr/bin/env bash
# Builds the Linux boot fixtures from Debian packages, without loop devices
# or mounts, into DIR (default: $VMD_FIXTURES/linux, or
# /var/tmp/vmd-fixtures/linux):
#
#   bzImage     Debian's cloud kernel as shipped (linux-image-*-cloud-amd64)
#   vmlinux     the ELF kernel inside it (its payload is LZ4), for PVH boot
#   initrd.img  a busybox initramfs whose /init prints a marker line and
#               starts a shell on the console
#   version     the kernel package's name
#
# Safe to run from several tests at once: the first builds, the others wait
# on the lock and find the result.
set -euo pipefail

dir=${1:-${VMD_FIXTURES:-/var/tmp/vmd-fixtures}/linux}
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
[ -f "$dir/.complete" ] && exit 0

work=$(mktemp -d "$dir/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# The kernel: the image package the cloud meta-package points at.
pkg=$(apt-cache depends linux-image-cloud-amd64 |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$pkg" ] || { echo "linux-fixture: no linux-image-*-cloud-amd64 package" >&2; exit 1; }
apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
dpkg-deb -x ./"$pkg"_*.deb pkg
cp pkg/boot/vmlinuz-* bzImage

# The payload starts payload_offset (0x248) bytes after the real-mode
# part, whose length is (setup_sects (0x1f1) + 1) * 512. lz4 complains
# about the bytes after the frame; the ELF magic says whether it worked.
setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 bzImage | tr -d ' ')
payload=$(od -An -tu4 -j $((0x248)) -N4 bzImage | tr -d ' ')
tail -c +$(( (setup_sects + 1) * 512 + payload + 1 )) bzImage | lz4 -dc > vmlinux 2>/dev/null || true
[ "$(head -c 4 vmlinux | od -An -tx1 | tr -d ' ')" = 7f454c46 ] ||
    { echo "linux-fixture: could not extract vmlinux" >&2; exit 1; }

# The initramfs: busybox and an /init that says it ran.
mkdir -p root/bin root/proc root/sys root/dev
cp /bin/busybox root/bin/busybox
cat > root/init <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "vmd-initrd: $(uname -r) up, $(grep -c ^processor /proc/cpuinfo) cpu(s)"
exec setsid cttyhack sh
EOF
chmod 755 root/init
(cd root && find . | cpio -o -H newc --quiet) | gzip -9 > initrd.img

mv bzImage vmlinux initrd.img "$dir"/
echo "$pkg" > "$dir/version"
touch "$dir/.complete"
