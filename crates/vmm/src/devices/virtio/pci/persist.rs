//! A virtio-pci device's saved state: its PCI function (configuration
//! space, MSI-X), the transport registers the driver wrote (features,
//! status, queue setup, vectors, ISR), where the device stands in each
//! running queue, and the device model's own state.
//!
//! The queue positions come from the I/O thread between two passes over
//! the queues, after it flushed what the device wrote (see
//! [`super::super::worker`]), so every request the driver
//! made available is either on the used ring with `next_used` past it, or
//! still to be taken at `next_avail`: the receiving device serves exactly
//! the requests the sending one did not.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::VirtioPciDevice;
use super::common_config::{CommonConfig, DRIVER_OK, NEEDS_RESET, QueueRegisters};
use super::interrupt::NO_VECTOR;
use crate::devices::pci::persist::{ConfigSpaceState, MsixState};
use crate::devices::persist::{Persist, PersistError, check, decode, encode};
use crate::devices::virtio::device::MAX_QUEUE_SIZE;
use crate::devices::virtio::worker::QueuePosition;

#[derive(Debug, Serialize, Deserialize)]
struct QueueSetup {
    size: u16,
    enabled: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    msix_vector: u16,
}

#[derive(Debug, Serialize, Deserialize)]
struct CommonConfigState {
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    config_msix_vector: u16,
    queues: Vec<QueueSetup>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VirtioPciState {
    /// The virtio device type, checked against the receiving device.
    device_type: u16,
    config: ConfigSpaceState,
    common: CommonConfigState,
    isr: u8,
    intx_disabled: bool,
    msix: MsixState,
    /// Per queue `(next_avail, next_used)` while the device serves its
    /// queues (`None` for a queue the driver left disabled); `None` before
    /// DRIVER_OK or after the device broke.
    positions: Option<Vec<Option<(u16, u16)>>>,
    /// The device model's own state ([`crate::devices::virtio::VirtioDevice`]).
    device: Vec<u8>,
}

impl CommonConfig {
    fn state(&self) -> CommonConfigState {
        CommonConfigState {
            device_feature_select: self.device_feature_select,
            driver_feature_select: self.driver_feature_select,
            driver_features: self.driver_features,
            status: self.status(),
            queue_select: self.queue_select,
            config_msix_vector: self.vectors.config.load(Ordering::SeqCst),
            queues: self
                .queues
                .iter()
                .zip(&self.vectors.queues)
                .map(|(q, vector)| QueueSetup {
                    size: q.size,
                    enabled: q.enabled,
                    desc_table: q.desc_table,
                    avail_ring: q.avail_ring,
                    used_ring: q.used_ring,
                    msix_vector: vector.load(Ordering::SeqCst),
                })
                .collect(),
        }
    }

    fn restore_state(&mut self, s: &CommonConfigState) -> Result<(), PersistError> {
        check(
            s.queues.len() == self.queues.len(),
            "number of queues differs",
        )?;
        check(
            s.driver_features & !self.offered == 0,
            "driver features the device does not offer",
        )?;
        let vector_ok = |v: u16| v == NO_VECTOR || v < self.msix_vectors;
        check(vector_ok(s.config_msix_vector), "MSI-X vector out of range")?;
        for q in &s.queues {
            check(
                q.size <= MAX_QUEUE_SIZE,
                "queue larger than the device allows",
            )?;
            check(vector_ok(q.msix_vector), "MSI-X vector out of range")?;
        }
        self.device_feature_select = s.device_feature_select;
        self.driver_feature_select = s.driver_feature_select;
        self.driver_features = s.driver_features;
        self.status.store(s.status, Ordering::SeqCst);
        self.queue_select = s.queue_select;
        self.vectors
            .config
            .store(s.config_msix_vector, Ordering::SeqCst);
        for ((regs, vector), q) in self
            .queues
            .iter_mut()
            .zip(&self.vectors.queues)
            .zip(&s.queues)
        {
            *regs = QueueRegisters {
                size: q.size,
                enabled: q.enabled,
                desc_table: q.desc_table,
                avail_ring: q.avail_ring,
                used_ring: q.used_ring,
            };
            vector.store(q.msix_vector, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl VirtioPciDevice {
    /// The device serves its queues: the driver set DRIVER_OK and the
    /// device did not break since.
    fn serving(&self) -> bool {
        let status = self.common.status();
        status & DRIVER_OK != 0 && status & NEEDS_RESET == 0
    }
}

impl Persist for VirtioPciDevice {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        let positions = self
            .worker
            .quiesce()
            .map_err(|e| PersistError(format!("{}: {e}", self.name)))?;
        if self.serving() && positions.is_none() {
            return Err(PersistError(format!(
                "{}: the device's I/O thread is gone",
                self.name
            )));
        }
        let positions = positions.map(|queues| {
            queues
                .into_iter()
                .map(|q| q.map(|p| (p.next_avail, p.next_used)))
                .collect()
        });
        Ok(encode(&VirtioPciState {
            device_type: self.device.device_type(),
            config: self.config.state(),
            common: self.common.state(),
            isr: self.interrupt.isr(),
            intx_disabled: self.interrupt.intx_disabled.load(Ordering::SeqCst),
            msix: self.interrupt.msix().state(),
            positions,
            device: self.device.save()?,
        }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let s: VirtioPciState = decode(state)?;
        check(
            s.device_type == self.device.device_type(),
            "another type of virtio device",
        )?;
        self.config.restore_state(&s.config)?;
        self.common.restore_state(&s.common)?;
        self.interrupt.isr.store(s.isr, Ordering::SeqCst);
        self.interrupt
            .intx_disabled
            .store(s.intx_disabled, Ordering::SeqCst);
        self.interrupt.msix().restore_state(&s.msix)?;
        // An interrupt the guest has not taken yet keeps the line up.
        self.interrupt.resample();
        self.device.restore(&s.device)?;
        match (&s.positions, self.serving()) {
            (Some(queues), true) => {
                let positions: Vec<Option<QueuePosition>> = queues
                    .iter()
                    .map(|q| {
                        q.map(|(next_avail, next_used)| QueuePosition {
                            next_avail,
                            next_used,
                        })
                    })
                    .collect();
                self.start_queues(Some(&positions))
                    .map_err(|e| PersistError(format!("{}: {e}", self.name)))
            }
            (None, false) => Ok(()),
            _ => Err(PersistError::new(
                "queue positions disagree with the device status",
            )),
        }
    }
}
