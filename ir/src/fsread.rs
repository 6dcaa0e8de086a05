//! Opening files that come from a user: only regular files, and never more bytes than a cap.
//!
//! A FIFO opened for reading blocks until a writer comes, `/dev/zero` never ends and a symbolic
//! link loop never resolves: each of them, given as a plan or checkpoint file, hung or exhausted
//! zamba2c (issue 16). So a file is looked at (`stat`) before it is opened, refused unless it is
//! a regular file, opened with `O_NONBLOCK` (so a FIFO swapped in after the look cannot block
//! the open) and looked at again through the open descriptor.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Whether the path's last component may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow it (checkpoints: the Hugging Face cache links every file into `blobs/`).
    Follow,
    /// Refuse it (plan files: zamba2c never writes a link, so one is an edit).
    Refuse,
}

/// What kind of file `meta` describes, in words, for an error message.
pub fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading if it is a regular file; returns it with its size. The error is a
/// message to put after the path.
pub fn open_regular(path: &Path, links: Links) -> Result<(File, u64), String> {
    let meta = match links {
        Links::Follow => std::fs::metadata(path),
        Links::Refuse => std::fs::symlink_metadata(path),
    }
    .map_err(|e| describe(path, e))?;
    if !meta.is_file() {
        return Err(format!("is {}, not a regular file", kind_of(&meta)));
    }
    let mut flags = libc::O_NONBLOCK;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| describe(path, e))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!("is {}, not a regular file", kind_of(&meta)));
    }
    Ok((file, meta.len()))
}

/// An open error in words: a link loop and a refused link are named as such.
fn describe(path: &Path, e: std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() && std::fs::metadata(path).is_ok() => {
                "is a symbolic link, not a regular file".into()
            }
            _ => "is a symbolic link loop".into(),
        };
    }
    if e.kind() == ErrorKind::NotFound {
        return "no such file".into();
    }
    e.to_string()
}

/// Reads a regular file of at most `cap` bytes whole; a larger file is refused before any of
/// it is read (and one that grows past `cap` while being read, when it does).
pub fn read_capped(path: &Path, cap: u64, links: Links) -> Result<Vec<u8>, String> {
    let (file, len) = open_regular(path, links)?;
    if len > cap {
        return Err(format!(
            "is {len} bytes, over the {cap}-byte limit for this file"
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!(
            "grew past the {cap}-byte limit for this file while being read"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(read_capped(&f, 10, Links::Refuse).unwrap(), b"0123456789");
        let e = read_capped(&f, 9, Links::Refuse).unwrap_err();
        assert!(e.contains("10 bytes, over the 9-byte limit"), "{e}");

        let e = open_regular(d.path(), Links::Follow).unwrap_err();
        assert!(e.contains("a directory"), "{e}");
        let e = open_regular(Path::new("/dev/zero"), Links::Follow).unwrap_err();
        assert!(e.contains("a character device"), "{e}");

        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular(&fifo, Links::Follow).unwrap_err();
        assert!(e.contains("FIFO"), "{e}");

        let link = d.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(open_regular(&link, Links::Follow).is_ok());
        let e = open_regular(&link, Links::Refuse).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");

        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let e = open_regular(&a, Links::Follow).unwrap_err();
        assert!(e.contains("symbolic link loop"), "{e}");
        let e = open_regular(&d.path().join("none"), Links::Follow).unwrap_err();
        assert_eq!(e, "no such file");
    }
}
