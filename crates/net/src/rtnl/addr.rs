//! Interface addresses: the host side of a local interface (docs/networking.md,
//! "What vmd makes").

use std::io;
use std::net::IpAddr;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Ifa, IfaF, RtAddrFamily, RtScope, Rtm};
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder};
use neli::types::{Buffer, RtBuffer};

use super::link::attr;
use super::{Rtnl, other};

/// An address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

fn family(addr: &IpAddr) -> RtAddrFamily {
    match addr {
        IpAddr::V4(_) => RtAddrFamily::Inet,
        IpAddr::V6(_) => RtAddrFamily::Inet6,
    }
}

fn octets(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn from_octets(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn message(index: u32, address: &Address, flags: IfaF) -> io::Result<Ifaddrmsg> {
    let bytes = octets(&address.addr);
    let mut attrs: RtBuffer<Ifa, Buffer> = RtBuffer::new();
    attrs.push(attr(Ifa::Local, bytes.clone())?);
    attrs.push(attr(Ifa::Address, bytes)?);
    IfaddrmsgBuilder::default()
        .ifa_family(family(&address.addr))
        .ifa_prefixlen(address.prefix_len)
        .ifa_flags(flags)
        .ifa_scope(RtScope::Universe)
        .ifa_index(index)
        .rtattrs(attrs)
        .build()
        .map_err(other)
}

impl Rtnl {
    /// Adds a permanent address (infinite lifetimes). IPv6 addresses skip
    /// duplicate address detection so they are usable at once.
    pub fn add_address(&self, index: u32, address: &Address) -> io::Result<()> {
        let flags = match address.addr {
            IpAddr::V4(_) => IfaF::empty(),
            IpAddr::V6(_) => IfaF::NODAD,
        };
        let request = message(index, address, flags)?;
        self.request::<_, _, Ifaddrmsg>(Rtm::Newaddr, NlmF::CREATE | NlmF::EXCL, request)
            .map(drop)
    }

    /// Removes an address; one that is not there is no error.
    pub fn delete_address(&self, index: u32, address: &Address) -> io::Result<()> {
        let request = message(index, address, IfaF::empty())?;
        match self.request::<_, _, Ifaddrmsg>(Rtm::Deladdr, NlmF::empty(), request) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            other => other.map(drop),
        }
    }

    /// The addresses of one link, in the order the kernel lists them.
    pub fn addresses(&self, index: u32) -> io::Result<Vec<Address>> {
        Ok(self
            .all_addresses()?
            .into_iter()
            .filter(|(link, _)| *link == index)
            .map(|(_, address)| address)
            .collect())
    }

    /// Every address of the namespace with the index of its link.
    pub fn all_addresses(&self) -> io::Result<Vec<(u32, Address)>> {
        let request = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Unspecified)
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::Universe)
            .ifa_index(0)
            .build()
            .map_err(other)?;
        let found = self.request::<_, _, Ifaddrmsg>(Rtm::Getaddr, NlmF::DUMP, request)?;
        Ok(found
            .iter()
            .filter_map(|m| {
                let handle = m.rtattrs().get_attr_handle();
                let raw = handle
                    .get_attribute(Ifa::Local)
                    .or_else(|| handle.get_attribute(Ifa::Address))?;
                let address = Address {
                    addr: from_octets(raw.rta_payload().as_ref())?,
                    prefix_len: *m.ifa_prefixlen(),
                };
                Some((*m.ifa_index(), address))
            })
            .collect())
    }
}
