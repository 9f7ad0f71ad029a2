use super::*;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::process::Command;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5vdEFSZWFsS2V5QnV0V2VsbEZvcm1lZAAAAAAA me@host";

fn nics() -> Vec<Nic> {
    vec![
        Nic {
            mac: [0xfe, 0xe1, 0xba, 0xd0, 0x00, 0x01],
            local: true,
        },
        Nic {
            mac: [0xfe, 0xe1, 0xba, 0xd1, 0x0a, 0xbc],
            local: false,
        },
    ]
}

/// The files of a volume and its two labels, read back with fatfs.
fn read_back(image: &[u8]) -> (Vec<(String, String)>, String, Option<String>) {
    let fs = fatfs::FileSystem::new(Cursor::new(image.to_vec()), fatfs::FsOptions::new()).unwrap();
    let mut files = Vec::new();
    for entry in fs.root_dir().iter() {
        let entry = entry.unwrap();
        let mut text = String::new();
        entry.to_file().read_to_string(&mut text).unwrap();
        files.push((entry.file_name(), text));
    }
    let boot_label = fs.volume_label();
    let dir_label = fs.read_volume_label_from_root_dir().unwrap();
    (files, boot_label, dir_label)
}

fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
    &files.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn volume_holds_the_three_files_under_the_cidata_label() {
    let seed = Seed::new(Some("#cloud-config\nruncmd: [echo hi]\n".into()), None).unwrap();
    let image = build("web", &seed, &nics()).unwrap();
    assert_eq!(image.len(), VOLUME_SIZE);
    let (files, boot_label, dir_label) = read_back(&image);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["meta-data", "user-data", "network-config"]);
    assert_eq!(boot_label, "CIDATA");
    assert_eq!(dir_label.as_deref(), Some("CIDATA"));
    assert_eq!(
        file(&files, "meta-data"),
        format!(
            "instance-id: \"{}\"\nlocal-hostname: \"web\"\n",
            instance_id("web", &seed)
        )
    );
    assert_eq!(
        file(&files, "user-data"),
        "#cloud-config\nruncmd: [echo hi]\n"
    );
    assert_eq!(
        file(&files, "network-config"),
        "version: 2\nethernets:\n  \
         nic0:\n    match:\n      macaddress: \"fe:e1:ba:d0:00:01\"\n    dhcp4: true\n  \
         nic1:\n    match:\n      macaddress: \"fe:e1:ba:d1:0a:bc\"\n    dhcp4: true\n    optional: true\n"
    );
}

#[test]
fn the_largest_user_data_fits() {
    let big = "#".repeat(MAX_USER_DATA);
    let seed = Seed::new(Some(big.clone()), Some(KEY.into())).unwrap();
    let image = build("big", &seed, &nics()).unwrap();
    let (files, ..) = read_back(&image);
    assert!(file(&files, "user-data").contains(&big));
}

#[test]
fn same_vm_same_bytes() {
    let seed = Seed::new(Some("#!/bin/sh\necho hi\n".into()), Some(KEY.into())).unwrap();
    let a = build("web", &seed, &nics()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = build("web", &seed, &nics()).unwrap();
    assert!(a == b, "a rebuilt volume differs");
    let other = build("web2", &seed, &nics()).unwrap();
    assert!(a != other);
}

#[test]
fn instance_id_follows_name_and_data_only() {
    let seed = Seed::new(Some("#cloud-config\n".into()), Some(KEY.into())).unwrap();
    let id = instance_id("web", &seed);
    assert!(id.starts_with("iid-vmd-") && id.len() == 8 + 16, "{id}");
    assert_eq!(id, instance_id("web", &seed.clone()));
    assert_ne!(id, instance_id("web2", &seed));
    let no_key = Seed::new(seed.user_data.clone(), None).unwrap();
    assert_ne!(id, instance_id("web", &no_key));
    // A field cannot pass for another.
    let a = Seed::new(Some("x".into()), None).unwrap();
    let b = Seed::new(None, Some("x".into())).unwrap();
    assert_ne!(instance_id("web", &a), instance_id("web", &b));
    // Stable across builds and releases: a fixed value (FNV-1a 64 of
    // the length-prefixed name and two absent fields, worked out apart).
    assert_eq!(
        instance_id("web", &Seed::default()),
        "iid-vmd-bc41eff755914270"
    );
}

#[test]
fn an_ssh_key_alone_becomes_cloud_config_for_the_default_user() {
    let seed = Seed::new(None, Some("ssh-rsa AAAAB3Nz it's me".into())).unwrap();
    assert_eq!(
        user_data(&seed),
        "#cloud-config\nssh_authorized_keys:\n  - 'ssh-rsa AAAAB3Nz it''s me'\n"
    );
}

#[test]
fn user_data_and_key_make_a_mime_archive() {
    let data = "#cloud-config\nruncmd:\n - echo vmd-cidata-boundary-0\n";
    let seed = Seed::new(Some(data.into()), Some(KEY.into())).unwrap();
    let archive = user_data(&seed);
    // The boundary avoids what the user's data holds.
    let boundary = "vmd-cidata-boundary-1";
    let expected = format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n\
         --{boundary}\nContent-Type: text/cloud-config; charset=\"utf-8\"\nMIME-Version: 1.0\n\
         Content-Transfer-Encoding: 8bit\nContent-Disposition: attachment; filename=\"user-data\"\n\n\
         {data}\
         --{boundary}\nContent-Type: text/cloud-config; charset=\"utf-8\"\nMIME-Version: 1.0\n\
         Content-Transfer-Encoding: 8bit\nContent-Disposition: attachment; filename=\"ssh-key\"\n\n\
         #cloud-config\nmerge_how:\n - name: list\n   settings: [append]\n \
         - name: dict\n   settings: [no_replace, recurse_list]\n\
         ssh_authorized_keys:\n  - '{KEY}'\n\
         --{boundary}--\n"
    );
    assert_eq!(archive, expected);
    let script = Seed::new(Some("#!/bin/sh\ntrue".into()), Some(KEY.into())).unwrap();
    let archive = user_data(&script);
    assert!(archive.contains("Content-Type: text/x-shellscript"));
    assert!(archive.contains("#!/bin/sh\ntrue\n--vmd-cidata-boundary-0\n"));
    let include = Seed::new(Some("#include\nhttp://x/\n".into()), Some(KEY.into())).unwrap();
    assert!(user_data(&include).contains("Content-Type: text/plain"));
}

#[test]
fn a_mime_user_data_takes_no_key() {
    for mime in [
        "Content-Type: multipart/mixed; boundary=x\n",
        "MIME-Version: 1.0\n",
    ] {
        assert_eq!(
            Seed::new(Some(mime.into()), Some(KEY.into())),
            Err(MIME_WITH_KEY.to_string())
        );
        assert!(Seed::new(Some(mime.into()), None).is_ok());
    }
}

#[test]
fn user_data_checks() {
    assert_eq!(
        check_user_data(b"#cloud-config\n".to_vec()).unwrap(),
        "#cloud-config\n"
    );
    assert_eq!(
        check_user_data(vec![b'#'; MAX_USER_DATA]).unwrap().len(),
        MAX_USER_DATA
    );
    assert_eq!(
        check_user_data(vec![b'#'; MAX_USER_DATA + 1]),
        Err("larger than 65536 bytes".into())
    );
    assert_eq!(
        check_user_data(vec![0xff, 0xfe]),
        Err("not UTF-8 text".into())
    );
    assert_eq!(
        check_user_data(b"a\0b".to_vec()),
        Err("not text: it holds a NUL byte".into())
    );
}

#[test]
fn ssh_key_checks() {
    assert_eq!(check_ssh_key(format!("{KEY}\n").into_bytes()).unwrap(), KEY);
    assert_eq!(
        check_ssh_key(format!("\n  {KEY}\r\n\n").into_bytes()).unwrap(),
        KEY
    );
    for kind in KEY_TYPES {
        assert!(
            check_ssh_key(format!("{kind} AAAA").into_bytes()).is_ok(),
            "{kind}"
        );
    }
    let not_a_key = "not an SSH public key: expected a line like \"ssh-ed25519 AAAA... comment\" \
                     with a key type of ssh-ed25519, ssh-rsa, ssh-dss, ecdsa-sha2-nistp256, \
                     ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, sk-ssh-ed25519@openssh.com, \
                     sk-ecdsa-sha2-nistp256@openssh.com";
    for bad in [
        "ssh-foo AAAA",
        "ssh-ed25519",
        "ssh-ed25519 not!base64",
        "hello world",
    ] {
        assert_eq!(check_ssh_key(bad.into()), Err(not_a_key.into()), "{bad}");
    }
    assert_eq!(
        check_ssh_key(vec![0xff]),
        Err("not an SSH public key".into())
    );
    assert_eq!(
        check_ssh_key(b"\n \n".to_vec()),
        Err("empty: no SSH public key in it".into())
    );
    assert_eq!(
        check_ssh_key(format!("{KEY}\n{KEY}\n").into_bytes()),
        Err("more than one line: give one SSH public key".into())
    );
    assert_eq!(
        check_ssh_key(b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n".to_vec()),
        Err("a private key: give the public key (the .pub file)".into())
    );
    assert_eq!(
        check_ssh_key(b"ssh-rsa AAAA a\x07b".to_vec()),
        Err("not an SSH public key: it holds control characters".into())
    );
    assert_eq!(
        check_ssh_key(vec![b'a'; MAX_SSH_KEY + 1]),
        Err("larger than 8192 bytes".into())
    );
}

#[test]
fn reads_stop_past_the_limit() {
    let mut file = sealed_memfd(&[7u8; 100]).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    assert_eq!(read_bounded(&mut file, 100).unwrap(), Some(vec![7u8; 100]));
    file.seek(SeekFrom::Start(0)).unwrap();
    assert_eq!(read_bounded(&mut file, 99).unwrap(), None);
}

#[test]
fn the_memfd_is_sealed() {
    let image = build("web", &Seed::default(), &[]).unwrap();
    let mut file = sealed_memfd(&image).unwrap();
    assert!(file.metadata().unwrap().file_type().is_file());
    assert_eq!(file.metadata().unwrap().len(), VOLUME_SIZE as u64);
    file.seek(SeekFrom::Start(0)).unwrap();
    assert_eq!(
        file.write(b"x").unwrap_err().raw_os_error(),
        Some(libc::EPERM)
    );
    assert!(file.set_len(0).is_err());
    // SAFETY: F_GET_SEALS on an open descriptor takes no argument.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    assert_eq!(
        seals,
        libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL
    );
    let mut back = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut back).unwrap();
    assert!(back == image);
}

/// The host's own FAT tools, where installed (scripts/install-deps.sh
/// installs dosfstools): `fsck.fat` finds nothing to fix and `blkid`
/// sees the label cloud-init looks for.
#[test]
fn host_tools_accept_the_volume() {
    let seed = Seed::new(Some("#cloud-config\n".into()), Some(KEY.into())).unwrap();
    let image = build("web", &seed, &nics()).unwrap();
    let path = std::env::temp_dir().join(format!("cidata-test-{}.img", std::process::id()));
    std::fs::write(&path, &image).unwrap();
    let tool = |name: &str| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .map(|dir| std::path::Path::new(dir).join(name))
            .find(|p| p.exists())
    };
    let mut ran = 0;
    if let Some(fsck) = tool("fsck.fat") {
        let out = Command::new(fsck).arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "fsck.fat -n: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    if let Some(blkid) = tool("blkid") {
        let out = Command::new(blkid)
            .args(["-p", "-o", "export"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("\nTYPE=vfat\n"), "{text}");
        assert!(text.contains("\nLABEL=CIDATA\n"), "{text}");
        ran += 1;
    }
    std::fs::remove_file(&path).unwrap();
    if ran < 2 {
        eprintln!("fsck.fat or blkid missing: checked with {ran} host tool(s)");
    }
}
