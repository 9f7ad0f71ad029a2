//! `status -j` (a Linux extension): the facts of the table as JSON, an
//! array with one object per listed VM. docs/status-json-schema.json is
//! the schema, and vmctl(8) describes the members.
//!
//! Numbers stay numbers (memory in bytes, ids, pids); what the table shows
//! as `-` is `null`.

use proto::control::{VmDetails, VmInfo, state};
use serde::Serialize;

use super::table::{Accounts, live};
use super::verbose::{self, JsonDetails};

/// One VM as JSON. The member order is the table's column order.
#[derive(Debug, Serialize)]
struct VmObject<'a> {
    id: u32,
    pid: Option<u32>,
    vcpus: u32,
    /// Bytes.
    maxmem: u64,
    /// Bytes; `null` when not running.
    curmem: Option<u64>,
    /// The console's device path (`/dev/pts/3`); `null` when not running.
    tty: Option<&'a str>,
    uid: u32,
    /// The user name of `uid`; `null` when the passwd database has none.
    user: Option<String>,
    /// The owner group, if the VM has one.
    gid: Option<u32>,
    group: Option<String>,
    state: &'static str,
    name: &'a str,
    /// `-v`: the details (docs/status-json-schema.json).
    #[serde(flatten)]
    details: Option<JsonDetails<'a>>,
}

fn object<'a>(
    vm: &'a VmInfo,
    details: Option<&'a VmDetails>,
    accounts: &dyn Accounts,
) -> VmObject<'a> {
    let live = live(vm);
    VmObject {
        id: vm.id,
        pid: live.as_ref().map(|l| l.pid),
        vcpus: vm.vcpus,
        maxmem: vm.max_mem,
        curmem: live.as_ref().map(|l| l.cur_mem),
        tty: live.and_then(|l| l.tty),
        uid: vm.owner_uid,
        user: accounts.user_name(vm.owner_uid),
        gid: vm.owner_gid,
        group: vm.owner_gid.and_then(|gid| accounts.group_name(gid)),
        state: state::name(vm.state),
        name: &vm.name,
        details: details.map(verbose::json),
    }
}

/// The JSON text for the listed VMs: one line, an array of objects.
pub fn render<'a>(
    vms: impl Iterator<Item = (&'a VmInfo, Option<&'a VmDetails>)>,
    accounts: &dyn Accounts,
) -> String {
    let objects: Vec<VmObject> = vms
        .map(|(vm, details)| object(vm, details, accounts))
        .collect();
    serde_json::to_string(&objects).expect("a VM list serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names;
    impl Accounts for Names {
        fn user_name(&self, uid: u32) -> Option<String> {
            (uid == 0).then(|| "root".into())
        }
        fn group_name(&self, gid: u32) -> Option<String> {
            (gid == 0).then(|| "wheel".into())
        }
    }

    #[test]
    fn running_and_stopped() {
        let running = VmInfo {
            id: 1,
            name: "web \"1\"".into(),
            max_mem: 1 << 30,
            cur_mem: 92_379_955,
            vcpus: 2,
            pid: Some(72118),
            tty: Some("/dev/pts/8".into()),
            owner_uid: 0,
            owner_gid: None,
            state: state::RUNNING,
        };
        let stopped = VmInfo {
            id: 2,
            name: "db".into(),
            max_mem: 512 << 20,
            cur_mem: 0,
            vcpus: 1,
            pid: Some(5),
            tty: Some("/dev/pts/9".into()),
            owner_uid: 1000,
            owner_gid: Some(0),
            state: 0,
        };
        assert_eq!(
            render([(&running, None), (&stopped, None)].into_iter(), &Names),
            "[{\"id\":1,\"pid\":72118,\"vcpus\":2,\"maxmem\":1073741824,\
             \"curmem\":92379955,\"tty\":\"/dev/pts/8\",\"uid\":0,\"user\":\"root\",\
             \"gid\":null,\"group\":null,\"state\":\"running\",\"name\":\"web \\\"1\\\"\"},\
             {\"id\":2,\"pid\":null,\"vcpus\":1,\"maxmem\":536870912,\"curmem\":null,\
             \"tty\":null,\"uid\":1000,\"user\":null,\"gid\":0,\"group\":\"wheel\",\
             \"state\":\"stopped\",\"name\":\"db\"}]"
        );
        assert_eq!(render(std::iter::empty(), &Names), "[]");
    }
}
