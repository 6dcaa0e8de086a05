//! Temporary files and directories this process made and must not leave behind: the plan
//! being written (`.NAME.tmp-PID/`), an old plan moved aside (`.NAME.old-PID/`), an output
//! file being written (`.NAME.tmp-PID`).
//!
//! Normal failures remove them through `Drop`; a signal does not run destructors, so the CLI's
//! SIGINT/SIGTERM handler calls [`remove_all_and_hold`] (issue 16). Renames that must not be cut
//! in half by that cleanup (moving an old plan aside and the new one in) run under [`lock`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The registered paths, by registration id.
pub struct Registry {
    next: u64,
    paths: BTreeMap<u64, PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());

/// Set from inside the signal handler the moment a signal that ends the process arrives (the
/// CLI registers it with its handler, `src/cli/signals.rs`), before the thread that cleans up
/// and ends the process has run: a commit that sees it must not replace the user's file.
static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The flag a signal handler sets (see [`interrupted`]).
pub fn interrupt_flag() -> Arc<AtomicBool> {
    INTERRUPTED
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

/// Whether a signal that ends the process has arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// [`lock`] for the renames that commit a command's output: when a signal has already arrived
/// ([`interrupted`]), releases the lock to the signal thread's cleanup instead and waits for it
/// to end the process (the flag is only ever set where that thread runs), so the interrupted
/// command neither replaces the user's file nor exits 0.
pub fn lock_to_commit() -> MutexGuard<'static, Registry> {
    let guard = lock();
    if interrupted() {
        drop(guard);
        loop {
            std::thread::park();
        }
    }
    guard
}

/// Locks the registry: the signal handler's cleanup waits until the guard is dropped.
pub fn lock() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// An empty registry (the process has one, behind [`lock`]).
    pub const fn new() -> Self {
        Registry {
            next: 0,
            paths: BTreeMap::new(),
        }
    }

    /// Removes every registered path and forgets them.
    pub fn remove_all(&mut self) {
        for p in self.paths.values() {
            remove_path(p);
        }
        self.paths.clear();
    }

    /// Registers `path` for removal on a signal; returns its id for [`Registry::unregister`].
    pub fn register(&mut self, path: &Path) -> u64 {
        let id = self.next;
        self.next += 1;
        self.paths.insert(id, path.to_path_buf());
        id
    }

    /// Forgets a registration (the path was removed, or became the user's output).
    pub fn unregister(&mut self, id: u64) {
        self.paths.remove(&id);
    }

    /// The registered paths, oldest first.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.paths.values().map(PathBuf::as_path)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `path` (see [`Registry::register`]).
pub fn register(path: &Path) -> u64 {
    lock().register(path)
}

/// Forgets a registration (see [`Registry::unregister`]).
pub fn unregister(id: u64) {
    lock().unregister(id);
}

/// Removes a file, or a directory with everything in it; a missing path is not an error.
pub fn remove_path(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // Another thread may still be adding a file inside: try again a few times.
            for _ in 0..3 {
                if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
                    break;
                }
            }
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Removes every registered path and returns the still-held lock, so that nothing can register
/// or rename until the caller, a signal handler, ends the process.
pub fn remove_all_and_hold() -> MutexGuard<'static, Registry> {
    let mut g = lock();
    g.remove_all();
    g
}

/// Whether process `pid` still exists (a stale temporary directory is one whose maker is gone).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_what_is_registered() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dir");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f"), b"x").unwrap();
        let file = d.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let keep = d.path().join("keep");
        std::fs::write(&keep, b"x").unwrap();
        // A registry of its own: the process-wide one belongs to whatever else runs here.
        let mut r = Registry::new();
        r.register(&dir);
        r.register(&file);
        let c = r.register(&keep);
        r.unregister(c);
        assert_eq!(r.paths().count(), 2);
        r.remove_all();
        assert!(!dir.exists() && !file.exists() && keep.exists());
        assert_eq!(r.paths().count(), 0);
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
    }
}
