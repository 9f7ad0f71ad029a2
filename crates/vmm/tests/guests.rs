//! Tiny guests on real KVM: each test assembles a real-mode program, boots
//! it as the VM's firmware, and checks what it printed on COM1. The
//! program ends by pulsing the keyboard controller's reset line, which the
//! VM reports as a reboot.

use std::time::Duration;

use proto::vmchannel::ExitReason;
use testkit::guest::{FIND_VMMCI, SCI_SETUP, TRIPLE_FAULT, firmware};

mod common;

use common::{Guest, field};

/// Boots `program` and returns what it printed and how the VM ended.
fn run_guest(program: &str) -> (String, ExitReason) {
    run_guest_with_memory(program, 64 << 20)
}

fn run_guest_with_memory(program: &str, memory: u64) -> (String, ExitReason) {
    Guest {
        memory,
        ..Guest::new(firmware(program))
    }
    .run()
}

#[test]
fn vmmci_registers_and_guest_initiated_power_off() {
    testkit::needs!(kvm);
    let program = format!(
        r#"
main:
    call find_vmmci
    ; device features: all three offered
    mov dx, bx
    in eax, dx
    PRINT_HEX8
    ; driver OK
    lea dx, [bx + 0x12]
    mov al, 4
    out dx, al
    ; the host clock, in seconds, is far from zero
    lea dx, [bx + 0x18]
    in eax, dx
    shr eax, 24
    mov cl, al
    PRINT sec
    mov al, cl
    PRINT_HEX8
    ; power off from the guest side
    lea dx, [bx + 0x14]
    mov eax, 1
    out dx, eax
    PRINT bye
.spin:
    jmp .spin
sec: db " sec=", 0
bye: db " bye", 0
{FIND_VMMCI}
"#
    );
    let started = std::time::Instant::now();
    let (out, reason) = run_guest(&program);
    assert!(out.starts_with("07 sec="), "{out:?}");
    assert_ne!(field(&out, "sec"), "00", "{out:?}");
    assert!(out.contains("bye [announced shutdown]"), "{out:?}");
    assert_eq!(reason, ExitReason::PowerOff);
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "ended after the grace period"
    );
}

#[test]
fn uart_registers_and_output() {
    testkit::needs!(kvm);
    let (out, reason) = run_guest(
        r#"
main:
    PRINT hello
    ; scratch register keeps what is written
    mov dx, 0x3ff
    mov al, 0x5a
    out dx, al
    in al, dx
    mov bl, al
    PRINT scr
    mov al, bl
    PRINT_HEX8
    ; line status: transmitter empty
    mov dx, 0x3fd
    in al, dx
    mov bl, al
    PRINT lsr
    mov al, bl
    PRINT_HEX8
    ; divisor latch: set 115200/9600 = 12, read back
    mov dx, 0x3fb
    mov al, 0x83
    out dx, al
    mov dx, 0x3f8
    mov al, 12
    out dx, al
    in al, dx
    mov bl, al
    mov dx, 0x3fb
    mov al, 0x03
    out dx, al
    PRINT dll
    mov al, bl
    PRINT_HEX8
    ; interrupt identification: FIFO bits, nothing pending
    mov dx, 0x3fa
    in al, dx
    mov bl, al
    PRINT iir
    mov al, bl
    PRINT_HEX8
    PRINT nl
    DONE
hello: db "hello from the guest", 13, 10, 0
scr: db " scr=", 0
lsr: db " lsr=", 0
dll: db " dll=", 0
iir: db " iir=", 0
nl: db 13, 10, 0
"#,
    );
    assert_eq!(reason, ExitReason::Reboot);
    assert!(out.starts_with("hello from the guest\r\n"), "{out:?}");
    assert_eq!(field(&out, "scr"), "5a");
    assert_eq!(
        u8::from_str_radix(field(&out, "lsr"), 16).unwrap() & 0x60,
        0x60
    );
    assert_eq!(field(&out, "dll"), "0c");
    assert_eq!(field(&out, "iir"), "c1");
}

#[test]
fn rep_outsb_and_rep_insb() {
    testkit::needs!(kvm);
    let (out, _) = run_guest(
        r#"
main:
    ; rep outsb: the whole string in one exit
    mov si, msg
    mov cx, msg_end - msg
    mov dx, 0x3f8
    rep outsb
    ; rep insb from the fw_cfg data port into RAM at 0:0x500
    mov ax, 0
    mov dx, 0x510
    out dx, ax
    xor ax, ax
    mov es, ax
    mov di, 0x500
    mov cx, 4
    mov dx, 0x511
    rep insb
    ; print the four bytes
    push ds
    xor ax, ax
    mov ds, ax
    mov si, 0x500
    mov cx, 4
    mov dx, 0x3f8
    rep outsb
    pop ds
    PRINT nl
    DONE
msg: db "rep outsb works "
msg_end:
nl: db 13, 10, 0
"#,
    );
    assert_eq!(out, "rep outsb works QEMU\r\n");
}

#[test]
fn cmos_memory_size_and_clock() {
    testkit::needs!(kvm);
    let (out, _) = run_guest_with_memory(
        r#"
%macro CMOS 2
    mov al, %1
    out 0x70, al
    in al, 0x71
    mov bl, al
    PRINT %2
    mov al, bl
    PRINT_HEX8
%endmacro
main:
    CMOS 0x16, b16
    CMOS 0x15, b15
    CMOS 0x35, b35
    CMOS 0x34, b34
    CMOS 0x5f, b5f
    CMOS 0x0b, rb
    CMOS 0x0d, rd
    CMOS 0x32, cent
    PRINT nl
    DONE
b16: db " b16=", 0
b15: db " b15=", 0
b35: db " b35=", 0
b34: db " b34=", 0
b5f: db " b5f=", 0
rb: db " rb=", 0
rd: db " rd=", 0
cent: db " cent=", 0
nl: db 13, 10, 0
"#,
        256 << 20,
    );
    // 640 KiB of base memory.
    assert_eq!(
        format!("{}{}", field(&out, "b16"), field(&out, "b15")),
        "0280"
    );
    // (256 MiB - 16 MiB) / 64 KiB = 0x0f00.
    assert_eq!(
        format!("{}{}", field(&out, "b35"), field(&out, "b34")),
        "0f00"
    );
    assert_eq!(field(&out, "b5f"), "00");
    assert_eq!(field(&out, "rb"), "02", "24-hour BCD");
    assert_eq!(field(&out, "rd"), "80", "valid RAM and time");
    assert_eq!(field(&out, "cent"), "20");
}

#[test]
fn fw_cfg_signature_directory_and_dma() {
    testkit::needs!(kvm);
    let (out, _) = run_guest(
        r#"
main:
    ; the file directory: big-endian count, then 64-byte entries
    mov ax, 0x19
    mov dx, 0x510
    out dx, ax
    mov dx, 0x511
    in al, dx
    in al, dx
    in al, dx
    in al, dx
    mov bl, al
    PRINT files
    mov al, bl
    PRINT_HEX8
    ; first entry: size (4), select (2), reserved (2), name (56)
    mov dx, 0x511
    mov cx, 8
.skip:
    in al, dx
    loop .skip
    PRINT name
    mov cx, 8
.name:
    in al, dx
    push dx
    mov dx, 0x3f8
    out dx, al
    pop dx
    loop .name
    ; DMA: read the signature into 0:0x600 through a descriptor at 0:0x700
    xor ax, ax
    mov es, ax
    mov di, 0x700
    ; control = select 0 | read, big-endian
    mov dword [es:di], 0x0a000000
    mov dword [es:di+4], 0x04000000
    mov dword [es:di+8], 0
    mov dword [es:di+12], 0x00060000
    mov dx, 0x514
    xor eax, eax
    out dx, eax
    mov dx, 0x518
    mov eax, 0x00070000
    out dx, eax
    PRINT dma
    mov eax, [es:0x600]
    mov [sig], eax
    PRINT sig
    PRINT status
    mov eax, [es:0x700]
    PRINT_HEX8
    ; the DMA registers read back "QEMU CFG"
    PRINT dmasig
    mov dx, 0x514
    mov cx, 8
.sig:
    in al, dx
    push dx
    mov dx, 0x3f8
    out dx, al
    pop dx
    inc dx
    loop .sig
    PRINT nl
    DONE
files: db "files=", 0
name: db " name=", 0
dma: db " dma=", 0
status: db " status=", 0
dmasig: db " dmasig=", 0
nl: db 13, 10, 0
sig: db 0, 0, 0, 0, 0
"#,
    );
    // e820, sercon-port, screen-and-debug, the two SMBIOS files and the
    // three ACPI files.
    assert_eq!(field(&out, "files"), "08");
    assert_eq!(field(&out, "name"), "etc/e820");
    assert_eq!(field(&out, "dma"), "QEMU");
    assert_eq!(field(&out, "status"), "00");
    assert!(out.contains("dmasig=QEMU CFG"), "{out:?}");
}

/// `PCI_READ address, label`: prints the label and the configuration
/// dword at the address (a CONFIG_ADDRESS value) in hex.
const PCI_READ: &str = r#"
%macro PCI_READ 2
    mov eax, %1
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    mov ebx, eax
    PRINT %2
    mov eax, ebx
    shr eax, 24
    PRINT_HEX8
    mov eax, ebx
    shr eax, 16
    PRINT_HEX8
    mov eax, ebx
    shr eax, 8
    PRINT_HEX8
    mov eax, ebx
    PRINT_HEX8
%endmacro
"#;

#[test]
fn pci_configuration_space() {
    testkit::needs!(kvm);
    let (out, _) = run_guest(&format!(
        "{PCI_READ}{}",
        r#"
main:
    PCI_READ 0x80000000, id
    PCI_READ 0x80000008, class
    PCI_READ 0x80000800, slot1
    PCI_READ 0x80000808, slot1class
    PCI_READ 0x8000082c, slot1sub
    PCI_READ 0x80001000, slot2
    PCI_READ 0x80001800, slot3
    ; the address register reads back
    mov eax, 0x80001234
    mov dx, 0xcf8
    out dx, eax
    in eax, dx
    mov ebx, eax
    PRINT addr
    mov eax, ebx
    shr eax, 8
    PRINT_HEX8
    mov eax, ebx
    PRINT_HEX8
    ; an unhandled port reads all ones
    mov dx, 0x2f8
    in al, dx
    mov bl, al
    PRINT none
    mov al, bl
    PRINT_HEX8
    PRINT nl
    DONE
id: db "id=", 0
class: db " class=", 0
slot1: db " slot1=", 0
slot1class: db " slot1class=", 0
slot1sub: db " slot1sub=", 0
slot2: db " slot2=", 0
slot3: db " slot3=", 0
addr: db " addr=", 0
none: db " none=", 0
nl: db 13, 10, 0
"#
    ));
    assert_eq!(field(&out, "id"), "06660b5d");
    assert_eq!(&field(&out, "class")[..4], "0600");
    // The entropy device comes right after the host bridge (docs/machine.md,
    // "PCI devices"): 1af4:1044, class 08/80 revision 1, subsystem 0b5d:0004.
    assert_eq!(field(&out, "slot1"), "10441af4");
    assert_eq!(field(&out, "slot1class"), "08800001");
    assert_eq!(field(&out, "slot1sub"), "00040b5d");
    // With no other devices, vmmci follows.
    assert_eq!(field(&out, "slot2"), "07770b5d");
    assert_eq!(field(&out, "slot3"), "ffffffff");
    assert_eq!(field(&out, "addr"), "1234");
    assert_eq!(field(&out, "none"), "ff");
}

#[test]
fn the_cd_rom_controller_follows_the_other_devices() {
    testkit::needs!(kvm);
    let program = format!(
        "{PCI_READ}{}",
        r#"
main:
    PCI_READ 0x80001000, id
    PCI_READ 0x80001008, class
    PCI_READ 0x8000102c, sub
    PCI_READ 0x8000103c, irq
    PCI_READ 0x80001800, next
    PRINT nl
    DONE
id: db "id=", 0
class: db " class=", 0
sub: db " sub=", 0
irq: db " irq=", 0
next: db " next=", 0
nl: db 13, 10, 0
"#
    );
    let (out, _) = Guest {
        cdrom: Some(vec![0u8; 4096]),
        ..Guest::new(firmware(&program))
    }
    .run();
    // Slot 2, after the entropy device: 1af4:1048, class 01/00 revision
    // 1, subsystem 0b5d:0008, the second IRQ of the list (5), INTA; then
    // vmmci.
    assert_eq!(field(&out, "id"), "10481af4");
    assert_eq!(field(&out, "class"), "01000001");
    assert_eq!(field(&out, "sub"), "00080b5d");
    assert_eq!(&field(&out, "irq")[4..], "0105");
    assert_eq!(field(&out, "next"), "07770b5d");
}

#[test]
fn triple_fault_is_a_reboot() {
    testkit::needs!(kvm);
    let (out, reason) = run_guest(TRIPLE_FAULT);
    assert_eq!(out, "faulting\r\nP");
    assert_eq!(reason, ExitReason::Reboot);
}

#[test]
fn reset_control_register_reboots() {
    testkit::needs!(kvm);
    let (out, reason) = run_guest(
        r#"
main:
    PRINT msg
    mov dx, 0xcf9
    mov al, 0x06
    out dx, al
    PRINT never
    hlt
msg: db "resetting", 13, 10, 0
never: db "survived", 0
"#,
    );
    assert!(out.starts_with("resetting\r\n"), "{out:?}");
    assert_eq!(reason, ExitReason::Reboot);
}

#[test]
fn power_button_raises_the_sci_and_s5_powers_off() {
    testkit::needs!(kvm);
    let program = format!(
        r#"
main:
    call setup_sci
    ; listen for the power button
    mov dx, 0x602
    mov ax, 0x100
    out dx, ax
    PRINT ready
    sti
.wait:
    hlt
    jmp .wait
sci_handler:
    mov dx, 0x600
    in ax, dx
    mov cx, ax
    PRINT sts
    mov al, ch
    PRINT_HEX8
    mov al, cl
    PRINT_HEX8
    ; acknowledge: clear the status bit, end of interrupt
    mov dx, 0x600
    mov ax, 0x100
    out dx, ax
    mov al, 0x20
    out 0xa0, al
    out 0x20, al
    ; enter S5
    mov dx, 0x604
    mov ax, (5 << 10) | (1 << 13) | 1
    out dx, ax
    PRINT survived
    iret
ready: db "ready", 0
sts: db " sts=", 0
survived: db " survived", 0
{SCI_SETUP}
"#
    );
    let running = Guest::new(firmware(&program)).start();
    running.wait_for_output("ready");
    running.vm.request_shutdown();
    let (out, reason) = running.wait();
    assert_eq!(reason, ExitReason::PowerOff);
    assert!(out.starts_with("ready sts=01"), "{out:?}");
}

#[test]
fn a_guest_not_listening_for_the_power_button_is_ended_at_once() {
    testkit::needs!(kvm);
    let running = Guest::new(firmware(
        r#"
main:
    PRINT ready
.spin:
    jmp .spin
ready: db "ready", 0
"#,
    ))
    .start();
    running.wait_for_output("ready");
    running.vm.request_shutdown();
    let (_, reason) = running.wait();
    assert_eq!(reason, ExitReason::PowerOff);
}

#[test]
fn vmmci_guest_initiated_reboot_resets_after_the_grace_period() {
    testkit::needs!(kvm);
    let program = format!(
        r#"
main:
    call find_vmmci
    lea dx, [bx + 0x12]
    mov al, 4
    out dx, al
    lea dx, [bx + 0x14]
    mov eax, 2
    out dx, eax
    PRINT rebooting
.spin:
    jmp .spin
rebooting: db "rebooting", 0
{FIND_VMMCI}
"#
    );
    let (out, reason) = run_guest(&program);
    assert_eq!(out, "rebooting");
    assert_eq!(reason, ExitReason::Reboot);
}
