//! The common configuration structure of a modern virtio-pci device
//! (virtio 1.x §4.1.4.3): feature negotiation, device status, and the
//! per-queue registers, as a register file with the rules of the spec.
//!
//! Pure state, no KVM: writes return the [`Effect`] the transport must
//! carry out (reset the device, or start it at DRIVER_OK).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};

use super::interrupt::{NO_VECTOR, Vectors};
use crate::devices::virtio::device::{MAX_QUEUE_SIZE, has_feature};

/// Length of the structure in BAR0.
pub const COMMON_CONFIG_LEN: u64 = 0x38;

pub const DRIVER_OK: u8 = VIRTIO_CONFIG_S_DRIVER_OK as u8;
const FEATURES_OK: u8 = VIRTIO_CONFIG_S_FEATURES_OK as u8;
pub const NEEDS_RESET: u8 = VIRTIO_CONFIG_S_NEEDS_RESET as u8;

/// The registers, by offset and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    DeviceFeatureSelect,
    DeviceFeature,
    DriverFeatureSelect,
    DriverFeature,
    MsixConfig,
    NumQueues,
    DeviceStatus,
    ConfigGeneration,
    QueueSelect,
    QueueSize,
    QueueMsixVector,
    QueueEnable,
    QueueNotifyOff,
    QueueDescLo,
    QueueDescHi,
    QueueDriverLo,
    QueueDriverHi,
    QueueDeviceLo,
    QueueDeviceHi,
}

const FIELDS: [(u64, u64, Field); 19] = [
    (0x00, 4, Field::DeviceFeatureSelect),
    (0x04, 4, Field::DeviceFeature),
    (0x08, 4, Field::DriverFeatureSelect),
    (0x0c, 4, Field::DriverFeature),
    (0x10, 2, Field::MsixConfig),
    (0x12, 2, Field::NumQueues),
    (0x14, 1, Field::DeviceStatus),
    (0x15, 1, Field::ConfigGeneration),
    (0x16, 2, Field::QueueSelect),
    (0x18, 2, Field::QueueSize),
    (0x1a, 2, Field::QueueMsixVector),
    (0x1c, 2, Field::QueueEnable),
    (0x1e, 2, Field::QueueNotifyOff),
    (0x20, 4, Field::QueueDescLo),
    (0x24, 4, Field::QueueDescHi),
    (0x28, 4, Field::QueueDriverLo),
    (0x2c, 4, Field::QueueDriverHi),
    (0x30, 4, Field::QueueDeviceLo),
    (0x34, 4, Field::QueueDeviceHi),
];

fn field_at(offset: u64) -> Option<(u64, u64, Field)> {
    FIELDS
        .iter()
        .copied()
        .find(|&(start, len, _)| (start..start + len).contains(&offset))
}

/// One queue as the driver configured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRegisters {
    pub size: u16,
    pub enabled: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

/// What the transport must do after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Status 0: stop the device and forget the driver's setup.
    Reset,
    /// DRIVER_OK after a successful feature negotiation: start serving.
    Activate,
}

pub struct CommonConfig {
    pub(super) offered: u64,
    default_sizes: Vec<u16>,
    pub(super) device_feature_select: u32,
    pub(super) driver_feature_select: u32,
    pub(super) driver_features: u64,
    /// Shared with the I/O thread, which sets NEEDS_RESET.
    pub(super) status: Arc<AtomicU8>,
    pub(super) queue_select: u16,
    pub(super) queues: Vec<QueueRegisters>,
    pub(super) vectors: Arc<Vectors>,
    pub(super) msix_vectors: u16,
}

fn set_low(value: u64, low: u32) -> u64 {
    (value & !0xffff_ffff) | u64::from(low)
}

fn set_high(value: u64, high: u32) -> u64 {
    (value & 0xffff_ffff) | u64::from(high) << 32
}

impl CommonConfig {
    /// A device offering `offered` with queues of `sizes`; the driver may
    /// map interrupts to `msix_vectors` vectors.
    pub fn new(offered: u64, sizes: &[u16], vectors: Arc<Vectors>, msix_vectors: u16) -> Self {
        let mut c = CommonConfig {
            offered,
            default_sizes: sizes.to_vec(),
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: Arc::new(AtomicU8::new(0)),
            queue_select: 0,
            queues: Vec::new(),
            vectors,
            msix_vectors,
        };
        c.reset();
        c
    }

    /// Back to the state at power-on (device status 0).
    pub fn reset(&mut self) {
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.status.store(0, Ordering::SeqCst);
        self.queue_select = 0;
        self.queues = self
            .default_sizes
            .iter()
            .map(|&size| QueueRegisters {
                size,
                enabled: false,
                desc_table: 0,
                avail_ring: 0,
                used_ring: 0,
            })
            .collect();
        self.vectors.reset();
    }

    pub fn status(&self) -> u8 {
        self.status.load(Ordering::SeqCst)
    }

    /// The status cell, for the I/O thread to set NEEDS_RESET.
    pub fn status_cell(&self) -> Arc<AtomicU8> {
        self.status.clone()
    }

    /// Features both sides agreed on.
    pub fn negotiated(&self) -> u64 {
        self.driver_features
    }

    pub fn queues(&self) -> &[QueueRegisters] {
        &self.queues
    }

    fn selected(&self) -> Option<&QueueRegisters> {
        self.queues.get(usize::from(self.queue_select))
    }

    fn get(&self, field: Field) -> u32 {
        let queue = self.selected();
        let queue_value = |f: fn(&QueueRegisters) -> u32| queue.map_or(0, f);
        match field {
            Field::DeviceFeatureSelect => self.device_feature_select,
            Field::DeviceFeature => match self.device_feature_select {
                0 => self.offered as u32,
                1 => (self.offered >> 32) as u32,
                _ => 0,
            },
            Field::DriverFeatureSelect => self.driver_feature_select,
            Field::DriverFeature => match self.driver_feature_select {
                0 => self.driver_features as u32,
                1 => (self.driver_features >> 32) as u32,
                _ => 0,
            },
            Field::MsixConfig => u32::from(self.vectors.config.load(Ordering::SeqCst)),
            Field::NumQueues => self.queues.len() as u32,
            Field::DeviceStatus => u32::from(self.status()),
            // Device configurations of this project never change.
            Field::ConfigGeneration => 0,
            Field::QueueSelect => u32::from(self.queue_select),
            Field::QueueSize => queue_value(|q| u32::from(q.size)),
            Field::QueueMsixVector => self
                .vectors
                .queues
                .get(usize::from(self.queue_select))
                .map_or(u32::from(NO_VECTOR), |v| {
                    u32::from(v.load(Ordering::SeqCst))
                }),
            Field::QueueEnable => queue_value(|q| u32::from(q.enabled)),
            // Every queue is notified at the same address (multiplier 0).
            Field::QueueNotifyOff => 0,
            Field::QueueDescLo => queue_value(|q| q.desc_table as u32),
            Field::QueueDescHi => queue_value(|q| (q.desc_table >> 32) as u32),
            Field::QueueDriverLo => queue_value(|q| q.avail_ring as u32),
            Field::QueueDriverHi => queue_value(|q| (q.avail_ring >> 32) as u32),
            Field::QueueDeviceLo => queue_value(|q| q.used_ring as u32),
            Field::QueueDeviceHi => queue_value(|q| (q.used_ring >> 32) as u32),
        }
    }

    /// A vector number the device can honour, or "no vector".
    fn vector(&self, value: u32) -> u16 {
        if value < u32::from(self.msix_vectors) {
            value as u16
        } else {
            NO_VECTOR
        }
    }

    fn set(&mut self, field: Field, value: u32) -> Effect {
        let negotiating = self.status() & FEATURES_OK == 0;
        let select = usize::from(self.queue_select);
        match field {
            Field::DeviceFeatureSelect => self.device_feature_select = value,
            Field::DriverFeatureSelect => self.driver_feature_select = value,
            Field::DriverFeature if negotiating => {
                let features = match self.driver_feature_select {
                    0 => set_low(self.driver_features, value),
                    1 => set_high(self.driver_features, value),
                    _ => self.driver_features,
                };
                // A driver cannot accept what was not offered.
                self.driver_features = features & self.offered;
            }
            Field::MsixConfig => {
                let v = self.vector(value);
                self.vectors.config.store(v, Ordering::SeqCst);
            }
            Field::DeviceStatus => return self.set_status(value as u8),
            Field::QueueSelect => self.queue_select = value as u16,
            Field::QueueMsixVector => {
                let v = self.vector(value);
                if let Some(q) = self.vectors.queues.get(select) {
                    q.store(v, Ordering::SeqCst);
                }
            }
            _ => {
                let Some(q) = self.queues.get_mut(select) else {
                    return Effect::None;
                };
                // A queue's setup is fixed once the driver enabled it.
                if q.enabled {
                    return Effect::None;
                }
                match field {
                    Field::QueueSize => q.size = (value as u16).min(MAX_QUEUE_SIZE),
                    Field::QueueEnable => q.enabled = value & 1 == 1,
                    Field::QueueDescLo => q.desc_table = set_low(q.desc_table, value),
                    Field::QueueDescHi => q.desc_table = set_high(q.desc_table, value),
                    Field::QueueDriverLo => q.avail_ring = set_low(q.avail_ring, value),
                    Field::QueueDriverHi => q.avail_ring = set_high(q.avail_ring, value),
                    Field::QueueDeviceLo => q.used_ring = set_low(q.used_ring, value),
                    Field::QueueDeviceHi => q.used_ring = set_high(q.used_ring, value),
                    _ => {}
                }
            }
        }
        Effect::None
    }

    fn set_status(&mut self, mut new: u8) -> Effect {
        if new == 0 {
            return Effect::Reset;
        }
        let old = self.status();
        // NEEDS_RESET is the device's to set; the driver only clears it
        // by resetting.
        new = (new & !NEEDS_RESET) | (old & NEEDS_RESET);
        if new & FEATURES_OK != 0
            && old & FEATURES_OK == 0
            && !has_feature(self.driver_features, VIRTIO_F_VERSION_1)
        {
            // Modern devices only: without VERSION_1 the features are
            // not acceptable, and FEATURES_OK stays clear.
            new &= !FEATURES_OK;
        }
        self.status.store(new, Ordering::SeqCst);
        let starting = new & DRIVER_OK != 0 && old & DRIVER_OK == 0;
        if starting && new & FEATURES_OK != 0 && new & NEEDS_RESET == 0 {
            Effect::Activate
        } else {
            Effect::None
        }
    }

    /// Guest read of `data.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            *byte = match field_at(at) {
                Some((start, _, field)) => self.get(field).to_le_bytes()[(at - start) as usize],
                None => 0,
            };
        }
    }

    /// Guest write at `offset`; several fields may be written at once.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Effect {
        let mut effect = Effect::None;
        let mut i = 0;
        while i < data.len() {
            let at = offset + i as u64;
            let Some((start, len, field)) = field_at(at) else {
                i += 1;
                continue;
            };
            let mut bytes = self.get(field).to_le_bytes();
            while i < data.len() && offset + (i as u64) < start + len {
                bytes[(offset + i as u64 - start) as usize] = data[i];
                i += 1;
            }
            match self.set(field, u32::from_le_bytes(bytes)) {
                Effect::None => {}
                e => effect = e,
            }
        }
        effect
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::device::TRANSPORT_FEATURES;

    fn common() -> CommonConfig {
        CommonConfig::new(
            TRANSPORT_FEATURES | 1 << 9,
            &[128],
            Arc::new(Vectors::new(1)),
            2,
        )
    }

    fn read32(c: &CommonConfig, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        c.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn write32(c: &mut CommonConfig, offset: u64, value: u32) -> Effect {
        c.write(offset, &value.to_le_bytes())
    }

    #[test]
    fn feature_windows_and_negotiation() {
        let mut c = common();
        assert_eq!(read32(&c, 0x04), (TRANSPORT_FEATURES | 1 << 9) as u32);
        write32(&mut c, 0x00, 1);
        assert_eq!(read32(&c, 0x04), 1, "VERSION_1 in the high window");
        write32(&mut c, 0x00, 2);
        assert_eq!(read32(&c, 0x04), 0);
        // Unoffered bits are dropped.
        write32(&mut c, 0x0c, 0xffff_ffff);
        assert_eq!(read32(&c, 0x0c), (TRANSPORT_FEATURES | 1 << 9) as u32);
        // FEATURES_OK without VERSION_1 is refused.
        c.write(0x14, &[1 | 2 | FEATURES_OK]);
        assert_eq!(c.status() & FEATURES_OK, 0);
        write32(&mut c, 0x08, 1);
        write32(&mut c, 0x0c, 1);
        c.write(0x14, &[1 | 2 | FEATURES_OK]);
        assert_ne!(c.status() & FEATURES_OK, 0);
        // Features are frozen after FEATURES_OK.
        write32(&mut c, 0x0c, 0);
        assert_eq!(read32(&c, 0x0c), 1);
        assert_eq!(
            c.write(0x14, &[1 | 2 | FEATURES_OK | DRIVER_OK]),
            Effect::Activate
        );
        assert_eq!(
            c.write(0x14, &[1 | 2 | FEATURES_OK | DRIVER_OK]),
            Effect::None
        );
        assert_eq!(c.write(0x14, &[0]), Effect::Reset);
    }

    #[test]
    fn queue_registers() {
        let mut c = common();
        assert_eq!(read32(&c, 0x12) & 0xffff, 1, "one queue");
        assert_eq!(read32(&c, 0x18) & 0xffff, 128, "default size");
        c.write(0x18, &4096u16.to_le_bytes());
        assert_eq!(c.queues()[0].size, MAX_QUEUE_SIZE, "clamped");
        write32(&mut c, 0x20, 0x1000);
        write32(&mut c, 0x24, 0x1);
        write32(&mut c, 0x28, 0x2000);
        write32(&mut c, 0x30, 0x3000);
        assert_eq!(c.queues()[0].desc_table, 0x1_0000_1000);
        c.write(0x1a, &1u16.to_le_bytes());
        assert_eq!(read32(&c, 0x18) >> 16, 1, "vector 1");
        c.write(0x1a, &7u16.to_le_bytes());
        assert_eq!(
            read32(&c, 0x18) >> 16,
            u32::from(NO_VECTOR),
            "no such vector"
        );
        c.write(0x1c, &1u16.to_le_bytes());
        write32(&mut c, 0x20, 0x5000);
        assert_eq!(
            c.queues()[0].desc_table,
            0x1_0000_1000,
            "frozen once enabled"
        );
        // A queue that does not exist reads 0 and ignores writes.
        c.write(0x16, &3u16.to_le_bytes());
        assert_eq!(read32(&c, 0x18) & 0xffff, 0);
        c.write(0x1c, &1u16.to_le_bytes());
        c.reset();
        assert_eq!(c.queues()[0].desc_table, 0);
        assert!(!c.queues()[0].enabled);
    }

    #[test]
    fn byte_access_to_a_wide_register_and_needs_reset_is_sticky() {
        let mut c = common();
        c.write(0x21, &[0x12]);
        assert_eq!(c.queues()[0].desc_table, 0x1200);
        c.status_cell().fetch_or(NEEDS_RESET, Ordering::SeqCst);
        c.write(0x14, &[1]);
        assert_eq!(c.status(), 1 | NEEDS_RESET);
    }

    #[test]
    fn the_negotiated_set_is_what_the_driver_accepted() {
        let mut c = common();
        assert_eq!(c.negotiated(), 0);
        write32(&mut c, 0x0c, 1 << 9);
        write32(&mut c, 0x08, 1);
        write32(&mut c, 0x0c, 1);
        assert_eq!(c.negotiated(), 1 << VIRTIO_F_VERSION_1 | 1 << 9);
    }

    #[test]
    fn each_half_of_a_ring_address_is_written_alone() {
        let mut c = common();
        for (lo, hi) in [(0x20, 0x24), (0x28, 0x2c), (0x30, 0x34)] {
            write32(&mut c, lo, 0x1000);
            write32(&mut c, hi, 0x7);
            // A new low half keeps the high half and drops the old low.
            write32(&mut c, lo, 0x2000);
            assert_eq!(
                (read32(&c, lo), read32(&c, hi)),
                (0x2000, 0x7),
                "at {lo:#x}"
            );
        }
        let q = &c.queues()[0];
        assert_eq!(
            (q.desc_table, q.avail_ring, q.used_ring),
            (0x7_0000_2000, 0x7_0000_2000, 0x7_0000_2000)
        );
    }

    #[test]
    fn vectors_past_the_table_mean_no_vector() {
        // common() has a table of two vectors: 0 and 1.
        let mut c = common();
        for (offset, read_at, shift) in [(0x10, 0x10, 0), (0x1a, 0x18, 16)] {
            c.write(offset, &1u16.to_le_bytes());
            assert_eq!(read32(&c, read_at) >> shift & 0xffff, 1, "at {offset:#x}");
            c.write(offset, &2u16.to_le_bytes());
            assert_eq!(
                read32(&c, read_at) >> shift & 0xffff,
                u32::from(NO_VECTOR),
                "at {offset:#x}"
            );
        }
    }

    #[test]
    fn only_driver_ok_with_features_ok_activates() {
        let mut c = common();
        write32(&mut c, 0x08, 1);
        write32(&mut c, 0x0c, 1);
        // DRIVER_OK without FEATURES_OK: the driver skipped a step.
        assert_eq!(c.write(0x14, &[1 | 2 | DRIVER_OK]), Effect::None);
        assert_eq!(c.write(0x14, &[0]), Effect::Reset);
        c.reset();
        write32(&mut c, 0x08, 1);
        write32(&mut c, 0x0c, 1);
        assert_eq!(c.write(0x14, &[1 | 2 | FEATURES_OK]), Effect::None);
        assert_eq!(
            c.write(0x14, &[1 | 2 | FEATURES_OK | DRIVER_OK]),
            Effect::Activate
        );
    }

    #[test]
    fn only_bit_0_enables_a_queue() {
        let mut c = common();
        for value in [0u16, 2] {
            c.write(0x1c, &value.to_le_bytes());
            assert!(!c.queues()[0].enabled, "{value} written");
        }
        c.write(0x1c, &1u16.to_le_bytes());
        assert!(c.queues()[0].enabled);
    }

    #[test]
    fn writes_past_the_structure_are_dropped() {
        let mut c = common();
        write32(&mut c, 0x34, 0x1234_5678);
        // Two bytes into the last field, two past the end.
        c.write(0x36, &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(read32(&c, 0x34), 0xbbaa_5678);
        assert_eq!(c.write(COMMON_CONFIG_LEN, &[1, 2, 3, 4]), Effect::None);
        assert_eq!(read32(&c, COMMON_CONFIG_LEN), 0);
    }
}
