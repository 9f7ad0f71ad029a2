//! Links: look-up, alias (`IFLA_IFALIAS`), administrative state, master
//! (bridge or VRF), group, creation of bridges and VRFs, deletion.

use std::io;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Iff, Ifla, IflaInfo, RtAddrFamily, Rtm};
use neli::rtnl::{Ifinfomsg, IfinfomsgBuilder, Rtattr, RtattrBuilder};
use neli::types::{Buffer, RtBuffer};

use super::{Rtnl, other};

/// `IFLA_VRF_TABLE` inside a VRF's `IFLA_INFO_DATA`.
const IFLA_VRF_TABLE: u16 = 1;
/// Longest alias the kernel stores.
pub const MAX_ALIAS: usize = 255;

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "bridge", "tun", "vrf", "veth", …
    pub kind: Option<String>,
    /// The bridge or VRF it is enslaved to.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    pub alias: Option<String>,
    pub group: u32,
    pub mac: Option<[u8; 6]>,
}

/// An attribute with raw bytes as its payload.
pub(super) fn attr<T>(kind: T, bytes: Vec<u8>) -> io::Result<Rtattr<T, Buffer>>
where
    T: neli::consts::rtnl::RtaType,
{
    RtattrBuilder::default()
        .rta_type(kind)
        .rta_payload(Buffer::from(bytes))
        .build()
        .map_err(other)
}

/// A C string attribute.
fn string_attr<T: neli::consts::rtnl::RtaType>(kind: T, s: &str) -> io::Result<Rtattr<T, Buffer>> {
    let mut bytes = s.as_bytes().to_vec();
    bytes.push(0);
    attr(kind, bytes)
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn u32_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

impl Link {
    fn from_message(msg: &Ifinfomsg) -> Link {
        let mut link = Link {
            index: *msg.ifi_index() as u32,
            name: String::new(),
            kind: None,
            master: None,
            up: msg.ifi_flags().contains(Iff::UP),
            alias: None,
            group: 0,
            mac: None,
        };
        for a in msg.rtattrs().iter() {
            let payload = a.rta_payload().as_ref();
            match a.rta_type() {
                Ifla::Ifname => link.name = text(payload),
                Ifla::Master => link.master = u32_of(payload).filter(|&m| m != 0),
                Ifla::Ifalias => link.alias = Some(text(payload)).filter(|s| !s.is_empty()),
                Ifla::Group => link.group = u32_of(payload).unwrap_or(0),
                Ifla::Address => link.mac = payload.try_into().ok(),
                Ifla::Linkinfo => {
                    if let Ok(info) = a.get_attr_handle::<IflaInfo>()
                        && let Some(kind) = info.get_attribute(IflaInfo::Kind)
                    {
                        link.kind = Some(text(kind.rta_payload().as_ref()));
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn message(index: u32, attrs: RtBuffer<Ifla, Buffer>) -> io::Result<IfinfomsgBuilder> {
    Ok(IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_index(index as i32)
        .rtattrs(attrs))
}

fn build(builder: IfinfomsgBuilder) -> io::Result<Ifinfomsg> {
    builder.build().map_err(other)
}

impl Rtnl {
    /// The link called `name`, if there is one.
    pub fn link(&self, name: &str) -> io::Result<Option<Link>> {
        let attrs: RtBuffer<Ifla, Buffer> =
            [string_attr(Ifla::Ifname, name)?].into_iter().collect();
        let request = build(message(0, attrs)?)?;
        match self.request::<_, _, Ifinfomsg>(Rtm::Getlink, NlmF::empty(), request) {
            Ok(found) => Ok(found.first().map(Link::from_message)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link with index `index`, if it still exists.
    pub fn link_by_index(&self, index: u32) -> io::Result<Option<Link>> {
        let request = build(message(index, RtBuffer::new())?)?;
        match self.request::<_, _, Ifinfomsg>(Rtm::Getlink, NlmF::empty(), request) {
            Ok(found) => Ok(found.first().map(Link::from_message)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    pub fn links(&self) -> io::Result<Vec<Link>> {
        let request = build(message(0, RtBuffer::new())?)?;
        let found = self.request::<_, _, Ifinfomsg>(Rtm::Getlink, NlmF::DUMP, request)?;
        Ok(found.iter().map(Link::from_message).collect())
    }

    fn set_attr(&self, index: u32, attr: Rtattr<Ifla, Buffer>) -> io::Result<()> {
        let request = build(message(index, [attr].into_iter().collect())?)?;
        self.request::<_, _, Ifinfomsg>(Rtm::Setlink, NlmF::empty(), request)
            .map(drop)
    }

    /// Sets the alias `ip link` shows (the description of docs/networking.md, "What vmd makes").
    pub fn set_alias(&self, index: u32, alias: &str) -> io::Result<()> {
        self.set_attr(index, attr(Ifla::Ifalias, alias.as_bytes().to_vec())?)
    }

    /// Brings the link administratively up or down.
    pub fn set_up(&self, index: u32, up: bool) -> io::Result<()> {
        let builder = message(index, RtBuffer::new())?;
        let builder = if up { builder.up() } else { builder.down() };
        self.request::<_, _, Ifinfomsg>(Rtm::Setlink, NlmF::empty(), build(builder)?)
            .map(drop)
    }

    /// Enslaves the link to `master` (a bridge or a VRF); 0 frees it.
    pub fn set_master(&self, index: u32, master: u32) -> io::Result<()> {
        self.set_attr(index, attr(Ifla::Master, master.to_ne_bytes().to_vec())?)
    }

    /// Puts the link in interface group `group` (`IFLA_GROUP`).
    pub fn set_group(&self, index: u32, group: u32) -> io::Result<()> {
        self.set_attr(index, attr(Ifla::Group, group.to_ne_bytes().to_vec())?)
    }

    /// Creates a link of `kind` with the kind-specific attributes `data`
    /// and returns its index.
    fn create(
        &self,
        name: &str,
        kind: &str,
        data: Option<RtBuffer<u16, Buffer>>,
    ) -> io::Result<u32> {
        let mut info: RtBuffer<IflaInfo, Buffer> = RtBuffer::new();
        info.push(string_attr(IflaInfo::Kind, kind)?);
        if let Some(data) = data {
            info.push(
                RtattrBuilder::default()
                    .rta_type(IflaInfo::Data)
                    .rta_payload(data)
                    .build()
                    .map_err(other)?,
            );
        }
        let linkinfo = RtattrBuilder::default()
            .rta_type(Ifla::Linkinfo)
            .rta_payload(info)
            .build()
            .map_err(other)?;
        let attrs: RtBuffer<Ifla, Buffer> = [string_attr(Ifla::Ifname, name)?, linkinfo]
            .into_iter()
            .collect();
        let request = build(message(0, attrs)?)?;
        self.request::<_, _, Ifinfomsg>(Rtm::Newlink, NlmF::CREATE | NlmF::EXCL, request)?;
        self.link(name)?
            .map(|l| l.index)
            .ok_or_else(|| io::Error::other(format!("{name} vanished after its creation")))
    }

    /// Creates a bridge.
    pub fn create_bridge(&self, name: &str) -> io::Result<u32> {
        self.create(name, "bridge", None)
    }

    /// Creates a VRF device bound to routing table `table`.
    pub fn create_vrf(&self, name: &str, table: u32) -> io::Result<u32> {
        let data: RtBuffer<u16, Buffer> = [attr(IFLA_VRF_TABLE, table.to_ne_bytes().to_vec())?]
            .into_iter()
            .collect();
        self.create(name, "vrf", Some(data))
    }

    /// Deletes a link.
    pub fn delete_link(&self, index: u32) -> io::Result<()> {
        let request = build(message(index, RtBuffer::new())?)?;
        self.request::<_, _, Ifinfomsg>(Rtm::Dellink, NlmF::empty(), request)
            .map(drop)
    }
}
