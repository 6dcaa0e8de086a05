//! Prompt text helpers for the CLI (bounded reading is in `input.rs`); the tokenizer, the streaming detokenizer and stop
//! strings live in the runtime (`zamba2c_runtime::generate::text`).

pub use zamba2c_runtime::generate::text::TextTokenizer;

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
