//! Tiny kernels on real KVM, assembled in the test: what each direct boot
//! path hands a kernel (registers, boot parameters, boot arguments), and
//! the paravirtual clock and ACPI hardware the platform offers.

mod common;

use common::{Guest, field};
use proto::ErrorCode;
use proto::vmchannel::ExitReason;
use testkit::guest::{assemble, bzimage_32, firmware};

/// 32-bit helpers: `print_str` (NUL-terminated string at ESI) and
/// `print_hex32` (EAX as eight hex digits) on COM1; `ABS(label)` is a
/// label's run-time address when the code runs at `BASE + (label - text)`.
const PRINT32: &str = r#"
%define ABS(x) (BASE + ((x) - text))
print_str:
    push eax
    push edx
.next:
    mov al, [esi]
    test al, al
    jz .end
    mov dx, 0x3f8
    out dx, al
    inc esi
    jmp .next
.end:
    pop edx
    pop eax
    ret
print_hex32:
    push eax
    push ecx
    push edx
    mov ecx, 8
.digit:
    rol eax, 4
    push eax
    and al, 0x0f
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'a' - '9' - 1
.out:
    mov dx, 0x3f8
    out dx, al
    pop eax
    loop .digit
    pop edx
    pop ecx
    pop eax
    ret
%macro SHOW 2            ; label text, value expression (loaded into EAX)
    mov esi, ABS(%1)
    call print_str
    mov eax, %2
    call print_hex32
%endmacro
%macro RESET 0
    mov al, 0xfe
    out 0x64, al
%%hang:
    hlt
    jmp %%hang
%endmacro
"#;

/// Real-mode `print_hex32`: EAX as eight hex digits on COM1 (with the
/// firmware prelude's `PRINT_HEX8`).
const PRINT_HEX32_16: &str = r#"
print_hex32:
    push eax
    push cx
    mov cx, 4
.byte:
    rol eax, 8
    PRINT_HEX8
    loop .byte
    pop cx
    pop eax
    ret
"#;

fn hex(out: &str, name: &str) -> u64 {
    u64::from_str_radix(field(out, name), 16).unwrap_or_else(|e| panic!("{name}: {e} in {out:?}"))
}

#[test]
fn kvm_signature_features_and_a_working_kvmclock() {
    testkit::needs!(kvm);
    let (out, _) = Guest::new(firmware(&format!(
        r#"
{PRINT_HEX32_16}main:
    xor ax, ax
    mov es, ax
    mov eax, 0x40000000
    cpuid
    mov [es:0x600], ebx
    mov [es:0x604], ecx
    mov [es:0x608], edx
    mov byte [es:0x60c], 0
    PRINT sig
    push ds
    xor ax, ax
    mov ds, ax
    mov si, 0x600
    call print_string
    pop ds
    mov eax, 0x40000001
    cpuid
    mov ebx, eax
    PRINT features
    mov eax, ebx
    call print_hex32
    ; kvmclock: per-vCPU time at 0x5000, wall clock at 0x6000
    mov ecx, 0x4b564d01
    mov eax, 0x5001
    xor edx, edx
    wrmsr
    mov ecx, 0x4b564d00
    mov eax, 0x6000
    xor edx, edx
    wrmsr
    PRINT version
    mov eax, [es:0x5000]
    call print_hex32
    PRINT mul
    mov eax, [es:0x5018]
    call print_hex32
    PRINT wallsec
    mov eax, [es:0x6004]
    call print_hex32
    PRINT nl
    DONE
sig: db "sig=", 0
features: db " features=", 0
version: db " version=", 0
mul: db " mul=", 0
wallsec: db " wallsec=", 0
nl: db 13, 10, 0
"#
    )))
    .run();
    assert_eq!(field(&out, "sig"), "KVMKVMKVM");
    let features = hex(&out, "features");
    assert_ne!(features & (1 << 3), 0, "CLOCKSOURCE2: {out}");
    assert_ne!(features & (1 << 24), 0, "CLOCKSOURCE_STABLE_BIT: {out}");
    let version = hex(&out, "version");
    assert!(
        version != 0 && version.is_multiple_of(2),
        "pvclock version: {out}"
    );
    assert_ne!(hex(&out, "mul"), 0, "tsc_to_system_mul: {out}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let wall = hex(&out, "wallsec");
    assert!(wall.abs_diff(now) < 86_400, "wall clock {wall} vs {now}");
}

#[test]
fn a_paused_guest_learns_it_was_stopped() {
    testkit::needs!(kvm);
    // kvmclock on, then wait for KVM to raise PVCLOCK_GUEST_STOPPED in the
    // time structure's flags: it does when the VMM calls KVM_KVMCLOCK_CTRL,
    // which it does for every vCPU when a pause ends.
    let guest = Guest {
        vcpus: 2,
        ..Guest::new(firmware(&format!(
            r#"
{PRINT_HEX32_16}main:
    xor ax, ax
    mov es, ax
    mov ecx, 0x4b564d01
    mov eax, 0x5001
    xor edx, edx
    wrmsr
    PRINT ready
    ; give up after 10 s of the ACPI PM timer (3579545 Hz)
    mov dx, 0x608
    in eax, dx
    mov edi, eax
.poll:
    test byte [es:0x501d], 2
    jnz .stopped
    in eax, dx
    sub eax, edi
    cmp eax, 35795450
    jb .poll
    PRINT timeout
    call print_hex32
    mov eax, edi
    call print_hex32
    DONE
.stopped:
    PRINT stopped
    DONE
ready: db "ready", 13, 10, 0
stopped: db "guest-stopped", 13, 10, 0
timeout: db "no-stop-flag ", 0
"#,
        )))
    }
    .start();
    guest.wait_for_output("ready");
    let vcpus = guest.vm.vcpu_count();
    assert_eq!(vcpus, 2);
    guest.lifecycle.pause(vcpus);
    std::thread::sleep(std::time::Duration::from_millis(50));
    guest.lifecycle.resume();
    let (out, reason) = guest.wait();
    assert_eq!(reason, ExitReason::Reboot, "{out}");
    assert!(out.contains("guest-stopped"), "{out}");
}

#[test]
fn acpi_fixed_hardware_and_s5_power_off() {
    testkit::needs!(kvm);
    let (out, reason) = Guest::new(firmware(&format!(
        r#"
{PRINT_HEX32_16}main:
    mov dx, 0x604
    in ax, dx
    mov bx, ax
    PRINT cnt
    mov al, bl
    PRINT_HEX8
    mov dx, 0x608
    in eax, dx
    mov edi, eax
    mov ecx, 200000
.spin:
    dec ecx
    jnz .spin
    in eax, dx
    sub eax, edi
    mov ebx, eax
    PRINT ticks
    mov eax, ebx
    call print_hex32
    PRINT nl
    ; SLP_TYP = 5 (the DSDT's _S5) with SLP_EN
    mov dx, 0x604
    mov ax, (5 << 10) | (1 << 13)
    out dx, ax
.hang:
    hlt
    jmp .hang
cnt: db "cnt=", 0
ticks: db " ticks=", 0
nl: db 13, 10, 0
"#
    )))
    .run();
    assert_eq!(reason, ExitReason::PowerOff, "{out}");
    assert_eq!(hex(&out, "cnt") & 1, 1, "SCI_EN: {out}");
    assert!(hex(&out, "ticks") > 0, "the PM timer runs: {out}");
}

/// A 64-bit ELF kernel the way OpenBSD's are laid out: linked high,
/// loaded at its physical address, a random-data segment, entered in
/// compatibility mode with vmd's boot arguments.
fn openbsd_like_kernel() -> Vec<u8> {
    assemble(&format!(
        r#"
bits 32
BASE equ 0x200000
VBASE equ 0xffffffff80200000
org 0
ehdr:
    db 0x7f, "ELF", 2, 1, 1, 0
    dq 0
    dw 2, 0x3e
    dd 1
    dq VBASE + (start - text)
    dq phdrs - ehdr
    dq shdrs - ehdr
    dd 0
    dw 64, 56, 2, 64, 4, 3
phdrs:
    dd 1, 7                                 ; PT_LOAD, RWX
    dq text - ehdr, VBASE, BASE
    dq text_end - text, text_end - text + 0x1000
    dq 0x1000
    dd 0x65a3dbe6, 4                        ; PT_OPENBSD_RANDOMIZE
    dq random - ehdr, VBASE + (random - text), BASE + (random - text)
    dq 32, 32, 8
align 16
text:
{PRINT32}
start:
    mov ebp, esp
    SHOW s_cs, cs
    SHOW s_bootdev, [ebp + 8]
    SHOW s_apiver, [ebp + 12]
    SHOW s_end, [ebp + 16]
    SHOW s_argc, [ebp + 28]
    SHOW s_argv, [ebp + 32]
    mov ebx, [ebp + 32]
    add ebx, [ebx + 4]                      ; skip the memory map record
    SHOW s_record, [ebx]
    SHOW s_speed, [ebx + 16]
    SHOW s_port, [ebx + 20]
    mov ecx, 0xc0000080
    rdmsr
    mov ebx, eax
    SHOW s_efer, ebx
    mov ebx, cr0
    SHOW s_cr0, ebx
    mov ebx, 0
    mov ecx, 8
    mov edi, ABS(random)
.or:
    or ebx, [edi]
    add edi, 4
    loop .or
    SHOW s_random, ebx
    ; The ELF header copy at the end of the kernel's memory, the section
    ; headers after it, the string table's contents where they point.
    mov edi, ABS(text_end) + 0x1000
    SHOW s_symbols, [edi]
    SHOW s_shoff, [edi + 0x28]
    movzx ebx, word [edi + 0x3c]
    SHOW s_shnum, ebx
    lea ebx, [edi + 0x40 + 2 * 0x40]        ; .strtab's header
    SHOW s_strflags, [ebx + 8]
    mov ebx, [ebx + 0x18]
    SHOW s_marker, [edi + ebx + 1]
    RESET
s_cs: db "cs=", 0
s_bootdev: db " bootdev=", 0
s_apiver: db " apiver=", 0
s_end: db " end=", 0
s_argc: db " argc=", 0
s_argv: db " argv=", 0
s_record: db " record=", 0
s_speed: db " speed=", 0
s_port: db " port=", 0
s_efer: db " efer=", 0
s_cr0: db " cr0=", 0
s_random: db " random=", 0
s_symbols: db " symbols=", 0
s_shoff: db " shoff=", 0
s_shnum: db " shnum=", 0
s_strflags: db " strflags=", 0
s_marker: db " marker=", 0
align 8
random: times 32 db 0
text_end:
; Not loaded: the symbol table, its strings and the section headers.
symtab: times 24 db 0
    dd 1
    db 0x12, 0
    dw 1
    dq VBASE + (start - text), 0
symtab_end:
strtab: db 0, "vmd_marker", 0
strtab_end:
shstrtab: db 0, ".symtab", 0, ".strtab", 0, ".shstrtab", 0
shstrtab_end:
align 8
shdrs:
    times 64 db 0
    dd 1, 2                                 ; .symtab, SHT_SYMTAB
    dq 0, 0, symtab - ehdr, symtab_end - symtab
    dd 2, 1
    dq 8, 24
    dd 9, 3                                 ; .strtab, SHT_STRTAB
    dq 0, 0, strtab - ehdr, strtab_end - strtab
    dd 0, 0
    dq 1, 0
    dd 17, 3                                ; .shstrtab, SHT_STRTAB
    dq 0, 0, shstrtab - ehdr, shstrtab_end - shstrtab
    dd 0, 0
    dq 1, 0
"#
    ))
}

#[test]
fn openbsd_elf_kernel_gets_vmd_boot_arguments() {
    testkit::needs!(kvm);
    let (out, reason) = Guest::new(openbsd_like_kernel()).run();
    assert_eq!(reason, ExitReason::Reboot, "{out}");
    assert_eq!(hex(&out, "cs"), 0x08, "32-bit code segment: {out}");
    assert_eq!(hex(&out, "bootdev"), 0xa000_0004, "sd0a: {out}");
    assert_eq!(hex(&out, "apiver"), 0x0e, "{out}");
    assert_eq!(hex(&out, "argv"), 0x2000, "{out}");
    assert!(hex(&out, "argc") > 12, "{out}");
    assert_eq!(hex(&out, "record"), 5, "the console record: {out}");
    assert_eq!(hex(&out, "speed"), 115_200, "{out}");
    assert_eq!(hex(&out, "port"), 0x3f8, "{out}");
    assert_eq!(hex(&out, "efer") & 0x500, 0x500, "long mode active: {out}");
    assert_eq!(hex(&out, "cr0"), 0x8000_0011, "{out}");
    assert_ne!(hex(&out, "random"), 0, "random data filled in: {out}");
    assert_eq!(
        hex(&out, "symbols"),
        0x464c_457f,
        "ELF header copy after the kernel: {out}"
    );
    assert_eq!(
        hex(&out, "shoff"),
        0x40,
        "section headers follow the copy: {out}"
    );
    assert_eq!(hex(&out, "shnum"), 4, "{out}");
    assert_eq!(
        hex(&out, "strflags") & 2,
        2,
        "kept sections are allocated: {out}"
    );
    assert_eq!(
        hex(&out, "marker"),
        0x5f64_6d76,
        "the string table, where its header says: {out}"
    );
    assert!(hex(&out, "end") > 0x20_1000, "{out}");
}

#[test]
fn bzimage_32bit_entry_gets_the_zero_page() {
    testkit::needs!(kvm);
    let code = assemble(&format!(
        r#"
bits 32
BASE equ 0x100000
org 0
text:
    jmp start
{PRINT32}
start:
    mov ebp, esi
    SHOW s_esi, ebp
    SHOW s_cs, cs
    SHOW s_ds, ds
    SHOW s_loader, [ebp + 0x210]
    movzx ebx, byte [ebp + 0x1e8]
    SHOW s_e820, ebx
    SHOW s_ramdisk, [ebp + 0x218]
    SHOW s_ramdisk_size, [ebp + 0x21c]
    SHOW s_rsdp, [ebp + 0x70]
    mov esi, ABS(s_cmdline)
    call print_str
    mov esi, [ebp + 0x228]
    call print_str
    mov esi, ABS(s_close)
    call print_str
    RESET
s_esi: db "esi=", 0
s_cs: db " cs=", 0
s_ds: db " ds=", 0
s_loader: db " loader=", 0
s_e820: db " e820=", 0
s_ramdisk: db " ramdisk=", 0
s_ramdisk_size: db " ramdisk_size=", 0
s_rsdp: db " rsdp=", 0
s_cmdline: db " cmdline=[", 0
s_close: db "]", 13, 10, 0
"#
    ));
    let initrd = vec![0xa5u8; 12345];
    let (out, reason) = Guest {
        cmdline: Some("console=ttyS0 root=/dev/vda1 quiet".into()),
        initrd: Some(initrd),
        ..Guest::new(bzimage_32(&code, 255))
    }
    .run();
    assert_eq!(reason, ExitReason::Reboot, "{out}");
    assert_eq!(hex(&out, "esi"), 0x7000, "boot_params: {out}");
    assert_eq!(hex(&out, "cs") & 0xffff, 0x10, "__BOOT_CS: {out}");
    assert_eq!(hex(&out, "ds") & 0xffff, 0x18, "__BOOT_DS: {out}");
    assert_eq!(hex(&out, "loader") & 0xff, 0xff, "type_of_loader: {out}");
    // 64 MiB: low RAM, legacy hole, RAM, PCI hole, BIOS area.
    assert_eq!(hex(&out, "e820"), 5, "{out}");
    assert_eq!(hex(&out, "ramdisk_size"), 12345, "{out}");
    let ramdisk = hex(&out, "ramdisk");
    assert_eq!(ramdisk % 4096, 0, "{out}");
    assert!(ramdisk + 12345 <= 64 << 20, "{out}");
    assert_eq!(hex(&out, "rsdp"), 0xe0000, "{out}");
    assert!(
        out.contains("cmdline=[console=ttyS0 root=/dev/vda1 quiet]"),
        "{out}"
    );
}

#[test]
fn kernel_limits_are_refused_with_their_codes() {
    testkit::needs!(kvm);
    let kernel = bzimage_32(&[0xf4; 16], 255);
    let too_long = Guest {
        cmdline: Some("x".repeat(256)),
        ..Guest::new(kernel.clone())
    }
    .launch_error();
    assert_eq!(
        too_long.code,
        ErrorCode::CMDLINE_TOO_LONG,
        "{}",
        too_long.reason
    );
    assert!(
        too_long.reason.contains("at most 255"),
        "{}",
        too_long.reason
    );

    let too_big = Guest {
        initrd: Some(vec![0; 70 << 20]),
        ..Guest::new(kernel)
    }
    .launch_error();
    assert_eq!(
        too_big.code,
        ErrorCode::INITRD_TOO_LARGE,
        "{}",
        too_big.reason
    );

    let firmware_with_args = Guest {
        cmdline: Some("console=ttyS0".into()),
        ..Guest::new(firmware("main:\n    DONE\n"))
    }
    .launch_error();
    assert_eq!(firmware_with_args.code, ErrorCode::KERNEL_ARGS_UNSUPPORTED);
}

#[test]
fn the_pm_timer_never_runs_backwards() {
    testkit::needs!(kvm);
    // 20000 reads in a row, each no smaller than the one before; a read
    // whose bytes came from either side of a carry (0x28ff, 0x2900 read
    // as 0x29ff) runs back at the next.
    let (out, _) = Guest::new(firmware(&format!(
        r#"
{PRINT_HEX32_16}main:
    mov dx, 0x608
    in eax, dx
    mov edi, eax
    mov ecx, 20000
.poll:
    in eax, dx
    mov ebx, eax
    sub eax, edi
    cmp eax, 0x40000000
    ja .bad
    mov edi, ebx
    dec ecx
    jnz .poll
    PRINT good
    DONE
.bad:
    PRINT bad
    mov eax, edi
    call print_hex32
    mov al, ' '
    mov dx, 0x3f8
    out dx, al
    mov eax, ebx
    call print_hex32
    DONE
good: db "monotonic", 13, 10, 0
bad: db "backwards ", 0
"#,
    )))
    .run();
    assert!(out.contains("monotonic"), "{out}");
}
