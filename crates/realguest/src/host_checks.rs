//! Checks only the host can make, once the scenarios are over and no VM
//! holds the images: `qemu-img check` of a qcow2 image the guest wrote,
//! and a file inside an ext2 file system the guest made, read by QEMU's
//! own reader (`qemu-img convert` to raw) and `debugfs`: tools that share
//! no code with vmd.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::command_output;

/// Runs one `@@rg check` request (its words after the scenario's name).
pub fn run(args: &[String], scratch: &Path) -> Result<String, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["qcow2", image] => qemu_img_check(image),
        ["ext2-file", image, file, md5] => ext2_file(image, file, md5, scratch),
        _ => Err(format!("unknown check {words:?}")),
    }
}

fn qemu_img_check(image: &str) -> Result<String, String> {
    command_output(Command::new("qemu-img").args(["check", "-f", "qcow2", image]))?;
    Ok(format!("qemu-img check {image}: clean"))
}

/// `md5sum`'s sum of what `data` reads.
pub fn md5_of_stream(mut data: impl Read) -> Result<String, String> {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("md5sum: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = data.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        stdin.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

fn ext2_file(image: &str, file: &str, md5: &str, scratch: &Path) -> Result<String, String> {
    let raw = scratch.join("image.raw");
    command_output(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw", image])
            .arg(&raw),
    )?;
    let out = scratch.join("ext2-file");
    command_output(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump {file} {}", out.display()))
            .arg(&raw),
    )?;
    let _ = std::fs::remove_file(&raw);
    let data = std::fs::File::open(&out).map_err(|e| format!("{file} in {image}: {e}"))?;
    let sum = md5_of_stream(data)?;
    let _ = std::fs::remove_file(&out);
    if sum == md5 {
        Ok(format!(
            "{image}: the host reads {file} as the guest wrote it"
        ))
    } else {
        Err(format!(
            "{image}: {file} sums to {sum}, the guest wrote {md5}"
        ))
    }
}
