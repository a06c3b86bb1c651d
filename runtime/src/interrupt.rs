//! Ctrl-C (SIGINT) and SIGTERM as a flag: a command that serves or records
//! until stopped polls `requested()` and finishes cleanly (closes the
//! episode, flushes, prints its summary) instead of dying mid-write.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the flag from now on (a second signal
/// still only sets it; the command decides how fast to stop).
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; `signal` has no other precondition.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// A stop was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
