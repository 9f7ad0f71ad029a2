//! The width of a port or configuration-space access, for the targets
//! that drive x86 I/O ports.

use arbitrary::Arbitrary;

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Width {
    One,
    Two,
    Four,
}

impl Width {
    pub fn bytes(self) -> usize {
        match self {
            Width::One => 1,
            Width::Two => 2,
            Width::Four => 4,
        }
    }
}
