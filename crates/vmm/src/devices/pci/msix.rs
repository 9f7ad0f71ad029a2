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

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::Kvm;

    #[test]
    fn the_capability_holds_the_last_vector_and_where_table_and_pba_are() {
        let (body, writable) = capability(5, 2, 0x1000, 0x1800);
        assert_eq!(body[0..2], [4, 0], "message control: table size minus one");
        assert_eq!(body[2..6], 0x1002u32.to_le_bytes(), "table offset, BIR 2");
        assert_eq!(body[6..10], 0x1802u32.to_le_bytes(), "PBA offset, BIR 2");
        assert_eq!(
            writable,
            [0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0],
            "the guest writes enable and function mask, nothing else"
        );
        let (body, _) = capability(2048, 0, 0, 0x8000);
        assert_eq!(body[0..2], 2047u16.to_le_bytes(), "the largest table");
        assert_eq!(body[2..6], [0; 4]);
        assert_eq!(body[6..10], 0x8000u32.to_le_bytes());
    }

    #[test]
    fn a_table_takes_sixteen_bytes_a_vector() {
        assert_eq!(table_size(0), 0);
        assert_eq!(table_size(1), 16);
        assert_eq!(table_size(3), 48);
        assert_eq!(table_size(2048), 0x8000);
    }

    /// `count` vectors on a VM of their own. Each vector's irqfd is then
    /// swapped for one KVM does not read, so that every delivery stays
    /// counted on it for [`delivered`].
    fn msix(count: u16) -> Msix {
        let kvm = Kvm::new().expect("/dev/kvm");
        let vm = Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
        let mut msix = Msix::new(count, Arc::new(GsiRouter::new(vm))).expect("Msix::new");
        for vector in &mut msix.vectors {
            vector.irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        }
        msix
    }

    /// How many times `vector` was delivered since the last look.
    fn delivered(msix: &Msix, vector: usize) -> u64 {
        msix.vectors[vector].irqfd.read().unwrap_or(0)
    }

    /// The first byte of the pending-bit array.
    fn pba(msix: &Msix) -> u8 {
        let mut b = [0u8];
        msix.pba_read(0, &mut b);
        b[0]
    }

    fn read(msix: &Msix, offset: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0xeeu8; len];
        msix.table_read(offset, &mut data);
        data
    }

    /// Writes vector control (the entry's last dword) of `vector`.
    fn set_vector_masked(msix: &mut Msix, vector: u64, masked: bool) {
        msix.table_write(16 * vector + 12, &u32::from(masked).to_le_bytes());
    }

    const ENABLE: u16 = 1 << 15;
    const FUNCTION_MASK: u16 = 1 << 14;

    #[test]
    fn count_is_the_number_of_vectors() {
        testkit::needs!(kvm);
        assert_eq!(msix(3).count(), 3);
        assert_eq!(msix(2).count(), 2);
    }

    #[test]
    fn only_the_enable_bit_of_message_control_enables() {
        testkit::needs!(kvm);
        let mut m = msix(2);
        assert!(!m.enabled(), "disabled at reset");
        for (control, enabled) in [
            (ENABLE, true),
            (0, false),
            (FUNCTION_MASK, false),
            (ENABLE | FUNCTION_MASK, true),
            (0x3fff, false),
            (0xffff, true),
        ] {
            m.set_control(control);
            assert_eq!(m.enabled(), enabled, "message control {control:#06x}");
        }
    }

    /// A fresh table: every vector masked, no address, no data; and
    /// nothing past the table.
    #[test]
    fn vectors_start_masked_and_past_the_table_is_zero() {
        testkit::needs!(kvm);
        let m = msix(2);
        let entry = [[0; 4], [0; 4], [0; 4], 1u32.to_le_bytes()].concat();
        assert_eq!(read(&m, 0, 32), [entry.clone(), entry].concat());
        assert_eq!(read(&m, 32, 16), [0; 16], "no third entry");
        assert_eq!(read(&m, 0x7f8, 8), [0; 8]);
        assert_eq!(
            read(&m, 28, 8),
            [1, 0, 0, 0, 0, 0, 0, 0],
            "a read across the end"
        );
    }

    /// The guest reads back exactly the bytes it wrote, whatever the
    /// width (1, 2, 4 or 8 bytes) and offset of its writes and reads, in
    /// every word of every entry; writes past the table go nowhere.
    #[test]
    fn the_table_reads_back_what_was_written_at_every_width_and_offset() {
        testkit::needs!(kvm);
        const LEN: usize = 3 * ENTRY_SIZE;
        let mut m = msix(3);
        let mut expected = [0u8; LEN];
        for entry in expected.chunks_mut(ENTRY_SIZE) {
            entry[12] = 1;
        }
        // Every byte written differs from the one written before it.
        let mut next = 0u8;
        for width in [1, 2, 4, 8] {
            for at in 0..=LEN - width {
                let data: Vec<u8> = (0..width)
                    .map(|_| {
                        next = next.wrapping_add(1).max(1);
                        next
                    })
                    .collect();
                m.table_write(at as u64, &data);
                expected[at..at + width].copy_from_slice(&data);
                for w in [1, 2, 4, 8] {
                    for from in (0..=LEN - w).step_by(w) {
                        assert_eq!(
                            read(&m, from as u64, w),
                            expected[from..from + w],
                            "{w} bytes at {from} after {width} written at {at}"
                        );
                    }
                }
            }
        }
        // Off the end: kept nowhere, read as 0.
        m.table_write(LEN as u64 - 4, &[0xa5; 8]);
        expected[LEN - 4..].fill(0xa5);
        assert_eq!(read(&m, 0, LEN + 16)[..LEN], expected);
        assert_eq!(
            read(&m, LEN as u64 - 4, 8),
            [0xa5, 0xa5, 0xa5, 0xa5, 0, 0, 0, 0]
        );
        assert_eq!(read(&m, LEN as u64, 16), [0; 16]);
    }

    /// Each word lands in its own field: what a guest writes as the
    /// message address (both halves), the data and vector control.
    #[test]
    fn each_table_word_is_its_own_field() {
        testkit::needs!(kvm);
        let mut m = msix(2);
        m.table_write(16, &0x1234_5678_fee0_1000u64.to_le_bytes());
        m.table_write(24, &0x41u32.to_le_bytes());
        set_vector_masked(&mut m, 1, false);
        let e = m.entries[1];
        assert_eq!(
            [e.address_lo, e.address_hi, e.data, e.control],
            [0xfee0_1000, 0x1234_5678, 0x41, 0]
        );
        let e = m.entries[0];
        assert_eq!(
            [e.address_lo, e.address_hi, e.data, e.control],
            [0, 0, 0, 1]
        );
    }

    #[test]
    fn with_the_enable_bit_alone_an_unmasked_vector_is_delivered() {
        testkit::needs!(kvm);
        let mut m = msix(2);
        set_vector_masked(&mut m, 1, false);
        m.set_control(ENABLE);
        m.trigger(1);
        assert_eq!(delivered(&m, 1), 1);
        assert_eq!(pba(&m), 0, "nothing pending");
        m.trigger(0);
        assert_eq!(delivered(&m, 0), 0, "vector 0 is masked");
        assert_eq!(pba(&m), 0b01, "and pending");
    }

    #[test]
    fn the_function_mask_alone_holds_a_vector_pending_until_cleared() {
        testkit::needs!(kvm);
        let mut m = msix(2);
        set_vector_masked(&mut m, 1, false);
        m.set_control(ENABLE | FUNCTION_MASK);
        m.trigger(1);
        assert_eq!(delivered(&m, 1), 0, "held by the function mask");
        assert_eq!(pba(&m), 0b10, "pending");
        m.set_control(ENABLE);
        assert_eq!(delivered(&m, 1), 1, "delivered when unmasked");
        assert_eq!(pba(&m), 0);
        m.set_control(ENABLE | FUNCTION_MASK);
        m.set_control(ENABLE);
        assert_eq!(delivered(&m, 1), 0, "only once");
    }

    #[test]
    fn a_vector_past_the_table_is_ignored() {
        testkit::needs!(kvm);
        let mut m = msix(2);
        set_vector_masked(&mut m, 0, false);
        set_vector_masked(&mut m, 1, false);
        m.set_control(ENABLE);
        for vector in [2, 3, u16::MAX] {
            m.trigger(vector);
        }
        assert_eq!((delivered(&m, 0), delivered(&m, 1)), (0, 0));
        assert_eq!(pba(&m), 0);
    }

    /// The pending-bit array holds vector n in bit n % 8 of byte n / 8, at
    /// whatever offset and length the guest reads; past the last vector
    /// it reads 0.
    #[test]
    fn the_pba_has_a_bit_for_each_vector_at_every_offset() {
        testkit::needs!(kvm);
        let mut m = msix(19);
        m.set_control(ENABLE);
        // Masked, so each trigger only sets its pending bit.
        for vector in [0, 2, 7, 9, 15, 16, 18] {
            m.trigger(vector);
        }
        let pba_at = |offset: u64, len: usize| {
            let mut data = vec![0xeeu8; len];
            m.pba_read(offset, &mut data);
            data
        };
        let whole = [0b1000_0101, 0b1000_0010, 0b0000_0101, 0];
        assert_eq!(pba_at(0, 4), whole);
        for offset in 0..4 {
            assert_eq!(pba_at(offset, 1), [whole[offset as usize]], "byte {offset}");
        }
        assert_eq!(pba_at(1, 2), whole[1..3]);
        assert_eq!(pba_at(8, 8), [0; 8], "past the last vector");
    }

    /// With MSI-X disabled a device's interrupt is not an MSI: it is
    /// neither delivered nor kept pending for when MSI-X is enabled.
    #[test]
    fn a_disabled_function_neither_delivers_nor_holds_pending() {
        testkit::needs!(kvm);
        let mut m = msix(2);
        set_vector_masked(&mut m, 1, false);
        for control in [0, FUNCTION_MASK] {
            m.set_control(control);
            m.trigger(0);
            m.trigger(1);
            assert_eq!(pba(&m), 0, "message control {control:#06x}");
        }
        m.set_control(ENABLE);
        assert_eq!((delivered(&m, 0), delivered(&m, 1)), (0, 0));
        assert_eq!(pba(&m), 0);
    }
}
