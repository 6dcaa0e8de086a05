//! Ending on a signal without leaving anything behind: SIGINT, SIGTERM and SIGHUP remove every
//! temporary file and directory this process registered (`zamba2c_ir::scratch`), then end the
//! process by the same signal, as it would have ended without a handler; a closed stdout ends
//! it by SIGPIPE, the conventional quiet exit of a Unix filter (issue 16).

use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGTERM};
use signal_hook::iterator::Signals;

/// Starts the thread that waits for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot install the signal handler ({e}); an interrupted compile may leave its temporary directory behind");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                die_of(sig);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the signal thread ({e})");
    }
}

/// Removes the registered temporaries and ends the process by `sig` (holding the registry's
/// lock, so no new temporary appears meanwhile).
pub fn die_of(sig: i32) -> ! {
    let _held = zamba2c_ir::scratch::remove_all_and_hold();
    let _ = signal_hook::low_level::emulate_default_handler(sig);
    // Only reached if the signal did not end the process: the shell's code for it.
    std::process::exit(128 + sig)
}

/// Ends the process as a closed pipe does (see the module docs).
pub fn die_of_sigpipe() -> ! {
    die_of(SIGPIPE)
}
