//! `status -v` (a Linux extension): each listed VM's disks, CD, network
//! interfaces, boot device, uptime, CPU time and how its last run ended,
//! after the table, whose lines stay the reference's. vmctl(8) describes
//! the lines; `-jv` gives the same as JSON members.

use std::fmt::Write;

use proto::control::{BootDevice, DiskDetails, NicDetails, Request, Response, VmDetails, VmInfo};
use scaled::fmt_scaled;
use serde::Serialize;

use crate::daemon::Daemon;
use crate::failure::Failure;

/// The VM list with each VM's details, as vmd reports them.
pub fn list() -> Result<Vec<(VmInfo, Option<VmDetails>)>, Failure> {
    let daemon = Daemon::connect()?;
    daemon.request(&Request::InfoVerbose)?;
    let mut vms: Vec<(VmInfo, Option<VmDetails>)> = Vec::new();
    loop {
        match daemon.reply()? {
            Response::InfoData(info) => vms.push((info, None)),
            Response::InfoDetails(details) => match vms.last_mut() {
                Some((info, slot)) if info.id == details.id => *slot = Some(*details),
                _ => return Err(Failure::unexpected_response()),
            },
            Response::InfoEnd => return Ok(vms),
            _ => return Err(Failure::unexpected_response()),
        }
    }
}

fn scaled(bytes: u64) -> String {
    fmt_scaled(i64::try_from(bytes).unwrap_or(i64::MAX))
}

pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ip_text(ip: &[u8; 4]) -> String {
    std::net::Ipv4Addr::from(*ip).to_string()
}

pub fn boot_word(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Disk => "disk",
        BootDevice::Cdrom => "cdrom",
        BootDevice::Net => "net",
    }
}

/// `1d02h03m04s`, leading zero units left out.
fn duration_text(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut text = String::new();
    for (value, unit) in [(d, 'd'), (h, 'h'), (m, 'm')] {
        if value > 0 || !text.is_empty() {
            let _ = write!(text, "{value}{unit}");
        }
    }
    let _ = write!(text, "{s}s");
    text
}

fn disk_line(disk: &DiskDetails) -> String {
    let image = |i: &proto::control::ImageDetails| match i.virtual_size {
        Some(size) => format!("{} ({}, {})", i.path, i.format.name(), scaled(size)),
        None => format!("{} ({})", i.path, i.format.name()),
    };
    let mut line = disk.chain.first().map(image).unwrap_or_default();
    for base in disk.chain.iter().skip(1) {
        let _ = write!(line, ", base {}", image(base));
    }
    if let Some(error) = &disk.error {
        let _ = write!(line, ": {error}");
    }
    line
}

fn nic_line(nic: &NicDetails) -> String {
    let mut parts = vec![
        nic.tap.clone().unwrap_or_else(|| "-".into()),
        mac_text(&nic.mac),
    ];
    if let Some(switch) = &nic.switch {
        parts.push(format!("switch {switch}"));
    }
    if let Some(host) = &nic.local_host {
        parts.push(format!("local {}", ip_text(host)));
    }
    if let Some(lease) = &nic.lease {
        parts.push(format!("lease {}", ip_text(lease)));
    }
    parts.join(", ")
}

/// The lines `status -v` prints for one VM after the table.
pub fn block(vm: &VmInfo, details: &VmDetails) -> Vec<String> {
    let mut lines = vec![format!("vm {} (id {}):", vm.name, vm.id)];
    let mut add = |label: &str, value: String| lines.push(format!("    {label:<12}{value}"));
    for (index, disk) in details.disks.iter().enumerate() {
        add(&format!("disk {index}"), disk_line(disk));
    }
    if let Some(cdrom) = &details.cdrom {
        add("cdrom", cdrom.clone());
    }
    for (index, nic) in details.nics.iter().enumerate() {
        add(&format!("nic {index}"), nic_line(nic));
    }
    if let Some(device) = details.boot_device {
        add("boot", boot_word(device).into());
    }
    if let Some(secs) = details.uptime_secs {
        add("uptime", duration_text(secs));
    }
    if let Some(ms) = details.cpu_time_ms {
        add("cpu time", format!("{}.{:02}s", ms / 1000, ms % 1000 / 10));
    }
    add(
        "last end",
        details
            .last_end
            .as_ref()
            .map_or_else(|| "-".into(), ToString::to_string),
    );
    lines
}

/// The members `-jv` adds to a VM's object (docs/status-json-schema.json).
#[derive(Debug, Serialize)]
pub struct JsonDetails<'a> {
    disks: Vec<JsonDisk<'a>>,
    cdrom: Option<&'a str>,
    nics: Vec<JsonNic>,
    boot: Option<&'static str>,
    uptime: Option<u64>,
    cputime_ms: Option<u64>,
    ended: Option<JsonEnd>,
}

#[derive(Debug, Serialize)]
struct JsonImage<'a> {
    path: &'a str,
    format: &'static str,
    size: Option<u64>,
}

#[derive(Debug, Serialize)]
struct JsonDisk<'a> {
    path: &'a str,
    format: &'static str,
    size: Option<u64>,
    base: Vec<JsonImage<'a>>,
    error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct JsonNic {
    tap: Option<String>,
    mac: String,
    switch: Option<String>,
    local: Option<String>,
    lease: Option<String>,
}

#[derive(Debug, Serialize)]
struct JsonEnd {
    kind: &'static str,
    reason: String,
}

fn json_image(i: &proto::control::ImageDetails) -> JsonImage<'_> {
    JsonImage {
        path: &i.path,
        format: i.format.name(),
        size: i.virtual_size,
    }
}

pub fn json(details: &VmDetails) -> JsonDetails<'_> {
    JsonDetails {
        disks: details
            .disks
            .iter()
            .filter_map(|disk| {
                let top = disk.chain.first()?;
                Some(JsonDisk {
                    path: &top.path,
                    format: top.format.name(),
                    size: top.virtual_size,
                    base: disk.chain.iter().skip(1).map(json_image).collect(),
                    error: disk.error.as_deref(),
                })
            })
            .collect(),
        cdrom: details.cdrom.as_deref(),
        nics: details
            .nics
            .iter()
            .map(|nic| JsonNic {
                tap: nic.tap.clone(),
                mac: mac_text(&nic.mac),
                switch: nic.switch.clone(),
                local: nic.local_host.as_ref().map(ip_text),
                lease: nic.lease.as_ref().map(ip_text),
            })
            .collect(),
        boot: details.boot_device.map(boot_word),
        uptime: details.uptime_secs,
        cputime_ms: details.cpu_time_ms,
        ended: details.last_end.as_ref().map(|end| JsonEnd {
            kind: end.kind(),
            reason: end.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::control::{DiskFormat, ImageDetails, VmEnd, state};

    #[test]
    fn a_block_names_every_detail() {
        let vm = VmInfo {
            id: 3,
            name: "web".into(),
            max_mem: 1 << 30,
            cur_mem: 1 << 20,
            vcpus: 1,
            pid: Some(10),
            tty: Some("/dev/pts/1".into()),
            owner_uid: 0,
            owner_gid: None,
            state: state::RUNNING,
        };
        let details = VmDetails {
            id: 3,
            disks: vec![DiskDetails {
                chain: vec![
                    ImageDetails {
                        path: "/v/web.qcow2".into(),
                        format: DiskFormat::Qcow2,
                        virtual_size: Some(10 << 30),
                    },
                    ImageDetails {
                        path: "/v/base.qcow2".into(),
                        format: DiskFormat::Qcow2,
                        virtual_size: Some(10 << 30),
                    },
                ],
                error: None,
            }],
            cdrom: Some("/iso/x.iso".into()),
            nics: vec![NicDetails {
                tap: Some("tap0".into()),
                mac: [0xfe, 0xe1, 0xba, 0xd0, 0, 1],
                switch: None,
                local_host: Some([100, 64, 3, 2]),
                lease: Some([100, 64, 3, 3]),
            }],
            boot_device: Some(BootDevice::Cdrom),
            uptime_secs: Some(93_784),
            cpu_time_ms: Some(72_305),
            last_end: Some(VmEnd::Signal(9)),
        };
        assert_eq!(
            block(&vm, &details),
            [
                "vm web (id 3):",
                "    disk 0      /v/web.qcow2 (qcow2, 10.0G), base /v/base.qcow2 (qcow2, 10.0G)",
                "    cdrom       /iso/x.iso",
                "    nic 0       tap0, fe:e1:ba:d0:00:01, local 100.64.3.2, lease 100.64.3.3",
                "    boot        cdrom",
                "    uptime      1d2h3m4s",
                "    cpu time    72.30s",
                "    last end    vm process killed by signal 9 (SIGKILL)",
            ]
        );
    }
}
