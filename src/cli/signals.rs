//! Ending on a signal without leaving anything behind: SIGINT, SIGTERM and SIGHUP remove every
//! temporary file and directory this process registered (`zamba2c_ir::scratch`), then end the
//! process by the same signal, as it would have ended without a handler; a closed stdout ends
//! it by SIGPIPE, the conventional quiet exit of a Unix filter (issue 16).

use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGTERM};
use signal_hook::iterator::Signals;

/// Starts the thread that waits for SIGINT, SIGTERM and SIGHUP (those not ignored: a shell
/// starts background jobs with SIGINT ignored, and `nohup` ignores SIGHUP; they stay so).
pub fn install() {
    let wanted: Vec<i32> = [SIGINT, SIGTERM, SIGHUP]
        .into_iter()
        .filter(|&s| !ignored(s))
        .collect();
    let mut signals = match Signals::new(&wanted) {
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
    match spawned {
        // The flag commits check (zamba2c_ir::scratch::interrupted): set inside the handler
        // itself, so a compile finishing while the thread above is not yet scheduled does not
        // replace the plan. Only with the thread running, which ends the process.
        Ok(_) => {
            for &sig in &wanted {
                if let Err(e) =
                    signal_hook::flag::register(sig, zamba2c_ir::scratch::interrupt_flag())
                {
                    tracing::warn!("cannot register signal {sig} for commits ({e})");
                }
            }
        }
        Err(e) => tracing::warn!("cannot start the signal thread ({e})"),
    }
}

/// Whether `sig` is set to be ignored (as inherited from the parent).
fn ignored(sig: i32) -> bool {
    // SAFETY: with a null new action, sigaction only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
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
