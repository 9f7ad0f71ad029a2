//! A level-triggered interrupt line for devices outside virtio: an irqfd
//! registered with a resample eventfd. KVM asserts the line on `raise` and
//! lowers it when the guest acknowledges (EOI); a thread then asks the
//! device whether the condition still holds and raises the line again if
//! so. Several devices may share the line.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::lifecycle::Lifecycle;

pub struct LevelIrq {
    intx: EventFd,
}

impl LevelIrq {
    /// Registers the line on `gsi`; `pending` says whether the device
    /// still wants the interrupt.
    pub fn new(
        vm: &VmFd,
        gsi: u32,
        name: &str,
        lifecycle: Arc<Lifecycle>,
        pending: impl Fn() -> bool + Send + 'static,
    ) -> std::io::Result<Arc<LevelIrq>> {
        let intx = EventFd::new(EFD_NONBLOCK)?;
        // The resample eventfd is read with a blocking poll below.
        let resample = EventFd::new(0)?;
        vm.register_irqfd_with_resample(&intx, &resample, gsi)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        let line = Arc::new(LevelIrq { intx });
        let raiser = line.clone();
        crate::sandbox::spawn(
            crate::sandbox::ThreadKind::Device,
            format!("{name}-irq"),
            move || {
                loop {
                    // Wake at least every second to notice the VM ending.
                    let mut fds = [libc::pollfd {
                        fd: resample.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    }];
                    // SAFETY: one valid pollfd for the duration of the call.
                    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 1000) };
                    if lifecycle.exit_requested() {
                        return;
                    }
                    if ready > 0 {
                        let _ = resample.read();
                        if pending() {
                            raiser.raise();
                        }
                    }
                }
            },
        )?;
        Ok(line)
    }

    /// Asserts the line until the guest's next EOI.
    pub fn raise(&self) {
        let _ = self.intx.write(1);
    }
}
