//! The host side of VM networking through a real vmd, run inside a network
//! namespace of each test's own: taps with their descriptions, addresses
//! and state; switch bridges created, described and joined; every tap
//! gone however its VM ends. Checked with iproute2. Needs root and KVM.

use std::time::Duration;

use testkit::daemon::TestDaemon;
use testkit::netns::NetNs;

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";
const GONE: Duration = Duration::from_secs(10);

/// The link whose alias is `alias`, with its one-line `ip -d` record.
fn link_with_alias(ns: &NetNs, alias: &str) -> Option<(String, String)> {
    let all = ns.ip(&["-o", "-d", "link", "show"]);
    let needle = format!("alias {alias}\\");
    all.lines()
        .find(|l| l.contains(&needle) || l.ends_with(&format!("alias {alias}")))
        .map(|l| {
            let name = l
                .split(": ")
                .nth(1)
                .unwrap_or("")
                .split('@')
                .next()
                .unwrap();
            (name.to_string(), l.to_string())
        })
}

fn tap_count(ns: &NetNs) -> usize {
    ns.ip(&["-o", "-d", "link", "show"])
        .lines()
        .filter(|l| l.contains("tun type tap"))
        .count()
}

fn write_conf(daemon_dir: &std::path::Path, text: &str) -> String {
    let path = daemon_dir.join("vm.conf");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_local_interface_gets_its_tap_and_addresses_and_stop_removes_it() {
    testkit::needs!(root, kvm);
    let ns = NetNs::new("vmdlocal");
    let daemon = TestDaemon::start_in_netns(ns.name(), &[]);
    daemon.vmctl_ok(&["start", "-b", BIOS, "-m", "64M", "-L", "-i", "2", "web"]);

    let (tap, line) = link_with_alias(&ns, "vm1-if0-web").expect("tap of the local NIC");
    assert!(line.contains("vnet_hdr on"), "{line}");
    assert!(line.contains(",UP"), "{line}");
    let addrs = ns.ip(&["addr", "show", "dev", &tap]);
    assert!(addrs.contains("inet 100.64.1.2/31"), "{addrs}");
    // The second, plain NIC has a tap and no address.
    let (plain, _) = link_with_alias(&ns, "vm1-if1-web").expect("tap of the plain NIC");
    assert!(!ns.ip(&["addr", "show", "dev", &plain]).contains("inet "));
    assert_eq!(tap_count(&ns), 2);

    daemon.vmctl_ok(&["stop", "-f", "web"]);
    daemon.wait_for(|| tap_count(&ns) == 0, GONE, "the taps to go");
}

#[test]
fn switches_are_bridges_that_member_taps_join() {
    testkit::needs!(root, kvm);
    let ns = NetNs::new("vmdswitch");
    let dir = testkit::tmp::TempDir::new("vmdswitch");
    let conf = write_conf(
        dir.path(),
        &format!(
            r#"switch "lan" {{
    interface br-lan
    locked lladdr
}}
switch "dark" {{
    interface br-dark
    down
}}
vm "one" {{
    boot "{BIOS}"
    memory 64M
    interface {{ switch "lan" }}
}}
vm "two" {{
    boot "{BIOS}"
    memory 64M
    interface tap77 {{
        switch "lan"
        group guests
        down
    }}
}}
"#
        ),
    );
    let daemon = TestDaemon::start_in_netns(ns.name(), &["-f", &conf]);
    daemon.wait_for(|| tap_count(&ns) == 2, GONE, "both VMs' taps");

    let lan = ns.link_details("br-lan").expect("bridge created");
    assert!(lan.contains("alias switch1-lan"), "{lan}");
    assert!(lan.contains(",UP"), "{lan}");
    let dark = ns.link_details("br-dark").expect("bridge created");
    assert!(dark.contains("alias switch2-dark"), "{dark}");
    assert!(!dark.contains(",UP"), "{dark}");

    let (one, line) = link_with_alias(&ns, "vm1-if0-one").unwrap();
    assert!(line.contains("master br-lan"), "{line}");
    let two = ns.link_details("tap77").expect("the named tap");
    assert!(two.contains("alias vm2-if0-two"), "{two}");
    assert!(two.contains("master br-lan"), "{two}");
    // No group table names "guests": logged, and the tap carries on.
    assert!(two.contains("group default"), "{two}");
    assert!(
        daemon
            .log()
            .contains("group guests unsupported on this system")
    );
    assert!(!two.contains(",UP"), "{two}");
    let members = ns.ip(&["-o", "link", "show", "master", "br-lan"]);
    assert!(
        members.contains(&format!(": {one}:")) && members.contains(": tap77:"),
        "{members}"
    );

    // A killed VM process takes its tap along; the other stays.
    let pid = daemon.vm_pid("one") as i32;
    // SAFETY: signalling the VM process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    daemon.wait_for(
        || ns.link_details(&one).is_none(),
        GONE,
        "the killed VM's tap to go",
    );
    assert!(ns.link_details("tap77").is_some());

    // reset vms ends the rest; the bridges stay, as an administrator's
    // would.
    daemon.vmctl_ok(&["reset", "vms"]);
    daemon.wait_for(|| tap_count(&ns) == 0, GONE, "every tap to go");
    assert!(ns.link_details("br-lan").is_some());
}

#[test]
fn an_unknown_switch_leaves_the_tap_unattached_and_ipv6_comes_with_local_inet6() {
    testkit::needs!(root, kvm);
    let ns = NetNs::new("vmdunknown");
    let dir = testkit::tmp::TempDir::new("vmdunknown");
    let conf = write_conf(
        dir.path(),
        "local prefix 10.20.0.0/16\nlocal inet6 prefix fd00:aa:bb:cc::/64\n",
    );
    let daemon = TestDaemon::start_in_netns(ns.name(), &["-f", &conf]);
    daemon.vmctl_ok(&["start", "-b", BIOS, "-m", "64M", "-n", "nosuch", "-L", "v"]);
    daemon.wait_for_log("switch \"nosuch\" not found", GONE);
    let (plain, line) = link_with_alias(&ns, "vm1-if0-v").unwrap();
    assert!(!line.contains("master"), "{line}");
    assert!(!ns.ip(&["addr", "show", "dev", &plain]).contains("inet "));
    // The local NIC is the second: its addresses use its real index.
    let (local, _) = link_with_alias(&ns, "vm1-if1-v").unwrap();
    let addrs = ns.ip(&["addr", "show", "dev", &local]);
    assert!(addrs.contains("inet 10.20.1.4/31"), "{addrs}");
    assert!(
        addrs.contains("inet6 fd00:aa:bb:cc:a14:105:0:1/96"),
        "{addrs}"
    );

    // Daemon shutdown ends the VM and its taps.
    drop(daemon);
    assert_eq!(tap_count(&ns), 0);
}

/// `-B net -L`: the first NIC offers iPXE as its option ROM and SeaBIOS
/// runs it (on these test machines iPXE stops at its first
/// protected-mode interrupt, after its banner; its DHCP exchange is shown
/// against udhcpc in the device tests and by hand in docs/networking.md).
#[test]
fn a_network_boot_runs_ipxe_from_the_nic_and_its_tap_goes_at_stop() {
    testkit::needs!(root, kvm);
    let ns = NetNs::new("vmdpxe");
    let daemon = TestDaemon::start_in_netns(ns.name(), &[]);
    daemon.vmctl_ok(&["start", "-b", BIOS, "-m", "128M", "-B", "net", "-L", "pxe"]);
    let (tap, _) = link_with_alias(&ns, "vm1-if0-pxe").expect("the local NIC's tap");
    let addrs = ns.ip(&["addr", "show", "dev", &tap]);
    assert!(addrs.contains("inet 100.64.1.2/31"), "{addrs}");

    // iPXE names the PCI function it was loaded for: the NIC in slot 2
    // (after the entropy device, as in vmd).
    daemon.console_until(
        "pxe",
        "iPXE (http://ipxe.org) 00:02.0",
        Duration::from_secs(120),
    );

    // It may have stopped by itself by now (see above); stop it if not.
    let _ = daemon.vmctl(&["stop", "-f", "pxe"]);
    daemon.wait_for(|| ns.link_details(&tap).is_none(), GONE, "the tap to go");
}
