//! The fast walk of the available ring (`devices::virtio::avail`) against
//! the crate's walk on arbitrary descriptor tables and rings: they must
//! take the same chains, refuse the same ones for the same reason, and
//! leave the queue at the same place. Nothing may panic otherwise.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::driver::{Descriptor, DriverQueue, assert_walks_agree, guest_memory};

/// Guest memory: descriptors may point anywhere in it, or beyond.
const MEMORY: u64 = 1 << 18;

fuzz_target!(|data: &[u8]| {
    let Some((&[shape, max, idx_low, idx_high], rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let size = 1u16 << (shape % 9);
    let max_descriptors = usize::from(max).max(1);
    let mem = guest_memory(MEMORY);
    let mut driver = DriverQueue::new(&mem, 0x1000, size);
    let (table, ring) = rest.split_at(rest.len().min(16 * usize::from(size)));
    for (index, raw) in table.chunks_exact(16).enumerate() {
        let field = |at: usize, n: usize| {
            let mut bytes = [0u8; 8];
            bytes[..n].copy_from_slice(&raw[at..at + n]);
            u64::from_le_bytes(bytes)
        };
        driver.write_descriptor(
            index as u16,
            Descriptor {
                // Mostly inside memory, so that chains get through.
                addr: field(0, 8) % (MEMORY + MEMORY / 8),
                len: field(8, 4) as u32,
                flags: field(12, 2) as u16,
                next: field(14, 2) as u16,
            },
        );
    }
    for head in ring.chunks_exact(2) {
        driver.make_available(u16::from_le_bytes([head[0], head[1]]));
    }
    if shape & 0x80 != 0 {
        driver.set_avail_idx(u16::from_le_bytes([idx_low, idx_high]));
    }
    assert_walks_agree(&mem, &driver, max_descriptors);
});
