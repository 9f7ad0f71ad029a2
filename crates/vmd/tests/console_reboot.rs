//! An attached console across guest reboots (docs/lifecycle.md, "The
//! console"): the pty and the client stay, and every byte the guest
//! writes in every boot reaches the client, in order, once. Each boot's
//! run starts with the last run's history in its ring, so the ring wraps
//! early in the second boot, where output once stopped for good.

use std::time::{Duration, Instant};

use testkit::daemon::TestDaemon;
use testkit::guest::firmware;

const LINES: usize = 600;
const BODY: &str = ": the quick brown fox jumps over the lazy dog 0123456789abcdef";

/// Prints `boot-begin`, LINES numbered lines and `boot-end`, waits a
/// moment and resets.
fn chatty() -> String {
    format!(
        r#"
main:
    PRINT begin
    xor cx, cx
.line:
    mov al, ch
    PRINT_HEX8
    mov al, cl
    PRINT_HEX8
    PRINT body
    inc cx
    cmp cx, {LINES}
    jne .line
    PRINT finish
    mov ecx, 0x200000
.wait:
    dec ecx
    jnz .wait
    DONE
begin: db "boot-begin", 13, 10, 0
body: db "{BODY}", 13, 10, 0
finish: db "boot-end", 13, 10, 0
"#
    )
}

/// One boot's whole output.
fn one_boot() -> String {
    let mut text = String::from("boot-begin\r\n");
    for line in 0..LINES {
        text.push_str(&format!("{line:04x}{BODY}\r\n"));
    }
    text.push_str("boot-end\r\n");
    text
}

#[test]
fn every_boot_reaches_an_attached_console_whole() {
    testkit::needs!(root, kvm);
    const BOOTS: usize = 3;
    let daemon = TestDaemon::start();
    let image = daemon.dir().join("chatty.bin");
    std::fs::write(&image, firmware(&chatty())).unwrap();
    daemon.vmctl_ok(&["start", "-b", &image.display().to_string(), "chatty"]);
    let session = daemon.console("chatty");
    let deadline = Instant::now() + Duration::from_secs(90);
    while session.text().matches("boot-end").count() < BOOTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.vmctl_ok(&["stop", "-f", "-w", "chatty"]);
    let text = session.text();
    assert!(
        daemon.log().matches("chatty: vm 1 is rebooting").count() >= BOOTS - 1,
        "the guest did not reboot: {}",
        daemon.log()
    );
    // The client attached during the first boot and saw it from its start
    // (the replay), then every boot after it.
    let boots: Vec<&str> = text
        .split_inclusive("boot-end\r\n")
        .filter(|boot| boot.ends_with("boot-end\r\n"))
        .collect();
    assert!(
        boots.len() >= BOOTS,
        "{} whole boots on the console; it ends with {:?}",
        boots.len(),
        &text[text.len().saturating_sub(200)..]
    );
    for (index, boot) in boots.iter().enumerate() {
        assert!(
            *boot == one_boot(),
            "boot {index} is not whole: {} bytes, ends with {:?}",
            boot.len(),
            &boot[boot.len().saturating_sub(200)..]
        );
    }
}
