//! MSI-X: the capability, the vector table and the pending-bit array a
//! device exposes in one of its memory BARs, and the delivery of a vector
//! through KVM (an irqfd on a GSI whose route is the vector's message).
//!
//! Masking is done here, not in KVM: a device that fires a masked vector
//! sets its pending bit, and unmasking delivers it.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::irq_routing::{GsiRouter, MsiMessage};

pub const CAPABILITY_ID: u8 = 0x11;
const ENTRY_SIZE: usize = 16;
/// Message control bits.
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: masked.
const VECTOR_MASKED: u32 = 1;

/// The capability's body (after id and next pointer) for `count` vectors
/// with the table at `table_offset` and the PBA at `pba_offset` of BAR
/// `bar`, and the mask of what the guest may write (enable, function mask).
pub fn capability(count: u16, bar: u8, table_offset: u32, pba_offset: u32) -> ([u8; 10], [u8; 10]) {
    let mut body = [0u8; 10];
    body[0..2].copy_from_slice(&(count - 1).to_le_bytes());
    body[2..6].copy_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
    body[6..10].copy_from_slice(&(pba_offset | u32::from(bar)).to_le_bytes());
    let mut writable = [0u8; 10];
    writable[1] = ((CONTROL_ENABLE | CONTROL_FUNCTION_MASK) >> 8) as u8;
    (body, writable)
}

/// Bytes the table of `count` vectors takes.
pub fn table_size(count: u16) -> u64 {
    (usize::from(count) * ENTRY_SIZE) as u64
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) address_lo: u32,
    pub(super) address_hi: u32,
    pub(super) data: u32,
    pub(super) control: u32,
}

impl Default for Entry {
    fn default() -> Self {
        // Vectors start masked (PCI spec).
        Entry {
            address_lo: 0,
            address_hi: 0,
            data: 0,
            control: VECTOR_MASKED,
        }
    }
}

struct Vector {
    gsi: u32,
    irqfd: EventFd,
}

/// One device's MSI-X state.
pub struct Msix {
    pub(super) entries: Vec<Entry>,
    pub(super) pending: Vec<bool>,
    pub(super) enabled: bool,
    pub(super) function_masked: bool,
    vectors: Vec<Vector>,
    router: Arc<GsiRouter>,
}

impl Msix {
    /// `count` vectors, each with its GSI and irqfd registered with KVM.
    pub fn new(count: u16, router: Arc<GsiRouter>) -> std::io::Result<Msix> {
        let mut vectors = Vec::new();
        for _ in 0..count {
            let gsi = router.allocate();
            let irqfd = EventFd::new(libc::EFD_NONBLOCK)?;
            router
                .vm()
                .register_irqfd(&irqfd, gsi)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
            vectors.push(Vector { gsi, irqfd });
        }
        Ok(Msix {
            entries: vec![Entry::default(); usize::from(count)],
            pending: vec![false; usize::from(count)],
            enabled: false,
            function_masked: false,
            vectors,
            router,
        })
    }

    pub fn count(&self) -> u16 {
        self.entries.len() as u16
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The guest wrote the capability's message control.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        self.deliver_unmasked_pending();
    }

    fn masked(&self, vector: usize) -> bool {
        self.function_masked || self.entries[vector].control & VECTOR_MASKED != 0
    }

    /// Raises `vector`, or marks it pending while masked. Out-of-range
    /// vectors are ignored.
    pub fn trigger(&mut self, vector: u16) {
        let v = usize::from(vector);
        if v >= self.entries.len() || !self.enabled {
            return;
        }
        if self.masked(v) {
            self.pending[v] = true;
        } else if let Err(e) = self.vectors[v].irqfd.write(1) {
            tracing::warn!("msi-x vector {vector}: {e}");
        }
    }

    fn deliver_unmasked_pending(&mut self) {
        if !self.enabled {
            return;
        }
        for v in 0..self.entries.len() {
            if self.pending[v] && !self.masked(v) {
                self.pending[v] = false;
                let _ = self.vectors[v].irqfd.write(1);
            }
        }
    }

    /// Reads the table (offsets relative to its start).
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset as usize + i;
            let Some(entry) = self.entries.get(at / ENTRY_SIZE) else {
                *byte = 0;
                continue;
            };
            let word = match (at % ENTRY_SIZE) / 4 {
                0 => entry.address_lo,
                1 => entry.address_hi,
                2 => entry.data,
                _ => entry.control,
            };
            *byte = word.to_le_bytes()[at % 4];
        }
    }

    /// Writes the table; a changed message re-routes the vector's GSI,
    /// and unmasking delivers what was pending.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        let mut touched = Vec::new();
        for (i, &byte) in data.iter().enumerate() {
            let at = offset as usize + i;
            let index = at / ENTRY_SIZE;
            let Some(entry) = self.entries.get_mut(index) else {
                continue;
            };
            let word = match (at % ENTRY_SIZE) / 4 {
                0 => &mut entry.address_lo,
                1 => &mut entry.address_hi,
                2 => &mut entry.data,
                _ => &mut entry.control,
            };
            let mut bytes = word.to_le_bytes();
            bytes[at % 4] = byte;
            *word = u32::from_le_bytes(bytes);
            if touched.last() != Some(&index) {
                touched.push(index);
            }
        }
        for index in touched {
            self.route(index);
        }
        self.deliver_unmasked_pending();
    }

    /// Points vector `index`'s GSI at the message its entry holds.
    pub(super) fn route(&self, index: usize) {
        let entry = self.entries[index];
        let message = MsiMessage {
            address: u64::from(entry.address_hi) << 32 | u64::from(entry.address_lo),
            data: entry.data,
        };
        if let Err(e) = self.router.set_msi(self.vectors[index].gsi, Some(message)) {
            tracing::warn!("msi-x vector {index}: KVM_SET_GSI_ROUTING: {e}");
        }
    }

    /// Reads the pending-bit array.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let first = (offset as usize + i) * 8;
            *byte = (0..8)
                .filter(|bit| self.pending.get(first + bit).copied().unwrap_or(false))
                .fold(0u8, |acc, bit| acc | 1 << bit);
        }
    }
}
