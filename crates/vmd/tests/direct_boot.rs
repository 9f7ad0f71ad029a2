//! Direct kernel boot end to end: Debian's cloud kernel (its vmlinux through
//! the PVH note, its bzImage through the 64-bit entry) with a command line
//! and an initrd, iPXE's `.lkrn` through the firmware, SMP under SeaBIOS,
//! and the errors a user sees for kernel arguments.
//!
//! Linux never reaches user space on the development machines (its CPL0
//! code runs in KVM's instruction emulator, which stops it at its int3
//! self-test), but its early log shows what it was handed: the command
//! line, the e820 map, the initrd's range, the ACPI tables, the CPUs and
//! kvmclock. The slow boots wait only for the lines they check.

use std::time::Duration;

use testkit::daemon::TestDaemon;
use testkit::fixtures::{Linux, path_str};
use vmm::memory::{Layout, RangeKind};

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";
const IPXE: &str = "/boot/ipxe.lkrn";
/// What Linux needs here: a serial console, no XSAVE and no CMPXCHG16B
/// (the emulator cannot run them), and something of our own to look for.
const CMDLINE: &str = "console=ttyS0 earlyprintk=serial noxsave clearcpuid=cx16 vmd.test=direct";
const MIB: u64 = 1 << 20;
/// The vmlinux's first line comes after ~16 s here, the bzImage's after
/// ~96 s (its decompressor runs in the emulator); both then need a few
/// more seconds to reach the CPU count, more when tests run side by side.
const PVH_BOOT: Duration = Duration::from_secs(300);
const BZIMAGE_BOOT: Duration = Duration::from_secs(600);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The console's lines without carriage returns.
fn lines(console: &str) -> Vec<&str> {
    console.lines().map(|l| l.trim_end_matches('\r')).collect()
}

/// The part of each kernel log line after its timestamp.
fn messages(console: &str) -> Vec<&str> {
    lines(console)
        .into_iter()
        .map(|l| match l.find("] ") {
            Some(at) if l.starts_with('[') => &l[at + 2..],
            _ => l,
        })
        .collect()
}

/// The `BIOS-e820:` lines Linux prints for our memory layout of `memory`
/// bytes: adjacent ranges of the same kind show as one.
fn expected_e820(memory: u64) -> Vec<String> {
    let mut merged: Vec<(u64, u64, RangeKind)> = Vec::new();
    for r in Layout::new(memory).ranges {
        match merged.last_mut() {
            Some(last) if last.2 == r.kind && last.1 == r.start => last.1 = r.start + r.size,
            _ => merged.push((r.start, r.start + r.size, r.kind)),
        }
    }
    merged
        .iter()
        .map(|(start, end, kind)| {
            let kind = match kind {
                RangeKind::Ram => "usable",
                RangeKind::Reserved => "reserved",
            };
            format!("BIOS-e820: [mem {start:#018x}-{:#018x}] {kind}", end - 1)
        })
        .collect()
}

/// The `RAMDISK:` line Linux prints for the initrd the VM process placed
/// (its log says where): the range rounded up to whole pages.
fn expected_ramdisk(log: &str, vm: &str) -> String {
    let prefix = format!("{vm}: initrd at ");
    let placed = log
        .lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.trim()))
        .unwrap_or_else(|| panic!("no initrd placement for {vm} in the log:\n{log}"));
    let (start, last) = placed.split_once('-').unwrap();
    let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    let (start, last) = (parse(start), parse(last));
    let end = (last + 1).div_ceil(4096) * 4096;
    format!("RAMDISK: [mem {start:#010x}-{:#010x}]", end - 1)
}

/// What every direct Linux boot must have shown.
fn check_linux_log(daemon: &TestDaemon, vm: &str, console: &str, memory: u64, cpus: u32) {
    let msgs = messages(console);
    let has = |needle: &str| msgs.iter().any(|m| m.contains(needle));
    let line = |exact: &str| msgs.contains(&exact);
    assert!(has("Linux version 6."), "{console}");
    assert!(
        line(&format!("Command line: {CMDLINE}")),
        "the exact command line:\n{console}"
    );
    let e820: Vec<&str> = msgs
        .iter()
        .copied()
        .filter(|m| m.starts_with("BIOS-e820:"))
        .collect();
    assert_eq!(e820, expected_e820(memory), "{console}");
    let ramdisk = expected_ramdisk(&daemon.log(), vm);
    assert!(line(&ramdisk), "{ramdisk} missing:\n{console}");
    // Our ACPI tables, found through the address the boot protocol passed.
    assert!(
        has("ACPI: RSDP 0x00000000000E0000 000024 (v02 VMDLNX)"),
        "{console}"
    );
    for table in ["XSDT", "FACP", "DSDT", "APIC"] {
        assert!(
            msgs.iter()
                .any(|m| m.starts_with(&format!("ACPI: {table} ")) && m.contains("VMDLNX")),
            "ACPI {table}:\n{console}"
        );
    }
    assert!(has("ACPI: PM-Timer IO Port: 0x608"), "{console}");
    assert!(
        has("IOAPIC[0]: apic_id 0, version 17, address 0xfec00000, GSI 0-23"),
        "{console}"
    );
    assert!(
        has("ACPI: INT_SRC_OVR (bus 0 bus_irq 9 global_irq 9 low level)"),
        "{console}"
    );
    assert!(
        has("ACPI: Using ACPI (MADT) for SMP configuration information"),
        "{console}"
    );
    assert!(
        line(&format!("smpboot: Allowing {cpus} CPUs, 0 hotplug CPUs")),
        "{console}"
    );
    assert!(
        has("kvm-clock: Using msrs 4b564d01 and 4b564d00"),
        "{console}"
    );
}

/// The row of `name` in `vmctl status`, split into columns.
fn status_row(daemon: &TestDaemon, name: &str) -> Vec<String> {
    daemon
        .status_row(name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

/// The VCPUS column of `name`.
fn vcpus(daemon: &TestDaemon, name: &str) -> String {
    status_row(daemon, name)[2].clone()
}

#[test]
fn vmlinux_boots_through_pvh_with_command_line_initrd_tables_and_four_cpus() {
    testkit::needs!(root, kvm);
    let linux = Linux::get();
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&[
        "start",
        "-b",
        path_str(&linux.vmlinux),
        "--initrd",
        path_str(&linux.initrd),
        "--cmdline",
        CMDLINE,
        "-p",
        "4",
        "-m",
        "512M",
        "pvh",
    ]);
    assert_eq!(vcpus(&daemon, "pvh"), "4");
    let console = daemon.console_until("pvh", "hotplug CPUs", PVH_BOOT);
    check_linux_log(&daemon, "pvh", &console, 512 * MIB, 4);
}

#[test]
fn bzimage_from_vm_conf_boots_through_its_64bit_entry() {
    testkit::needs!(root, kvm);
    let linux = Linux::get();
    let scratch = testkit::tmp::TempDir::new("bzconf");
    let config = scratch.join("vm.conf");
    std::fs::write(
        &config,
        format!(
            "vm \"bz\" {{\n    memory 384M\n    cpus 2\n    boot \"{}\"\n    cmdline \"{CMDLINE}\"\n    initrd \"{}\"\n}}\n",
            linux.bzimage.display(),
            linux.initrd.display()
        ),
    )
    .unwrap();
    let daemon = TestDaemon::start_with(&["-f", config.to_str().unwrap()]);
    let console = daemon.console_until("bz", "hotplug CPUs", BZIMAGE_BOOT);
    check_linux_log(&daemon, "bz", &console, 384 * MIB, 2);
    assert_eq!(vcpus(&daemon, "bz"), "2");
}

#[test]
fn ipxe_lkrn_runs_through_the_firmware() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", IPXE, "-m", "256M", "ipxe"]);
    // The firmware runs the boot ROM, which enters iPXE's real-mode setup
    // code; iPXE then decompresses itself (~80 s here) and speaks. How far
    // it gets after its first line depends on when the emulator meets its
    // first protected-mode interrupt (`iret`), so the test asks for its
    // first words: proof that the kernel was loaded and entered.
    daemon.wait_for_log(
        "ipxe: firmware: Searching bootorder for: /rom@genroms/vmd-linuxboot.bin",
        Duration::from_secs(60),
    );
    daemon.console_until(
        "ipxe",
        "iPXE initialising devices",
        Duration::from_secs(400),
    );
}

#[test]
fn seabios_starts_four_cpus_and_installs_our_acpi_tables() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "-p", "4", "-m", "128M", "smp"]);
    daemon.wait_for_log(
        "smp: firmware: Found 4 cpu(s) max supported 4 cpu(s)",
        Duration::from_secs(120),
    );
    // SeaBIOS ran our table loader and found the FADT through the XSDT.
    daemon.wait_for_log("smp: firmware: table(50434146)=", Duration::from_secs(60));
    assert!(daemon.log().contains("(via xsdt)"), "{}", daemon.log());
    assert_eq!(vcpus(&daemon, "smp"), "4");
    // Pausing parks all four vCPU threads; unpausing lets them go on.
    daemon.vmctl_ok(&["pause", "smp"]);
    assert_eq!(status_row(&daemon, "smp")[7], "paused");
    daemon.vmctl_ok(&["unpause", "smp"]);
    assert_eq!(status_row(&daemon, "smp")[7], "running");
}

#[test]
fn an_adhoc_vms_kernel_boots_again_with_its_arguments_when_the_guest_reboots() {
    testkit::needs!(root, kvm);
    // A tiny 32-bit kernel that prints the command line and the start of
    // the initrd its boot_params (ESI) point to, then resets the machine.
    let code = testkit::guest::assemble(
        r#"
bits 32
org 0x100000
    mov ebx, esi
    mov esi, ran
    call print
    mov esi, [ebx + 0x228]      ; cmd_line_ptr
    call print
    mov esi, initrd
    call print
    mov esi, [ebx + 0x218]      ; ramdisk_image
    mov ecx, 6
.initrd:
    mov al, [esi]
    out dx, al
    inc esi
    dec ecx
    jnz .initrd
    mov esi, eol
    call print
    mov al, 0xfe
    out 0x64, al
    hlt
print:
    mov dx, 0x3f8
.next:
    mov al, [esi]
    test al, al
    jz .done
    out dx, al
    inc esi
    jmp .next
.done:
    ret
ran: db "tiny kernel ran: ", 0
initrd: db " initrd=", 0
eol: db 13, 10, 0
"#,
    );
    let daemon = TestDaemon::start();
    let kernel = daemon.dir().join("tiny.bzImage");
    std::fs::write(&kernel, testkit::guest::bzimage_32(&code, 255)).unwrap();
    let initrd = daemon.dir().join("tiny.initrd");
    std::fs::write(&initrd, b"initrd").unwrap();
    daemon.vmctl_ok(&[
        "start",
        "-b",
        path_str(&kernel),
        "--cmdline",
        "console=ttyS0 tiny",
        "--initrd",
        path_str(&initrd),
        "adhoc",
    ]);
    // The guest's reset boots the same kernel, with the same command line
    // and initrd, in the same VM: the -b image is this VM's boot image.
    // (It resets again at once, so the rate limit ends it after a few
    // rounds.)
    let line = "tiny kernel ran: console=ttyS0 tiny initrd=initrd";
    let session = daemon.console("adhoc");
    daemon.wait_for(
        || session.text().matches(line).count() >= 2,
        Duration::from_secs(90),
        "the kernel's second boot",
    );
    let text = session.text();
    assert!(!text.contains("SeaBIOS"), "{text}");
    let log = daemon.log();
    assert!(log.contains("adhoc: vm 1 is rebooting"), "{log}");
    assert!(
        log.matches("started adhoc (vm 1) successfully").count() >= 2,
        "{log}"
    );
    assert!(!log.contains("firmware file not found"), "{log}");
    let _ = daemon.vmctl(&["stop", "-f", "adhoc"]);
}

#[test]
fn kernel_argument_errors_are_clear() {
    testkit::needs!(root, kvm);
    let linux = Linux::get();
    let daemon = TestDaemon::start();
    let fail = |args: &[&str]| {
        let out = daemon.vmctl(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        stderr(&out)
    };

    assert_eq!(
        fail(&["start", "-b", BIOS, "--cmdline", "console=ttyS0", "a"]),
        "vmctl: command line and initrd need a Linux kernel booted with -b: \
         a BIOS image takes no command line or initrd\n"
    );
    let long = "x".repeat(3000);
    assert_eq!(
        fail(&[
            "start",
            "-b",
            path_str(&linux.bzimage),
            "--cmdline",
            &long,
            "b"
        ]),
        "vmctl: kernel command line longer than the kernel accepts: \
         command line is 3000 bytes, this kernel accepts at most 2047\n"
    );
    assert!(
        daemon
            .log()
            .contains("command line is 3000 bytes, this kernel accepts at most 2047")
    );

    let scratch = testkit::tmp::TempDir::new("initrds");
    assert_eq!(
        fail(&[
            "start",
            "-b",
            path_str(&linux.vmlinux),
            "--initrd",
            path_str(scratch.path()),
            "c"
        ]),
        format!(
            "vmctl: could not open initrd: {}: a directory, not a regular file\n",
            scratch.path().display()
        )
    );
    assert!(daemon.log().contains("a directory, not a regular file"));
    // 300 MiB do not fit above the kernel in 256 MiB. The file is sparse:
    // it is never read.
    let big = scratch.join("big.img");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(300 * MIB)
        .unwrap();
    assert_eq!(
        fail(&[
            "start",
            "-b",
            path_str(&linux.vmlinux),
            "--initrd",
            path_str(&big),
            "-m",
            "256M",
            "d"
        ]),
        "vmctl: initrd does not fit in guest memory: initrd of 314572800 bytes \
         does not fit in guest memory between 0x3e00000 and 0x10000000\n"
    );
    assert!(
        daemon
            .log()
            .contains("initrd of 314572800 bytes does not fit")
    );
}
