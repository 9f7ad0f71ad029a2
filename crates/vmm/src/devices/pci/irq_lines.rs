//! The ISA IRQs PCI devices raise (docs/machine.md, "PCI devices"): taken in order from
//! 3, 5, 6, 7, 9, 10, 11, 12, 14, 15, one per device that needs one, and
//! marked level-triggered in the PIC's edge/level control registers.
//!
//! vmd drops a device that finds no free IRQ; this project shares lines
//! instead once the list is used up ([Linux] in the spec), starting again
//! from its first entry. Sharing is safe because the lines are level
//! triggered and every device re-asserts on resample while its ISR is set.

use kvm_bindings::{KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_irqchip};
use kvm_ioctls::VmFd;

pub const PCI_IRQS: [u8; 10] = [3, 5, 6, 7, 9, 10, 11, 12, 14, 15];

/// Hands out PCI IRQs in vmd's order.
#[derive(Debug, Default)]
pub struct IrqLines {
    handed_out: usize,
}

impl IrqLines {
    pub fn new() -> IrqLines {
        IrqLines::default()
    }

    /// The next IRQ; after the tenth, lines are shared.
    pub fn next_irq(&mut self) -> u8 {
        let irq = PCI_IRQS[self.handed_out % PCI_IRQS.len()];
        self.handed_out += 1;
        irq
    }

    /// The IRQs handed out so far, without repeats.
    pub fn used(&self) -> &'static [u8] {
        &PCI_IRQS[..self.handed_out.min(PCI_IRQS.len())]
    }
}

/// Marks `irqs` level-triggered in the in-kernel PIC pair's ELCRs. Stock
/// SeaBIOS only programs the ELCR for chipsets it knows, and vmd's host
/// bridge is not one of them, so the VMM sets the bits as vmd does.
pub fn set_level_triggered(vm: &VmFd, irqs: &[u8]) -> Result<(), kvm_ioctls::Error> {
    for (chip, first) in [(KVM_IRQCHIP_PIC_MASTER, 0u8), (KVM_IRQCHIP_PIC_SLAVE, 8u8)] {
        let mut state = kvm_irqchip {
            chip_id: chip,
            ..Default::default()
        };
        vm.get_irqchip(&mut state)?;
        // SAFETY: chip_id selects the PIC member of the union, which
        // KVM_GET_IRQCHIP just filled.
        let pic = unsafe { &mut state.chip.pic };
        for &irq in irqs {
            if (first..first + 8).contains(&irq) {
                let bit = 1u8 << (irq - first);
                pic.elcr |= bit;
            }
        }
        vm.set_irqchip(&state)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_then_sharing() {
        let mut lines = IrqLines::new();
        let first: Vec<u8> = (0..10).map(|_| lines.next_irq()).collect();
        assert_eq!(first, PCI_IRQS);
        assert_eq!(lines.next_irq(), 3, "shared after the tenth");
        assert_eq!(lines.used(), &PCI_IRQS);
    }
}
