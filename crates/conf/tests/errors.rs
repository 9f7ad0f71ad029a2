//! Wrong files and their exact `file:line: message` output, and how the
//! parser goes on after an error as vmd's does: the rest of the statement
//! is skipped, and a syntax error soon after another is not reported.

mod common;

use common::*;
use conf::LoadOptions;

fn vm_errors(options: &str) -> Vec<String> {
    errors(&format!(
        "vm \"v\" {{\n\tdisk /var/vm/a.img\n{options}\n}}\n"
    ))
}

// ----- lexical ------------------------------------------------------------------

#[test]
fn invalid_numbers() {
    assert_eq!(
        vm_errors("\tinterfaces 99999999999999999999"),
        [
            "vm.conf:3: \"99999999999999999999\" invalid number: too large",
            "vm.conf:3: syntax error"
        ]
    );
    assert_eq!(
        vm_errors("\tinterfaces -99999999999999999999"),
        [
            "vm.conf:3: \"-99999999999999999999\" invalid number: too small",
            "vm.conf:3: syntax error"
        ]
    );
}

#[test]
fn overlong_strings() {
    let long = "x".repeat(8192);
    assert_eq!(
        vm_errors(&format!("\tcmdline \"{long}\"")),
        ["vm.conf:3: string too long", "vm.conf:3: syntax error"]
    );
    assert_eq!(
        vm_errors(&format!("\tcdrom /{long}")),
        ["vm.conf:3: string too long", "vm.conf:3: syntax error"]
    );
    // 8191 characters fit.
    let fits = "x".repeat(8191);
    assert_eq!(
        vm_with(&format!("\tcmdline \"{fits}\""))
            .cmdline
            .unwrap()
            .len(),
        8191
    );
}

#[test]
fn unterminated_quote() {
    assert_eq!(
        errors("vm \"v\" {\n\tdisk /var/vm/a.img\n\tcmdline \"abc\n}\n"),
        [
            "vm.conf:3: reached end of file while parsing quoted string",
            "vm.conf:3: syntax error"
        ]
    );
}

#[test]
fn keywords_are_reserved() {
    assert_eq!(
        errors("vm vm {\n\tdisk /var/vm/a.img\n}\n"),
        ["vm.conf:1: syntax error"]
    );
    assert_eq!(errors("disk = \"/x\"\n"), ["vm.conf:1: syntax error"]);
    assert_eq!(
        errors("switch size {\n\tinterface br0\n}\n"),
        ["vm.conf:1: syntax error"]
    );
    assert_eq!(
        errors("vm \"v\" {\n\tdisk add\n}\n"),
        ["vm.conf:2: syntax error"]
    );
}

#[test]
fn statements_are_line_oriented() {
    // The brace must be on the statement's line.
    assert_eq!(
        // The block's lines come right after the error: not reported.
        errors("vm \"v\"\n{\n\tdisk /var/vm/a.img\n}\n"),
        ["vm.conf:1: syntax error"]
    );
    // Nothing may follow the closing brace.
    assert_eq!(
        errors("switch s {\n\tinterface br0\n} vm\n"),
        ["vm.conf:3: syntax error"]
    );
    // Two options on one line.
    assert_eq!(vm_errors("\tmemory 1G sev"), ["vm.conf:3: syntax error"]);
    // Stray tokens: each line's first token is refused, so none is
    // accepted and none but the first is reported.
    assert_eq!(errors("}\n=\n42\n-\n{\n=\n"), ["vm.conf:1: syntax error"]);
    // Three accepted tokens (two newlines and `x`) end the silence.
    assert_eq!(
        errors("}\n\n\nx\n"),
        ["vm.conf:1: syntax error", "vm.conf:4: syntax error"]
    );
}

#[test]
fn end_of_file_inside_a_block() {
    // The end of the file reads as one more newline, and is then blamed on
    // the line after that.
    assert_eq!(
        errors("vm \"v\" {\n\tdisk /var/vm/a.img\n"),
        ["vm.conf:4: syntax error"]
    );
    assert_eq!(
        errors("switch s {\n\tinterface br0"),
        ["vm.conf:3: syntax error"]
    );
    assert_eq!(
        errors("vm \"v\" {\n\tinterface {\n"),
        ["vm.conf:4: syntax error"]
    );
}

// ----- macros -------------------------------------------------------------------

#[test]
fn macro_errors() {
    assert_eq!(
        errors("\"a b\" = \"c\"\n"),
        ["vm.conf:1: macro name cannot contain whitespace"]
    );
    assert_eq!(
        errors("\"a\tb\" = \"c\"\n"),
        ["vm.conf:1: macro name cannot contain whitespace"]
    );
    assert_eq!(
        vm_errors("\tmemory $mem"),
        [
            "vm.conf:3: macro 'mem' not defined",
            "vm.conf:3: syntax error"
        ]
    );
    // Used before being defined.
    assert_eq!(
        errors("vm \"v\" {\n\tdisk $d\n}\nd = \"/var/vm/a.img\"\n"),
        [
            "vm.conf:2: macro 'd' not defined",
            "vm.conf:2: syntax error"
        ]
    );
    assert_eq!(errors("a = \n"), ["vm.conf:1: syntax error"]);
    assert_eq!(errors("a b\n"), ["vm.conf:1: syntax error"]);
    // A -D macro does not hide undefined ones.
    assert_eq!(
        errors_with(
            "vm \"v\" {\n\tdisk $d\n\tmemory $m\n}\n",
            &["d=/var/vm/a.img"]
        ),
        [
            "vm.conf:3: macro 'm' not defined",
            "vm.conf:3: syntax error"
        ]
    );
}

#[test]
fn a_macro_expanding_to_digits_is_a_number_not_a_string() {
    // The value is re-tokenised unquoted, so `3` is a number and cannot
    // stand where a string is required (numbers are accepted as numbers).
    assert_eq!(
        errors("c = \"3\"\nvm \"v\" {\n\tdisk /var/vm/a.img\n\tcmdline $c\n}\n"),
        ["vm.conf:4: syntax error"]
    );
    assert_eq!(
        vm("n = \"3\"\nvm \"v\" {\n\tdisk /var/vm/a.img\n\tcpus $n\n}\n").vcpus,
        Some(3)
    );
}

#[test]
fn unused_macros_are_reported_even_when_the_file_is_rejected() {
    let rejected = try_parse("unused = \"1\"\nbogus\n").unwrap_err();
    assert_eq!(rejected.error_lines(), ["vm.conf:2: syntax error"]);
    assert_eq!(
        warning_lines(&rejected.warnings),
        ["warning: macro 'unused' not used"]
    );
}

// ----- includes -----------------------------------------------------------------

#[test]
fn include_errors() {
    assert_eq!(
        errors("\ninclude \"/etc/vm.d/missing.conf\"\n"),
        ["vm.conf:2: failed to include file /etc/vm.d/missing.conf"]
    );
    assert_eq!(errors("include\n"), ["vm.conf:1: syntax error"]);
    assert_eq!(
        errors("include \"/x\" \"/y\" }\n"),
        ["vm.conf:1: syntax error"]
    );
}

#[test]
fn errors_in_includes_name_the_included_file_and_count() {
    let host = host()
        .file(
            "/etc/vm.conf",
            "# main\ninclude \"/etc/a.conf\"\nbogus main\n",
        )
        .file(
            "/etc/a.conf",
            "\n\nvm \"v\" {\n\tmemory 1K\n\tdisk /var/vm/a.img\n}\ninclude \"/etc/b.conf\"\n",
        )
        .file("/etc/b.conf", "switch s {\n}\n");
    let rejected = conf::load_with(&host, "/etc/vm.conf", &LoadOptions::default()).unwrap_err();
    assert_eq!(
        rejected.error_lines(),
        [
            "memory size must be at least 1MB",
            "/etc/a.conf:4: failed to parse size: 1K",
            // An empty block.
            "/etc/b.conf:2: syntax error",
            "/etc/vm.conf:3: syntax error",
        ]
    );
}

#[test]
fn recursive_includes_end_with_an_error() {
    let host = host().file("/loop.conf", "include \"/loop.conf\"\n");
    let rejected = conf::load_with(&host, "/loop.conf", &LoadOptions::default()).unwrap_err();
    assert_eq!(
        rejected.error_lines(),
        ["/loop.conf:1: failed to include file /loop.conf"]
    );
}

#[test]
fn a_broken_include_does_not_leave_its_block_open() {
    let host = host()
        .file(
            "/main.conf",
            "include \"/half.conf\"\nvm \"after\" {\n\tdisk /var/vm/a.img\n}\n",
        )
        .file("/half.conf", "vm \"half\" {\n\tdisk /var/vm/b.img\n");
    let rejected = conf::load_with(&host, "/main.conf", &LoadOptions::default()).unwrap_err();
    assert_eq!(rejected.error_lines(), ["/half.conf:4: syntax error"]);
}

// ----- global options -------------------------------------------------------------

#[test]
fn local_prefix_errors() {
    assert_eq!(
        errors("local prefix 10.1.2.0/16\n"),
        ["vm.conf:1: invalid local prefix: bad mask"]
    );
    assert_eq!(
        errors("local prefix 10.1.2.0\n"),
        ["vm.conf:1: invalid local prefix: bad mask"]
    );
    assert_eq!(
        errors("local prefix 10.0.0.0/24\n"),
        ["vm.conf:1: invalid local prefix: too large"]
    );
    assert_eq!(
        errors("local prefix 0.0.0.0/0\n"),
        ["vm.conf:1: invalid local prefix: too small"]
    );
    assert_eq!(
        errors("local prefix 300.0.0.0/8\n"),
        ["vm.conf:1: invalid local prefix: invalid format"]
    );
    assert_eq!(
        errors("local prefix fd00::/8\n"),
        ["vm.conf:1: invalid local prefix: invalid format"]
    );
    assert_eq!(errors("local prefix\n"), ["vm.conf:1: syntax error"]);
    assert_eq!(errors("local\n"), ["vm.conf:1: syntax error"]);
    assert_eq!(errors("local interface\n"), ["vm.conf:1: syntax error"]);
}

#[test]
fn local_inet6_errors() {
    assert_eq!(
        errors("local inet6 prefix fd00::/96\n"),
        ["vm.conf:1: invalid local inet6 prefix: too large"]
    );
    assert_eq!(
        errors("local inet6 prefix 10.0.0.0/8\n"),
        ["vm.conf:1: invalid local inet6 prefix: Address family for hostname not supported"]
    );
    assert_eq!(errors("local inet6 bogus\n"), ["vm.conf:1: syntax error"]);
    assert_eq!(errors("local inet6 prefix\n"), ["vm.conf:1: syntax error"]);
}

#[test]
fn socket_owner_errors() {
    assert_eq!(
        errors("socket owner nosuchuser\n"),
        ["vm.conf:1: failed to get user: nosuchuser"]
    );
    assert_eq!(
        errors("socket owner :nosuchgroup\n"),
        ["vm.conf:1: failed to get group: nosuchgroup"]
    );
    assert_eq!(
        errors("socket owner alice:nosuchgroup\n"),
        ["vm.conf:1: failed to get group: nosuchgroup"]
    );
    assert_eq!(
        errors("socket owner -1\n"),
        ["vm.conf:1: failed to get user: -1"]
    );
    // Neither user nor group: root, as with vmd.
    assert!(try_parse("socket owner :\n").is_ok());
    assert_eq!(errors("socket owner\n"), ["vm.conf:1: syntax error"]);
    assert_eq!(errors("socket alice\n"), ["vm.conf:1: syntax error"]);
}

#[test]
fn agentx_errors() {
    assert_eq!(
        errors(&format!("agentx context {}\n", "c".repeat(33))),
        ["vm.conf:1: agentx context too large"]
    );
    assert_eq!(
        errors("agentx path relative/sock\n"),
        ["vm.conf:1: agentx path is not absolute"]
    );
    assert_eq!(
        errors(&format!("agentx path /{}\n", "p".repeat(107))),
        ["vm.conf:1: agentx path too large"]
    );
    assert_eq!(errors("agentx bogus\n"), ["vm.conf:1: syntax error"]);
}

#[test]
fn staggered_start_errors() {
    assert_eq!(
        errors("staggered start parallel 0 delay 10\n"),
        ["vm.conf:1: invalid staggered start parallel: 0"]
    );
    assert_eq!(
        errors("staggered start parallel 2 delay -1\n"),
        ["vm.conf:1: invalid staggered start delay: -1"]
    );
    assert_eq!(
        errors("staggered start parallel 2\n"),
        ["vm.conf:1: syntax error"]
    );
    assert_eq!(
        errors("staggered start delay 2 parallel 1\n"),
        ["vm.conf:1: syntax error"]
    );
    assert_eq!(
        errors("staggered parallel 2 delay 1\n"),
        ["vm.conf:1: syntax error"]
    );
}

// ----- switches --------------------------------------------------------------------

#[test]
fn switch_errors() {
    assert_eq!(
        errors("switch \"uplink\" {\n\tgroup g\n}\n"),
        ["vm.conf:3: switch \"uplink\" is missing interface name"]
    );
    assert_eq!(
        errors("switch \"off\" {\n\tdisable\n}\n"),
        ["vm.conf:3: switch \"off\" is missing interface name"]
    );
    assert_eq!(
        errors("switch s {\n\tinterface a/b\n}\n"),
        ["vm.conf:2: invalid switch interface: a/b"]
    );
    assert_eq!(
        errors("switch s {\n\tinterface sixteen-chars-xx\n}\n"),
        ["vm.conf:2: invalid switch interface: sixteen-chars-xx"]
    );
    assert_eq!(
        errors("switch s {\n\tinterface br0\n\tgroup vmnet0\n}\n"),
        ["vm.conf:3: invalid group name: vmnet0"]
    );
    assert_eq!(
        errors("switch s {\n\tinterface br0\n\tgroup sixteen-chars-xx\n}\n"),
        ["vm.conf:3: invalid group name: sixteen-chars-xx"]
    );
    assert_eq!(
        errors("switch s {\n\tinterface br0\n\trdomain 256\n}\n"),
        ["vm.conf:3: invalid rdomain: 256"]
    );
    assert_eq!(
        errors("switch s {\n\tinterface br0\n\trdomain -1\n}\n"),
        ["vm.conf:3: invalid rdomain: -1"]
    );
    assert_eq!(
        errors("switch s {\n\tinterface br0\n\tlocked\n}\n"),
        ["vm.conf:3: syntax error"]
    );
    assert_eq!(
        errors("switch s {\n\tinterface br0\n\tlladdr\n}\n"),
        ["vm.conf:3: syntax error"]
    );
    assert_eq!(
        errors(&format!(
            "switch \"{}\" {{\n\tinterface br0\n}}\n",
            "s".repeat(64)
        )),
        [format!(
            "vm.conf:3: switch name too long: {}",
            "s".repeat(64)
        )]
    );
    assert_eq!(
        errors("switch a {\n\tinterface br0\n}\nswitch a {\n\tinterface br1\n}\n"),
        ["vm.conf:6: switch \"a\" defined more than once"]
    );
    assert_eq!(
        errors("switch {\n\tinterface br0\n}\n"),
        ["vm.conf:1: syntax error"]
    );
}

// ----- virtual machines ------------------------------------------------------------

#[test]
fn vm_name_errors() {
    let long = "n".repeat(64);
    assert_eq!(
        errors(&format!("vm \"{long}\" {{\n\tdisk /var/vm/a.img\n}}\n")),
        ["vm.conf:1: vm name too long"]
    );
    assert_eq!(
        errors(&format!("vm \"t\" instance \"{long}\" {{\n}}\n")),
        ["vm.conf:1: vm name too long"]
    );
    for bad in ["-x", ".x", "_x", "a b", "a/b", ""] {
        assert_eq!(
            errors(&format!("vm \"{bad}\" {{\n\tdisk /var/vm/a.img\n}}\n")),
            [
                "invalid VM name".to_string(),
                format!("vm.conf:3: vm \"{bad}\" failed: Invalid argument")
            ]
        );
    }
    assert_eq!(
        errors("vm \"t\" instance \"-i\" {\n\tmemory 1G\n}\n"),
        [
            "invalid VM name",
            "vm.conf:3: vm \"-i\" failed: Invalid argument"
        ]
    );
}

#[test]
fn vm_device_errors() {
    assert_eq!(
        // A block is never empty.
        errors("vm \"empty\" {\n}\n"),
        ["vm.conf:2: syntax error"]
    );
    assert_eq!(
        errors(
            "vm \"x\" {\n\tdisable\n\towner alice\n\tsev\n\tcpus 2\n\tallow instance memory\n}\n"
        ),
        [
            "invalid configuration, no devices",
            "vm.conf:7: vm \"x\" failed: Unknown error: 1002"
        ]
    );
    assert_eq!(
        errors("vm \"x\" {\n\tmemory 1G\n\tinterface\n}\n"),
        [
            "no kernel or disk/cdrom specified",
            "vm.conf:4: vm \"x\" failed: Invalid argument"
        ]
    );
    assert_eq!(
        errors("vm \"x\" {\n\tinterfaces 0\n}\n"),
        [
            "no kernel or disk/cdrom specified",
            "vm.conf:3: vm \"x\" failed: Invalid argument"
        ]
    );
    assert_eq!(errors("vm \"x\" { }\n"), ["vm.conf:1: syntax error"]);
}

#[test]
fn boot_errors() {
    assert_eq!(
        vm_errors("\tboot /nonexistent"),
        ["vm.conf:3: kernel path not found: No such file or directory"]
    );
    assert_eq!(
        vm_errors("\tboot /bsd\n\tboot /bsd.rd"),
        ["vm.conf:4: kernel specified more than once"]
    );
    // A later `boot device` replaces an earlier one.
    assert!(
        try_parse("vm \"v\" {\n\tdisk /var/vm/a.img\n\tboot device disk\n\tboot device cdrom\n}\n")
            .is_ok()
    );
    assert_eq!(
        vm_errors("\tboot device floppy"),
        ["vm.conf:3: syntax error"]
    );
    assert_eq!(vm_errors("\tboot device"), ["vm.conf:3: syntax error"]);
    assert_eq!(vm_errors("\tboot"), ["vm.conf:3: syntax error"]);
}

#[test]
fn cdrom_errors() {
    assert_eq!(
        vm_errors("\tcdrom /a.iso\n\tcdrom /b.iso"),
        ["vm.conf:4: cdrom specified more than once"]
    );
    assert_eq!(
        vm_errors(&format!("\tcdrom \"/{}\"", "c".repeat(4095))),
        ["vm.conf:3: cdrom name too long"]
    );
    assert_eq!(
        vm_with(&format!("\tcdrom \"/{}\"", "c".repeat(4094)))
            .cdrom
            .unwrap()
            .len(),
        4095
    );
}

#[test]
fn disk_errors() {
    assert_eq!(
        vm_errors("\tdisk /var/vm/missing.img"),
        [
            "disk /var/vm/missing.img: No such file or directory",
            "vm.conf:3: failed to parse disks: /var/vm/missing.img",
        ]
    );
    assert_eq!(
        vm_errors("\tdisk qcow2:/var/vm/missing.img"),
        [
            "disk /var/vm/missing.img: No such file or directory",
            "vm.conf:3: failed to parse disks: /var/vm/missing.img",
        ]
    );
    assert_eq!(
        vm_errors("\tdisk /var/vm/b.img format vmdk"),
        ["vm.conf:3: unrecognized disk format vmdk"]
    );
    assert_eq!(
        vm_errors("\tdisk /var/vm/b.img format"),
        ["vm.conf:3: syntax error"]
    );
    assert_eq!(
        vm_errors(
            "\tdisk /var/vm/b.img\n\tdisk /var/vm/c.img\n\tdisk /var/vm/d.img\n\tdisk /var/vm/e.img"
        ),
        [
            "too many disks",
            "vm.conf:6: failed to parse disks: /var/vm/e.img"
        ]
    );
}

#[test]
fn memory_errors() {
    assert_eq!(
        vm_errors("\tmemory 1023K"),
        [
            "memory size must be at least 1MB",
            "vm.conf:3: failed to parse size: 1023K"
        ]
    );
    assert_eq!(
        vm_errors("\tmemory 1048575"),
        [
            "memory size must be at least 1MB",
            "vm.conf:3: failed to parse size: 1048575"
        ]
    );
    assert_eq!(
        vm_errors("\tmemory -1"),
        [
            "memory size must be at least 1MB",
            "vm.conf:3: failed to parse size: -1"
        ]
    );
    assert_eq!(
        vm_errors("\tmemory 0"),
        [
            "memory size must be at least 1MB",
            "vm.conf:3: failed to parse size: 0"
        ]
    );
    assert_eq!(
        vm_errors("\tmemory 129G"),
        [
            "memory size too large (limit is 128G)",
            "vm.conf:3: failed to parse size: 129G"
        ]
    );
    assert_eq!(
        vm_errors("\tmemory 137438953473"),
        [
            "memory size too large (limit is 128G)",
            "vm.conf:3: failed to parse size: 137438953473"
        ]
    );
    assert_eq!(
        vm_errors("\tmemory 4GB"),
        [
            "invalid memory size: 4GB: Invalid argument",
            "vm.conf:3: failed to parse size: 4GB"
        ]
    );
    assert_eq!(
        vm_errors("\tmemory 1G\n\tmemory 2G"),
        ["vm.conf:4: argument specified more than once"]
    );
    assert_eq!(
        vm_errors("\tmemory 1G\n\tmemory 2097152"),
        ["vm.conf:4: memory specified more than once"]
    );
    assert_eq!(vm_errors("\tmemory"), ["vm.conf:3: syntax error"]);
}

#[test]
fn interface_errors() {
    assert_eq!(
        vm_errors("\tinterface\n\tinterface\n\tinterface\n\tinterface\n\tlocal interface"),
        ["vm.conf:7: too many interfaces: 5"]
    );
    assert_eq!(
        vm_errors("\tinterfaces 5"),
        ["vm.conf:3: too many interfaces: 5"]
    );
    assert_eq!(
        vm_errors("\tinterfaces -1"),
        ["vm.conf:3: too many interfaces: -1"]
    );
    assert_eq!(
        vm_errors("\tinterfaces 1\n\tinterfaces 2"),
        ["vm.conf:4: interfaces specified more than once"]
    );
    assert_eq!(vm_errors("\tinterfaces two"), ["vm.conf:3: syntax error"]);
    assert_eq!(
        vm_errors("\tinterface eth0"),
        ["vm.conf:3: invalid interface: eth0"]
    );
    assert_eq!(
        vm_errors("\tinterface tap1234567890123"),
        ["vm.conf:3: invalid interface: tap1234567890123"]
    );
    assert_eq!(
        vm_errors("\tinterface lladdr zz:11:22:33:44:55"),
        ["vm.conf:3: invalid address: zz:11:22:33:44:55\n"]
    );
    assert_eq!(
        vm_errors("\tinterface lladdr 00:11:22:33:44"),
        ["vm.conf:3: invalid address: 00:11:22:33:44\n"]
    );
    assert_eq!(
        vm_errors("\tinterface { group lan0 }"),
        ["vm.conf:3: invalid group name: lan0"]
    );
    assert_eq!(
        vm_errors("\tinterface rdomain 300"),
        ["vm.conf:3: invalid rdomain: 300"]
    );
    assert_eq!(
        vm_errors(&format!("\tinterface switch \"{}\"", "s".repeat(64))),
        [format!(
            "vm.conf:3: switch name too long: {}",
            "s".repeat(64)
        )]
    );
    assert_eq!(vm_errors("\tinterface locked"), ["vm.conf:3: syntax error"]);
    assert_eq!(
        vm_errors("\tinterface { memory 1G }"),
        ["vm.conf:3: syntax error"]
    );
    assert_eq!(vm_errors("\tinterface switch"), ["vm.conf:3: syntax error"]);
    assert_eq!(vm_errors("\tlocal"), ["vm.conf:3: syntax error"]);
    assert_eq!(
        vm_errors("\tlocal prefix 10/8"),
        ["vm.conf:3: syntax error"]
    );
}

#[test]
fn owner_errors() {
    assert_eq!(
        vm_errors("\towner nosuchuser"),
        ["vm.conf:3: failed to get user: nosuchuser"]
    );
    assert_eq!(
        vm_errors("\towner alice:nosuchgroup"),
        ["vm.conf:3: failed to get group: nosuchgroup"]
    );
    assert_eq!(
        vm_errors("\towner :nosuchgroup"),
        ["vm.conf:3: failed to get group: nosuchgroup"]
    );
    assert_eq!(
        vm_errors("\towner 4294967295"),
        ["vm.conf:3: failed to get user: 4294967295"]
    );
    assert_eq!(
        vm_errors("\tallow instance { memory, owner nosuchuser }"),
        ["vm.conf:3: failed to get user: nosuchuser"]
    );
    assert_eq!(vm_errors("\towner"), ["vm.conf:3: syntax error"]);
}

#[test]
fn allow_instance_errors() {
    assert_eq!(vm_errors("\tallow instance"), ["vm.conf:3: syntax error"]);
    assert_eq!(vm_errors("\tallow memory"), ["vm.conf:3: syntax error"]);
    assert_eq!(
        vm_errors("\tallow instance sev"),
        ["vm.conf:3: syntax error"]
    );
    assert_eq!(
        vm_errors("\tallow instance { memory, bogus }"),
        ["vm.conf:3: syntax error"]
    );
    assert_eq!(
        vm_errors("\tallow instance memory, disk"),
        ["vm.conf:3: syntax error"]
    );
}

#[test]
fn linux_extension_errors() {
    assert_eq!(
        vm_errors("\tcpus 0"),
        ["vm.conf:3: invalid number of cpus: 0"]
    );
    assert_eq!(
        vm_errors("\tcpus 65"),
        ["vm.conf:3: invalid number of cpus: 65"]
    );
    assert_eq!(
        vm_errors("\tcpus 2\n\tcpus 3"),
        ["vm.conf:4: cpus specified more than once"]
    );
    assert_eq!(vm_errors("\tcpus two"), ["vm.conf:3: syntax error"]);
    assert_eq!(
        vm_errors("\tcmdline a\n\tcmdline b"),
        ["vm.conf:4: cmdline specified more than once"]
    );
    assert_eq!(
        vm_errors("\tinitrd /missing"),
        ["vm.conf:3: initrd path not found: No such file or directory"]
    );
    assert_eq!(
        vm_errors("\tinitrd /boot/initrd.img\n\tinitrd /boot/initrd.img"),
        ["vm.conf:4: initrd specified more than once"]
    );
    assert_eq!(
        vm_errors("\tuser-data /missing"),
        ["vm.conf:3: user-data path not found: No such file or directory"]
    );
    assert_eq!(
        vm_errors("\tssh-key /missing.pub"),
        ["vm.conf:3: ssh-key path not found: No such file or directory"]
    );
    assert_eq!(
        vm_errors("\tuser-data /var/vm/user-data\n\tuser-data /var/vm/user-data"),
        ["vm.conf:4: user-data specified more than once"]
    );
    assert_eq!(
        vm_errors("\tssh-key /var/vm/id_ed25519.pub\n\tssh-key /var/vm/id_ed25519.pub"),
        ["vm.conf:4: ssh-key specified more than once"]
    );
    assert_eq!(vm_errors("\tuser-data"), ["vm.conf:3: syntax error"]);
    assert_eq!(vm_errors("\tssh-key 3"), ["vm.conf:3: syntax error"]);
}

#[test]
fn unknown_vm_options() {
    assert_eq!(vm_errors("\tbogus"), ["vm.conf:3: syntax error"]);
    assert_eq!(vm_errors("\tswitch lan"), ["vm.conf:3: syntax error"]);
    assert_eq!(vm_errors("\tgroup g"), ["vm.conf:3: syntax error"]);
    assert_eq!(vm_errors("\tvcpus 2"), ["vm.conf:3: syntax error"]);
}

// ----- error recovery: every error, once -------------------------------------------

#[test]
fn after_an_error_the_rest_of_its_block_is_passed_over() {
    let text = "\
a b c
local prefix 10.1.2.0/16
switch s {
\tinterface br0
\tbogus
\tgroup g1
}
vm \"v\" {
\tdisk /var/vm/missing.img
\tmemory 1K
\tinterface eth0 { lladdr nope }
\tallow instance { memory, bogus }
\tcpus 99
\tboot device floppy
\tdisk /var/vm/a.img
}
vm \"ok\" {
\tdisk /var/vm/a.img
}
vm \"-bad\" {
\tdisk /var/vm/a.img
}
vm \"w\" {
\tmemory $undefined
}
";
    let rejected = try_parse(text).unwrap_err();
    assert_eq!(
        rejected.error_lines(),
        [
            "vm.conf:1: syntax error",
            // A wrong value is reported even right after another error.
            "vm.conf:2: invalid local prefix: bad mask",
            "vm.conf:5: syntax error",
            // Lines 6 and 7 are the rest of the switch block.
            "disk /var/vm/missing.img: No such file or directory",
            "vm.conf:9: failed to parse disks: /var/vm/missing.img",
            // Lines 10 to 16 are the rest of vm "v".
            "invalid VM name",
            "vm.conf:22: vm \"-bad\" failed: Invalid argument",
            "vm.conf:24: macro 'undefined' not defined",
            "vm.conf:24: syntax error",
        ]
    );
}

#[test]
fn a_broken_block_header_skips_the_whole_block() {
    // The block's lines are refused as top-level lines, in silence.
    assert_eq!(
        errors(
            "vm \"v\" sev {\n\tdisk /var/vm/a.img\n\tinterface { switch x }\n}\nvm \"w\" {\n\tmemory 1K\n}\n"
        ),
        [
            "vm.conf:1: syntax error",
            "memory size must be at least 1MB",
            "vm.conf:6: failed to parse size: 1K"
        ]
    );
}

#[test]
fn an_error_in_a_nested_block_ends_the_outer_one() {
    // `switch lan` reads as the start of a switch statement: its third
    // token is refused, and reported.
    assert_eq!(
        vm_errors(
            "\tinterface {\n\t\tbogus option\n\t\tswitch lan\n\t\tgroup g9\n\t}\n\tmemory 1K"
        ),
        ["vm.conf:4: syntax error", "vm.conf:5: syntax error"]
    );
    assert_eq!(
        errors("vm \"v\" { disk /var/vm/a.img sev }\nvm \"w\" {\n\tmemory 1K\n}\n"),
        [
            "vm.conf:1: syntax error",
            "memory size must be at least 1MB",
            "vm.conf:3: failed to parse size: 1K"
        ]
    );
}

#[test]
fn blocks_with_errors_are_not_added_and_cause_no_follow_up_errors() {
    // The invalid interface name would otherwise also be a missing one.
    assert_eq!(
        errors("switch s {\n\tinterface a/b\n}\n"),
        ["vm.conf:2: invalid switch interface: a/b"]
    );
    // The missing disk would otherwise also be "no kernel or disk/cdrom".
    assert_eq!(
        errors("vm \"v\" {\n\tdisk /var/vm/missing.img\n}\n"),
        [
            "disk /var/vm/missing.img: No such file or directory",
            "vm.conf:2: failed to parse disks: /var/vm/missing.img",
        ]
    );
}

#[test]
fn check_prints_errors_then_warnings_and_exits_1() {
    let host = host().file(
        "/etc/vm.conf",
        "x = \"1\"\nvm \"v\" {\n\tmemory 1K\n\tdisk /var/vm/a.img\n}\nlocal prefix 10/33\n",
    );
    let check = conf::check_with(&host, "/etc/vm.conf", &LoadOptions::default());
    assert_eq!(
        check.lines,
        [
            "memory size must be at least 1MB",
            "/etc/vm.conf:3: failed to parse size: 1K",
            "/etc/vm.conf:6: invalid local prefix: too large",
            "warning: macro 'x' not used",
        ]
    );
    assert!(!check.ok);
    assert_eq!(check.exit_code(), 1);
}

#[test]
fn unreadable_main_file_is_an_error() {
    let host = host().unreadable_file("/etc/vm.conf");
    let rejected = conf::load_with(&host, "/etc/vm.conf", &LoadOptions::default()).unwrap_err();
    assert_eq!(
        rejected.error_lines(),
        ["failed to open /etc/vm.conf: Permission denied"]
    );
    let check = conf::check_with(&host, "/etc/vm.conf", &LoadOptions::default());
    assert_eq!(
        check.lines,
        ["failed to open /etc/vm.conf: Permission denied"]
    );
    assert_eq!(check.exit_code(), 1);
}
