//! A VM process holds what vmd hands it and nothing else: a descriptor
//! vmd itself inherited without close-on-exec (from whatever started it)
//! does not reach the process a guest could take over.

use std::os::fd::AsRawFd;
use std::time::Duration;

use testkit::daemon::{TestDaemon, open_descriptors};

#[test]
fn a_descriptor_vmd_inherited_does_not_reach_a_vm_process() {
    testkit::needs!(root, kvm);
    let marker = std::env::temp_dir().join(format!("vmd-inherited-{}", std::process::id()));
    let created = std::fs::File::create(&marker).unwrap();
    // Inheritable, as a careless parent would leave it, and numbered high
    // so that nothing vmd sets up for its VM process happens to replace it.
    // SAFETY: dup2 onto a descriptor number this test does not use.
    let fd = unsafe { libc::dup2(created.as_raw_fd(), 100) };
    assert_eq!(fd, 100, "{}", std::io::Error::last_os_error());
    // SAFETY: dup2 made descriptor 100, which nothing else owns.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    drop(created);
    let daemon = TestDaemon::start();
    let marker_name = marker.display().to_string();
    assert!(
        open_descriptors(daemon.pid()).contains(&marker_name),
        "the test's premise: vmd holds the inherited descriptor {}",
        file.as_raw_fd()
    );
    daemon.start_seabios_vm_ok("fds", &[]);
    let pid = daemon.vm_pid("fds");
    daemon.wait_for(
        || !open_descriptors(pid).is_empty(),
        Duration::from_secs(10),
        "the VM process's descriptors to be readable",
    );
    let held = open_descriptors(pid);
    assert!(
        !held.contains(&marker_name),
        "the VM process holds vmd's inherited descriptor: {held:?}"
    );
    drop(file);
    let _ = std::fs::remove_file(&marker);
}
