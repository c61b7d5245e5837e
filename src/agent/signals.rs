//! Stop signals for the agent: SIGINT and SIGTERM are blocked in every
//! thread and received synchronously by the main thread with sigwait, so no
//! handler runs in a random thread and shutdown is ordinary control flow.

use std::io;

pub struct StopSignals {
    set: libc::sigset_t,
}

/// Blocks SIGINT and SIGTERM for this thread and every thread it starts
/// afterwards.
pub fn block_stop_signals() -> io::Result<StopSignals> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use;
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(StopSignals { set })
    }
}

/// Waits for SIGINT or SIGTERM; returns its name.
pub fn wait(s: &StopSignals) -> &'static str {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: the set was initialised by block_stop_signals.
        let rc = unsafe { libc::sigwait(&s.set, &mut sig) };
        if rc == 0 {
            return if sig == libc::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
        }
    }
}
