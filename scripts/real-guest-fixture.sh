#!/usr/bin/env bash
# Builds what the real-guest scenarios boot (docs/real-guests.md), from
# Debian packages and without loop devices or mounts, into DIR (default:
# $VMD_FIXTURES/real-guest, or /var/tmp/vmd-fixtures/real-guest):
#
#   bzImage       Debian's cloud kernel, the pinned version if the archive
#                 still has it, else the one linux-image-cloud-amd64 names
#   modules/      that kernel's modules tree (modules.dep made by depmod):
#                 the inner guest's virtio drivers, the outer guest's KVM
#   inner.img     the inner guest's initramfs: busybox, the modules, and an
#                 /init that loads every driver, reports what it found as
#                 "@@guest" lines on the serial console and starts a shell
#   grub-disk.img a raw disk: GRUB in the MBR gap, a FAT partition with the
#                 kernel and inner.img; GRUB boots Linux on the serial port
#   grub-cd.iso   the same as an El Torito CD (the installer path)
#   data.iso      an ISO 9660 image holding data.bin, for the CD scenario
#   data.md5      data.bin's MD5 sum
#   version       the kernel package's name
#   release       its release (uname -r), the modules tree's name
#
# Safe to run from several processes at once: the first builds, the others
# wait on the lock and find the result.
set -euo pipefail

# The kernel the scenarios were written against; a newer one is taken,
# with a message, when the archive no longer has this one.
PINNED=linux-image-6.1.0-57-cloud-amd64

dir=${1:-${VMD_FIXTURES:-/var/tmp/vmd-fixtures}/real-guest}
# Bump when the recipe changes: an old build is then made again.
RECIPE=6
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
[ "$(cat "$dir/.complete" 2>/dev/null)" = "$RECIPE" ] && exit 0
rm -rf "${dir:?}"/{bzImage,modules,inner.img,grub-disk.img,grub-cd.iso,data.iso,data.md5,version,release}

work=$(mktemp -d "$dir/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

download() {
    apt-get download -q "$1" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
    ls "$1"_*.deb >/dev/null 2>&1
}
pkg=$PINNED
if ! download "$pkg"; then
    apt-get update -qq || true
    if ! download "$pkg"; then
        pkg=$(apt-cache depends linux-image-cloud-amd64 |
            awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
        [ -n "$pkg" ] || {
            echo "real-guest-fixture: neither $PINNED nor linux-image-cloud-amd64 can be downloaded" >&2
            exit 1
        }
        echo "real-guest-fixture: $PINNED is no longer in the archive; using $pkg" >&2
        download "$pkg" || { echo "real-guest-fixture: cannot download $pkg" >&2; exit 1; }
    fi
fi
dpkg-deb -x ./"$pkg"_*.deb pkg
version=$(ls pkg/lib/modules)
cp pkg/boot/vmlinuz-* bzImage
depmod -b pkg "$version"
mv pkg/lib/modules/"$version" modules

# The modules a scenario loads, with what they depend on, deepest first.
closure() {
    local m
    for m in "$@"; do
        awk -v m="$m" -F': *' '
            { n = $1; sub(".*/", "", n); sub("\\.ko$", "", n); gsub("-", "_", n) }
            n == m { print $1; if ($2 != "") { k = split($2, d, " "); for (i = k; i >= 1; i--) print d[i] } }
        ' modules/modules.dep
    done | tac | awk '!seen[$0]++'
}
INNER_MODULES="virtio_pci virtio_blk virtio_net virtio_rng virtio_scsi sr_mod isofs button evdev"

# The inner guest's initramfs.
mkdir -p inner/bin inner/proc inner/sys inner/dev inner/tmp inner/mnt inner/etc/acpi/PWRF \
    inner/var/log inner/var/run \
    inner/lib/modules/"$version"
cp /bin/busybox inner/bin/busybox
for m in $(closure $INNER_MODULES); do
    mkdir -p "inner/lib/modules/$version/$(dirname "$m")"
    cp "modules/$m" "inner/lib/modules/$version/$m"
done
cp modules/modules.dep modules/modules.alias modules/modules.builtin "inner/lib/modules/$version/" 2>/dev/null || true
cat > inner/init <<EOF
#!/bin/busybox sh
# The real-guest scenarios' guest: loads every driver vmd's devices need,
# says what the kernel made of them, and hands the console to a shell the
# scenarios type into. Lines the harness reads start with "@@guest".
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for m in $INNER_MODULES; do
    modprobe \$m || echo "@@guest modprobe \$m failed"
done
EOF
cat >> inner/init <<'EOF'
say() { echo "@@guest $*"; }
# Let the drivers finish probing (virtio-scsi scans its target, the NIC
# registers) before reporting.
for i in 1 2 3 4 5 6 7 8 9 10; do
    [ -e /dev/sr0 ] || [ ! -d /sys/bus/virtio/drivers/virtio_scsi ] && break
    sleep 1
done
disks=""
for d in /sys/block/vd*; do
    [ -e "$d" ] && disks="$disks${disks:+,}${d##*/}:$(cat $d/size)"
done
nics=""
for n in /sys/class/net/eth*; do
    [ -e "$n" ] && nics="$nics${nics:+,}${n##*/}:$(cat $n/address)"
done
say boot kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo) \
    online=$(cat /sys/devices/system/cpu/online) \
    clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource) \
    rng=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null || echo none) \
    disks=${disks:-none} nics=${nics:-none} cd=$([ -e /dev/sr0 ] && echo sr0 || echo none) \
    cmdline="$(cat /proc/cmdline)"
# The power button: busybox acpid runs /etc/acpi/PWRF/00000080.
cat > /etc/acpi/PWRF/00000080 <<'EOS'
#!/bin/sh
echo "@@guest power button: powering off" > /dev/console
sync
poweroff -f
EOS
chmod 755 /etc/acpi/PWRF/00000080
acpid -c /etc/acpi -l /var/log/acpid.log -p /var/run/acpid.pid || say acpid failed
# A DHCP client script for udhcpc: configure the interface and report.
cat > /etc/udhcpc.script <<'EOS'
#!/bin/sh
case "$1" in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "@@guest dhcp $1 $interface ip=$ip mask=$mask router=$router dns=$dns"
    ;;
esac
EOS
chmod 755 /etc/udhcpc.script
say ready boot_id=$(cat /proc/sys/kernel/random/boot_id)
export PS1='guest# '
exec setsid cttyhack sh
EOF
chmod 755 inner/init
(cd inner && find . | cpio -o -H newc --quiet) | gzip -9 > inner.img

# A GRUB that boots the kernel and inner.img from its own medium, with no
# menu: the embedded configuration runs in GRUB's rescue parser.
GRUB=/usr/lib/grub/i386-pc
CMDLINE="console=ttyS0 panic=-1 rg.boot=grub"
grub_script() { # $1: the device GRUB reads from
    cat <<EOF
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
echo real-guest: grub loads linux from $1
linux $1/bzImage $CMDLINE-$2
initrd $1/inner.img
boot
EOF
}

grub_script '(hd0,msdos1)' disk > disk.cfg
grub-mkimage -O i386-pc -p '(hd0,msdos1)/' -c disk.cfg -o core.img \
    biosdisk part_msdos fat serial terminal echo linux boot
size_mib=64
start=2048
truncate -s ${size_mib}M grub-disk.img
echo "$start,,0x0e,*" | sfdisk -q grub-disk.img
part_sectors=$(( size_mib * 2048 - start ))
mkfs.fat -C -F 16 part.img $(( part_sectors / 2 )) >/dev/null
mcopy -i part.img bzImage inner.img ::/
dd if="$GRUB/boot.img" of=grub-disk.img bs=440 count=1 conv=notrunc status=none
dd if=core.img of=grub-disk.img bs=512 seek=1 conv=notrunc status=none
dd if=part.img of=grub-disk.img bs=512 seek=$start conv=notrunc status=none

grub_script '(cd)' cd > cd.cfg
mkdir -p cd/boot/grub
grub-mkimage -O i386-pc-eltorito -p '(cd)/' -c cd.cfg -o cd/boot/grub/eltorito.img \
    biosdisk iso9660 serial terminal echo linux boot
cp bzImage inner.img cd/
xorriso -as mkisofs -quiet -R -V RGBOOT -b boot/grub/eltorito.img -no-emul-boot \
    -boot-load-size 4 -boot-info-table -o grub-cd.iso cd 2>/dev/null

# The data CD: 4 MiB of random bytes and their sum.
mkdir -p data
head -c 4M /dev/urandom > data/data.bin
md5sum data/data.bin | cut -d' ' -f1 > data.md5
xorriso -as mkisofs -quiet -R -V RGDATA -o data.iso data 2>/dev/null

mv bzImage modules inner.img grub-disk.img grub-cd.iso data.iso data.md5 "$dir"/
echo "$pkg" > "$dir/version"
echo "$version" > "$dir/release"
echo "$RECIPE" > "$dir/.complete"
