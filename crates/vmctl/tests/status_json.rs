//! `vmctl status -j` against a fake vmd: the output validates against
//! docs/status-json-schema.json, carries the same facts as the table row
//! by row, and follows `-r`, the id operand and the exit status of the
//! table. The schema itself is checked to reject what vmctl must never
//! print, so a schema that accepts anything fails here.

mod common;

use common::{FakeVmd, listing, vm_info};
use proto::control::{
    BootDevice, DiskDetails, DiskFormat, ImageDetails, NicDetails, Request, Response, VmDetails,
    VmEnd, VmInfo, state,
};
use serde_json::{Value, json};

fn schema_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/status-json-schema.json")
}

/// The compiled schema; `validate` says whether a value conforms.
struct Schema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Schema {
    fn load() -> Schema {
        let path = schema_path();
        let text = std::fs::read_to_string(&path).expect("read the schema");
        let value: Value = serde_json::from_str(&text).expect("the schema is JSON");
        let url = format!("file://{}", std::fs::canonicalize(&path).unwrap().display());
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler.add_resource(&url, value).unwrap();
        let index = compiler
            .compile(&url, &mut schemas)
            .unwrap_or_else(|e| panic!("the schema compiles: {e:#}"));
        Schema { schemas, index }
    }

    fn check(&self, value: &Value) -> Result<(), String> {
        self.schemas
            .validate(value, self.index)
            .map_err(|e| format!("{e:#}"))
    }
}

/// Every kind of row: running, paused, stopping, waiting, stopped with an
/// owner group, an owner the passwd database does not know, several
/// vCPUs, a running VM without a console.
fn vms() -> Vec<VmInfo> {
    let mut running = vm_info(1, "web", Some("/dev/pts/8"));
    running.max_mem = 1 << 30;
    running.cur_mem = 92_379_955;
    running.vcpus = 4;
    let mut paused = vm_info(2, "paused-one", Some("/dev/pts/9"));
    paused.state = state::RUNNING | state::PAUSED;
    paused.owner_uid = 4_000_000;
    let mut stopping = vm_info(3, "going", Some("/dev/pts/10"));
    stopping.state = state::RUNNING | state::SHUTDOWN;
    let mut waiting = vm_info(4, "queued", None);
    waiting.state = state::WAITING;
    let mut stopped = vm_info(5, "db.example.com", None);
    stopped.owner_gid = Some(0);
    stopped.max_mem = 4608 << 20;
    let mut odd_group = vm_info(6, "odd-group", None);
    odd_group.state = state::DISABLED;
    odd_group.owner_gid = Some(4_000_123);
    let mut no_tty = vm_info(7, "no-tty", Some(""));
    no_tty.pid = Some(77);
    vec![
        running, paused, stopping, waiting, stopped, odd_group, no_tty,
    ]
}

fn parse_json(out: &str) -> Value {
    assert!(out.ends_with('\n'), "one line ended by a newline: {out:?}");
    assert_eq!(out.lines().count(), 1, "{out:?}");
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

#[test]
fn output_validates_against_the_schema() {
    let schema = Schema::load();
    let vmd = FakeVmd::replying(listing(&vms()));
    for args in [&["status", "-j"][..], &["show", "-j"], &["stat", "-rj"]] {
        let (status, out, err) = vmd.run(args);
        assert_eq!((status, err.as_str()), (0, ""), "{args:?}");
        let value = parse_json(&out);
        schema
            .check(&value)
            .unwrap_or_else(|e| panic!("{args:?}: {e}\n{out}"));
    }
}

#[test]
fn same_facts_as_the_table() {
    let vmd = FakeVmd::replying(listing(&vms()));
    let (_, table, _) = vmd.run(&["status"]);
    let (_, out, _) = vmd.run(&["status", "-j"]);
    let objects = parse_json(&out);
    let objects = objects.as_array().unwrap();
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(objects.len(), rows.len());
    assert_eq!(objects.len(), vms().len());
    let dash = |v: &Value, f: &dyn Fn(&Value) -> String| {
        if v.is_null() { "-".to_string() } else { f(v) }
    };
    for (object, row) in objects.iter().zip(rows) {
        let columns: Vec<&str> = row.split_whitespace().collect();
        let number = |v: &Value| v.as_u64().unwrap().to_string();
        let scaled = |v: &Value| scaled::fmt_scaled(v.as_i64().unwrap());
        let tty = |v: &Value| v.as_str().unwrap().trim_start_matches("/dev/").to_string();
        let user = match &object["user"] {
            Value::String(name) => name.clone(),
            _ => number(&object["uid"]),
        };
        let owner = match (&object["gid"], &object["group"]) {
            (Value::Null, _) => user,
            (gid, Value::Null) => format!("{user}:{}", number(gid)),
            (_, group) => format!("{user}:{}", group.as_str().unwrap()),
        };
        let owner: String = owner.chars().take(15).collect();
        let expected = [
            number(&object["id"]),
            dash(&object["pid"], &number),
            number(&object["vcpus"]),
            scaled(&object["maxmem"]),
            dash(&object["curmem"], &scaled),
            dash(&object["tty"], &tty),
            owner,
            object["state"].as_str().unwrap().to_string(),
            object["name"].as_str().unwrap().to_string(),
        ];
        assert_eq!(columns, expected, "row {row:?} vs {object}");
    }
    // What the rows cannot show: exact bytes and the full tty path.
    assert_eq!(objects[0]["maxmem"], json!(1u64 << 30));
    assert_eq!(objects[0]["curmem"], json!(92_379_955));
    assert_eq!(objects[0]["tty"], json!("/dev/pts/8"));
    assert_eq!(objects[4]["group"], json!("root"));
    assert_eq!(objects[5]["group"], Value::Null);
    assert_eq!(objects[6]["tty"], Value::Null);
}

#[test]
fn filters_and_exit_status_follow_the_table() {
    let vmd = FakeVmd::replying(listing(&vms()));
    let names = |out: &str| -> Vec<String> {
        parse_json(out)
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, out, _) = vmd.run(&["status", "-j", "-r"]);
    assert_eq!(status, 0);
    assert_eq!(names(&out), ["web", "paused-one", "going", "no-tty"]);
    let (status, out, _) = vmd.run(&["status", "-j", "5"]);
    assert_eq!(
        (status, names(&out)),
        (0, vec!["db.example.com".to_string()])
    );
    let (status, out, _) = vmd.run(&["status", "-j", "queued"]);
    assert_eq!((status, names(&out)), (0, vec!["queued".to_string()]));
    assert_eq!(
        vmd.run(&["status", "-j", "nothing"]),
        (0, "[]\n".into(), String::new())
    );

    let stopped_only = FakeVmd::replying(listing(&[vm_info(2, "web1", None)]));
    assert_eq!(
        stopped_only.run(&["status", "-rj"]),
        (1, "[]\n".into(), String::new())
    );
    let empty = FakeVmd::replying(listing(&[]));
    assert_eq!(
        empty.run(&["show", "-j"]),
        (1, "[]\n".into(), String::new())
    );
    // -j is no option of other commands, and the usage is the reference's.
    let (status, _, err) = vmd.run(&["stop", "-j", "web"]);
    assert_eq!(status, 1);
    assert!(
        err.starts_with("usage:\tvmctl [-v] stop [-fw] [id | -a]"),
        "{err}"
    );
}

#[test]
fn the_schema_rejects_what_vmctl_must_not_print() {
    let schema = Schema::load();
    let good = json!({
        "id": 1, "pid": 7, "vcpus": 1, "maxmem": 536870912, "curmem": 1048576,
        "tty": "/dev/pts/1", "uid": 0, "user": "root", "gid": null,
        "group": null, "state": "running", "name": "a"
    });
    schema.check(&json!([good.clone()])).unwrap();
    schema.check(&json!([])).unwrap();

    let with = |key: &str, value: Value| {
        let mut object = good.clone();
        object[key] = value;
        object
    };
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("tty");
    let broken: Vec<(&str, Value)> = vec![
        ("an object, not an array", good.clone()),
        ("a member missing", missing),
        ("an unknown member", with("colour", json!("blue"))),
        ("an unknown state", with("state", json!("disabled"))),
        ("memory as text", with("maxmem", json!("512M"))),
        ("a stopped VM with a pid", with("state", json!("stopped"))),
        ("a running VM without a pid", with("pid", Value::Null)),
        ("a tty relative to /dev", with("tty", json!("pts/1"))),
        (
            "a group name without a group",
            with("group", json!("wheel")),
        ),
        ("a negative id", with("id", json!(-1))),
        ("an empty name", with("name", json!(""))),
    ];
    for (what, object) in broken {
        let value = if what.starts_with("an object") {
            object
        } else {
            json!([object])
        };
        assert!(schema.check(&value).is_err(), "the schema accepts {what}");
    }
}

/// Details for each of [`vms`]: a qcow2 disk over a base, a raw disk
/// that could not be read, a CD, a local and a switched interface, and
/// each way a run ends.
fn details(vms: &[VmInfo]) -> Vec<VmDetails> {
    let ends = [
        None,
        Some(VmEnd::PowerOff),
        Some(VmEnd::Stopped),
        Some(VmEnd::Sent),
        Some(VmEnd::Reset),
        Some(VmEnd::Error("vcpu 0: emulation failure".into())),
        Some(VmEnd::Signal(9)),
        Some(VmEnd::ExitStatus(3)),
        Some(VmEnd::StartFailed("could not open disk image(s)".into())),
    ];
    vms.iter()
        .enumerate()
        .map(|(index, vm)| {
            let running = vm.running();
            VmDetails {
                id: vm.id,
                disks: vec![
                    DiskDetails {
                        chain: vec![
                            ImageDetails {
                                path: "/var/vm/web.qcow2".into(),
                                format: DiskFormat::Qcow2,
                                virtual_size: Some(10 << 30),
                            },
                            ImageDetails {
                                path: "/var/vm/base.img".into(),
                                format: DiskFormat::Raw,
                                virtual_size: Some(10 << 30),
                            },
                        ],
                        error: None,
                    },
                    DiskDetails {
                        chain: vec![ImageDetails {
                            path: "/var/vm/gone.img".into(),
                            format: DiskFormat::Raw,
                            virtual_size: None,
                        }],
                        error: Some("/var/vm/gone.img: No such file or directory".into()),
                    },
                ],
                cdrom: (index % 2 == 0).then(|| "/iso/install.iso".into()),
                nics: vec![
                    NicDetails {
                        tap: running.then(|| "tap0".into()),
                        mac: [0xfe, 0xe1, 0xba, 0xd0, 0, 1],
                        switch: None,
                        local_host: running.then_some([100, 64, 1, 2]),
                        lease: running.then_some([100, 64, 1, 3]),
                    },
                    NicDetails {
                        tap: running.then(|| "tap1".into()),
                        mac: [0xfe, 0xe1, 0xba, 0xd0, 0, 2],
                        switch: Some("uplink".into()),
                        local_host: None,
                        lease: None,
                    },
                ],
                boot_device: [None, Some(BootDevice::Disk), Some(BootDevice::Cdrom)][index % 3],
                uptime_secs: running.then_some(3600),
                cpu_time_ms: running.then_some(1234),
                last_end: ends[index % ends.len()].clone(),
            }
        })
        .collect()
}

/// The listing of `status -v`: each row followed by its details.
fn verbose_listing(vms: &[VmInfo]) -> Vec<Response> {
    let mut responses = Vec::new();
    for (vm, details) in vms.iter().zip(details(vms)) {
        responses.push(Response::InfoData(vm.clone()));
        responses.push(Response::InfoDetails(Box::new(details)));
    }
    responses.push(Response::InfoEnd);
    responses
}

#[test]
fn verbose_output_validates_and_the_table_stays_the_same() {
    let schema = Schema::load();
    let vms = vms();
    let plain = FakeVmd::replying(listing(&vms));
    let vmd = FakeVmd::replying(verbose_listing(&vms));
    let (status, out, err) = vmd.run(&["status", "-jv"]);
    assert_eq!((status, err.as_str()), (0, ""));
    let value = parse_json(&out);
    schema
        .check(&value)
        .unwrap_or_else(|e| panic!("{e}\n{out}"));
    let objects = value.as_array().unwrap();
    assert_eq!(
        objects[0]["disks"][0]["base"][0]["path"],
        json!("/var/vm/base.img")
    );
    assert_eq!(objects[0]["nics"][0]["lease"], json!("100.64.1.3"));
    assert_eq!(objects[0]["nics"][1]["switch"], json!("uplink"));
    assert_eq!(
        objects[6]["ended"],
        json!({"kind": "signal", "reason": "vm process killed by signal 9 (SIGKILL)"})
    );
    // Without -v, the objects are as before.
    let (_, out, _) = plain.run(&["status", "-j"]);
    assert!(parse_json(&out)[0].get("disks").is_none());

    // The table's lines are those of plain `status`, the blocks follow.
    let (_, table, _) = plain.run(&["status"]);
    let (status, verbose, err) = vmd.run(&["status", "-v"]);
    assert_eq!((status, err.as_str()), (0, ""));
    assert!(verbose.starts_with(&table), "{verbose}");
    assert!(
        verbose[table.len()..].starts_with("vm web (id 1):\n"),
        "{verbose}"
    );
    assert_eq!(vmd.requests().last(), Some(&Request::InfoVerbose));
}
