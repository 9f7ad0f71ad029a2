//! virtio-rng (docs/machine.md, "virtio devices"): the guest's buffers filled with
//! the host kernel's randomness (`getrandom(2)`, docs/machine.md, "virtio devices").
//!
//! Rationed so that a guest cannot make the host spend its time here: a
//! token bucket of [`RATE`] bytes a second, holding up to [`BURST`].
//! Every chain costs at least [`CHAIN_COST`] bytes of it, so a flood of
//! tiny requests is bounded in number as well (4096 chains a second).
//! Each chain gets at most [`MAX_PER_CHAIN`] bytes (vmd's limit per
//! buffer). When the bucket is empty, chains wait in the queue; the I/O
//! thread sleeps for the refill (never more than [`MAX_WAIT`] at a time,
//! so a reset or a stop is not held up) instead of spinning.
//!
//! The bucket belongs to the device, not to one activation, so resetting
//! the device does not refill it. A send carries no state of the model
//! (the transport carries the queue): the bucket of a received device
//! starts full.
//!
//! Booting guests want a few hundred bytes to seed their own generators;
//! 1 MiB a second is far beyond that and costs the host about a
//! millisecond of CPU a second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vm_memory::Bytes;

use super::buffers::sub_segments;
use super::device::{DeviceBroken, QueueHandler, TRANSPORT_FEATURES, VirtioDevice};
use super::queue::Chain;
use super::serve::Requests;
use crate::devices::persist::{Persist, PersistError, decode, encode};
use crate::memory::GuestMemoryMmap;

/// The virtio device type of an entropy source.
pub const DEVICE_TYPE: u16 = 4;
/// vmd's queue size for viornd.
pub const QUEUE_SIZE: u16 = 64;
/// Sustained bytes per second.
pub const RATE: u64 = 1 << 20;
/// Bytes available at once after a quiet while.
pub const BURST: u64 = 256 << 10;
/// What one chain costs at least, whatever its size.
pub const CHAIN_COST: u64 = 256;
/// Most bytes one chain gets.
pub const MAX_PER_CHAIN: u64 = 64 << 10;
/// Longest sleep of the I/O thread waiting for the bucket.
pub const MAX_WAIT: Duration = Duration::from_millis(20);
/// Descriptors in one chain (any number of buffers is fine; this bounds
/// the walk).
const MAX_DESCRIPTORS: usize = QUEUE_SIZE as usize;

/// PCI class 08/80 (system peripheral, other) and subsystem 0004
/// (docs/machine.md, "PCI devices").
pub fn pci_identity() -> crate::devices::pci::Identity {
    super::pci::identity(DEVICE_TYPE, 0x08, 0x80, 0x0004)
}

/// A token bucket that may go into debt: a chain is served whole once
/// any tokens are left, and what it overdraws is paid back by waiting.
/// The rate holds on average; a burst is at most [`BURST`] plus one
/// chain.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    capacity: u64,
    tokens: i64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u64, capacity: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            capacity,
            tokens: capacity as i64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let earned = (elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000) as i64;
        if earned > 0 {
            self.tokens = (self.tokens.saturating_add(earned)).min(self.capacity as i64);
            // Keep the fraction of a token not yet earned.
            let spent =
                Duration::from_nanos((earned as u64).saturating_mul(1_000_000_000) / self.rate);
            self.last = if self.tokens == self.capacity as i64 {
                now
            } else {
                self.last + spent
            };
        }
    }

    /// Whether the next chain may be served.
    pub fn may_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0
    }

    pub fn charge(&mut self, bytes: u64) {
        self.tokens = self
            .tokens
            .saturating_sub(bytes.min(i64::MAX as u64) as i64);
    }

    /// How long until a chain may be served again.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens > 0 {
            return Duration::ZERO;
        }
        let missing = (1 - self.tokens) as u64;
        Duration::from_nanos(missing.saturating_mul(1_000_000_000) / self.rate)
    }
}

pub struct Rng {
    bucket: Arc<Mutex<TokenBucket>>,
}

impl Rng {
    pub fn new() -> Rng {
        Rng {
            bucket: Arc::new(Mutex::new(TokenBucket::new(RATE, BURST, Instant::now()))),
        }
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE
    }

    fn queue_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        TRANSPORT_FEATURES
    }

    fn config_len(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, _features: u64) -> Box<dyn QueueHandler> {
        Box::new(RngHandler {
            bucket: self.bucket.clone(),
        })
    }
}

pub struct RngHandler {
    bucket: Arc<Mutex<TokenBucket>>,
}

/// Fills `buf` from the host kernel's generator.
pub fn host_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl RngHandler {
    /// Fills the chain's writable buffers (readable ones, which the spec
    /// forbids, are ignored); returns the bytes written.
    fn fill(&self, chain: &Chain, mem: &GuestMemoryMmap) -> Result<u32, DeviceBroken> {
        let len = chain.writable_len().min(MAX_PER_CHAIN);
        self.bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .charge(len.max(CHAIN_COST));
        let mut chunk = [0u8; 4096];
        let mut done = 0u64;
        for segment in sub_segments(&chain.writable, 0, len) {
            let mut at = 0u64;
            while at < u64::from(segment.len) {
                let n = (u64::from(segment.len) - at).min(chunk.len() as u64) as usize;
                host_random(&mut chunk[..n])
                    .map_err(|e| DeviceBroken(format!("getrandom: {e}")))?;
                mem.write_slice(&chunk[..n], vm_memory::GuestAddress(segment.addr.0 + at))
                    .map_err(|e| DeviceBroken(format!("entropy buffer: {e}")))?;
                at += n as u64;
            }
            done += at;
        }
        Ok(done as u32)
    }
}

/// Nothing of the model goes with a send beyond the transport's queues:
/// the rate limiter starts again with a full bucket on the receiving
/// host (a guest gains at most one burst by being moved).
#[derive(Serialize, Deserialize)]
struct RngState {}

impl Persist for Rng {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        Ok(encode(&RngState {}))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let RngState {} = decode(state)?;
        Ok(())
    }
}

impl Requests for RngHandler {
    const MAX_DESCRIPTORS: usize = MAX_DESCRIPTORS;

    fn may_take(&mut self) -> bool {
        self.bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .may_take(Instant::now())
    }

    fn serve(
        &mut self,
        _index: usize,
        chain: &Chain,
        mem: &GuestMemoryMmap,
    ) -> Result<u32, DeviceBroken> {
        self.fill(chain, mem)
    }

    /// Chains wait while the bucket is empty: the thread sleeps until it
    /// has refilled (or for at most [`MAX_WAIT`], to look at its other
    /// events) rather than coming straight back to find it empty.
    fn chains_left(&mut self) {
        let wait = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wait(Instant::now());
        std::thread::sleep(wait.min(MAX_WAIT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_empties_and_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, t0);
        assert!(b.may_take(t0));
        b.charge(400);
        assert!(b.may_take(t0));
        b.charge(300); // 200 in debt
        assert!(!b.may_take(t0));
        assert_eq!(b.wait(t0), Duration::from_millis(201));
        assert!(!b.may_take(t0 + Duration::from_millis(200)));
        assert!(b.may_take(t0 + Duration::from_millis(201)));
        // Never more than the capacity, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.may_take(later));
        b.charge(500);
        assert!(!b.may_take(later));
        assert_eq!(b.wait(later), Duration::from_millis(1));
    }

    #[test]
    fn host_randomness_is_not_all_zero() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        host_random(&mut a).unwrap();
        host_random(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
