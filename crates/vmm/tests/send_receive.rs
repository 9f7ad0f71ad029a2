//! Send and receive with tiny guests on real KVM: a guest sets up state
//! of every kind, is sent to a file mid-run, and a new VM built from the
//! file shows the same state and carries on. The guest only learns it
//! moved when the harness types a key into the new VM's UART.

use proto::ErrorCode;
use testkit::guest::firmware;

mod common;

use common::{Guest, field, receive};

/// Prints EAX as eight hex digits.
const PRINT_HEX32: &str = r#"
print_hex32:
    push ecx
    mov ecx, 4
.byte:
    rol eax, 8
    call print_hex8
    loop .byte
    pop ecx
    ret
"#;

/// Sets up registers, memory, the UART, CMOS, the PICs and the PIT
/// (100 Hz on IRQ 0, counted at 0:7F00), prints `ready`, then sleeps in
/// `hlt` until a key arrives and prints what it finds.
fn stateful_guest() -> Vec<u8> {
    firmware(&format!(
        r#"
main:
    ; UART scratch register and a divisor of 3
    mov dx, 0x3ff
    mov al, 0x5a
    out dx, al
    mov dx, 0x3fb
    mov al, 0x83
    out dx, al
    mov dx, 0x3f8
    mov al, 3
    out dx, al
    mov dx, 0x3fb
    mov al, 0x03
    out dx, al
    ; a CMOS byte
    mov al, 0x40
    out 0x70, al
    mov al, 0x77
    out 0x71, al
    ; a memory pattern at 0:8000
    xor ax, ax
    mov es, ax
    mov di, 0x8000
    mov cx, 256
    xor al, al
.fill:
    stosb
    inc al
    loop .fill
    ; timer interrupt handler
    mov word [es:8*4], tick
    mov word [es:8*4+2], cs
    mov dword [es:0x7f00], 0
    ; PICs: vectors 8 and 0x70, only IRQ 0 unmasked
    mov al, 0x11
    out 0x20, al
    out 0xa0, al
    mov al, 0x08
    out 0x21, al
    mov al, 0x70
    out 0xa1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xa1, al
    mov al, 1
    out 0x21, al
    out 0xa1, al
    mov al, 0xfe
    out 0x21, al
    mov al, 0xff
    out 0xa1, al
    ; PIT channel 0, rate generator, 100 Hz
    mov al, 0x34
    out 0x43, al
    mov al, 0x9c
    out 0x40, al
    mov al, 0x2e
    out 0x40, al
    mov esi, 0x11223344
    mov edi, 0x55667788
    mov ebp, 0x99aabbcc
    sti
.settle:
    hlt
    cmp dword [es:0x7f00], 5
    jb .settle
    mov [es:0x7f10], esi
    PRINT ready
    mov esi, [es:0x7f10]
.poll:
    hlt
    mov dx, 0x3fd
    in al, dx
    test al, 1
    jz .poll
    mov [es:0x7f10], esi
    mov [es:0x7f14], edi
    mov [es:0x7f18], ebp
    mov dx, 0x3f8
    in al, dx
    mov [es:0x7f1c], al
    PRINT s_esi
    mov eax, [es:0x7f10]
    call print_hex32
    PRINT s_edi
    mov eax, [es:0x7f14]
    call print_hex32
    PRINT s_ebp
    mov eax, [es:0x7f18]
    call print_hex32
    PRINT s_key
    mov al, [es:0x7f1c]
    PRINT_HEX8
    PRINT s_ticks
    mov eax, [es:0x7f00]
    call print_hex32
    PRINT s_scr
    mov dx, 0x3ff
    in al, dx
    PRINT_HEX8
    PRINT s_dll
    mov dx, 0x3fb
    mov al, 0x83
    out dx, al
    mov dx, 0x3f8
    in al, dx
    mov bl, al
    mov dx, 0x3fb
    mov al, 0x03
    out dx, al
    mov al, bl
    PRINT_HEX8
    PRINT s_cmos
    mov al, 0x40
    out 0x70, al
    in al, 0x71
    PRINT_HEX8
    ; sum of the pattern: 0 + 1 + ... + 255 = 0x7f80
    xor ax, ax
    xor bx, bx
    mov si, 0x8000
    mov cx, 256
.sum:
    mov bl, [es:si]
    add ax, bx
    inc si
    loop .sum
    mov bx, ax
    PRINT s_sum
    mov al, bh
    PRINT_HEX8
    mov al, bl
    PRINT_HEX8
    PRINT nl
    DONE
tick:
    push ax
    push ds
    xor ax, ax
    mov ds, ax
    inc dword [0x7f00]
    mov al, 0x20
    out 0x20, al
    pop ds
    pop ax
    iret
ready: db "ready", 13, 10, 0
s_esi: db "esi=", 0
s_edi: db " edi=", 0
s_ebp: db " ebp=", 0
s_key: db " key=", 0
s_ticks: db " ticks=", 0
s_scr: db " scr=", 0
s_dll: db " dll=", 0
s_cmos: db " cmos=", 0
s_sum: db " sum=", 0
nl: db 13, 10, 0
{PRINT_HEX32}
"#
    ))
}

/// Types `key` into the VM's UART as the console relay would.
fn type_key(running: &common::Running, key: u8) {
    use vmm::console::ConsoleInput;
    running.vm.serial.lock().unwrap().push(&[key]);
}

#[test]
fn registers_memory_devices_and_timer_interrupts_survive_a_move() {
    let dir = testkit::tmp::TempDir::new("send");
    let stream = dir.join("vm.state");
    let first = Guest::new(stateful_guest()).start();
    first.wait_for_output("ready");
    let sent = first.send_to(&stream).expect("send");
    assert!(sent.pages > 0);
    let before = first.output();
    // The sender's VM is done; it must not matter that it still exists.
    drop(first);

    let second = receive(&stream).expect("receive");
    // The guest sleeps in `hlt`; only a timer interrupt, delivered through
    // the restored PIT, PIC and local APIC, wakes it to look at the UART.
    type_key(&second, b'k');
    let (out, _) = second.wait();
    let after = out.strip_prefix(&*before).unwrap_or(&out);
    assert_eq!(field(after, "esi"), "11223344", "{out}");
    assert_eq!(field(after, "edi"), "55667788");
    assert_eq!(field(after, "ebp"), "99aabbcc");
    assert_eq!(field(after, "key"), "6b", "{out}");
    assert_eq!(field(after, "scr"), "5a");
    assert_eq!(field(after, "dll"), "03");
    assert_eq!(field(after, "cmos"), "77");
    assert_eq!(field(after, "sum"), "7f80");
    let ticks = u32::from_str_radix(field(after, "ticks"), 16).unwrap();
    assert!(
        ticks >= 5,
        "the tick count went on from where it was: {ticks}"
    );
    // The console history stays with the sender: the new VM printed only
    // what it printed after the move.
    assert!(!after.contains("ready"), "{out}");
}

#[test]
fn a_stream_is_refused_when_cut_short_or_damaged() {
    let dir = testkit::tmp::TempDir::new("send");
    let stream = dir.join("vm.state");
    let first = Guest::new(stateful_guest()).start();
    first.wait_for_output("ready");
    first.send_to(&stream).expect("send");
    drop(first);
    let whole = std::fs::read(&stream).unwrap();

    let cut = dir.join("cut.state");
    std::fs::write(&cut, &whole[..whole.len() - 100]).unwrap();
    let err = receive(&cut).err().expect("a truncated stream is refused");
    assert_eq!(err.code, ErrorCode::STREAM_TRUNCATED, "{}", err.reason);

    let damaged = dir.join("damaged.state");
    let mut bytes = whole.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&damaged, &bytes).unwrap();
    let err = receive(&damaged)
        .err()
        .expect("a damaged stream is refused");
    assert_eq!(err.code, ErrorCode::STREAM_CORRUPT, "{}", err.reason);

    let newer = dir.join("newer.state");
    let mut bytes = whole.clone();
    bytes[8] = 2;
    std::fs::write(&newer, &bytes).unwrap();
    let err = receive(&newer).err().expect("another version is refused");
    assert_eq!(err.code, ErrorCode::STREAM_VERSION, "{}", err.reason);

    // The intact stream still works after all that.
    let second = receive(&stream).expect("receive");
    type_key(&second, b'x');
    let (out, _) = second.wait();
    assert!(out.contains("key=78"), "{out}");
}
