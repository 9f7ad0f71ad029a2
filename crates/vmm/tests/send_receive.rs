//! Send and receive with tiny guests on real KVM: a guest sets up state
//! of every kind, is sent to a file mid-run, and a new VM built from the
//! file shows the same state and carries on. The guest only learns it
//! moved when the harness types a key into the new VM's UART.

use proto::ErrorCode;
use testkit::guest::{firmware, user_mode_firmware};

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

/// `COUNT_AND_EOI counter`: the whole of an x2APIC interrupt handler,
/// which counts the interrupt in the dword at 0:counter and ends it (EOI,
/// MSR 0x80b).
const COUNT_AND_EOI: &str = r#"
%macro COUNT_AND_EOI 1
    push eax
    push ecx
    push edx
    push ds
    xor ax, ax
    mov ds, ax
    inc dword [%1]
    mov ecx, 0x80b
    xor eax, eax
    xor edx, edx
    wrmsr
    pop ds
    pop edx
    pop ecx
    pop eax
    iret
%endmacro
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

/// Whether this host's KVM lets a VMM set a vCPU's TSC (a restore sets
/// it to the sender's value).
fn host_keeps_a_written_tsc() -> bool {
    use kvm_bindings::{Msrs, kvm_msr_entry};
    let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm");
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let tsc = |data| kvm_msr_entry {
        index: 0x10,
        data,
        ..Default::default()
    };
    vcpu.set_msrs(&Msrs::from_entries(&[tsc(1 << 40)]).unwrap())
        .expect("KVM_SET_MSRS");
    let mut read = Msrs::from_entries(&[tsc(0)]).unwrap();
    vcpu.get_msrs(&mut read).expect("KVM_GET_MSRS");
    read.as_slice()[0].data.abs_diff(1 << 40) < 1 << 36
}

/// Types `key` into the VM's UART as the console relay would.
fn type_key(running: &common::Running, key: u8) {
    use vmm::console::ConsoleInput;
    running.vm.serial.lock().unwrap().push(&[key]);
}

/// Receives the VM sent to `stream` and types `k` into it, which has the
/// guest report: what the new VM printed by the time it is done.
fn receive_and_wake(stream: &std::path::Path) -> String {
    let second = receive(stream).expect("receive");
    type_key(&second, b'k');
    second.wait().0
}

#[test]
fn registers_memory_devices_and_timer_interrupts_survive_a_move() {
    testkit::needs!(kvm);
    let dir = testkit::tmp::TempDir::new("send");
    let stream = dir.join("vm.state");
    let first = Guest::new(stateful_guest()).start();
    first.wait_for_output("ready");
    let sent = first.send_to(&stream).expect("send");
    assert!(sent.pages > 0);
    let before = first.output();
    // The sender's VM is done; it must not matter that it still exists.
    drop(first);

    // The guest sleeps in `hlt`; only a timer interrupt, delivered through
    // the restored PIT, PIC and local APIC, wakes it to look at the UART.
    let out = receive_and_wake(&stream);
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
    testkit::needs!(kvm);
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
    bytes[8] = 3;
    std::fs::write(&newer, &bytes).unwrap();
    let err = receive(&newer).err().expect("another version is refused");
    assert_eq!(err.code, ErrorCode::STREAM_VERSION, "{}", err.reason);

    // The intact stream still works after all that.
    let second = receive(&stream).expect("receive");
    type_key(&second, b'x');
    let (out, _) = second.wait();
    assert!(out.contains("key=78"), "{out}");
}

#[test]
fn a_sent_vm_lets_go_of_its_disk_while_its_process_still_exists() {
    testkit::needs!(kvm);
    use disk::lock::{LockMode, lock_image};
    let dir = testkit::tmp::TempDir::new("send");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let first = Guest {
        disk: Some(disk.clone()),
        ..Guest::new(stateful_guest())
    }
    .start();
    first.wait_for_output("ready");
    let other = std::fs::File::open(&disk).unwrap();
    assert!(
        lock_image(&other, LockMode::Shared).is_err(),
        "a running VM holds its disk"
    );
    first.send_to(&dir.join("vm.state")).expect("send");
    // The VM and its disk device still exist; the lock is gone, so a
    // receiver need not wait for this VM's teardown.
    lock_image(&other, LockMode::Exclusive).expect("the disk is free after the send");
    drop(first);
}

/// Puts the local APIC in x2APIC mode with a 100 Hz periodic timer on
/// vector 0x40 (PICs masked) and sets the RTC's year to 2001; prints
/// `ready` after 50 ticks, then sleeps until a key arrives and reports:
/// ticks, the TSC cycles of the 50 ticks (`before`) and since `ready`
/// (`since`), and the RTC's year.
fn apic_guest() -> Vec<u8> {
    firmware(&format!(
        r#"
{COUNT_AND_EOI}
main:
    xor ax, ax
    mov es, ax
    mov word [es:0x40*4], lapic_tick
    mov word [es:0x40*4+2], cs
    mov dword [es:0x7f00], 0
    mov al, 0xff
    out 0x21, al
    out 0xa1, al
    ; x2APIC: IA32_APIC_BASE enable and extended mode
    mov ecx, 0x1b
    rdmsr
    or eax, 0xc00
    wrmsr
    xor edx, edx
    ; spurious vector register: software enable
    mov ecx, 0x80f
    mov eax, 0x1ff
    wrmsr
    ; timer divide by 16, periodic on vector 0x40, every 625000 counts
    mov ecx, 0x83e
    mov eax, 3
    wrmsr
    mov ecx, 0x832
    mov eax, 0x20040
    wrmsr
    mov ecx, 0x838
    mov eax, 625000
    wrmsr
    ; RTC year 01 (BCD), set with the SET bit up
    mov al, 0x0b
    out 0x70, al
    in al, 0x71
    mov bl, al
    or al, 0x80
    mov bh, al
    mov al, 0x0b
    out 0x70, al
    mov al, bh
    out 0x71, al
    mov al, 0x09
    out 0x70, al
    mov al, 0x01
    out 0x71, al
    mov al, 0x0b
    out 0x70, al
    mov al, bl
    out 0x71, al
    rdtsc
    mov [es:0x7f30], eax
    mov [es:0x7f34], edx
    sti
.settle:
    hlt
    cmp dword [es:0x7f00], 50
    jb .settle
    rdtsc
    mov [es:0x7f20], eax
    mov [es:0x7f24], edx
    PRINT ready
.poll:
    hlt
    mov dx, 0x3fd
    in al, dx
    test al, 1
    jz .poll
    mov dx, 0x3f8
    in al, dx
    ; TSC cycles of the 50 ticks before `ready`, and since `ready`
    rdtsc
    sub eax, [es:0x7f20]
    sbb edx, [es:0x7f24]
    mov [es:0x7f28], eax
    mov [es:0x7f2c], edx
    mov eax, [es:0x7f20]
    mov edx, [es:0x7f24]
    sub eax, [es:0x7f30]
    sbb edx, [es:0x7f34]
    mov [es:0x7f38], eax
    mov [es:0x7f3c], edx
    PRINT s_ticks
    mov eax, [es:0x7f00]
    call print_hex32
    PRINT s_before
    mov eax, [es:0x7f3c]
    call print_hex32
    mov eax, [es:0x7f38]
    call print_hex32
    PRINT s_since
    mov eax, [es:0x7f2c]
    call print_hex32
    mov eax, [es:0x7f28]
    call print_hex32
    PRINT s_year
    mov al, 0x09
    out 0x70, al
    in al, 0x71
    PRINT_HEX8
    PRINT nl
    DONE
lapic_tick:
    COUNT_AND_EOI 0x7f00
ready: db "ready", 13, 10, 0
s_ticks: db "ticks=", 0
s_before: db " before=", 0
s_since: db " since=", 0
s_year: db " year=", 0
nl: db 13, 10, 0
{PRINT_HEX32}
"#
    ))
}

#[test]
fn the_local_apic_timer_tsc_and_rtc_survive_a_move() {
    testkit::needs!(kvm);
    let dir = testkit::tmp::TempDir::new("send");
    let stream = dir.join("vm.state");
    let first = Guest::new(apic_guest()).start();
    first.wait_for_output("ready");
    first.send_to(&stream).expect("send");
    drop(first);
    // Time passes between the send and the receive; the guest's TSC does
    // not see it, its RTC (host time plus the guest's offset) does.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let out = receive_and_wake(&stream);
    // Only the x2APIC timer, restored with its mode and vector, wakes the
    // guest from `hlt` to see the key.
    let ticks = u32::from_str_radix(field(&out, "ticks"), 16).unwrap();
    assert!(ticks > 50, "{out}");
    // Half a second of running took `before` cycles; since `ready` the
    // guest ran for far less (the second in the file does not count),
    // and its TSC went forward, not back to zero. A host whose KVM ignores
    // TSC writes (PVM runs the guest's RDTSC on the host's counter) can
    // only show the latter.
    let before = u64::from_str_radix(field(&out, "before"), 16).unwrap();
    let since = u64::from_str_radix(field(&out, "since"), 16).unwrap();
    assert!(since < 1 << 63, "TSC went back: {since:#x}");
    if host_keeps_a_written_tsc() {
        assert!(
            since < before,
            "TSC: {since} cycles since ready, {before} for 50 ticks"
        );
    } else {
        eprintln!("this host's KVM does not offset the TSC; its continuity is not checked");
    }
    assert_eq!(field(&out, "year"), "01", "{out}");
}

/// 64-bit code at CPL3: fills 64 MiB from 16 MiB with each quadword's own
/// address, prints `filled`, waits for a key (polling the UART), then
/// checks every quadword and prints `intact` or `damaged`.
fn user_mode_guest() -> Vec<u8> {
    user_mode_firmware(
        r#"
user_main:
    mov rdi, 16 << 20
    mov rsi, 80 << 20
.fill:
    mov [rdi], rdi
    add rdi, 8
    cmp rdi, rsi
    jb .fill
    lea rsi, [rel filled]
    call print
.poll:
    pause
    mov dx, 0x3fd
    in al, dx
    test al, 1
    jz .poll
    mov rdi, 16 << 20
    mov rcx, 80 << 20
.check:
    cmp [rdi], rdi
    jne .bad
    add rdi, 8
    cmp rdi, rcx
    jb .check
    lea rsi, [rel intact]
    call print
    jmp .end
.bad:
    lea rsi, [rel damaged]
    call print
.end:
    mov al, 0xfe
    out 0x64, al
.hang:
    jmp .hang
print:
    mov dx, 0x3f8
.next:
    lodsb
    test al, al
    jz .done
    out dx, al
    jmp .next
.done:
    ret
filled: db "filled", 13, 10, 0
intact: db "intact", 13, 10, 0
damaged: db "damaged", 13, 10, 0
"#,
    )
}

#[test]
fn a_long_mode_guest_at_cpl3_moves_with_its_memory() {
    testkit::needs!(kvm);
    let dir = testkit::tmp::TempDir::new("send");
    let stream = dir.join("vm.state");
    let first = Guest {
        memory: 256 << 20,
        ..Guest::new(user_mode_guest())
    }
    .start();
    first.wait_for_output("filled");
    let sent = first.send_to(&stream).expect("send");
    // 64 MiB of pattern, and little else: nothing the guest left zero.
    assert!(
        (16384..16384 + 256).contains(&sent.pages),
        "{} pages",
        sent.pages
    );
    drop(first);
    let out = receive_and_wake(&stream);
    assert_eq!(out, "intact\r\n");
}

/// Sets viornd (slot 1) up as a driver would, through port I/O only (BAR0
/// is I/O; BAR1, with the MSI-X table and PBA, is reached through the
/// VIRTIO_PCI_CAP_PCI_CFG window in configuration space): accepts
/// VERSION_1 and INDIRECT_DESC, enables MSI-X with queue 0 on vector 1,
/// pointed at the x2APIC's interrupt 0x41 but masked, asks the device for
/// 16 random bytes and waits for the completion to leave vector 1 pending.
/// Prints `pba=` and `ready`, then waits for a key (interrupts off) and
/// reports what the moved device says: the driver features read back
/// through the common configuration (`feat=`, high half then low), the
/// PBA, and how many times interrupt 0x41 came (`msi=`) after vector 1
/// was unmasked and interrupts enabled.
fn msix_guest() -> Vec<u8> {
    firmware(&format!(
        r#"
%define CAP_MSIX 0x7f40
%define CAP_WINDOW 0x7f44
%define BAR0 0x7f48
%define MSI_COUNT 0x7f00
{COUNT_AND_EOI}

; Register %1 of the device's common configuration (BAR0) gets %3 of
; width %2 (al, ax, eax).
%macro VIO_OUT 3
    mov dx, [es:BAR0]
    add dx, %1
    mov %2, %3
    out dx, %2
%endmacro

%macro VIO_IN32 1
    mov dx, [es:BAR0]
    add dx, %1
    in eax, dx
%endmacro

main:
    xor ax, ax
    mov es, ax
    mov ax, 0x1000
    mov fs, ax
    mov word [es:0x41*4], msi_handler
    mov word [es:0x41*4+2], cs
    mov dword [es:MSI_COUNT], 0
    mov al, 0xff
    out 0x21, al
    out 0xa1, al
    ; x2APIC, software enabled
    mov ecx, 0x1b
    rdmsr
    or eax, 0xc00
    wrmsr
    mov ecx, 0x80f
    mov eax, 0x1ff
    xor edx, edx
    wrmsr
    ; viornd in slot 1
    xor ebx, ebx
    call cfg_read
    cmp eax, 0x10441af4
    jne fail
    ; find the MSI-X capability and the PCI configuration window
    mov dword [es:CAP_MSIX], 0
    mov dword [es:CAP_WINDOW], 0
    mov ebx, 0x34
    call cfg_read
    movzx esi, al
.walk:
    test esi, esi
    jz .walked
    mov ebx, esi
    call cfg_read
    cmp al, 0x11
    jne .not_msix
    mov [es:CAP_MSIX], esi
.not_msix:
    cmp al, 0x09
    jne .next
    mov ecx, eax
    shr ecx, 24
    cmp cl, 5
    jne .next
    mov [es:CAP_WINDOW], esi
.next:
    movzx esi, ah
    jmp .walk
.walked:
    cmp dword [es:CAP_MSIX], 0
    je fail
    cmp dword [es:CAP_WINDOW], 0
    je fail
    mov ebx, 0x10
    call cfg_read
    and ax, 0xfffc
    mov [es:BAR0], ax
    ; MSI-X on, function unmasked; vector 1 to APIC 0, interrupt 0x41,
    ; masked
    mov ebx, [es:CAP_MSIX]
    mov ecx, 0x80000000
    call cfg_write
    mov edi, 16
    mov ecx, 0xfee00000
    call bar1_write
    mov edi, 20
    xor ecx, ecx
    call bar1_write
    mov edi, 24
    mov ecx, 0x41
    call bar1_write
    mov edi, 28
    mov ecx, 1
    call bar1_write
    ; ACKNOWLEDGE | DRIVER, features, FEATURES_OK
    VIO_OUT 0x14, al, 3
    VIO_OUT 0x08, eax, 0
    VIO_OUT 0x0c, eax, 0x10000000
    VIO_OUT 0x08, eax, 1
    VIO_OUT 0x0c, eax, 1
    VIO_OUT 0x14, al, 11
    mov dx, [es:BAR0]
    add dx, 0x14
    in al, dx
    test al, 8
    jz fail
    ; queue 0: 8 entries, descriptors at 0x10000, available ring at
    ; 0x10100, used ring at 0x11000, interrupts on vector 1
    VIO_OUT 0x16, ax, 0
    VIO_OUT 0x18, ax, 8
    VIO_OUT 0x20, eax, 0x10000
    VIO_OUT 0x24, eax, 0
    VIO_OUT 0x28, eax, 0x10100
    VIO_OUT 0x2c, eax, 0
    VIO_OUT 0x30, eax, 0x11000
    VIO_OUT 0x34, eax, 0
    VIO_OUT 0x1a, ax, 1
    VIO_OUT 0x1c, ax, 1
    VIO_OUT 0x14, al, 15
    ; one device-writable buffer of 16 bytes at 0x12000
    mov dword [fs:0x0000], 0x12000
    mov dword [fs:0x0004], 0
    mov dword [fs:0x0008], 16
    mov word [fs:0x000c], 2
    mov word [fs:0x000e], 0
    mov word [fs:0x0104], 0
    mov word [fs:0x0102], 1
    VIO_OUT 0x100, ax, 0
    ; the completion leaves vector 1 pending
    mov ecx, 100000
.pending:
    push ecx
    mov edi, 0x800
    call bar1_read
    pop ecx
    test al, 2
    jnz .is_pending
    dec ecx
    jnz .pending
.is_pending:
    PRINT s_pba
    PRINT_HEX8
    PRINT s_used
    mov ax, [fs:0x1002]
    PRINT_HEX8
    PRINT ready
.poll:
    mov dx, 0x3fd
    in al, dx
    test al, 1
    jz .poll
    mov dx, 0x3f8
    in al, dx
    PRINT s_feat
    VIO_OUT 0x08, eax, 1
    VIO_IN32 0x0c
    call print_hex32
    VIO_OUT 0x08, eax, 0
    VIO_IN32 0x0c
    call print_hex32
    PRINT s_pba
    mov edi, 0x800
    call bar1_read
    PRINT_HEX8
    ; unmask vector 1, take interrupts, give the MSI a moment
    mov edi, 28
    xor ecx, ecx
    call bar1_write
    sti
    mov ecx, 10000
.wait:
    cmp dword [es:MSI_COUNT], 0
    jne .came
    mov dx, 0x3fd
    in al, dx
    dec ecx
    jnz .wait
.came:
    cli
    PRINT s_msi
    mov eax, [es:MSI_COUNT]
    call print_hex32
    PRINT nl
    DONE
fail:
    PRINT s_fail
    DONE

; EAX = dword register EBX of slot 1's configuration space
cfg_read:
    mov eax, 0x80000800
    or eax, ebx
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    ret

; register EBX of slot 1's configuration space = ECX
cfg_write:
    mov eax, 0x80000800
    or eax, ebx
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    mov eax, ecx
    out dx, eax
    ret

; points the configuration window at 4 bytes at EDI of BAR1; leaves
; EBX at the window's data register
window_at_bar1:
    push ecx
    mov ebx, [es:CAP_WINDOW]
    add ebx, 4
    mov ecx, 1
    call cfg_write
    add ebx, 4
    mov ecx, edi
    call cfg_write
    add ebx, 4
    mov ecx, 4
    call cfg_write
    add ebx, 4
    pop ecx
    ret

; dword EDI of BAR1 = ECX
bar1_write:
    call window_at_bar1
    call cfg_write
    ret

; EAX = dword EDI of BAR1
bar1_read:
    call window_at_bar1
    call cfg_read
    ret

msi_handler:
    COUNT_AND_EOI MSI_COUNT

ready: db " ready", 13, 10, 0
s_pba: db " pba=", 0
s_used: db " used=", 0
s_feat: db "feat=", 0
s_msi: db " msi=", 0
s_fail: db "failed", 13, 10, 0
nl: db 13, 10, 0
{PRINT_HEX32}
"#
    ))
}

#[test]
fn a_virtio_device_keeps_its_features_and_a_pending_msix_vector_across_a_move() {
    testkit::needs!(kvm);
    let dir = testkit::tmp::TempDir::new("send");
    let stream = dir.join("vm.state");
    let first = Guest::new(msix_guest()).start();
    first.wait_for_output("ready");
    let before = first.output();
    // The request completed, and with vector 1 masked its interrupt
    // waits in the PBA.
    assert_eq!(field(&before, "used"), "01", "{before}");
    assert_eq!(field(&before, "pba"), "02", "{before}");
    first.send_to(&stream).expect("send");
    drop(first);

    let out = receive_and_wake(&stream);
    // VERSION_1 (bit 32) and INDIRECT_DESC (bit 28).
    assert_eq!(field(&out, "feat"), "0000000110000000", "{out}");
    assert_eq!(field(&out, "pba"), "02", "still pending: {out}");
    assert_eq!(field(&out, "msi"), "00000001", "delivered on unmask: {out}");
}
