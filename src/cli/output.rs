//! Where the CLI writes: files named by `--out` and standard output.
//!
//! An output file is checked before the command does its work (issue 16): its directory must
//! exist, the path must be new or a regular file (never a symbolic link, FIFO, device or
//! directory, which a rename would have replaced by a regular file), and it must not lie inside
//! the plan the command reads. The temporary file beside it is created at that point too, so an
//! unwritable directory fails at once; it is renamed over the path at the end, and removed on
//! failure, on drop and on SIGINT/SIGTERM (`zamba2c_ir::scratch`).
//!
//! Standard output: a reader that went away (`inspect PLAN | head -1`) is [`StdoutClosed`],
//! which `main` turns into the conventional quiet death by SIGPIPE instead of a panic.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use zamba2c_ir::fsread::kind_of;
use zamba2c_ir::scratch;

/// A file the command will write, validated and with its temporary file claimed.
pub struct OutputFile {
    flag: String,
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    reg: u64,
    committed: bool,
}

impl OutputFile {
    /// Checks `path` (given with `flag`) as a destination, before any work: see the module
    /// docs. `reading` is the plan the command reads, which the output must not be inside.
    pub fn prepare(flag: &str, path: &Path, reading: Option<&Path>) -> Result<Self> {
        let fail = |msg: String| anyhow!("{flag}: {}: {msg}", path.display());
        let name = path
            .file_name()
            .ok_or_else(|| fail("not a file path".into()))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(fail(format!(
                "cannot write: {} is not a directory",
                dir.display()
            )));
        }
        check_destination(path).map_err(fail)?;
        if let Some(plan) = reading {
            if let (Ok(p), Ok(d)) = (std::fs::canonicalize(plan), std::fs::canonicalize(&dir)) {
                if d.starts_with(&p) {
                    return Err(fail(format!(
                        "is inside {}, the plan this command reads; write it elsewhere",
                        plan.display()
                    )));
                }
            }
        }
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut reg = scratch::lock();
        let create = || OpenOptions::new().write(true).create_new(true).open(&tmp);
        let file = match create() {
            // Left by an earlier process that had our id and was killed: ours to replace.
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_file()) =>
            {
                let _ = std::fs::remove_file(&tmp);
                create()
            }
            r => r,
        }
        .map_err(|e| fail(format!("cannot write in {}: {e}", dir.display())))?;
        let id = reg.register(&tmp);
        Ok(OutputFile {
            flag: flag.to_string(),
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            reg: id,
            committed: false,
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to the temporary file, syncs it, and renames it over the destination
    /// (checked again: it may have changed while the command worked).
    pub fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let (flag, path) = (self.flag.clone(), self.path.clone());
        let fail = |msg: String| anyhow!("{flag}: {}: {msg}", path.display());
        let mut file = self
            .file
            .take()
            .ok_or_else(|| fail("already written".into()))?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| fail(format!("cannot write: {e}")))?;
        drop(file);
        check_destination(&self.path).map_err(fail)?;
        let mut reg = scratch::lock_to_commit();
        std::fs::rename(&self.tmp, &self.path).map_err(|e| fail(format!("cannot write: {e}")))?;
        reg.unregister(self.reg);
        self.committed = true;
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.committed {
            let mut reg = scratch::lock();
            let _ = std::fs::remove_file(&self.tmp);
            reg.unregister(self.reg);
        }
    }
}

/// An output path may be new or a regular file, nothing else.
fn check_destination(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot write: {e}")),
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.is_dir() => Err("cannot write: is a directory".into()),
        Ok(m) => Err(format!(
            "is {}; an output is written as a regular file and replaces only a regular file",
            kind_of(&m)
        )),
    }
}

/// Standard output's reader went away (EPIPE).
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout: the reader went away (broken pipe)")
    }
}

impl std::error::Error for StdoutClosed {}

/// Whether `e` is, or was caused by, a closed standard output.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<StdoutClosed>()
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `text` to standard output and flushes it; a closed pipe is [`StdoutClosed`].
pub fn print_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                anyhow::Error::new(StdoutClosed)
            } else {
                anyhow!("stdout: {e}")
            }
        })
}
