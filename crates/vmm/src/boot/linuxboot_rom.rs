//! A 512-byte option ROM that starts a kernel's real-mode setup code once
//! the firmware is done, for kernels that need BIOS services (realmode.rs).
//!
//! SeaBIOS runs every `genroms/…` file from fw_cfg as an option ROM. Its
//! init entry (offset 3) hooks INT 19h, the bootstrap interrupt SeaBIOS
//! raises at the end of POST, so the kernel boots instead of a disk. The
//! INT 19h handler has the VMM copy each piece (setup code, kernel,
//! command line, initrd) to its place through fw_cfg DMA, one descriptor
//! per piece, then enters the setup code as a boot loader does: all data
//! segments and SS at the setup segment, SP at the heap end, a far jump
//! to setup segment + 0x20.
//!
//! The code is assembled here by hand (the ROM is built at run time with
//! the VMM's own descriptors); the tests compare it with nasm's encoding
//! of the same source.

/// Where a piece goes: the fw_cfg item to read, its length, the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub selector: u16,
    pub len: u32,
    pub addr: u64,
}

const ROM_SIZE: usize = 512;
/// The code starts after the header, clear of the PCI (0x18) and PnP
/// (0x1A) structure pointers, which stay 0.
const CODE_START: usize = 0x20;
const DESCRIPTOR_LEN: usize = 16;
/// fw_cfg DMA control bits: select the item in the upper 16 bits, read.
const DMA_SELECT: u32 = 0x08;
const DMA_READ: u32 = 0x02;
/// The DMA address registers (big-endian halves; the low half starts the
/// transfer).
const DMA_ADDR_HIGH: u16 = 0x514;
const DMA_ADDR_LOW: u16 = 0x518;
const INT19_VECTOR: u16 = 0x19 * 4;

fn lo(v: u16) -> u8 {
    v as u8
}
fn hi(v: u16) -> u8 {
    (v >> 8) as u8
}

/// The INT 19h handler's code; `descriptors` is its offset in the ROM.
fn boot_code(descriptors: u16, count: u16, setup_segment: u16, stack: u16) -> Vec<u8> {
    let mut c = vec![
        0xfa, // cli
        0xfc, // cld
        0x8c,
        0xc8, // mov ax, cs
        0x8e,
        0xd8, // mov ds, ax
        0xbe,
        lo(descriptors),
        hi(descriptors), // mov si, descriptors
        0xb9,
        lo(count),
        hi(count), // mov cx, count
    ];
    let next = c.len();
    c.extend_from_slice(&[
        0x66,
        0x31,
        0xc0, // xor eax, eax
        0x8c,
        0xc8, // mov ax, cs
        0x66,
        0xc1,
        0xe0,
        0x04, // shl eax, 4
        0x66,
        0x31,
        0xdb, // xor ebx, ebx
        0x89,
        0xf3, // mov bx, si
        0x66,
        0x01,
        0xd8, // add eax, ebx      ; linear address of the descriptor
        0x86,
        0xc4, // xchg al, ah         ; to big-endian, without bswap
        0x66,
        0xc1,
        0xc0,
        0x10, // rol eax, 16
        0x86,
        0xc4, // xchg al, ah
        0x66,
        0x89,
        0xc3, // mov ebx, eax
        0x66,
        0x31,
        0xc0, // xor eax, eax
        0xba,
        lo(DMA_ADDR_HIGH),
        hi(DMA_ADDR_HIGH), // mov dx, 0x514
        0x66,
        0xef, // out dx, eax         ; high half: 0
        0x66,
        0x89,
        0xd8, // mov eax, ebx
        0xba,
        lo(DMA_ADDR_LOW),
        hi(DMA_ADDR_LOW), // mov dx, 0x518
        0x66,
        0xef, // out dx, eax         ; low half: transfer
        0x83,
        0xc6,
        DESCRIPTOR_LEN as u8, // add si, 16
    ]);
    // loop next (rel8 from the end of the two-byte instruction)
    let back = next as i32 - (c.len() as i32 + 2);
    c.extend_from_slice(&[0xe2, back as i8 as u8]);
    c.extend_from_slice(&[
        0xb8,
        lo(setup_segment),
        hi(setup_segment), // mov ax, setup_segment
        0x8e,
        0xd8, // mov ds, ax
        0x8e,
        0xc0, // mov es, ax
        0x8e,
        0xe0, // mov fs, ax
        0x8e,
        0xe8, // mov gs, ax
        0x8e,
        0xd0, // mov ss, ax
        0xbc,
        lo(stack),
        hi(stack), // mov sp, stack
    ]);
    let entry = setup_segment + 0x20;
    // jmp entry:0000
    c.extend_from_slice(&[0xea, 0x00, 0x00, lo(entry), hi(entry)]);
    c
}

/// The init entry: point INT 19h at `boot` (an offset in this ROM).
fn init_code(boot: u16) -> Vec<u8> {
    vec![
        0x1e, // push ds
        0x50, // push ax
        0x31,
        0xc0, // xor ax, ax
        0x8e,
        0xd8, // mov ds, ax
        0xc7,
        0x06,
        lo(INT19_VECTOR),
        hi(INT19_VECTOR),
        lo(boot),
        hi(boot), // mov word [0x64], boot
        0x8c,
        0x0e,
        lo(INT19_VECTOR + 2),
        hi(INT19_VECTOR + 2), // mov [0x66], cs
        0x58,                 // pop ax
        0x1f,                 // pop ds
        0xcb,                 // retf
    ]
}

/// The fw_cfg DMA descriptor for one transfer (all fields big-endian).
fn descriptor(t: &Transfer) -> [u8; DESCRIPTOR_LEN] {
    let control = (u32::from(t.selector) << 16) | DMA_SELECT | DMA_READ;
    let mut d = [0u8; DESCRIPTOR_LEN];
    d[0..4].copy_from_slice(&control.to_be_bytes());
    d[4..8].copy_from_slice(&t.len.to_be_bytes());
    d[8..16].copy_from_slice(&t.addr.to_be_bytes());
    d
}

/// Builds the ROM for `transfers`, entering the setup code at
/// `setup_segment` with the stack at `stack`.
pub fn build(transfers: &[Transfer], setup_segment: u16, stack: u16) -> Vec<u8> {
    let init_len = init_code(0).len();
    let boot_at = CODE_START + init_len;
    let boot_len = boot_code(0, 0, 0, 0).len();
    let descriptors_at = (boot_at + boot_len).div_ceil(DESCRIPTOR_LEN) * DESCRIPTOR_LEN;
    assert!(
        descriptors_at + transfers.len() * DESCRIPTOR_LEN < ROM_SIZE,
        "too many transfers for the linux boot ROM"
    );

    let mut rom = vec![0u8; ROM_SIZE];
    rom[0] = 0x55;
    rom[1] = 0xaa;
    rom[2] = (ROM_SIZE / 512) as u8;
    // jmp short CODE_START
    rom[3] = 0xeb;
    rom[4] = (CODE_START - 5) as u8;
    rom[CODE_START..boot_at].copy_from_slice(&init_code(boot_at as u16));
    let boot = boot_code(
        descriptors_at as u16,
        transfers.len() as u16,
        setup_segment,
        stack,
    );
    rom[boot_at..boot_at + boot.len()].copy_from_slice(&boot);
    for (i, t) in transfers.iter().enumerate() {
        let at = descriptors_at + i * DESCRIPTOR_LEN;
        rom[at..at + DESCRIPTOR_LEN].copy_from_slice(&descriptor(t));
    }
    // The last byte makes the ROM's bytes sum to zero.
    let sum = rom.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    rom[ROM_SIZE - 1] = sum.wrapping_neg();
    rom
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same program in assembler, for nasm.
    fn source(descriptors: u16, count: u16, setup_segment: u16, stack: u16, boot: u16) -> String {
        format!(
            r#"
bits 16
org 0
init:
    push ds
    push ax
    xor ax, ax
    mov ds, ax
    mov word [0x64], {boot}
    mov [0x66], cs
    pop ax
    pop ds
    retf
boot:
    cli
    cld
    mov ax, cs
    mov ds, ax
    mov si, {descriptors}
    mov cx, {count}
next:
    xor eax, eax
    mov ax, cs
    shl eax, 4
    xor ebx, ebx
    mov bx, si
    add eax, ebx
    xchg al, ah
    rol eax, 16
    xchg al, ah
    mov ebx, eax
    xor eax, eax
    mov dx, 0x514
    out dx, eax
    mov eax, ebx
    mov dx, 0x518
    out dx, eax
    add si, 16
    loop next
    mov ax, {setup_segment}
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov sp, {stack}
    jmp {entry}:0
"#,
            entry = setup_segment + 0x20
        )
    }

    #[test]
    fn hand_assembled_code_matches_nasm() {
        testkit::needs!("nasm");
        let (descriptors, count, segment, stack, boot) = (0x90, 3, 0x1000, 0xe000, 0x33);
        let nasm = testkit::guest::assemble(&source(descriptors, count, segment, stack, boot));
        let mut ours = init_code(boot);
        ours.extend(boot_code(descriptors, count, segment, stack));
        assert_eq!(ours, nasm);
    }

    #[test]
    fn rom_header_descriptors_and_checksum() {
        let transfers = [
            Transfer {
                selector: 0x21,
                len: 0x1400,
                addr: 0x1_0000,
            },
            Transfer {
                selector: 0x22,
                len: 0x4_0000,
                addr: 0x10_0000,
            },
        ];
        let rom = build(&transfers, 0x1000, 0xe000);
        assert_eq!(rom.len(), 512);
        assert_eq!(&rom[0..3], &[0x55, 0xaa, 1]);
        assert_eq!(u16::from_le_bytes([rom[0x18], rom[0x19]]), 0, "no PCI data");
        assert_eq!(
            u16::from_le_bytes([rom[0x1a], rom[0x1b]]),
            0,
            "no PnP header"
        );
        assert_eq!(rom.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let d = rom
            .windows(4)
            .position(|w| w == [0x00, 0x22, 0x00, 0x0a])
            .expect("second descriptor");
        assert_eq!(&rom[d + 4..d + 8], &0x4_0000u32.to_be_bytes());
        assert_eq!(&rom[d + 8..d + 16], &0x10_0000u64.to_be_bytes());
        assert_eq!(d % 16, 0);
    }
}
