//! End to end on KVM: `vmctl send` and `vmctl receive` move a VM that
//! SeaBIOS booted into GRUB's menu. The menu counts down; the VM is sent
//! to a file mid-countdown and received under a new name, twice, and the
//! countdown goes on from where it was until GRUB boots its entry, which
//! lists the boot partition through the moved virtio-blk device and
//! halts. Damaged streams are refused with vmctl's documented messages
//! (docs/send-stream.md).

use std::fs::File;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use testkit::daemon::{ConsoleSession, TestDaemon};
use testkit::grub;
use testkit::guest::firmware;

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";
/// GRUB's core with `normal` loads through int13 at a few KB/s.
const BOOT: Duration = Duration::from_secs(240);
const COUNTDOWN: u32 = 20;
const ENTERED: &str = "grub-menu: entry started";
const DONE: &str = "grub-menu: entry done";

fn menu_cfg() -> String {
    format!(
        "set timeout={COUNTDOWN}\n\
         menuentry \"migrate-test\" {{\n\
         \techo \"{ENTERED}\"\n\
         \tls (hd0,msdos1)/\n\
         \techo \"{DONE}\"\n\
         \thalt\n\
         }}\n"
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The countdown values GRUB printed, in order.
fn countdown(text: &str) -> Vec<u32> {
    text.split("automatically in ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Reads the console until GRUB shows a countdown value of `at_most`
/// or less; returns the values seen.
fn count_down_to(session: &mut ConsoleSession, at_most: u32, daemon: &TestDaemon) -> Vec<u32> {
    let deadline = std::time::Instant::now() + BOOT;
    loop {
        let seen = countdown(&session.text());
        if seen.last().is_some_and(|&n| n <= at_most) {
            return seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no countdown to {at_most}; console:\n{}\n--- vmd log ---\n{}",
            session.text(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(daemon: &TestDaemon, name: &str, to: &Path) -> Output {
    daemon.vmctl_io(
        &["send", name],
        Stdio::null(),
        Stdio::from(File::create(to).unwrap()),
    )
}

fn receive(daemon: &TestDaemon, name: &str, from: &Path) -> Output {
    daemon.vmctl_io(
        &["receive", name],
        Stdio::from(File::open(from).unwrap()),
        Stdio::null(),
    )
}

fn send_ok(daemon: &TestDaemon, name: &str, to: &Path) {
    let out = send(daemon, name, to);
    assert!(
        out.status.success(),
        "send {name}: {}\n--- vmd log ---\n{}",
        stderr(&out),
        daemon.log()
    );
    assert_eq!(
        stderr(&out),
        format!("vmctl: sent vm {name} successfully\n")
    );
}

fn receive_ok(daemon: &TestDaemon, name: &str, from: &Path) {
    let out = receive(daemon, name, from);
    assert!(
        out.status.success(),
        "receive {name}: {}\n--- vmd log ---\n{}",
        stderr(&out),
        daemon.log()
    );
    let text = stderr(&out);
    assert!(
        text.starts_with("vmctl: started vm ") && text.contains(" successfully, tty "),
        "{text}"
    );
}

fn listed(daemon: &TestDaemon, name: &str) -> bool {
    String::from_utf8_lossy(&daemon.vmctl(&["status"]).stdout)
        .split_whitespace()
        .any(|w| w == name)
}

/// Sends `from` when its countdown reached `at_most`, receives it as
/// `to`; returns the last value `from` showed and the session on `to`.
fn move_vm(
    daemon: &TestDaemon,
    session: &mut ConsoleSession,
    (from, to): (&str, &str),
    at_most: u32,
) -> (u32, ConsoleSession) {
    let seen = count_down_to(session, at_most, daemon);
    let stream = daemon.dir().join(format!("{from}.state"));
    send_ok(daemon, from, &stream);
    // The sent VM is gone (it was ad hoc), and its console with it.
    assert!(!listed(daemon, from), "{from} still listed after the send");
    let last = *countdown(&session.text()).last().unwrap_or(&seen[0]);
    receive_ok(daemon, to, &stream);
    (last, daemon.console(to))
}

#[test]
fn grub_counts_down_across_two_moves_then_boots_its_entry_from_the_moved_disk() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let disk = grub::menu_disk_copy(&menu_cfg(), &["ls"], &daemon.dir().join("menu.img"));
    let disk = disk.display().to_string();
    daemon.vmctl_ok(&["start", "-b", BIOS, "-m", "64M", "-d", &disk, "gm1"]);
    let mut first = daemon.console("gm1");

    let (sent_at, mut second) = move_vm(&daemon, &mut first, ("gm1", "gm2"), COUNTDOWN - 4);
    let resumed_at = count_down_to(&mut second, sent_at - 2, &daemon);
    // The countdown went on from the value it had when the VM left: it
    // did not start over, and no time was lost while it was in a file.
    assert!(
        resumed_at[0] <= sent_at && resumed_at[0] + 2 >= sent_at,
        "sent at {sent_at}, resumed with {resumed_at:?}"
    );

    let (sent_again_at, mut third) = move_vm(&daemon, &mut second, ("gm2", "gm3"), sent_at - 3);
    let text = match third.read_until(DONE, BOOT) {
        Ok(text) => text,
        Err(text) => panic!("gm3 did not boot its entry:\n{text}\n{}", daemon.log()),
    };
    let values = countdown(&text);
    assert!(
        values
            .first()
            .is_some_and(|&n| n <= sent_again_at && n + 2 >= sent_again_at),
        "sent at {sent_again_at}, resumed with {values:?}"
    );
    assert!(text.contains(ENTERED), "{text}");
    // GRUB's `ls` of the partition, read through the moved virtio-blk
    // device and SeaBIOS's driver state in guest memory.
    assert!(text.contains("grub.cfg"), "{text}");
    daemon.wait_for(
        || !listed(&daemon, "gm3"),
        Duration::from_secs(30),
        "gm3 to power off",
    );
}

/// The PCI device records a stream's header lists: a slot each, named
/// after what is in it (in the slot order of docs/machine.md, "PCI devices"), which the receiving VM's
/// slots must match before any state is restored.
fn pci_slots(stream: &Path) -> Vec<String> {
    let whole = std::fs::read(stream).unwrap();
    let (_, payload) = vmm::snapshot::format::read_header_bytes(&mut &whole[..]).unwrap();
    let header = vmm::snapshot::Header::decode(&payload).unwrap();
    header
        .devices
        .into_iter()
        .filter(|name| name.starts_with("pci/"))
        .collect()
}

/// The CD's menu: its entry reads the CD's own `grub.cfg` back, through
/// SeaBIOS's virtio-scsi driver and the moved device.
fn cd_menu_cfg() -> String {
    format!(
        "# {CD_MARK}\n\
         set timeout={COUNTDOWN}\n\
         menuentry \"migrate-cd-test\" {{\n\
         \techo \"{ENTERED}\"\n\
         \tcat (cd)/grub.cfg\n\
         \techo \"{DONE}\"\n\
         \thalt\n\
         }}\n"
    )
}

/// A comment line of the CD's `grub.cfg`: only a read of the CD shows it.
const CD_MARK: &str = "this line was read from the moved cd-rom";

#[test]
fn grub_on_the_cd_counts_down_across_a_move_then_reads_the_cd() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let iso = grub::menu_cd(&cd_menu_cfg(), &[]);
    let iso = iso.display().to_string();
    daemon.vmctl_ok(&["start", "-b", BIOS, "-m", "64M", "-r", &iso, "cd1"]);
    let mut first = daemon.console("cd1");
    let (sent_at, mut second) = move_vm(&daemon, &mut first, ("cd1", "cd2"), COUNTDOWN - 4);
    let text = match second.read_until(DONE, BOOT) {
        Ok(text) => text,
        Err(text) => panic!("cd2 did not boot its entry:\n{text}\n{}", daemon.log()),
    };
    let values = countdown(&text);
    assert!(
        values
            .first()
            .is_some_and(|&n| n <= sent_at && n + 2 >= sent_at),
        "sent at {sent_at}, resumed with {values:?}"
    );
    assert!(text.contains(ENTERED), "{text}");
    assert!(text.contains(CD_MARK), "{text}");
    assert_eq!(
        pci_slots(&daemon.dir().join("cd1.state")),
        [
            "pci/00:host",
            "pci/01:viornd",
            "pci/02:vioscsi",
            "pci/03:vmmci"
        ]
    );
    daemon.wait_for(
        || !listed(&daemon, "cd2"),
        Duration::from_secs(30),
        "cd2 to power off",
    );
}

/// A tiny guest that says `alive`, then prints a dot now and then,
/// forever; written into the daemon's directory.
fn ticker(daemon: &TestDaemon) -> String {
    let path = daemon.dir().join("ticker.bin");
    std::fs::write(
        &path,
        firmware(
            r#"
main:
    PRINT alive
.tick:
    mov ecx, 100000
.delay:
    dec ecx
    jnz .delay
    SERIAL_OUT '.'
    jmp .tick
alive: db "alive", 13, 10, 0
"#,
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Starts a ticker called `name` (with `extra` options) and sends it to
/// a file; returns the file's path.
fn sent_ticker(daemon: &TestDaemon, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let image = ticker(daemon);
    let mut args = vec!["start", "-b", image.as_str(), "-m", "64M"];
    args.extend_from_slice(extra);
    args.push(name);
    daemon.vmctl_ok(&args);
    daemon.console_until(name, "alive", Duration::from_secs(30));
    let stream = daemon.dir().join(format!("{name}.state"));
    send_ok(daemon, name, &stream);
    stream
}

/// `vmctl receive` of `bytes` fails with `message`, then the cause vmd
/// found (the stream reader's words), and leaves nothing.
fn refused(daemon: &TestDaemon, bytes: &[u8], message: &str) {
    let path = daemon.dir().join("refused.state");
    std::fs::write(&path, bytes).unwrap();
    let out = receive(daemon, "refused", &path);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.starts_with(&format!("vmctl: {message}: ")) && text.lines().count() == 1,
        "{text}"
    );
    assert!(!listed(daemon, "refused"), "a refused vm is not registered");
}

#[test]
fn damaged_truncated_and_newer_streams_are_refused_and_leave_nothing_behind() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let stream = sent_ticker(&daemon, "t1", &[]);
    let whole = std::fs::read(&stream).unwrap();

    // Cut inside the header (vmd refuses before it registers anything),
    // and inside guest memory (the VM process refuses; the VM goes away).
    refused(&daemon, &whole[..40], "vm state stream is truncated");
    refused(
        &daemon,
        &whole[..whole.len() - 5000],
        "vm state stream is truncated",
    );
    refused(&daemon, &[], "vm state stream is truncated");
    // A flipped bit in the header, and one near the end.
    for at in [30, whole.len() - 3000] {
        let mut bytes = whole.clone();
        bytes[at] ^= 0x10;
        refused(&daemon, &bytes, "vm state stream is corrupt");
    }
    refused(
        &daemon,
        b"not a stream at all",
        "vm state stream is corrupt",
    );
    // A stream with something after it.
    let mut longer = whole.clone();
    longer.extend_from_slice(&whole[..64]);
    refused(&daemon, &longer, "vm state stream is corrupt");
    let mut newer = whole.clone();
    newer[8] = 3;
    refused(
        &daemon,
        &newer,
        "vm state stream has an unsupported version",
    );

    // The intact stream is received, and runs on: a received VM ticks.
    receive_ok(&daemon, "t2", &stream);
    let mut session = daemon.console("t2");
    assert!(
        session.read_until("..", Duration::from_secs(30)).is_ok(),
        "{}",
        session.text()
    );
}

#[test]
fn a_host_without_a_cpu_feature_the_guest_saw_is_refused() {
    testkit::needs!(root, kvm);
    use vmm::snapshot::format::{FrameWriter, Tag, read_header_bytes};
    let daemon = TestDaemon::start();
    let stream = sent_ticker(&daemon, "cpu", &[]);
    let whole = std::fs::read(&stream).unwrap();
    let mut rest = &whole[..];
    let (_, payload) = read_header_bytes(&mut rest).unwrap();
    let mut header = vmm::snapshot::Header::decode(&payload).unwrap();
    // CPUID leaf 1 ECX bit 16 is reserved: no KVM supports it.
    for entry in &mut header.cpuid {
        if entry.0.function == 1 {
            entry.0.ecx |= 1 << 16;
        }
    }
    let mut doctored = Vec::new();
    FrameWriter::new(&mut doctored)
        .unwrap()
        .frame(Tag::Header, &[&header.encode()])
        .unwrap();
    doctored.extend_from_slice(rest);
    refused(
        &daemon,
        &doctored,
        "this host's CPU lacks features the vm uses",
    );
    assert!(
        daemon
            .log()
            .contains("leaf 0x1.0 ecx bits 0x10000 are missing"),
        "{}",
        daemon.log()
    );
}

fn resize(path: &Path, len: u64) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn disks_and_the_cd_are_opened_again_at_their_paths_and_must_not_have_changed() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let disk = daemon.dir().join("data.img");
    File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let disk_arg = disk.display().to_string();
    let iso = daemon.dir().join("data.iso");
    File::create(&iso).unwrap().set_len(1 << 20).unwrap();
    let iso_arg = iso.display().to_string();
    let stream = sent_ticker(&daemon, "d1", &["-d", &disk_arg, "-r", &iso_arg]);
    // A disk, or an ISO image, of another size is not the one the guest
    // knew.
    for (path, len) in [(&disk, 1 << 20), (&iso, 1 << 20)] {
        resize(path, 2 << 20);
        let out = receive(&daemon, "d2", &stream);
        assert_eq!(out.status.code(), Some(1));
        let text = stderr(&out);
        assert!(
            text.starts_with(
                "vmctl: a disk image differs from the one the vm was sent with: disk changed: "
            ),
            "{text}"
        );
        assert!(!listed(&daemon, "d2"));
        resize(path, len);
    }
    // An ISO image that is not there is refused as at a start.
    let away = daemon.dir().join("away.iso");
    std::fs::rename(&iso, &away).unwrap();
    let out = receive(&daemon, "d2", &stream);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "vmctl: could not find specified iso image: {iso_arg}: No such file or directory\n"
        )
    );
    assert!(!listed(&daemon, "d2"));
    std::fs::rename(&away, &iso).unwrap();
    // Put back, they are the same images again: the disk opened and
    // locked by the received VM, the ISO read-only.
    receive_ok(&daemon, "d2", &stream);
    assert_eq!(
        pci_slots(&stream),
        [
            "pci/00:host",
            "pci/01:viornd",
            "pci/02:vioblk0",
            "pci/03:vioscsi",
            "pci/04:vmmci"
        ]
    );
    let image = ticker(&daemon);
    let out = daemon.vmctl(&["start", "-b", &image, "-m", "64M", "-d", &disk_arg, "d3"]);
    assert_eq!(
        stderr(&out),
        format!("vmctl: could not open disk image(s): {disk_arg}: in use by vm d2\n")
    );
}

#[test]
fn a_configured_vm_stays_listed_as_stopped_after_a_send() {
    testkit::needs!(root, kvm);
    let scratch = testkit::tmp::TempDir::new("conf");
    let config = scratch.join("vm.conf");
    let daemon = TestDaemon::start();
    let image = ticker(&daemon);
    std::fs::write(
        &config,
        format!("vm \"conf\" {{\n    boot \"{image}\"\n    memory 64M\n}}\n"),
    )
    .unwrap();
    daemon.vmctl_ok(&["load", config.to_str().unwrap()]);
    daemon.console_until("conf", "alive", Duration::from_secs(30));
    send_ok(&daemon, "conf", &daemon.dir().join("conf.state"));
    let row = daemon.status_row("conf").expect("conf is still listed");
    assert_eq!((row[1].as_str(), row[7].as_str()), ("-", "stopped"));
    // Sending what does not run, or does not exist, is refused.
    let out = send(&daemon, "conf", &daemon.dir().join("again.state"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: command failed: Invalid argument\n");
    let out = send(&daemon, "nosuchvm", &daemon.dir().join("none.state"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: vm not found\n");
}

#[test]
fn a_send_that_vmctl_cannot_write_out_leaves_the_vm_running() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let image = ticker(&daemon);
    daemon.vmctl_ok(&["start", "-b", &image, "-m", "64M", "stay"]);
    let mut session = daemon.console("stay");
    assert!(session.read_until("alive", Duration::from_secs(30)).is_ok());
    // vmctl's stdout is a pipe nobody reads: its first write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = daemon.vmctl_io(&["send", "stay"], Stdio::null(), Stdio::from(writer));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: write: Broken pipe\n");
    daemon.wait_for_log("stay: send failed", Duration::from_secs(10));
    let row = daemon.status_row("stay").expect("still listed");
    assert_eq!(row[7], "running", "{row:?}");
    // And the guest goes on ticking.
    let dots = session.text().matches('.').count();
    let more = ".".repeat(dots + 3);
    assert!(
        session.read_until(&more, Duration::from_secs(30)).is_ok(),
        "the guest stopped after the failed send: {}",
        session.text()
    );
}

/// A guest with a virtio-net driver (port I/O only: BAR0 is I/O) that
/// asks for an address the way a DHCP client does: every round it sends
/// `discover` (a DISCOVER, its MAC patched in from the device's
/// configuration) and prints the address an answer offers it as
/// `lease=` and eight hex digits, forever. Other frames (the host's IPv6
/// chatter on the tap) are passed over.
fn dhcp_guest(daemon: &TestDaemon) -> String {
    let mut discover =
        net::dhcp::request_frame::RequestFrame::discover([0; 6], 0x7e57_d4c9).frame();
    // The MAC goes in after this frame was built: no UDP checksum (IPv4
    // allows none).
    discover[40..42].fill(0);
    let bytes: Vec<String> = discover.iter().map(|b| format!("{b:#04x}")).collect();
    let program = format!(
        r#"
%define BAR0 0x7f48
%define RX_SEEN 0x7f4a
%define RX_AVAIL 0x7f4c
%define TX_AVAIL 0x7f4e
%define FRAME_LEN {len}

; Register %1 of the device's BAR0 gets %3 of width %2 (al, ax, eax).
%macro VIO_OUT 3
    mov dx, [es:BAR0]
    add dx, %1
    mov %2, %3
    out dx, %2
%endmacro

; Makes descriptor 0 available to queue %1 (8 entries), whose available
; ring is at FS:%2 and whose count of entries made available is kept at
; ES:%3, and notifies the device.
%macro POST 3
    mov ax, [es:%3]
    mov bx, ax
    and bx, 7
    shl bx, 1
    mov word [fs:%2 + 4 + bx], 0
    inc ax
    mov [es:%3], ax
    mov [fs:%2 + 2], ax
    VIO_OUT 0x100, ax, %1
%endmacro

main:
    xor ax, ax
    mov es, ax
    mov ax, 0x1000
    mov fs, ax
    ; the first virtio-net device on bus 0
    mov ebx, 0x80000000
.scan:
    mov eax, ebx
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    cmp eax, 0x10411af4
    je .found
    add ebx, 0x800
    cmp ebx, 0x80010000
    jb .scan
    jmp fail
.found:
    mov eax, ebx
    or eax, 0x10
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    and ax, 0xfffc
    mov [es:BAR0], ax
    mov word [es:RX_SEEN], 0
    mov word [es:RX_AVAIL], 0
    mov word [es:TX_AVAIL], 0
    ; reset, ACKNOWLEDGE | DRIVER, VERSION_1 only, FEATURES_OK
    VIO_OUT 0x14, al, 0
    VIO_OUT 0x14, al, 3
    VIO_OUT 0x08, eax, 0
    VIO_OUT 0x0c, eax, 0
    VIO_OUT 0x08, eax, 1
    VIO_OUT 0x0c, eax, 1
    VIO_OUT 0x14, al, 11
    mov dx, [es:BAR0]
    add dx, 0x14
    in al, dx
    test al, 8
    jz fail
    ; receive queue: descriptors at 0x10000, available ring at 0x10100,
    ; used ring at 0x11000; transmit queue the same at 0x12000
    VIO_OUT 0x16, ax, 0
    VIO_OUT 0x18, ax, 8
    VIO_OUT 0x20, eax, 0x10000
    VIO_OUT 0x24, eax, 0
    VIO_OUT 0x28, eax, 0x10100
    VIO_OUT 0x2c, eax, 0
    VIO_OUT 0x30, eax, 0x11000
    VIO_OUT 0x34, eax, 0
    VIO_OUT 0x1c, ax, 1
    VIO_OUT 0x16, ax, 1
    VIO_OUT 0x18, ax, 8
    VIO_OUT 0x20, eax, 0x12000
    VIO_OUT 0x24, eax, 0
    VIO_OUT 0x28, eax, 0x12100
    VIO_OUT 0x2c, eax, 0
    VIO_OUT 0x30, eax, 0x13000
    VIO_OUT 0x34, eax, 0
    VIO_OUT 0x1c, ax, 1
    VIO_OUT 0x14, al, 15
    ; the frame at 0x15000 behind a 12-byte virtio-net header of zeroes,
    ; with the device's MAC as source and client hardware address
    mov si, discover
    mov di, 0x500c
    mov cx, FRAME_LEN
.copy:
    mov al, [si]
    mov [fs:di], al
    inc si
    inc di
    dec cx
    jnz .copy
    mov cx, 0
.mac:
    mov dx, [es:BAR0]
    add dx, 0x300
    add dx, cx
    in al, dx
    mov di, cx
    mov [fs:0x500c + 6 + di], al
    mov [fs:0x500c + 70 + di], al
    inc cx
    cmp cx, 6
    jb .mac
    ; one device-writable receive buffer of 2048 bytes at 0x14000, one
    ; transmit descriptor for the frame
    mov dword [fs:0x0000], 0x14000
    mov dword [fs:0x0004], 0
    mov dword [fs:0x0008], 2048
    mov word [fs:0x000c], 2
    mov word [fs:0x000e], 0
    mov dword [fs:0x2000], 0x15000
    mov dword [fs:0x2004], 0
    mov dword [fs:0x2008], 12 + FRAME_LEN
    mov word [fs:0x200c], 0
    mov word [fs:0x200e], 0
    call post_rx
round:
    ; the DISCOVER
    POST 1, 0x2100, TX_AVAIL
.wait:
    mov ecx, 300000
.poll:
    mov ax, [fs:0x1002]
    cmp ax, [es:RX_SEEN]
    jne .received
    dec ecx
    jnz .poll
    jmp pause
.received:
    mov [es:RX_SEEN], ax
    ; IPv4 UDP to port 68, a BOOTREPLY
    cmp word [fs:0x4000 + 12 + 12], 0x0008
    jne .other
    cmp byte [fs:0x4000 + 12 + 23], 17
    jne .other
    cmp word [fs:0x4000 + 12 + 36], 0x4400
    jne .other
    cmp byte [fs:0x4000 + 12 + 42], 2
    jne .other
    PRINT s_lease
    mov bx, 0
.digits:
    mov al, [fs:0x4000 + 12 + 58 + bx]
    PRINT_HEX8
    inc bx
    cmp bx, 4
    jb .digits
    PRINT nl
    call post_rx
    jmp pause
.other:
    call post_rx
    jmp .wait
pause:
    mov ecx, 300000
.delay:
    dec ecx
    jnz .delay
    jmp round

; makes descriptor 0 available to the receive queue
post_rx:
    POST 0, 0x0100, RX_AVAIL
    ret

fail:
    PRINT s_fail
    DONE

s_lease: db "lease=", 0
s_fail: db "failed", 13, 10, 0
nl: db 13, 10, 0
discover: db {bytes}
"#,
        len = discover.len(),
        bytes = bytes.join(", "),
    );
    let path = daemon.dir().join("dhcp.bin");
    std::fs::write(&path, firmware(&program)).unwrap();
    path.display().to_string()
}

/// The IPv4 address (with its prefix) of the tap whose alias is `alias`.
fn tap_inet(ns: &testkit::netns::NetNs, alias: &str) -> String {
    let links = ns.ip(&["-o", "-d", "link", "show"]);
    let line = links
        .lines()
        .find(|l| l.contains(&format!("alias {alias}")))
        .unwrap_or_else(|| panic!("no tap with alias {alias}:\n{links}"));
    let name = line.split(": ").nth(1).unwrap().split('@').next().unwrap();
    let addrs = ns.ip(&["-o", "-4", "addr", "show", "dev", name]);
    addrs
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no address on {name}: {addrs}"))
        .to_string()
}

/// The last address the DHCP guest `vm` printed after `skip` bytes of
/// its console, waiting for one.
fn next_lease(daemon: &TestDaemon, session: &ConsoleSession, vm: &str, skip: usize) -> String {
    daemon.wait_for(
        || session.text().get(skip..).is_some_and(|t| t.contains("\n")),
        Duration::from_secs(60),
        &format!("a DHCP answer on {vm}'s console"),
    );
    let text = session.text();
    let lease = text[skip..]
        .split("lease=")
        .nth(1)
        .map(|rest| rest.chars().take(8).collect::<String>())
        .unwrap_or_else(|| panic!("{vm}'s console:\n{text}"));
    assert_eq!(lease.len(), 8, "{text}");
    lease
}

#[test]
fn a_received_local_interface_keeps_its_addresses_when_they_are_free() {
    testkit::needs!(root, kvm);
    let ns = testkit::netns::NetNs::new("vmdmove");
    let daemon = TestDaemon::start_in_netns(ns.name(), &[]);
    let image = dhcp_guest(&daemon);
    daemon.vmctl_ok(&["start", "-b", &image, "-m", "64M", "-L", "dh"]);
    assert_eq!(tap_inet(&ns, "vm1-if0-dh"), "100.64.1.2/31");
    let first = daemon.console("dh");
    // 100.64.1.3 offered to the guest's MAC.
    assert_eq!(next_lease(&daemon, &first, "dh", 0), "64400103");
    drop(first);
    let stream = daemon.dir().join("dh.state");
    send_ok(&daemon, "dh", &stream);

    // Received with id 2, it keeps the tap's address and the guest's
    // lease: the guest's MAC is offered the same address again.
    receive_ok(&daemon, "dh2", &stream);
    assert_eq!(tap_inet(&ns, "vm2-if0-dh2"), "100.64.1.2/31");
    let moved = daemon.console("dh2");
    let seen = moved.text().len();
    assert_eq!(next_lease(&daemon, &moved, "dh2", seen), "64400103");
    assert!(
        daemon.log().contains(
            "dh2: vm 2 interface 0 keeps its addresses: host 100.64.1.2, guest 100.64.1.3"
        ),
        "{}",
        daemon.log()
    );

    // Received again while dh2 has them: the new id's addresses, and a
    // warning that the guest must renew, to the log and to vmctl.
    let out = receive(&daemon, "dh3", &stream);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stderr(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(
            "vmctl: warning: interface 0 cannot keep host 100.64.1.2 and guest 100.64.1.3 \
             (100.64.1.2 is in use on "
        ) && lines[0].ends_with(
            "): it gets host 100.64.3.2 and guest 100.64.3.3 instead; \
             the guest must renew its DHCP lease"
        ),
        "{text}"
    );
    assert!(
        lines[1].starts_with("vmctl: started vm 3 successfully, tty /dev/pts/"),
        "{text}"
    );
    assert_eq!(tap_inet(&ns, "vm3-if0-dh3"), "100.64.3.2/31");
    let third = daemon.console("dh3");
    let seen = third.text().len();
    assert_eq!(next_lease(&daemon, &third, "dh3", seen), "64400303");
    let log = daemon.log();
    assert!(
        log.contains(
            "dh3: vm 3 interface 0 cannot keep host 100.64.1.2 and guest 100.64.1.3 \
             (100.64.1.2 is in use on "
        ) && log.contains(
            "it gets host 100.64.3.2 and guest 100.64.3.3 instead; the guest must renew its DHCP lease"
        ),
        "{log}"
    );
}
