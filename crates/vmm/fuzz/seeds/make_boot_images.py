#!/usr/bin/env python3
"""Writes the seed inputs of the boot_images fuzz target into
seeds/boot_images/: four option bytes (see the target's module comment),
a small but well-formed boot image, then the command line.

    python3 crates/vmm/fuzz/seeds/make_boot_images.py
"""
import gzip
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot_images")

CMDLINE, INITRD, FIRMWARE, BOOT_MAC, GZIP = 1, 2, 4, 8, 0x10
MEM_8M, MEM_48M = 0x40, 0xC0

PT_LOAD, PT_NOTE = 1, 4
PT_OPENBSD_RANDOMIZE = 0x65A3DBE6
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 1, 2, 3


def seed(name, flags, image, cmdline=b"", initrd=0, firmware=0):
    data = bytes([flags, len(cmdline), initrd, firmware]) + image + cmdline
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def note(owner, kind, desc):
    name = owner + b"\0"
    out = struct.pack("<III", len(name), len(desc), kind) + name
    out += b"\0" * (-len(out) % 4) + desc
    return out + b"\0" * (-len(out) % 4)


def elf(class64, entry, segments, sections=()):
    """segments: (type, flags, paddr, data, memsz); sections: (name, type,
    data). Contents follow the headers in order."""
    ehsize, phsize, shsize = (64, 56, 64) if class64 else (52, 32, 40)
    names = b"\0" + b"".join(n + b"\0" for n, _, _ in sections) + b".shstrtab\0"
    phoff = ehsize
    offset = phoff + phsize * len(segments)
    body = b""
    placed = []
    for kind, flags, paddr, data, memsz in segments:
        placed.append((kind, flags, paddr, offset + len(body), len(data), memsz))
        body += data + b"\0" * (-len(data) % 8)
    sect = []
    for name, kind, data in sections:
        sect.append((names.index(name + b"\0"), kind, offset + len(body), len(data)))
        body += data + b"\0" * (-len(data) % 8)
    sect.append((names.index(b".shstrtab\0"), SHT_STRTAB, offset + len(body), len(names)))
    body += names + b"\0" * (-len(names) % 8)
    shoff = offset + len(body)
    shnum = len(sect) + 1
    ident = b"\x7fELF" + bytes([2 if class64 else 1, 1, 1]) + b"\0" * 9
    if class64:
        header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, entry, phoff, shoff,
                                     0, ehsize, phsize, len(segments), shsize, shnum, shnum - 1)
        ph = b"".join(struct.pack("<IIQQQQQQ", k, f, o, p, p, fs, ms, 4 if k == PT_NOTE else 8)
                      for k, f, p, o, fs, ms in placed)
        sh = b"\0" * shsize + b"".join(struct.pack("<IIQQQQIIQQ", n, k, 0, 0, o, s, 0, 0, 1, 0)
                                       for n, k, o, s in sect)
    else:
        header = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, entry & 0xFFFFFFFF, phoff, shoff,
                                     0, ehsize, phsize, len(segments), shsize, shnum, shnum - 1)
        ph = b"".join(struct.pack("<IIIIIIII", k, o, p & 0xFFFFFFFF, p & 0xFFFFFFFF, fs, ms, f, 4)
                      for k, f, p, o, fs, ms in placed)
        sh = b"\0" * shsize + b"".join(struct.pack("<IIIIIIIIII", n, k, 0, 0, o, s, 0, 0, 1, 0)
                                       for n, k, o, s in sect)
    return header + ph + body + sh


def openbsd(class64):
    base = 0xFFFFFFFF80200000 if class64 else 0xD0200000
    code = bytes(range(256))
    symtab = b"\0" * (24 if class64 else 16) * 2
    strtab = b"\0_start\0"
    return elf(class64, base, [
        (PT_LOAD, 5, base, code, 0x2000),
        (PT_OPENBSD_RANDOMIZE, 4, base + 0x80, b"\0" * 32, 32),
    ], [
        (b".text", SHT_PROGBITS, code),
        (b".symtab", SHT_SYMTAB, symtab),
        (b".strtab", SHT_STRTAB, strtab),
        (b".debug_line", SHT_PROGBITS, b"\1\2\3\4"),
    ])


def pvh(owner=b"Xen", kind=18):
    entry = 0x200000
    return elf(True, entry, [
        (PT_NOTE, 4, 0, note(owner, kind, struct.pack("<I", entry)), 0),
        (PT_LOAD, 5, entry, b"\xf4" * 256, 0x1000),
    ])


def bzimage(code32_start, version=0x020F, xloadflags=1, payload=b"\xf4" * 512):
    image = bytearray(1024)  # boot sector and one setup sector
    struct.pack_into("<B", image, 0x1F1, 1)  # setup_sects
    struct.pack_into("<I", image, 0x1F4, len(payload) // 16)  # syssize
    struct.pack_into("<H", image, 0x1FE, 0xAA55)  # boot_flag
    image[0x200:0x202] = b"\xeb\x66"  # jump over the header
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, version)
    struct.pack_into("<B", image, 0x211, 0x01)  # LOADED_HIGH
    struct.pack_into("<I", image, 0x214, code32_start)
    struct.pack_into("<I", image, 0x22C, 0x7FFFFFFF)  # initrd_addr_max
    struct.pack_into("<I", image, 0x230, 0x200000)  # kernel_alignment
    struct.pack_into("<B", image, 0x234, 1)  # relocatable
    struct.pack_into("<H", image, 0x236, xloadflags)
    struct.pack_into("<I", image, 0x238, 2047)  # cmdline_size
    struct.pack_into("<Q", image, 0x258, 0x100000)  # pref_address
    struct.pack_into("<I", image, 0x260, 0x200000)  # init_size
    return bytes(image) + payload


def main():
    os.makedirs(OUT, exist_ok=True)
    seed("openbsd64", MEM_8M | BOOT_MAC, openbsd(True))
    seed("openbsd64-gzip", MEM_8M | GZIP, openbsd(True))
    seed("openbsd32", MEM_8M, openbsd(False))
    seed("pvh", MEM_8M | CMDLINE | INITRD, pvh(), b"console=ttyS0 quiet", initrd=10)
    seed("linux-elf-without-pvh", MEM_8M, pvh(b"Linux", 1))
    seed("bzimage-64", MEM_8M | CMDLINE | INITRD, bzimage(0x100000), b"console=ttyS0", initrd=40)
    seed("bzimage-32", MEM_48M | INITRD, bzimage(0x100000, version=0x0206, xloadflags=0),
         initrd=3)
    seed("bzimage-realmode", MEM_8M | CMDLINE | INITRD | FIRMWARE, bzimage(0),
         b"dhcp && chain http://x/", initrd=5, firmware=2)


main()
