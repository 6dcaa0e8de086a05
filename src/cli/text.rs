//! Prompt text from files for the CLI; the tokenizer, the streaming detokenizer and stop
//! strings live in the runtime (`zamba2c_runtime::generate::text`).

use std::path::Path;

use anyhow::{anyhow, Context, Result};

pub use zamba2c_runtime::generate::text::TextTokenizer;

/// Reads a prompt file (UTF-8); errors name the flag and the file.
pub fn read_prompt_file(flag: &str, path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).with_context(|| format!("{flag} {}: cannot read", path.display()))?;
    String::from_utf8(bytes).map_err(|e| anyhow!("{flag} {}: not UTF-8 text: {e}", path.display()))
}

/// Removes one trailing line break (`\n` or `\r\n`), as a shell's `echo` or an editor adds.
pub fn strip_one_newline(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_stripping() {
        assert_eq!(strip_one_newline("a\n\n"), "a\n");
        assert_eq!(strip_one_newline("a\r\n"), "a");
        assert_eq!(strip_one_newline("a"), "a");
    }
}
