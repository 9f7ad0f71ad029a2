//! Every construct of vm.conf(5) parsed into the model, and every default.

mod common;

use common::*;
use conf::model::{DEFAULT_MEMORY, Vm};
use conf::{
    Agentx, Config, InstancePermissions, Interface, Ipv4Prefix, LoadOptions, LocalInet6, MacAddr,
    MemoryHost, Owner, SocketOwner, StaggeredStart, Tap,
};
use proto::control::{BootDevice, DiskFormat, DiskSpec};

fn disk(path: &str, format: DiskFormat) -> DiskSpec {
    DiskSpec {
        path: path.into(),
        format,
    }
}

// ----- lexical structure -------------------------------------------------------

#[test]
fn empty_and_blank_files_are_empty_configurations() {
    for text in [
        "",
        "\n\n",
        "   \t\n# only a comment\n",
        "# no newline at the end",
    ] {
        let loaded = parse(text);
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.warnings.is_empty());
    }
}

#[test]
fn blank_lines_and_comments_anywhere() {
    let vm = vm(
        "\n\n# leading comment\nvm \"a\" {   # after the brace\n\n\t# inside\n\tdisk /var/vm/a.img # after an option\n\n}\n\n# trailing\n",
    );
    assert_eq!(vm.name, "a");
    assert_eq!(vm.disks, [disk("/var/vm/a.img", DiskFormat::Raw)]);
}

#[test]
fn hash_inside_quotes_is_literal() {
    let vm = vm_with("\tcmdline \"console=ttyS0 # not a comment\"");
    assert_eq!(vm.cmdline.as_deref(), Some("console=ttyS0 # not a comment"));
}

#[test]
fn backslash_newline_joins_lines() {
    let vm =
        vm("vm \"a\" {\n\tdisk \\\n\t\t/var/vm/a.img \\\n\t\tformat raw\n\tmemory 1\\\nG\n}\n");
    assert_eq!(vm.disks, [disk("/var/vm/a.img", DiskFormat::Raw)]);
    assert_eq!(vm.memory, Some(1 << 30));
    // Line numbers keep counting the joined lines: the path is on line 3.
    assert_eq!(
        errors("vm \"a\" {\n\tdisk \\\n\t\t/nope\n}\n")[1],
        "vm.conf:3: failed to parse disks: /nope"
    );
    assert_eq!(
        errors("a = \\\n\"b\"\nvm \"x\" {\n\tbogus\n}\n"),
        ["vm.conf:4: syntax error"]
    );
}

#[test]
fn strings_quoted_unquoted_and_escapes() {
    // Single and double quotes; escaped quote, blank and tab.
    let vm = vm_with("\tcmdline 'say \"hi\" it\\'s\\ a\\\ttest'");
    assert_eq!(vm.cmdline.as_deref(), Some("say \"hi\" it's a\ttest"));
    // A newline inside quotes is dropped; a backslash-newline continues.
    let vm = vm_with("\tcmdline \"a\nb \\\nc\"");
    assert_eq!(vm.cmdline.as_deref(), Some("ab c"));
    // Unquoted paths, sizes and tap names need no quotes.
    let vm = common::vm("vm web {\n\tdisk /var/vm/a.img\n\tmemory 512M\n\tinterface tap3\n}\n");
    assert_eq!(vm.name, "web");
    assert_eq!(vm.memory, Some(512 << 20));
    assert_eq!(vm.interfaces[0].tap, Tap::Named("tap3".into()));
}

#[test]
fn adjacent_strings_are_concatenated() {
    let vm = vm("vm \"a\" \"b\" {\n\tdisk \"/var/vm/\" 'a' \".img\"\n\tcmdline \"x\" \"y\"\n}\n");
    assert_eq!(vm.name, "ab");
    assert_eq!(vm.disks[0].path, "/var/vm/a.img");
    assert_eq!(vm.cmdline.as_deref(), Some("xy"));
}

#[test]
fn quoted_keywords_are_strings() {
    let config = config(
        "switch \"switch\" {\n\tinterface \"br0\"\n}\nvm \"vm\" {\n\tdisk \"/var/vm/a.img\"\n}\n",
    );
    assert_eq!(config.switches[0].name, "switch");
    assert_eq!(config.vms[0].name, "vm");
}

#[test]
fn dos_line_ends() {
    let vm = vm("vm \"a\" {\r\n\tdisk /var/vm/a.img\r\n}\r\n");
    assert_eq!(vm.disks.len(), 1);
}

// ----- macros -----------------------------------------------------------------

#[test]
fn macros_expand_outside_quotes() {
    let loaded = parse(
        "img=\"/var/vm\"\nmem = \"1G\"\nvm \"a\" {\n\tdisk $img \"/a.img\"\n\tdisk $img/b.img\n\tmemory $mem\n\tcmdline \"$img\"\n}\n",
    );
    let vm = &loaded.config.vms[0];
    assert_eq!(
        vm.disks,
        [
            disk("/var/vm/a.img", DiskFormat::Raw),
            disk("/var/vm/b.img", DiskFormat::Raw)
        ]
    );
    assert_eq!(vm.memory, Some(1 << 30));
    // Not expanded inside quotes.
    assert_eq!(vm.cmdline.as_deref(), Some("$img"));
    assert!(loaded.warnings.is_empty());
}

#[test]
fn macros_are_retokenised_in_place() {
    let vm = vm(
        "opts = \"memory 2G\"\niface = \"interface tap5 { switch lan }\"\nvm \"a\" {\n\tdisk /var/vm/a.img\n\t$opts\n\t$iface\n}\n",
    );
    assert_eq!(vm.memory, Some(2 << 30));
    assert_eq!(vm.interfaces[0].tap, Tap::Named("tap5".into()));
    assert_eq!(vm.interfaces[0].switch.as_deref(), Some("lan"));
}

#[test]
fn macro_names_and_values() {
    // Names of letters, digits and `_`; a later definition replaces.
    let vm = vm("_a1 = \"/var/vm/a.img\"\n_a1 = \"/var/vm/b.img\"\nvm \"v\" {\n\tdisk $_a1\n}\n");
    assert_eq!(vm.disks[0].path, "/var/vm/b.img");
    // A bare number works as a value.
    let vm = common::vm("n = 2\nvm \"v\" {\n\tdisk /var/vm/a.img\n\tinterfaces $n\n}\n");
    assert_eq!(vm.interfaces.len(), 2);
    // A macro value is not expanded again.
    let errs = errors("a = \"$b\"\nb = \"x\"\nvm \"v\" {\n\tdisk $a\n}\n");
    assert_eq!(errs, ["vm.conf:4: syntax error"]);
}

#[test]
fn command_line_macros_take_precedence() {
    let loaded = try_parse_with(
        "mem = \"1G\"\nvm \"a\" {\n\tdisk /var/vm/a.img\n\tmemory $mem\n\tcmdline $extra\n}\n",
        &["mem=3G", "extra=quiet", "unused=1"],
    )
    .unwrap();
    assert_eq!(loaded.config.vms[0].memory, Some(3 << 30));
    assert_eq!(loaded.config.vms[0].cmdline.as_deref(), Some("quiet"));
    // Neither the overridden file macro nor an unused -D macro is reported.
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn unused_macros_are_warned_about_in_definition_order() {
    let loaded = parse(
        "b = \"x\"\na = \"y\"\nc = \"z\"\nvm \"v\" {\n\tdisk /var/vm/a.img\n\tcmdline $c\n}\n",
    );
    assert_eq!(
        warning_lines(&loaded.warnings),
        ["warning: macro 'b' not used", "warning: macro 'a' not used"]
    );
    // A redefinition after use is unused again.
    let loaded = parse("x = \"1\"\ny = $x\nx = \"2\"\n");
    assert_eq!(
        warning_lines(&loaded.warnings),
        ["warning: macro 'y' not used", "warning: macro 'x' not used"]
    );
}

// ----- includes ---------------------------------------------------------------

#[test]
fn includes_are_read_in_place_and_nest() {
    let host = host()
        .file("/etc/vm.conf", "img = \"/var/vm\"\ninclude \"/etc/vm.d/switches.conf\"\nvm \"last\" {\n\tdisk $img/c.img\n}\n")
        .file("/etc/vm.d/switches.conf", "switch \"a\" {\n\tinterface br0\n}\ninclude \"/etc/vm.d/vms.conf\"\nswitch \"b\" {\n\tinterface br1\n}\n")
        .file("/etc/vm.d/vms.conf", "vm \"first\" {\n\tdisk $img/a.img\n}\n");
    let loaded = conf::load_with(&host, "/etc/vm.conf", &LoadOptions::default()).unwrap();
    let names: Vec<_> = loaded
        .config
        .switches
        .iter()
        .map(|s| (s.id, s.name.as_str()))
        .collect();
    assert_eq!(names, [(1, "a"), (2, "b")]);
    let vms: Vec<_> = loaded.config.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(vms, ["first", "last"]);
    // Locations name the included file and its own lines.
    assert_eq!(
        loaded.config.vms[0].defined_at.to_string(),
        "/etc/vm.d/vms.conf:1"
    );
    assert_eq!(
        loaded.config.switches[1].defined_at.to_string(),
        "/etc/vm.d/switches.conf:5"
    );
    assert_eq!(
        loaded.config.vms[1].defined_at.to_string(),
        "/etc/vm.conf:3"
    );
}

#[test]
fn include_path_may_use_macros() {
    let host = host()
        .file(
            "/etc/vm.conf",
            "dir = \"/etc/vm.d\"\ninclude $dir \"/x.conf\"\n",
        )
        .file("/etc/vm.d/x.conf", "local inet6\n");
    let loaded = conf::load_with(&host, "/etc/vm.conf", &LoadOptions::default()).unwrap();
    assert_eq!(loaded.config.globals.local_inet6, Some(LocalInet6::Random));
}

#[test]
fn macros_defined_in_an_include_are_visible_after_it() {
    let host = host()
        .file(
            "/main.conf",
            "include \"/macros.conf\"\nvm \"v\" {\n\tdisk $d\n}\n",
        )
        .file("/macros.conf", "d = \"/var/vm/a.img\"\nunused = \"x\"\n");
    let loaded = conf::load_with(&host, "/main.conf", &LoadOptions::default()).unwrap();
    assert_eq!(loaded.config.vms[0].disks[0].path, "/var/vm/a.img");
    assert_eq!(
        warning_lines(&loaded.warnings),
        ["warning: macro 'unused' not used"]
    );
}

// ----- global options ---------------------------------------------------------

#[test]
fn global_defaults() {
    let config = config("");
    assert_eq!(config.globals, conf::GlobalOptions::default());
    let settings = config.settings();
    assert_eq!(settings.local_prefix, Ipv4Prefix::DEFAULT_LOCAL);
    assert_eq!(settings.local_prefix.to_string(), "100.64.0.0/10");
    assert_eq!(settings.local_inet6, None);
    assert_eq!(settings.socket_owner, SocketOwner { uid: 0, gid: 0 });
    assert_eq!(settings.agentx, None);
    assert_eq!(settings.staggered_start.delay_secs, 30);
    assert_eq!(
        settings.staggered_start.parallel,
        conf::model::online_cpus()
    );
}

#[test]
fn local_prefix() {
    let prefix = |text: &str| {
        config(&format!("local prefix {text}\n"))
            .globals
            .local_prefix
            .unwrap()
            .to_string()
    };
    assert_eq!(prefix("100.64.0.0/10"), "100.64.0.0/10");
    assert_eq!(prefix("192.168.0.0/16"), "192.168.0.0/16");
    assert_eq!(prefix("10.20.0.0"), "10.20.0.0/16");
    // Shortened forms, quoted or not.
    assert_eq!(prefix("10/8"), "10.0.0.0/8");
    assert_eq!(prefix("\"10/8\""), "10.0.0.0/8");
    assert_eq!(prefix("172.16/12"), "172.16.0.0/12");
    // The last one wins.
    assert_eq!(
        config("local prefix 10/8\nlocal prefix 172.16/12\n")
            .settings()
            .local_prefix
            .to_string(),
        "172.16.0.0/12"
    );
}

#[test]
fn local_inet6() {
    assert_eq!(
        config("local inet6\n").globals.local_inet6,
        Some(LocalInet6::Random)
    );
    let fixed = |text: &str| match config(&format!("local inet6 prefix {text}\n"))
        .globals
        .local_inet6
    {
        Some(LocalInet6::Prefix(prefix)) => prefix.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(fixed("fd00:1:2:3::/64"), "fd00:1:2:3::/64");
    assert_eq!(fixed("fd00:1234::/48"), "fd00:1234::/48");
    assert_eq!(fixed("\"fd00:1234::\""), "fd00:1234::/64");
    assert_eq!(fixed("2001:db8::/32"), "2001:db8::/32");
}

#[test]
fn socket_owner() {
    let owner = |text: &str| {
        config(&format!("socket owner {text}\n"))
            .settings()
            .socket_owner
    };
    assert_eq!(owner("alice"), SocketOwner { uid: 1000, gid: 0 });
    assert_eq!(
        owner("alice:vmusers"),
        SocketOwner {
            uid: 1000,
            gid: 500
        }
    );
    assert_eq!(owner(":vmusers"), SocketOwner { uid: 0, gid: 500 });
    assert_eq!(owner("1234"), SocketOwner { uid: 1234, gid: 0 });
    assert_eq!(owner("\"root:wheel\""), SocketOwner { uid: 0, gid: 0 });
    // Numeric names not in the databases are ids.
    assert_eq!(
        owner("2000:3000"),
        SocketOwner {
            uid: 2000,
            gid: 3000
        }
    );
    // Only the given parts change.
    assert_eq!(
        owner("alice\nsocket owner :staff"),
        SocketOwner { uid: 1000, gid: 50 }
    );
    assert_eq!(
        owner("alice:staff\nsocket owner bob"),
        SocketOwner { uid: 1001, gid: 0 }
    );
}

#[test]
fn agentx() {
    let agentx = |text: &str| {
        config(&format!("agentx{text}\n"))
            .settings()
            .agentx
            .unwrap()
    };
    assert_eq!(
        agentx(""),
        Agentx {
            context: None,
            path: "/var/agentx/master".into()
        }
    );
    assert_eq!(
        agentx(" context vms path /run/agentx.sock"),
        Agentx {
            context: Some("vms".into()),
            path: "/run/agentx.sock".into()
        }
    );
    assert_eq!(
        agentx(" path \"/run/a\" context \"c\""),
        Agentx {
            context: Some("c".into()),
            path: "/run/a".into()
        }
    );
    assert_eq!(
        agentx(&format!(" context {}", "c".repeat(32)))
            .context
            .unwrap()
            .len(),
        32
    );
}

#[test]
fn staggered_start() {
    assert_eq!(
        config("staggered start parallel 2 delay 10\n")
            .settings()
            .staggered_start,
        StaggeredStart {
            parallel: 2,
            delay_secs: 10
        }
    );
    assert_eq!(
        config("staggered start parallel 1 delay 0\n")
            .globals
            .staggered_start,
        Some(StaggeredStart {
            parallel: 1,
            delay_secs: 0
        })
    );
}

// ----- switches ---------------------------------------------------------------

#[test]
fn switch_defaults_and_ids() {
    let config =
        config("switch \"lan\" {\n\tinterface br0\n}\nswitch wan {\n\tinterface bridge0\n}\n");
    let lan = &config.switches[0];
    assert_eq!(
        (lan.id, lan.name.as_str(), lan.interface.as_str()),
        (1, "lan", "br0")
    );
    assert_eq!(lan.group, None);
    assert!(!lan.locked);
    assert_eq!(lan.rdomain, None);
    assert!(lan.up);
    assert_eq!(lan.defined_at.to_string(), "vm.conf:1");
    assert_eq!(
        (config.switches[1].id, config.switches[1].name.as_str()),
        (2, "wan")
    );
}

#[test]
fn switch_options() {
    let config = config(
        "switch \"uplink\" {\n\tinterface veb0\n\tgroup vmnet\n\tlocked lladdr\n\trdomain 7\n\tdown\n\tenable\n}\n",
    );
    let sw = &config.switches[0];
    assert_eq!(sw.interface, "veb0");
    assert_eq!(sw.group.as_deref(), Some("vmnet"));
    assert!(sw.locked);
    assert_eq!(sw.rdomain, Some(7));
    assert!(!sw.up);
    let config =
        self::config("switch s {\n\tinterface br0\n\tdown\n\tup\n\trdomain 0\n\trdomain 255\n}\n");
    assert!(config.switches[0].up);
    assert_eq!(config.switches[0].rdomain, Some(255));
}

#[test]
fn linux_bridges_of_any_name() {
    for name in ["br0", "virbr0", "lan", "vm-bridge.10", "bridge0", "veb1"] {
        let config = config(&format!("switch s {{\n\tinterface \"{name}\"\n}}\n"));
        assert_eq!(config.switches[0].interface, name);
    }
}

#[test]
fn disabled_switches_are_checked_but_not_registered() {
    let config = config(
        "switch a {\n\tinterface br0\n\tdisable\n}\nswitch b {\n\tinterface br1\n}\nswitch a {\n\tinterface br2\n}\n",
    );
    let switches: Vec<_> = config
        .switches
        .iter()
        .map(|s| (s.id, s.name.as_str(), s.interface.as_str()))
        .collect();
    assert_eq!(switches, [(1, "b", "br1"), (2, "a", "br2")]);
}

#[test]
fn switch_ids_continue_from_the_given_first_id() {
    let options = LoadOptions {
        first_switch_id: 5,
        ..LoadOptions::default()
    };
    let loaded = conf::parse(
        &host(),
        "x",
        "switch a {\n\tinterface br0\n}\nswitch b {\n\tinterface br1\n}\n",
        &options,
    )
    .unwrap();
    let ids: Vec<_> = loaded.config.switches.iter().map(|s| s.id).collect();
    assert_eq!(ids, [5, 6]);
}

#[test]
fn one_line_switch_block() {
    let config = config("switch s { interface br0 }\n");
    assert_eq!(config.switches[0].interface, "br0");
}

// ----- virtual machines -------------------------------------------------------

#[test]
fn vm_defaults() {
    let vm = vm("vm \"a\" {\n\tdisk /var/vm/a.img\n}\n");
    assert_eq!(vm.name, "a");
    assert_eq!(vm.instance_of, None);
    assert!(vm.enabled);
    assert_eq!(vm.memory, None);
    assert_eq!(vm.memory_bytes(), DEFAULT_MEMORY);
    assert_eq!(vm.memory_bytes(), 512 << 20);
    assert_eq!(vm.vcpus, None);
    assert_eq!(vm.vcpu_count(), 1);
    assert_eq!(vm.boot, None, "None = default BIOS");
    assert_eq!(vm.boot_device, None);
    assert_eq!(vm.cdrom, None);
    assert!(vm.interfaces.is_empty());
    assert_eq!(vm.interface_count, None);
    assert_eq!(vm.owner, Owner::default());
    assert_eq!(vm.owner.uid_or_root(), 0);
    assert_eq!(vm.owner.gid, None);
    assert_eq!(vm.instances, None);
    assert!(!vm.sev);
    assert_eq!(vm.cmdline, None);
    assert_eq!(vm.initrd, None);
    assert_eq!(vm.defined_at.to_string(), "vm.conf:1");
}

#[test]
fn enable_and_disable() {
    assert!(!vm_with("\tdisable").enabled);
    assert!(vm_with("\tdisable\n\tenable").enabled);
    assert!(vm_with("\tenable").enabled);
}

#[test]
fn boot_kernel_and_devices() {
    let vm = vm_with("\tboot /bsd");
    assert_eq!(vm.boot.as_deref(), Some("/bsd"));
    for (word, device) in [
        ("disk", BootDevice::Disk),
        ("cdrom", BootDevice::Cdrom),
        ("net", BootDevice::Net),
    ] {
        assert_eq!(
            vm_with(&format!("\tboot device {word}")).boot_device,
            Some(device)
        );
    }
    let vm = vm_with("\tboot device net\n\tboot \"/bsd.rd\"");
    assert_eq!(vm.boot_device, Some(BootDevice::Net));
    assert_eq!(vm.boot.as_deref(), Some("/bsd.rd"));
}

#[test]
fn boot_only_vm_is_accepted() {
    // [quirk] upstream rejects a vm.conf VM that only boots a kernel; the
    // project accepts it.
    let vm = vm("vm \"installer\" {\n\tboot \"/bsd.rd\"\n}\n");
    assert_eq!(vm.boot.as_deref(), Some("/bsd.rd"));
    assert!(vm.disks.is_empty() && vm.cdrom.is_none());
}

#[test]
fn cdrom_is_stored_as_given() {
    let vm = vm("vm \"a\" {\n\tcdrom \"/var/vm/not-there-yet.iso\"\n}\n");
    assert_eq!(vm.cdrom.as_deref(), Some("/var/vm/not-there-yet.iso"));
    assert_eq!(vm.boot, None);
}

#[test]
fn disks_in_order_with_formats() {
    let vm = vm(
        "vm \"a\" {\n\tdisk /var/vm/a.img\n\tdisk /var/vm/q.img\n\tdisk /var/vm/b.img format qcow2\n\tdisk /var/vm/q.qcow2 format RAW\n}\n",
    );
    assert_eq!(
        vm.disks,
        [
            disk("/var/vm/a.img", DiskFormat::Raw),
            // The qcow2 magic decides without `format`.
            disk("/var/vm/q.img", DiskFormat::Qcow2),
            disk("/var/vm/b.img", DiskFormat::Qcow2),
            // The keyword is case-insensitive and wins over the contents.
            disk("/var/vm/q.qcow2", DiskFormat::Raw),
        ]
    );
    // The extension does not matter; only the contents.
    assert_eq!(
        vm_with("\tdisk /var/vm/fake.qcow2").disks[1].format,
        DiskFormat::Raw
    );
    assert_eq!(
        vm_with("\tdisk /var/vm/b.img format Qcow2").disks[1].format,
        DiskFormat::Qcow2
    );
}

#[test]
fn disk_format_prefixes() {
    let vm = vm(
        "vm \"a\" {\n\tdisk qcow2:/var/vm/a.img\n\tdisk \"raw:/var/vm/q.img\"\n\tdisk raw:/var/vm/b.img format qcow2\n}\n",
    );
    assert_eq!(
        vm.disks,
        [
            disk("/var/vm/a.img", DiskFormat::Qcow2),
            disk("/var/vm/q.img", DiskFormat::Raw),
            disk("/var/vm/b.img", DiskFormat::Qcow2),
        ]
    );
}

#[test]
fn four_disks_are_allowed() {
    let vm = vm(
        "vm \"a\" {\n\tdisk /var/vm/a.img\n\tdisk /var/vm/b.img\n\tdisk /var/vm/c.img\n\tdisk /var/vm/d.img\n}\n",
    );
    assert_eq!(vm.disks.len(), 4);
}

#[test]
fn memory_sizes() {
    let memory = |text: &str| vm_with(&format!("\tmemory {text}")).memory.unwrap();
    assert_eq!(memory("512M"), 512 << 20);
    assert_eq!(memory("1G"), 1 << 30);
    assert_eq!(memory("1g"), 1 << 30);
    assert_eq!(memory("4.5G"), 4608 << 20);
    assert_eq!(memory("\"2G\""), 2 << 30);
    assert_eq!(memory("128G"), 128 << 30);
    assert_eq!(memory("1M"), 1 << 20);
    // A bare number is bytes; sizes are rounded down to whole MiB.
    assert_eq!(memory("1048576"), 1 << 20);
    assert_eq!(memory("3145729"), 3 << 20);
    assert_eq!(memory("1.7M"), 1 << 20);
    assert_eq!(memory("1536K"), 1 << 20);
}

#[test]
fn linux_extensions() {
    let vm = vm(
        "vm \"l\" {\n\tboot /boot/vmlinuz\n\tinitrd \"/boot/initrd.img\"\n\tcmdline \"console=ttyS0 root=/dev/vda\"\n\tcpus 4\n}\n",
    );
    assert_eq!(vm.boot.as_deref(), Some("/boot/vmlinuz"));
    assert_eq!(vm.initrd.as_deref(), Some("/boot/initrd.img"));
    assert_eq!(vm.cmdline.as_deref(), Some("console=ttyS0 root=/dev/vda"));
    assert_eq!(vm.vcpus, Some(4));
    assert_eq!(vm.vcpu_count(), 4);
    assert_eq!(vm_with("\tcpus 1").vcpus, Some(1));
    assert_eq!(vm_with("\tcpus 64").vcpus, Some(64));
    // They are not reserved words elsewhere.
    let config = config(
        "cpus = \"2\"\ncmdline = \"quiet\"\nvm \"cpus\" {\n\tdisk /var/vm/a.img\n\tcpus $cpus\n\tcmdline $cmdline\n}\n",
    );
    assert_eq!(config.vms[0].name, "cpus");
    assert_eq!(config.vms[0].vcpus, Some(2));
}

#[test]
fn cloud_init_files() {
    let vm = vm(
        "vm \"c\" {\n\tdisk /var/vm/a.img\n\tuser-data \"/var/vm/user-data\"\n\tssh-key /var/vm/id_ed25519.pub\n}\n",
    );
    assert_eq!(vm.user_data.as_deref(), Some("/var/vm/user-data"));
    assert_eq!(vm.ssh_key.as_deref(), Some("/var/vm/id_ed25519.pub"));
    let vm = vm_with("\tuser-data /var/vm/user-data");
    assert_eq!(vm.user_data.as_deref(), Some("/var/vm/user-data"));
    assert_eq!(vm.ssh_key, None);
    assert_eq!(vm_with("").user_data, None);
    // Not reserved words elsewhere: a macro and a VM may be named so.
    let config = config(
        "key = \"/var/vm/id_ed25519.pub\"\nvm \"user-data\" {\n\tdisk /var/vm/a.img\n\tssh-key $key\n}\nvm \"ssh-key\" {\n\tdisk /var/vm/a.img\n}\n",
    );
    assert_eq!(config.vms[0].name, "user-data");
    assert_eq!(
        config.vms[0].ssh_key.as_deref(),
        Some("/var/vm/id_ed25519.pub")
    );
    assert_eq!(config.vms[1].name, "ssh-key");
}

#[test]
fn sev() {
    assert!(vm_with("\tsev").sev);
}

#[test]
fn owners() {
    let owner = |text: &str| vm_with(&format!("\towner {text}")).owner;
    assert_eq!(
        owner("alice"),
        Owner {
            uid: Some(1000),
            gid: None
        }
    );
    assert_eq!(
        owner("alice:vmusers"),
        Owner {
            uid: Some(1000),
            gid: Some(500)
        }
    );
    assert_eq!(
        owner(":vmusers"),
        Owner {
            uid: None,
            gid: Some(500)
        }
    );
    assert_eq!(owner(":vmusers").uid_or_root(), 0);
    assert_eq!(
        owner("1001"),
        Owner {
            uid: Some(1001),
            gid: None
        }
    );
    assert_eq!(
        owner("0"),
        Owner {
            uid: Some(0),
            gid: None
        }
    );
    assert_eq!(
        owner("4242:77"),
        Owner {
            uid: Some(4242),
            gid: Some(77)
        }
    );
    assert_eq!(
        owner("alice\n\towner bob"),
        Owner {
            uid: Some(1001),
            gid: None
        }
    );
}

#[test]
fn duplicate_vm_names_are_skipped() {
    let loaded = parse(
        "vm \"a\" {\n\tdisk /var/vm/a.img\n}\nvm \"a\" {\n\tdisk /var/vm/b.img\n}\nvm \"b\" {\n\tdisk /var/vm/c.img\n}\n",
    );
    let vms: Vec<_> = loaded
        .config
        .vms
        .iter()
        .map(|v| (v.name.as_str(), v.disks[0].path.as_str()))
        .collect();
    assert_eq!(vms, [("a", "/var/vm/a.img"), ("b", "/var/vm/c.img")]);
    assert_eq!(
        warning_lines(&loaded.warnings),
        ["vm \"a\" skipped (already exists)"]
    );
    assert!(loaded.warnings[0].is_debug());
}

#[test]
fn vm_names() {
    for name in ["web1.example.com", "9front", "a-b_c", &"n".repeat(63)] {
        assert_eq!(
            vm(&format!("vm \"{name}\" {{\n\tdisk /var/vm/a.img\n}}\n")).name,
            name
        );
    }
}

#[test]
fn one_line_vm_block() {
    let vm = vm("vm \"a\" { disk /var/vm/a.img }\n");
    assert_eq!(vm.disks.len(), 1);
}

#[test]
fn vms_keep_file_order() {
    let config = config(
        "vm \"z\" {\n\tdisk /var/vm/a.img\n}\nvm \"a\" {\n\tdisk /var/vm/b.img\n\tdisable\n}\nvm \"m\" {\n\tdisk /var/vm/c.img\n}\n",
    );
    let names: Vec<_> = config
        .vms
        .iter()
        .map(|v| (v.name.as_str(), v.enabled))
        .collect();
    assert_eq!(names, [("z", true), ("a", false), ("m", true)]);
}

// ----- interfaces --------------------------------------------------------------

#[test]
fn plain_interface_defaults() {
    let vm = vm_with("\tinterface");
    assert_eq!(vm.interfaces, [Interface::default()]);
    let iface = &vm.interfaces[0];
    assert_eq!(iface.tap, Tap::NextFree);
    assert!(!iface.local && iface.up && !iface.locked);
    assert_eq!(
        (
            iface.switch.as_deref(),
            iface.group.as_deref(),
            iface.lladdr,
            iface.rdomain
        ),
        (None, None, None, None)
    );
    assert_eq!(
        vm_with("\tinterface tap").interfaces,
        [Interface::default()]
    );
}

#[test]
fn local_interfaces() {
    let vm = vm_with("\tlocal interface\n\tlocal interface tap2 { switch \"lan\" }");
    assert!(vm.interfaces[0].local);
    assert_eq!(vm.interfaces[0].switch, None);
    assert!(vm.interfaces[1].local);
    assert_eq!(vm.interfaces[1].tap, Tap::Named("tap2".into()));
    assert_eq!(vm.interfaces[1].switch.as_deref(), Some("lan"));
}

#[test]
fn interface_block_options() {
    let vm = vm_with(
        "\tinterface tap7 {\n\t\tswitch \"uplink\"\n\n\t\t# a comment\n\t\tgroup vms\n\t\tlladdr fe:e1:bb:d1:00:07\n\t\trdomain 3\n\t\tdown\n\t}",
    );
    let iface = &vm.interfaces[0];
    assert_eq!(iface.tap, Tap::Named("tap7".into()));
    assert_eq!(iface.switch.as_deref(), Some("uplink"));
    assert_eq!(iface.group.as_deref(), Some("vms"));
    assert_eq!(iface.lladdr, MacAddr::parse("fe:e1:bb:d1:00:07"));
    assert!(!iface.locked);
    assert_eq!(iface.rdomain, Some(3));
    assert!(!iface.up);
}

#[test]
fn inline_interface_options_with_and_without_commas() {
    for line in [
        "\tinterface tap1 switch lan, locked lladdr 00:11:22:33:44:55, group g, rdomain 9, down",
        "\tinterface tap1 switch lan locked lladdr 00:11:22:33:44:55 group g rdomain 9 down",
        "\tinterface tap1 { switch lan, locked lladdr 00:11:22:33:44:55, group g, rdomain 9, down }",
        "\tinterface tap1 { switch lan\n locked lladdr 00:11:22:33:44:55, group g\n\n rdomain 9 down\n}",
    ] {
        let iface = vm_with(line).interfaces.remove(0);
        assert_eq!(iface.tap, Tap::Named("tap1".into()), "{line}");
        assert_eq!(iface.switch.as_deref(), Some("lan"), "{line}");
        assert!(iface.locked, "{line}");
        assert_eq!(
            iface.lladdr,
            Some(MacAddr([0, 0x11, 0x22, 0x33, 0x44, 0x55])),
            "{line}"
        );
        assert_eq!(iface.group.as_deref(), Some("g"), "{line}");
        assert_eq!(iface.rdomain, Some(9), "{line}");
        assert!(!iface.up, "{line}");
    }
}

#[test]
fn lladdr_without_address_means_random() {
    let vm = vm_with(
        "\tinterface lladdr\n\tinterface locked lladdr\n\tinterface { locked lladdr }\n\tinterface locked lladdr, up",
    );
    for iface in &vm.interfaces {
        assert_eq!(iface.lladdr, None);
    }
    assert!(!vm.interfaces[0].locked);
    assert!(vm.interfaces[1].locked && vm.interfaces[2].locked && vm.interfaces[3].locked);
    assert!(vm.interfaces[3].up);
}

#[test]
fn interface_count_pads_with_plain_interfaces() {
    let vm = vm_with("\tinterfaces 3\n\tlocal interface");
    assert_eq!(vm.interface_count, Some(3));
    assert_eq!(vm.interfaces.len(), 3);
    assert!(vm.interfaces[0].local);
    assert_eq!(
        vm.interfaces[1..],
        [Interface::default(), Interface::default()]
    );
    // A count below the statements adds nothing.
    let vm = vm_with("\tinterface\n\tinterface\n\tinterfaces 1");
    assert_eq!(vm.interfaces.len(), 2);
    let vm = vm_with("\tinterfaces 0");
    assert!(vm.interfaces.is_empty());
    assert_eq!(vm.interface_count, Some(0));
    assert_eq!(vm_with("\tinterfaces 4").interfaces.len(), 4);
}

#[test]
fn four_interfaces_are_allowed() {
    let vm = vm_with("\tinterface\n\tlocal interface\n\tinterface tap9\n\tinterface { switch x }");
    assert_eq!(vm.interfaces.len(), 4);
}

// ----- device checks ----------------------------------------------------------

#[test]
fn any_boot_source_makes_a_vm_valid() {
    assert_eq!(vm("vm a {\n\tdisk /var/vm/a.img\n}\n").disks.len(), 1);
    assert!(vm("vm a {\n\tcdrom /x.iso\n}\n").cdrom.is_some());
    assert!(vm("vm a {\n\tboot /bsd\n}\n").boot.is_some());
    assert!(
        vm("vm a {\n\tboot /bsd\n\tmemory 1G\n\tinterface\n}\n")
            .boot
            .is_some()
    );
}

// ----- instances --------------------------------------------------------------

#[test]
fn instances_name_their_template() {
    let config = config(
        "vm \"tmpl\" {\n\tdisk /var/vm/a.img\n\tallow instance memory\n}\nvm \"tmpl\" instance \"i1\" {\n\tmemory 768M\n}\nvm tmpl instance i2 {\n\tenable\n}\n",
    );
    let vms: Vec<(&str, Option<&str>)> = config
        .vms
        .iter()
        .map(|v| (v.name.as_str(), v.instance_of.as_deref()))
        .collect();
    assert_eq!(
        vms,
        [("tmpl", None), ("i1", Some("tmpl")), ("i2", Some("tmpl"))]
    );
    let i1 = &config.vms[1];
    assert_eq!(i1.memory, Some(768 << 20));
    // Nothing else is set: the daemon fills it from the template.
    assert!(i1.disks.is_empty() && i1.boot.is_none() && i1.interfaces.is_empty());
    assert_eq!(config.vms[2].memory, None);
    assert!(config.vms[2].enabled);
}

#[test]
fn allow_instance_forms() {
    let perms = |text: &str| {
        vm_with(&format!("\tallow instance {text}"))
            .instances
            .unwrap()
    };
    assert_eq!(
        perms("memory"),
        InstancePermissions {
            memory: true,
            ..InstancePermissions::default()
        }
    );
    assert_eq!(
        perms("{ boot, cdrom, disk, instance, interface, memory, cpus, owner alice:vmusers }"),
        InstancePermissions {
            boot: true,
            cdrom: true,
            disk: true,
            instance: true,
            interface: true,
            memory: true,
            cpus: true,
            owner: Owner {
                uid: Some(1000),
                gid: Some(500)
            },
        }
    );
    // Commas are optional; newlines separate too.
    assert_eq!(
        perms("{\n\t\tdisk\n\t\tmemory owner :vmusers\n\t\tboot,\n\t}"),
        InstancePermissions {
            boot: true,
            disk: true,
            memory: true,
            owner: Owner {
                uid: None,
                gid: Some(500)
            },
            ..InstancePermissions::default()
        }
    );
    assert_eq!(
        perms("owner bob").owner,
        Owner {
            uid: Some(1001),
            gid: None
        }
    );
    // Statements add up.
    let vm = vm_with("\tallow instance disk\n\tallow instance { memory }");
    let p = vm.instances.unwrap();
    assert!(p.disk && p.memory && !p.boot);
    // Not given: no permissions object at all.
    assert_eq!(vm_with("").instances, None);
}

// ----- everything at once -------------------------------------------------------

#[test]
fn a_vm_with_every_option() {
    let vm: Vm = vm(concat!(
        "vm \"full\" {\n",
        "\tdisable\n",
        "\tboot \"/bsd\"\n",
        "\tboot device cdrom\n",
        "\tcdrom \"/var/vm/install.iso\"\n",
        "\tdisk \"/var/vm/a.img\"\n",
        "\tdisk \"/var/vm/q.img\" format qcow2\n",
        "\tlocal interface tap4 group lo\n",
        "\tinterface { switch \"lan\", locked lladdr fe:e1:bb:d2:aa:bb }\n",
        "\tinterfaces 3\n",
        "\tmemory 2G\n",
        "\towner alice:staff\n",
        "\tallow instance { memory, owner :vmusers }\n",
        "\tsev\n",
        "\tcpus 2\n",
        "\tcmdline \"quiet\"\n",
        "\tinitrd \"/boot/initrd.img\"\n",
        "}\n",
    ));
    assert!(!vm.enabled);
    assert_eq!(vm.boot.as_deref(), Some("/bsd"));
    assert_eq!(vm.boot_device, Some(BootDevice::Cdrom));
    assert_eq!(vm.cdrom.as_deref(), Some("/var/vm/install.iso"));
    assert_eq!(
        vm.disks,
        [
            disk("/var/vm/a.img", DiskFormat::Raw),
            disk("/var/vm/q.img", DiskFormat::Qcow2)
        ]
    );
    assert_eq!(vm.interfaces.len(), 3);
    assert!(vm.interfaces[0].local);
    assert_eq!(vm.interfaces[0].group.as_deref(), Some("lo"));
    assert_eq!(
        vm.interfaces[1].lladdr.unwrap().to_string(),
        "fe:e1:bb:d2:aa:bb"
    );
    assert!(vm.interfaces[1].locked);
    assert_eq!(vm.interfaces[2], Interface::default());
    assert_eq!(vm.memory_bytes(), 2 << 30);
    assert_eq!(
        vm.owner,
        Owner {
            uid: Some(1000),
            gid: Some(50)
        }
    );
    assert!(vm.instances.unwrap().memory);
    assert!(vm.sev);
    assert_eq!(vm.vcpu_count(), 2);
    assert_eq!(vm.cmdline.as_deref(), Some("quiet"));
    assert_eq!(vm.initrd.as_deref(), Some("/boot/initrd.img"));
}

#[test]
fn memory_host_without_images_rejects_paths() {
    // Paths are resolved through the host: an empty host has none.
    let rejected = conf::parse(
        &MemoryHost::new(),
        "f",
        "vm a {\n\tboot /bsd\n}\n",
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        rejected.error_lines(),
        ["f:2: kernel path not found: No such file or directory"]
    );
}

#[test]
fn socket_owner_and_vm_owner_use_the_host_databases() {
    let host = MemoryHost::new()
        .file("/d", "x")
        .user("zed", 77)
        .group("zgroup", 88);
    let loaded = conf::parse(
        &host,
        "f",
        "socket owner zed:zgroup\nvm a {\n\tdisk /d\n\towner zed\n}\n",
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        loaded.config.settings().socket_owner,
        SocketOwner { uid: 77, gid: 88 }
    );
    assert_eq!(loaded.config.vms[0].owner.uid, Some(77));
}
