//! `vmd -n` against OpenBSD's vmd, message by message: for each message its
//! parser can print, a file that makes it, and exactly the lines vmd prints
//! on stderr (the message with or without `file:line: `, what vmd logs
//! before it, what follows it) and its exit status. Messages of the Linux
//! extensions are at the end, in the same style.

mod common;

use conf::{LoadOptions, Origin};

const FILE: &str = "/etc/vm.conf";

struct Row {
    what: &'static str,
    text: &'static str,
    stderr: &'static [&'static str],
    status: i32,
}

const fn row(
    what: &'static str,
    text: &'static str,
    stderr: &'static [&'static str],
    status: i32,
) -> Row {
    Row {
        what,
        text,
        stderr,
        status,
    }
}

const ROWS: &[Row] = &[
    // ----- what `-n` does not check: vm_register's business -----
    row(
        "a VM with nothing to boot",
        "vm \"v\" {\n\tmemory 1G\n}\n",
        &["configuration OK"],
        0,
    ),
    row(
        "a VM with no devices at all (an empty block is a syntax error)",
        "vm \"v\" {\n\tdisable\n}\n",
        &["configuration OK"],
        0,
    ),
    row(
        "a VM name vmd would refuse",
        "vm \"-v\" {\n\tdisk /var/vm/a.img\n}\n",
        &["configuration OK"],
        0,
    ),
    row(
        "two switches of one name",
        "switch \"s\" {\n\tinterface br0\n}\nswitch \"s\" {\n\tinterface br1\n}\n",
        &["configuration OK"],
        0,
    ),
    // ----- lexer: the message, then `syntax error`, and the next line is
    // ----- skipped as the rest of the error's line
    row(
        "undefined macro",
        "vm \"v\" {\n\tmemory $mem\n}\nvm \"w\" {\n\tmemory 1K\n}\n",
        &[
            "/etc/vm.conf:2: macro 'mem' not defined",
            "/etc/vm.conf:2: syntax error",
            "memory size must be at least 1MB",
            "/etc/vm.conf:5: failed to parse size: 1K",
        ],
        1,
    ),
    row(
        "number out of range",
        "vm \"v\" {\n\tinterfaces 99999999999999999999\n}\n",
        &[
            "/etc/vm.conf:2: \"99999999999999999999\" invalid number: too large",
            "/etc/vm.conf:2: syntax error",
        ],
        1,
    ),
    row(
        "file ends inside a quoted string",
        "vm \"v\" {\n\tdisk \"/var/vm/a.img\n}\n",
        &[
            "/etc/vm.conf:2: reached end of file while parsing quoted string",
            "/etc/vm.conf:2: syntax error",
        ],
        1,
    ),
    // ----- grammar -----
    row(
        "syntax error",
        "vm \"v\" {\n\tbogus\n}\n",
        &["/etc/vm.conf:2: syntax error"],
        1,
    ),
    row(
        "end of file inside a block: the line after the last",
        "vm \"v\" {\n\tdisk /var/vm/a.img\n",
        &["/etc/vm.conf:4: syntax error"],
        1,
    ),
    row(
        "an empty block",
        "switch \"s\" {\n}\n",
        &["/etc/vm.conf:2: syntax error"],
        1,
    ),
    row(
        "the rest of a broken block is passed over",
        "vm \"v\" {\n\tbogus\n\tdisk /nonexistent\n\tmemory 1K\n}\n",
        &["/etc/vm.conf:2: syntax error"],
        1,
    ),
    row(
        "a syntax error soon after another is not reported",
        "a b\nc d\nvm \"v\" {\n\tmemory 1K\n}\n",
        &[
            "/etc/vm.conf:1: syntax error",
            "memory size must be at least 1MB",
            "/etc/vm.conf:4: failed to parse size: 1K",
        ],
        1,
    ),
    // ----- top level -----
    row(
        "macro name with whitespace",
        "\"a b\" = \"1\"\n",
        &["/etc/vm.conf:1: macro name cannot contain whitespace"],
        1,
    ),
    row(
        "include of a missing file",
        "include \"/etc/vm.d/none.conf\"\n",
        &["/etc/vm.conf:1: failed to include file /etc/vm.d/none.conf"],
        1,
    ),
    row(
        "local prefix: length out of range",
        "local prefix 100.64.0.0/17\n",
        &["/etc/vm.conf:1: invalid local prefix: too large"],
        1,
    ),
    row(
        "local prefix: not an address",
        "local prefix \"a.b.c.d\"\n",
        &["/etc/vm.conf:1: invalid local prefix: invalid format"],
        1,
    ),
    row(
        "local prefix: host bits set",
        "local prefix 10.1.2.0/16\n",
        &["/etc/vm.conf:1: invalid local prefix: bad mask"],
        1,
    ),
    row(
        "local inet6 prefix: length out of range",
        "local inet6 prefix fd00::/65\n",
        &["/etc/vm.conf:1: invalid local inet6 prefix: too large"],
        1,
    ),
    row(
        "local inet6 prefix: getaddrinfo's reason",
        "local inet6 prefix \"zz::\"\n",
        &["/etc/vm.conf:1: invalid local inet6 prefix: Name or service not known"],
        1,
    ),
    row(
        "unknown user",
        "socket owner nosuchuser\n",
        &["/etc/vm.conf:1: failed to get user: nosuchuser"],
        1,
    ),
    row(
        "unknown group",
        "socket owner alice:nosuchgroup\n",
        &["/etc/vm.conf:1: failed to get group: nosuchgroup"],
        1,
    ),
    row(
        "agentx context too large",
        "agentx context \"0123456789012345678901234567890123\"\n",
        &["/etc/vm.conf:1: agentx context too large"],
        1,
    ),
    row(
        "agentx path not absolute",
        "agentx path \"agentx.sock\"\n",
        &["/etc/vm.conf:1: agentx path is not absolute"],
        1,
    ),
    row(
        "unused macro: a warning after everything, no place",
        "x = \"1\"\n",
        &["warning: macro 'x' not used", "configuration OK"],
        0,
    ),
    // ----- switch -----
    row(
        "switch without interface: at its closing brace",
        "switch \"s\" {\n\tdisable\n}\n",
        &["/etc/vm.conf:3: switch \"s\" is missing interface name"],
        1,
    ),
    row(
        "invalid switch interface",
        "switch \"s\" {\n\tinterface \"a/b\"\n}\n",
        &["/etc/vm.conf:2: invalid switch interface: a/b"],
        1,
    ),
    row(
        "invalid group name",
        "switch \"s\" {\n\tinterface br0\n\tgroup g1\n}\n",
        &["/etc/vm.conf:3: invalid group name: g1"],
        1,
    ),
    row(
        "invalid rdomain",
        "switch \"s\" {\n\tinterface br0\n\trdomain 256\n}\n",
        &["/etc/vm.conf:3: invalid rdomain: 256"],
        1,
    ),
    // ----- vm -----
    row(
        "vm name too long",
        "vm \"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\" {\n\tdisk /var/vm/a.img\n}\n",
        &["/etc/vm.conf:1: vm name too long"],
        1,
    ),
    row(
        "template name too long",
        "vm \"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\" instance \"i\" {\n\tmemory 1G\n}\n",
        &[
            "/etc/vm.conf:1: vm vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv name too long",
        ],
        1,
    ),
    row(
        "missing disk: vmd's cause without a place, then the error",
        "vm \"v\" {\n\tdisk /var/vm/none.img\n}\n",
        &[
            "disk /var/vm/none.img: No such file or directory",
            "/etc/vm.conf:2: failed to parse disks: /var/vm/none.img",
        ],
        1,
    ),
    row(
        "too many disks",
        "vm \"v\" {\n\tdisk /var/vm/a.img\n\tdisk /var/vm/b.img\n\tdisk /var/vm/c.img\n\tdisk /var/vm/d.img\n\tdisk /var/vm/e.img\n}\n",
        &[
            "too many disks",
            "/etc/vm.conf:6: failed to parse disks: /var/vm/e.img",
        ],
        1,
    ),
    row(
        "unrecognized disk format",
        "vm \"v\" {\n\tdisk /var/vm/a.img format vmdk\n}\n",
        &["/etc/vm.conf:2: unrecognized disk format vmdk"],
        1,
    ),
    row(
        "kernel path not found",
        "vm \"v\" {\n\tboot /nonexistent\n}\n",
        &["/etc/vm.conf:2: kernel path not found: No such file or directory"],
        1,
    ),
    row(
        "kernel twice",
        "vm \"v\" {\n\tboot /bsd\n\tboot /bsd.rd\n}\n",
        &["/etc/vm.conf:3: kernel specified more than once"],
        1,
    ),
    row(
        "boot device twice is not an error",
        "vm \"v\" {\n\tdisk /var/vm/a.img\n\tboot device cdrom\n\tboot device disk\n}\n",
        &["configuration OK"],
        0,
    ),
    row(
        "cdrom twice",
        "vm \"v\" {\n\tcdrom /a.iso\n\tcdrom /b.iso\n}\n",
        &["/etc/vm.conf:3: cdrom specified more than once"],
        1,
    ),
    row(
        "interfaces twice",
        "vm \"v\" {\n\tinterfaces 1\n\tinterfaces 2\n}\n",
        &["/etc/vm.conf:3: interfaces specified more than once"],
        1,
    ),
    row(
        "interfaces out of range",
        "vm \"v\" {\n\tinterfaces 5\n}\n",
        &["/etc/vm.conf:2: too many interfaces: 5"],
        1,
    ),
    row(
        "a fifth interface",
        "vm \"v\" {\n\tinterface tap\n\tinterface tap\n\tinterface tap\n\tinterface tap\n\tinterface tap\n}\n",
        &["/etc/vm.conf:6: too many interfaces: 5"],
        1,
    ),
    row(
        "invalid interface",
        "vm \"v\" {\n\tinterface eth0\n}\n",
        &["/etc/vm.conf:2: invalid interface: eth0"],
        1,
    ),
    row(
        "interface switch name too long",
        "vm \"v\" {\n\tinterface { switch \"ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss\" }\n}\n",
        &[
            "/etc/vm.conf:2: switch name too long: ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss",
        ],
        1,
    ),
    row(
        "invalid MAC address: vmd's message ends in a newline of its own",
        "vm \"v\" {\n\tinterface { lladdr nope }\n}\n",
        &["/etc/vm.conf:2: invalid address: nope", ""],
        1,
    ),
    row(
        "memory too small: the cause without a place, then the error",
        "vm \"v\" {\n\tmemory 1024\n}\n",
        &[
            "memory size must be at least 1MB",
            "/etc/vm.conf:2: failed to parse size: 1024",
        ],
        1,
    ),
    row(
        "memory too large",
        "vm \"v\" {\n\tmemory 129G\n}\n",
        &[
            "memory size too large (limit is 128G)",
            "/etc/vm.conf:2: failed to parse size: 129G",
        ],
        1,
    ),
    row(
        "memory not a size",
        "vm \"v\" {\n\tmemory 4GB\n}\n",
        &[
            "invalid memory size: 4GB: Invalid argument",
            "/etc/vm.conf:2: failed to parse size: 4GB",
        ],
        1,
    ),
    row(
        "memory twice, as a number",
        "vm \"v\" {\n\tmemory 1G\n\tmemory 1073741824\n}\n",
        &["/etc/vm.conf:3: memory specified more than once"],
        1,
    ),
    row(
        "memory twice, as a size",
        "vm \"v\" {\n\tmemory 1G\n\tmemory 2G\n}\n",
        &["/etc/vm.conf:3: argument specified more than once"],
        1,
    ),
    row(
        "vm owner: unknown user",
        "vm \"v\" {\n\towner nosuchuser\n}\n",
        &["/etc/vm.conf:2: failed to get user: nosuchuser"],
        1,
    ),
    // ----- Linux extensions, same style -----
    row(
        "cpus out of range",
        "vm \"v\" {\n\tcpus 0\n}\n",
        &["/etc/vm.conf:2: invalid number of cpus: 0"],
        1,
    ),
    row(
        "initrd not found",
        "vm \"v\" {\n\tinitrd /nonexistent\n}\n",
        &["/etc/vm.conf:2: initrd path not found: No such file or directory"],
        1,
    ),
    row(
        "cmdline twice",
        "vm \"v\" {\n\tcmdline a\n\tcmdline b\n}\n",
        &["/etc/vm.conf:3: cmdline specified more than once"],
        1,
    ),
];

#[test]
fn every_message_as_openbsd_vmd_n_prints_it() {
    let mut failures = Vec::new();
    for row in ROWS {
        let host = common::host().file(FILE, row.text);
        let check = conf::check_with(&host, FILE, &LoadOptions::default());
        if check.lines != row.stderr || check.exit_code() != row.status {
            failures.push(format!(
                "{}:\n  expected {:?} (exit {})\n  got      {:?} (exit {})",
                row.what,
                row.stderr,
                row.status,
                check.lines,
                check.exit_code()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_main_file() {
    let host = common::host().unreadable_file(FILE);
    let check = conf::check_with(&host, FILE, &LoadOptions::default());
    assert_eq!(
        check.lines,
        ["failed to open /etc/vm.conf: Permission denied"]
    );
    assert_eq!(check.exit_code(), 1);
    // The default file may be missing.
    let check = conf::check_with(&common::host(), FILE, &LoadOptions::default());
    assert_eq!(check.lines, ["configuration OK"]);
    assert_eq!(check.exit_code(), 0);
    // One named with -f may not.
    let explicit = LoadOptions {
        origin: Origin::Explicit,
        ..LoadOptions::default()
    };
    let check = conf::check_with(&common::host(), "/etc/none.conf", &explicit);
    assert_eq!(
        check.lines,
        ["failed to open /etc/none.conf: No such file or directory"]
    );
    assert_eq!(check.exit_code(), 1);
}

#[test]
fn registering_checks_what_vmd_n_does_not() {
    // The same files rejected when the daemon loads them, in vmd's words:
    // the cause it logs, then the block's failure at its closing brace.
    let rejected = |text: &str| {
        conf::parse(&common::host(), "vm.conf", text, &LoadOptions::default())
            .unwrap_err()
            .error_lines()
    };
    assert_eq!(
        rejected("vm \"v\" {\n\tmemory 1G\n}\n"),
        [
            "no kernel or disk/cdrom specified",
            "vm.conf:3: vm \"v\" failed: Invalid argument"
        ]
    );
    assert_eq!(
        rejected("vm \"v\" {\n\tdisable\n}\n"),
        [
            "invalid configuration, no devices",
            "vm.conf:3: vm \"v\" failed: Unknown error: 1002"
        ]
    );
    assert_eq!(
        rejected("vm \"-v\" {\n\tdisk /var/vm/a.img\n}\n"),
        [
            "invalid VM name",
            "vm.conf:3: vm \"-v\" failed: Invalid argument"
        ]
    );
    assert_eq!(
        rejected("switch \"s\" {\n\tinterface br0\n}\nswitch \"s\" {\n\tinterface br1\n}\n"),
        ["vm.conf:6: switch \"s\" defined more than once"]
    );
}
