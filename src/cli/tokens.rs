//! Parsing `--tokens 5,17,3` and checking ids against the plan's vocabulary.

use anyhow::{bail, Result};

/// Parses a comma-separated list of token ids and checks each is below `vocab`.
pub fn parse_tokens(s: &str, vocab: usize) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let p = part.trim();
        let id: u64 = match p.parse() {
            Ok(v) => v,
            Err(_) => bail!("--tokens: {p:?} is not a token id (expected non-negative integers separated by commas)"),
        };
        if id >= vocab as u64 {
            bail!("--tokens: token id {id} is out of range: the plan's vocab_size is {vocab}");
        }
        out.push(id as u32);
    }
    if out.is_empty() {
        bail!("--tokens: no token ids given");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_range() {
        assert_eq!(parse_tokens("5, 17,3", 32).unwrap(), vec![5, 17, 3]);
        assert!(parse_tokens("5,x", 32)
            .unwrap_err()
            .to_string()
            .contains("\"x\""));
        assert!(parse_tokens("32", 32)
            .unwrap_err()
            .to_string()
            .contains("vocab_size is 32"));
        assert!(parse_tokens("-1", 32).is_err());
        assert!(parse_tokens("", 32).is_err());
    }
}
