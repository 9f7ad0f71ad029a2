//! The network device model: what it offers, its configuration space (the
//! guest's MAC and the link state), and activation, which decides the
//! offloads the guest takes (the handler tells the tap).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use guestnet::dhcp::Lease;
use guestnet::mac_lock::MacLock;
use guestnet::tap::offload;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use vmm_sys_util::epoll::EventSet;

use super::frame::{Offloads, TxPolicy};
use super::handler::NetHandler;
use super::state::{NetIo, NetStats};
use super::{DEVICE_TYPE, QUEUE_SIZE, RX, TX};
use crate::devices::virtio::device::EventSource;
use crate::devices::virtio::device::{QueueHandler, TRANSPORT_FEATURES, VirtioDevice, has_feature};

/// `mac` and `status` of `virtio_net_config`: the 8 bytes vmd exposes.
const CONFIG_LEN: usize = 8;

/// One NIC as the VM process gets it from vmd.
pub struct NetConfig {
    /// For logs: `<vm>-vionet<i>`.
    pub name: String,
    pub tap: File,
    pub guest_mac: [u8; 6],
    /// `locked lladdr` (docs/machine.md, "The network device").
    pub locked: bool,
    /// Local interface: the DHCP responder's lease.
    pub lease: Option<Lease>,
}

pub struct Net {
    pub(super) name: String,
    tap: Arc<File>,
    pub(super) mac: [u8; 6],
    lock: Option<MacLock>,
    lease: Option<Lease>,
    stats: Arc<NetStats>,
}

impl Net {
    pub fn new(config: NetConfig) -> Net {
        Net {
            name: config.name,
            tap: Arc::new(config.tap),
            mac: config.guest_mac,
            lock: config.locked.then_some(MacLock {
                mac: config.guest_mac,
            }),
            lease: config.lease,
            stats: Arc::new(NetStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<NetStats> {
        self.stats.clone()
    }

    /// Every feature the device offers.
    pub fn offered() -> u64 {
        let bits = [
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_ECN,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_STATUS,
        ];
        bits.iter().fold(TRANSPORT_FEATURES, |f, &bit| f | 1 << bit)
    }
}

/// The offloads of each direction in `features`.
pub fn offloads(features: u64) -> (Offloads, Offloads) {
    let has = |bit| has_feature(features, bit);
    let guest = Offloads {
        csum: has(VIRTIO_NET_F_GUEST_CSUM),
        tso4: has(VIRTIO_NET_F_GUEST_TSO4),
        tso6: has(VIRTIO_NET_F_GUEST_TSO6),
        ecn: has(VIRTIO_NET_F_GUEST_ECN),
    };
    let host = Offloads {
        csum: has(VIRTIO_NET_F_CSUM),
        tso4: has(VIRTIO_NET_F_HOST_TSO4),
        tso6: has(VIRTIO_NET_F_HOST_TSO6),
        ecn: has(VIRTIO_NET_F_HOST_ECN),
    };
    (guest, host)
}

/// The tap's `TUNSETOFFLOAD` flags for what the guest takes: the kernel
/// then leaves checksums and segmentation of frames for the guest to it.
pub fn tap_offloads(guest: &Offloads) -> u32 {
    if !guest.csum {
        return 0;
    }
    let mut flags = offload::CSUM;
    if guest.tso4 {
        flags |= offload::TSO4;
    }
    if guest.tso6 {
        flags |= offload::TSO6;
    }
    if guest.ecn && (guest.tso4 || guest.tso6) {
        flags |= offload::TSO_ECN;
    }
    flags
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE
    }

    fn queue_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        Net::offered()
    }

    fn config_len(&self) -> u64 {
        CONFIG_LEN as u64
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| config.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Runs on the vCPU thread that took the driver's DRIVER_OK write, so
    /// it only decides: the handler tells the tap its offloads when the
    /// device's I/O thread starts it (`QueueHandler::start`).
    fn activate(&mut self, features: u64) -> Box<dyn QueueHandler> {
        let (guest, host) = offloads(features);
        let io = NetIo::new(
            &self.name,
            self.tap.clone(),
            has_feature(features, VIRTIO_NET_F_MRG_RXBUF),
            guest,
            TxPolicy {
                offloads: host,
                lock: self.lock,
                lease: self.lease.clone(),
            },
            self.stats.clone(),
        );
        Box::new(NetHandler::new(io, tap_offloads(&guest)))
    }

    fn event_sources(&self) -> Vec<EventSource> {
        vec![EventSource {
            fd: self.tap.as_raw_fd(),
            // Edge-triggered: the receive path reads until the tap is
            // empty or the guest has no buffers, and is woken by new
            // frames or new buffers, never by frames it left waiting.
            events: EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED,
            queues: vec![RX, TX],
        }]
    }
}
