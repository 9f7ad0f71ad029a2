//! Why a VM could not be built.

use proto::ErrorCode;

use crate::boot::BootError;

/// Why a VM could not be built: the code vmctl reports, and the detail the
/// log gets.
#[derive(Debug)]
pub struct LaunchError {
    pub code: ErrorCode,
    pub reason: String,
}

impl LaunchError {
    pub(super) fn new(code: ErrorCode, reason: impl Into<String>) -> LaunchError {
        LaunchError {
            code,
            reason: reason.into(),
        }
    }

    pub(super) fn io(what: &str, err: &std::io::Error) -> LaunchError {
        LaunchError::new(ErrorCode::from_io(err), format!("{what}: {err}"))
    }

    pub(super) fn kvm(what: &str, err: kvm_ioctls::Error) -> LaunchError {
        LaunchError::new(ErrorCode(err.errno()), format!("{what}: {err}"))
    }
}

impl From<BootError> for LaunchError {
    fn from(e: BootError) -> LaunchError {
        LaunchError::new(e.code, e.message)
    }
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}
