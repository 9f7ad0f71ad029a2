//! How a virtio-pci device interrupts: MSI-X when the driver enabled it
//! (one vector per queue plus one for configuration changes, as the
//! driver maps them), otherwise INTx on the device's fixed IRQ.
//!
//! INTx is level-triggered: the irqfd is registered with a resample
//! eventfd, KVM lowers the line when the guest acknowledges the interrupt
//! and tells the device, which raises it again while its ISR still has
//! bits set. The ISR is read-to-clear.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::EventFd;

use crate::devices::pci::msix::Msix;
use crate::devices::virtio::device::Interrupt;

/// "No vector" in the MSI-X vector registers.
pub const NO_VECTOR: u16 = 0xffff;
pub const ISR_QUEUE: u8 = 0x1;
pub const ISR_CONFIG: u8 = 0x2;

/// The vector the driver chose for configuration changes and per queue.
pub struct Vectors {
    pub config: AtomicU16,
    pub queues: Vec<AtomicU16>,
}

impl Vectors {
    pub fn new(queues: usize) -> Vectors {
        Vectors {
            config: AtomicU16::new(NO_VECTOR),
            queues: (0..queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
        }
    }

    pub fn reset(&self) {
        self.config.store(NO_VECTOR, Ordering::SeqCst);
        for q in &self.queues {
            q.store(NO_VECTOR, Ordering::SeqCst);
        }
    }
}

pub struct PciInterrupt {
    pub(super) isr: AtomicU8,
    /// irqfd on the device's IRQ, registered with resample.
    intx: EventFd,
    /// The command register's INTx disable bit.
    pub(super) intx_disabled: AtomicBool,
    msix: Mutex<Msix>,
    vectors: Arc<Vectors>,
}

impl PciInterrupt {
    pub fn new(intx: EventFd, msix: Msix, vectors: Arc<Vectors>) -> PciInterrupt {
        PciInterrupt {
            isr: AtomicU8::new(0),
            intx,
            intx_disabled: AtomicBool::new(false),
            msix: Mutex::new(msix),
            vectors,
        }
    }

    pub fn msix(&self) -> MutexGuard<'_, Msix> {
        self.msix.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn msix_enabled(&self) -> bool {
        self.msix().enabled()
    }

    fn assert_intx(&self) {
        if !self.intx_disabled.load(Ordering::SeqCst)
            && let Err(e) = self.intx.write(1)
        {
            tracing::warn!("virtio intx: {e}");
        }
    }

    /// Guest read of the ISR: returns and clears it.
    pub fn take_isr(&self) -> u8 {
        self.isr.swap(0, Ordering::SeqCst)
    }

    /// The ISR without clearing it (PCI status "interrupt" bit).
    pub fn isr(&self) -> u8 {
        self.isr.load(Ordering::SeqCst)
    }

    pub fn clear_isr(&self) {
        self.isr.store(0, Ordering::SeqCst);
    }

    /// KVM lowered the line after the guest's EOI: raise it again if the
    /// guest has not read the ISR yet.
    pub fn resample(&self) {
        if self.isr() != 0 && !self.msix_enabled() {
            self.assert_intx();
        }
    }

    pub fn set_intx_disabled(&self, disabled: bool) {
        let was = self.intx_disabled.swap(disabled, Ordering::SeqCst);
        if was && !disabled {
            self.resample();
        }
    }
}

impl Interrupt for PciInterrupt {
    fn signal_queue(&self, queue: u16) {
        let mut msix = self.msix();
        if msix.enabled() {
            if let Some(v) = self.vectors.queues.get(usize::from(queue)) {
                let vector = v.load(Ordering::SeqCst);
                if vector != NO_VECTOR {
                    msix.trigger(vector);
                }
            }
            return;
        }
        drop(msix);
        self.isr.fetch_or(ISR_QUEUE, Ordering::SeqCst);
        self.assert_intx();
    }

    fn signal_config(&self) {
        self.isr.fetch_or(ISR_CONFIG, Ordering::SeqCst);
        let mut msix = self.msix();
        if msix.enabled() {
            let vector = self.vectors.config.load(Ordering::SeqCst);
            if vector != NO_VECTOR {
                msix.trigger(vector);
            }
            return;
        }
        drop(msix);
        self.assert_intx();
    }
}
