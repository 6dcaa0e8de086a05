//! Reading prompt text: capped in bytes, read incrementally, refused at the first NUL byte.
//!
//! Before issue 16 a 50 MB prompt file cost 3.8 GB (read whole, then tokenized whole) before
//! "too long", and `/dev/zero` on stdin ran until the allocator aborted. Now the read stops at
//! [`prompt_byte_cap`] bytes or at the first NUL byte (text has none), whichever comes first.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

/// Bytes of text allowed per token of context. A token of a byte-level BPE vocabulary such as
/// Zamba2's covers a few bytes of text on average (about 4 for English) and rarely more than
/// 16; 64 leaves room for any text that can fit in the context while keeping the
/// tokenizer's work bounded.
const BYTES_PER_TOKEN: usize = 64;
/// The cap never goes below this (a small context still takes a paragraph) ...
const MIN_PROMPT_BYTES: usize = 64 << 10;
/// ... nor above this.
const MAX_PROMPT_BYTES: usize = 16 << 20;

/// The most bytes a prompt for a plan whose context holds `max_context` tokens may have:
/// text longer than this cannot fit in the context, so it is refused before it is tokenized.
pub fn prompt_byte_cap(max_context: usize) -> usize {
    max_context
        .saturating_mul(BYTES_PER_TOKEN)
        .clamp(MIN_PROMPT_BYTES, MAX_PROMPT_BYTES)
}

/// The most bytes a `--prompts-file` (one prompt per line) may have.
pub fn prompts_file_byte_cap() -> usize {
    MAX_PROMPT_BYTES
}

/// Reads prompt text from `reader` (`source` names it in errors: `stdin`, `--prompt-file F`),
/// at most `cap` bytes, in 64 KiB steps.
pub fn read_prompt(source: &str, mut reader: impl Read, cap: usize) -> Result<String> {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("{source}: cannot read the prompt: {e}"),
        };
        let chunk = &buf[..n];
        if let Some(i) = chunk.iter().position(|&b| b == 0) {
            bail!(
                "{source}: the prompt holds a NUL byte (at byte {}): not text",
                bytes.len() + i
            );
        }
        if bytes.len() + n > cap {
            bail!("{source}: the prompt is longer than {cap} bytes, more than fits in this plan's context");
        }
        bytes.extend_from_slice(chunk);
    }
    String::from_utf8(bytes).map_err(|e| anyhow!("{source}: the prompt is not UTF-8 text: {e}"))
}

/// Reads a prompt file given with `flag`: a directory is refused, a regular file over `cap`
/// bytes is refused before it is read, anything else readable (a FIFO from process
/// substitution, /dev/stdin) is read through [`read_prompt`].
pub fn read_prompt_file(flag: &str, path: &Path, cap: usize) -> Result<String> {
    let source = format!("{flag} {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| anyhow!("{source}: cannot read: {e}"))?;
    if meta.is_dir() {
        bail!("{source}: is a directory, not a text file");
    }
    if meta.is_file() && meta.len() > cap as u64 {
        bail!(
            "{source}: is {} bytes, more than the {cap} bytes that fit in this plan's context",
            meta.len()
        );
    }
    let file = std::fs::File::open(path).map_err(|e| anyhow!("{source}: cannot read: {e}"))?;
    read_prompt(&source, file, cap)
}

/// Checks prompt text that did not come through [`read_prompt`] (`--prompt TEXT`, one line of
/// a prompts file) against the same rules.
pub fn check_prompt_text(source: &str, text: &str, cap: usize) -> Result<()> {
    if let Some(i) = text.bytes().position(|b| b == 0) {
        bail!("{source}: the prompt holds a NUL byte (at byte {i}): not text");
    }
    if text.len() > cap {
        bail!(
            "{source}: the prompt is {} bytes, more than the {cap} bytes that fit in this plan's context",
            text.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_follows_the_context_within_bounds() {
        assert_eq!(prompt_byte_cap(4096), 4096 * 64);
        assert_eq!(prompt_byte_cap(8), MIN_PROMPT_BYTES);
        assert_eq!(prompt_byte_cap(usize::MAX), MAX_PROMPT_BYTES);
    }

    #[test]
    fn reads_text_and_refuses_nul_and_excess() {
        assert_eq!(read_prompt("t", &b"hello"[..], 5).unwrap(), "hello");
        let e = read_prompt("t", &b"hello!"[..], 5).unwrap_err().to_string();
        assert!(e.contains("longer than 5 bytes"), "{e}");
        let e = read_prompt("t", &b"ab\0c"[..], 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NUL byte (at byte 2)"), "{e}");
        let e = read_prompt("t", &b"\xff"[..], 100).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
        // An endless reader of zeros ends at the first chunk.
        let e = read_prompt("stdin", std::io::repeat(0), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NUL byte (at byte 0)"), "{e}");
        // An endless reader of text ends at the cap.
        let e = read_prompt("stdin", std::io::repeat(b'a'), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 1048576 bytes"), "{e}");
        assert!(check_prompt_text("p", "abc", 3).is_ok());
        assert!(check_prompt_text("p", "abcd", 3).is_err());
        assert!(check_prompt_text("p", "a\0", 3).is_err());
    }
}
