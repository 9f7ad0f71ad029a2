//! Taps, bridges and routing domains made for real, each test in a network
//! namespace of its own, checked with iproute2 (`ip -d link`, `ip addr`)
//! rather than with the code under test. Needs root.

use std::net::{IpAddr, Ipv6Addr};

use net::host_nic::{self, BridgePort, NicPlan};
use net::rtnl::{Address, Rtnl};
use net::switch::{self, SwitchPlan};
use net::tap::Tap;
use testkit::netns::NetNs;

fn plan(description: &str) -> NicPlan {
    NicPlan {
        tap: None,
        description: description.into(),
        bridge: None,
        rdomain: None,
        group: None,
        up: true,
        addresses: Vec::new(),
    }
}

fn v4(a: [u8; 4], len: u8) -> Address {
    Address {
        addr: IpAddr::from(a),
        prefix_len: len,
    }
}

#[test]
fn a_local_tap_has_its_description_addresses_and_state_and_goes_with_its_descriptor() {
    testkit::needs!(root);
    let ns = NetNs::new("localtap");
    let v6: Ipv6Addr = "fd00:1:2:3:6440:103::1".parse().unwrap();
    let mut p = plan("vm1-if0-local");
    p.addresses = vec![
        v4([100, 64, 1, 2], 31),
        Address {
            addr: IpAddr::V6(v6),
            prefix_len: 96,
        },
    ];
    let nic = ns.enter(|| host_nic::create(&Rtnl::open().unwrap(), &p).unwrap());
    let name = nic.tap.name().to_string();
    assert!(name.starts_with("tap"), "{name}");
    let details = ns.link_details(&name).unwrap();
    assert!(details.contains("alias vm1-if0-local"), "{details}");
    assert!(
        details.contains("tun type tap pi off vnet_hdr on"),
        "{details}"
    );
    assert!(details.contains("persist off"), "{details}");
    assert!(details.contains("<BROADCAST,MULTICAST,UP"), "{details}");
    let mac = nic.mac;
    let shown = format!(
        "link/ether {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    );
    assert!(details.contains(&shown), "host MAC {shown}: {details}");
    let addrs = ns.ip(&["addr", "show", "dev", &name]);
    assert!(addrs.contains("inet 100.64.1.2/31"), "{addrs}");
    assert!(
        addrs.contains("inet6 fd00:1:2:3:6440:103:0:1/96"),
        "{addrs}"
    );
    // The same list through netlink.
    let listed = ns.enter(|| Rtnl::open().unwrap().addresses(nic.index).unwrap());
    assert!(listed.contains(&v4([100, 64, 1, 2], 31)), "{listed:?}");

    drop(nic);
    assert_eq!(
        ns.link_details(&name),
        None,
        "closing the descriptor removes the tap"
    );
}

#[test]
fn a_down_interface_with_a_group() {
    testkit::needs!(root);
    let ns = NetNs::new("downgroup");
    let mut p = plan("vm2-if1-quiet");
    p.up = false;
    p.group = Some(42);
    p.tap = Some("tap42".into());
    let nic = ns.enter(|| host_nic::create(&Rtnl::open().unwrap(), &p).unwrap());
    assert_eq!(nic.tap.name(), "tap42");
    let details = ns.link_details("tap42").unwrap();
    assert!(details.contains("group 42"), "{details}");
    assert!(!details.contains(",UP"), "{details}");
}

#[test]
fn a_named_tap_in_use_is_busy_and_a_name_taken_by_another_device_is_invalid() {
    testkit::needs!(root);
    let ns = NetNs::new("busytap");
    ns.ip(&["link", "add", "tap9", "type", "bridge"]);
    ns.enter(|| {
        let first = Tap::create(Some("tap5")).unwrap();
        assert!(!first.pre_existing());
        let second = Tap::create(Some("tap5")).unwrap_err();
        assert_eq!(second.raw_os_error(), Some(libc::EBUSY));
        let other = Tap::create(Some("tap9")).unwrap_err();
        assert_eq!(other.raw_os_error(), Some(libc::EINVAL));
        let too_long = Tap::create(Some("tap-with-a-long-name")).unwrap_err();
        assert_eq!(too_long.raw_os_error(), Some(libc::EINVAL));
    });
}

#[test]
fn remove_deletes_what_vmd_made_and_spares_a_persistent_tap() {
    testkit::needs!(root);
    let ns = NetNs::new("removetap");
    ns.ip(&["tuntap", "add", "dev", "tap3", "mode", "tap", "vnet_hdr"]);
    ns.enter(|| {
        let rtnl = Rtnl::open().unwrap();
        let ours = host_nic::create(&rtnl, &plan("vm1-if0-a")).unwrap();
        let created = ours.created().expect("a tap vmd made");
        // A descriptor still open elsewhere does not keep it alive.
        host_nic::remove(&rtnl, &created).unwrap();
        assert!(rtnl.link(&created.name).unwrap().is_none());
        // Removing twice is harmless.
        host_nic::remove(&rtnl, &created).unwrap();

        let mut p = plan("vm1-if1-a");
        p.tap = Some("tap3".into());
        let theirs = host_nic::create(&rtnl, &p).unwrap();
        assert!(theirs.tap.pre_existing());
        assert_eq!(theirs.created(), None);
        drop(theirs);
        assert!(
            rtnl.link("tap3").unwrap().is_some(),
            "the persistent tap stays"
        );
    });
}

#[test]
fn a_switch_bridge_is_created_described_and_joined() {
    testkit::needs!(root);
    let ns = NetNs::new("switch");
    let splan = SwitchPlan {
        bridge: "br-lan".into(),
        description: "switch1-lan".into(),
        rdomain: 0,
        up: true,
    };
    let (bridge, again, nics) = ns.enter(|| {
        let rtnl = Rtnl::open().unwrap();
        let bridge = switch::apply(&rtnl, &splan).unwrap();
        // Applying the configuration again finds the same bridge.
        let again = switch::apply(&rtnl, &splan).unwrap();
        let nics: Vec<_> = (0..2)
            .map(|i| {
                let mut p = plan(&format!("vm{}-if0-member", i + 1));
                p.bridge = Some(BridgePort { bridge, rdomain: 0 });
                host_nic::create(&rtnl, &p).unwrap()
            })
            .collect();
        (bridge, again, nics)
    });
    assert_eq!(bridge, again);
    let details = ns.link_details("br-lan").unwrap();
    assert!(details.contains("alias switch1-lan"), "{details}");
    assert!(details.contains("bridge forward_delay"), "{details}");
    assert!(details.contains(",UP"), "{details}");
    for nic in &nics {
        let details = ns.link_details(nic.tap.name()).unwrap();
        assert!(details.contains("master br-lan"), "{details}");
        assert!(details.contains("bridge_slave"), "{details}");
    }
    let members = ns.ip(&["link", "show", "master", "br-lan"]);
    assert_eq!(
        members.lines().filter(|l| l.contains(": tap")).count(),
        2,
        "{members}"
    );

    // Taken down by the next configuration.
    let down = SwitchPlan {
        up: false,
        ..splan.clone()
    };
    ns.enter(|| switch::apply(&Rtnl::open().unwrap(), &down).unwrap());
    assert!(!ns.link_details("br-lan").unwrap().contains(",UP"));
}

#[test]
fn a_switch_name_taken_by_another_device_is_refused() {
    testkit::needs!(root);
    let ns = NetNs::new("notbridge");
    ns.ip(&[
        "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    let err = ns.enter(|| {
        switch::apply(
            &Rtnl::open().unwrap(),
            &SwitchPlan {
                bridge: "uplink0".into(),
                description: "switch1-up".into(),
                rdomain: 0,
                up: true,
            },
        )
        .unwrap_err()
    });
    assert!(
        err.to_string()
            .contains("uplink0 is not a bridge (it is a veth)"),
        "{err}"
    );
}

/// With VRF support the tap lands in `rdomain7`; without it (these test
/// machines' kernels) the tap still comes up, outside any VRF.
#[test]
fn an_rdomain_is_a_vrf_when_the_kernel_has_them() {
    testkit::needs!(root);
    let ns = NetNs::new("rdomain");
    let vrfs = ns.can_add_link(&["vrf", "table", "5"]);
    let mut p = plan("vm3-if0-routed");
    p.rdomain = Some(7);
    p.addresses = vec![v4([100, 64, 3, 2], 31)];
    let nic = ns.enter(|| host_nic::create(&Rtnl::open().unwrap(), &p).unwrap());
    let details = ns.link_details(nic.tap.name()).unwrap();
    if vrfs {
        assert!(details.contains("master rdomain7"), "{details}");
        let vrf = ns.link_details("rdomain7").unwrap();
        assert!(vrf.contains("vrf table 7"), "{vrf}");
        let routes = ns.ip(&["route", "show", "table", "7"]);
        assert!(routes.contains("100.64.3.2/31"), "{routes}");
    } else {
        assert!(!details.contains("master"), "{details}");
        assert!(ns.link_details("rdomain7").is_none());
        assert!(details.contains(",UP"), "{details}");
    }
    // Back in rdomain 0 (the main table) nothing is left to undo.
    ns.enter(|| net::vrf::set_rdomain(&Rtnl::open().unwrap(), nic.index, 0).unwrap());
    assert!(!ns.link_details(nic.tap.name()).unwrap().contains("master"));
    let routes = ns.ip(&["route", "show"]);
    assert!(routes.contains("100.64.3.2/31"), "{routes}");
}
