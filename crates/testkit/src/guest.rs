//! Tiny guests: 16-bit real-mode programs assembled with nasm into a
//! 64 KiB firmware image. The vCPU starts at the reset vector, which jumps
//! to the program at F000:0000. Helper macros print to COM1 and end the
//! run by pulsing the keyboard controller's reset line.

use std::process::Command;

use crate::tmp::TempDir;

/// Macros and the frame around a program. `%include`d before it.
const PRELUDE: &str = r#"
bits 16
org 0

%macro SERIAL_OUT 1
    mov dx, 0x3f8
    mov al, %1
    out dx, al
%endmacro

; Prints the NUL-terminated string at DS:SI on COM1.
%macro PRINT 1
    mov si, %1
    call print_string
%endmacro

; Prints AL as two hex digits.
%macro PRINT_HEX8 0
    call print_hex8
%endmacro

; Ends the test: the VM resets, which the harness sees as the end.
%macro DONE 0
    mov al, 0xfe
    out 0x64, al
%%hang:
    hlt
    jmp %%hang
%endmacro

start:
    cli
    mov ax, cs
    mov ds, ax
    xor ax, ax
    mov ss, ax
    mov sp, 0x7000
    cld
    jmp main

print_string:
    push ax
    push dx
.next:
    lodsb
    test al, al
    jz .end
    mov dx, 0x3f8
    out dx, al
    jmp .next
.end:
    pop dx
    pop ax
    ret

print_hex8:
    push ax
    push bx
    push dx
    mov bl, al
    shr al, 4
    call .digit
    mov al, bl
    and al, 0x0f
    call .digit
    pop dx
    pop bx
    pop ax
    ret
.digit:
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'a' - '9' - 1
.out:
    mov dx, 0x3f8
    out dx, al
    ret
"#;

const EPILOGUE: &str = r#"
times 0xfff0 - ($ - $$) db 0
reset_vector:
    jmp 0xf000:start
times 0x10000 - ($ - $$) db 0
"#;

/// A subroutine for guest programs: finds vmmci (0b5d:0777) on bus 0
/// by its identity, enables its I/O BAR and leaves the BAR's base in BX
/// (0 if there is no vmmci). Clobbers EAX and DX.
pub const FIND_VMMCI: &str = r#"
find_vmmci:
    push ecx
    mov ecx, 0x80000800
.next_slot:
    mov eax, ecx
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    cmp eax, 0x07770b5d
    je .found
    add ecx, 0x800
    cmp ecx, 0x80010000
    jb .next_slot
    xor bx, bx
    pop ecx
    ret
.found:
    mov eax, ecx
    or eax, 0x04
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    mov ax, 1
    out dx, ax
    mov eax, ecx
    or eax, 0x10
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    and ax, 0xfffc
    mov bx, ax
    pop ecx
    ret
"#;

/// A subroutine for guest programs: programs the 8259 pair (master at
/// vector 0x08, slave at 0x70), makes IRQ 9 level-triggered and unmasks
/// only IRQ 9 (and the cascade), and points vector 0x71 at `sci_handler`,
/// which the program defines. The program enables interrupts itself.
pub const SCI_SETUP: &str = r#"
setup_sci:
    mov al, 0x11
    out 0x20, al
    out 0xa0, al
    mov al, 0x08
    out 0x21, al
    mov al, 0x70
    out 0xa1, al
    mov al, 0x04
    out 0x21, al
    mov al, 0x02
    out 0xa1, al
    mov al, 0x01
    out 0x21, al
    out 0xa1, al
    mov al, 0xfb
    out 0x21, al
    mov al, 0xfd
    out 0xa1, al
    mov dx, 0x4d1
    mov al, 0x02
    out dx, al
    push es
    xor ax, ax
    mov es, ax
    mov word [es:0x71 * 4], sci_handler
    mov [es:0x71 * 4 + 2], cs
    pop es
    ret
"#;

/// A program that triple-faults: it prints `faulting`, enters protected
/// mode with an empty IDT, prints `P` and executes `ud2`; neither the #UD
/// nor the #GP and #DF that follow can be delivered, so the CPU shuts
/// down (an `S` after it would mean the fault was ignored).
pub const TRIPLE_FAULT: &str = r#"
main:
    PRINT msg
    lgdt [gdt_desc]
    lidt [empty_idt]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    jmp dword 0x08:(0xf0000 + protected)
bits 32
protected:
    mov al, 'P'
    mov dx, 0x3f8
    out dx, al
    ud2
    mov al, 'S'
    out dx, al
    hlt
bits 16
align 8
gdt:
    dq 0
    dq 0x00cf9b000000ffff ; flat code, accessed bit preset
    dq 0x00cf93000000ffff ; flat data
gdt_desc:
    dw 23
    dd 0xf0000 + gdt
empty_idt:
    dw 0
    dd 0
msg: db "faulting", 13, 10, 0
"#;

/// Long mode at CPL3, reached from real mode: an identity map of the first
/// GiB in 2 MiB pages (at 0x1000–0x3FFF, user-accessible), a GDT in the
/// image with accessed bits set (so it may live in ROM), EFER.LME, PAE and
/// paging in one step, a far jump to 64-bit code, and `sysexit` into the
/// caller's `user_main` (64-bit, stack below 0x80000) with IOPL 3, so the
/// program may use the UART. Guest code at CPL0 is emulated on software
/// KVM while CPL3 code runs natively: this is how a tiny guest gets real
/// work done there. The same image boots under QEMU as its `-bios`.
pub const TO_USER_MODE: &str = r#"
main:
    xor ax, ax
    mov es, ax
    mov di, 0x1000
    mov cx, 0x1800
    rep stosw
    mov dword [es:0x1000], 0x2007
    mov dword [es:0x2000], 0x3007
    mov di, 0x3000
    mov eax, 0x87
    mov cx, 512
.pd:
    mov [es:di], eax
    add eax, 0x200000
    add di, 8
    loop .pd
    pushf
    pop ax
    or ax, 0x3000
    push ax
    popf
    lgdt [cs:user_gdt_ptr]
    mov eax, 0x20
    mov cr4, eax
    mov eax, 0x1000
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    jmp dword 0x08:(0xf0000 + long_entry)
bits 64
long_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    ; sysexit takes CPL3 code and stack selectors 32 and 40 above this
    mov ecx, 0x174
    mov eax, 0x08
    xor edx, edx
    wrmsr
    mov rdx, 0xf0000 + user_main
    mov rcx, 0x80000
    o64 sysexit
align 8
user_gdt:
    dq 0
    dq 0x00af9b000000ffff
    dq 0x00cf93000000ffff
    dq 0
    dq 0
    dq 0x00affb000000ffff
    dq 0x00cff3000000ffff
user_gdt_end:
user_gdt_ptr:
    dw user_gdt_end - user_gdt - 1
    dd 0xf0000 + user_gdt
"#;

/// A 64 KiB firmware image that enters long mode at CPL3 and runs
/// `program`, 64-bit code that must define `user_main:`.
pub fn user_mode_firmware(program: &str) -> Vec<u8> {
    firmware(&format!(
        "{TO_USER_MODE}
{program}
bits 16
"
    ))
}

/// Assembles `source` (flat binary) with nasm.
pub fn assemble(source: &str) -> Vec<u8> {
    let dir = TempDir::new("nasm");
    let asm = dir.join("guest.asm");
    let bin = dir.join("guest.bin");
    std::fs::write(&asm, source).expect("write guest source");
    let out = Command::new("nasm")
        .args(["-f", "bin", "-o"])
        .arg(&bin)
        .arg(&asm)
        .output()
        .expect("nasm must be installed (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "nasm failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&bin).expect("read assembled guest")
}

/// A 64 KiB firmware image running `program`, which must define `main:`
/// and may use the prelude's macros (`PRINT`, `PRINT_HEX8`, `DONE`, ...).
pub fn firmware(program: &str) -> Vec<u8> {
    let image = assemble(&format!("{PRELUDE}\n{program}\n{EPILOGUE}"));
    assert_eq!(image.len(), 0x10000, "guest program too large");
    image
}

/// A bzImage whose protected-mode part is `code` and which offers only
/// the 32-bit entry (no XLF_KERNEL_64), taking at most `cmdline_size`.
pub fn bzimage_32(code: &[u8], cmdline_size: u32) -> Vec<u8> {
    let mut image = vec![0u8; 2 * 512];
    let mut put = |at: usize, bytes: &[u8]| image[at..at + bytes.len()].copy_from_slice(bytes);
    put(0x1f1, &[1]); // setup_sects
    put(0x1fe, &0xaa55u16.to_le_bytes());
    put(0x201, &[0x6a]); // the jump over the header
    put(0x202, b"HdrS");
    put(0x206, &0x020fu16.to_le_bytes());
    put(0x211, &[0x01]); // LOADED_HIGH
    put(0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(0x238, &cmdline_size.to_le_bytes());
    put(0x260, &0x10_0000u32.to_le_bytes()); // init_size
    image.extend_from_slice(code);
    image
}
