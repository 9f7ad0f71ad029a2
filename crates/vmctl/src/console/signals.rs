//! The signals that end a console session, delivered as readable events on
//! a signalfd so the relay handles them between two reads, never halfway
//! through restoring the terminal.

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, pthread_sigmask, signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Signals that end the session, as a pollable descriptor.
pub struct EndSignals {
    fd: SignalFd,
}

impl EndSignals {
    /// Interactive sessions end on SIGHUP and SIGTERM, and ignore SIGINT and
    /// SIGQUIT; a session on a pipe or file also ends on SIGINT.
    pub fn install(interactive: bool) -> nix::Result<EndSignals> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGHUP);
        mask.add(Signal::SIGTERM);
        if interactive {
            // SAFETY: SIG_IGN installs no handler code.
            unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) }?;
            // SAFETY: as above.
            unsafe { signal(Signal::SIGQUIT, SigHandler::SigIgn) }?;
        } else {
            mask.add(Signal::SIGINT);
        }
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(EndSignals { fd })
    }

    /// The signal that arrived, if any.
    pub fn take(&self) -> Option<Signal> {
        let info = self.fd.read_signal().ok()??;
        Signal::try_from(info.ssi_signo as i32).ok()
    }
}

impl std::os::fd::AsFd for EndSignals {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
