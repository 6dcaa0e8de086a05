//! Text in and out: the plan's tokenizer (`tokenizer.json` through the `tokenizers` crate),
//! a streaming detokenizer that is right when a character spans tokens, and stop strings.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use tokenizers::Tokenizer;
use zamba2c_ir::Plan;

/// A tokenizer loaded from a `tokenizer.json`, with the ids of its special tokens.
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    special: Vec<bool>,
}

impl TextTokenizer {
    /// Loads `path` (a Hugging Face `tokenizer.json`); errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            bail!("{}: no such file", path.display());
        }
        let inner = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{}: malformed tokenizer: {e}", path.display()))?;
        let n = inner.get_vocab_size(true);
        let mut special = vec![false; n];
        for (id, tok) in inner.get_added_tokens_decoder() {
            if tok.special && (id as usize) < n {
                special[id as usize] = true;
            }
        }
        Ok(TextTokenizer {
            inner,
            path: path.to_path_buf(),
            special,
        })
    }

    /// The plan's tokenizer: the file the manifest names (`tokenizer.json`), which the compile
    /// copied from the checkpoint. An error names `PLAN/tokenizer.json` and says what to do.
    pub fn from_plan(plan: &Plan) -> Result<Self> {
        let rel = plan
            .manifest
            .tokenizer
            .as_deref()
            .unwrap_or("tokenizer.json");
        let path = plan.dir.join(rel);
        if plan.manifest.tokenizer.is_none() || !path.is_file() {
            bail!(
                "{}: no such file: the checkpoint this plan was compiled from had no tokenizer.json; \
                 give token ids with --tokens, or recompile from a checkpoint that has one",
                path.display()
            );
        }
        Self::from_file(&path)
    }

    /// The plan's tokenizer if it has one (a plan without one runs on ids alone); a tokenizer
    /// file that is there but unreadable is an error.
    pub fn from_plan_optional(plan: &Plan) -> Result<Option<Self>> {
        match &plan.manifest.tokenizer {
            None => Ok(None),
            Some(_) => Self::from_plan(plan).map(Some),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids of `text` as transformers' fast tokenizer gives them with the same file:
    /// the post-processor's special tokens included (BOS for the Mistral tokenizer).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow!("{}: cannot tokenize: {e}", self.path.display()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped (as `tokenizer.decode(ids, skip_special_tokens=True)`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("{}: cannot decode: {e}", self.path.display()))
    }

    /// Text of `ids` with nothing skipped.
    fn decode_raw(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("{}: cannot decode: {e}", self.path.display()))
    }

    /// Whether `id` is a special token (BOS, EOS, UNK, ...), never shown as text.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The id of token `content` (e.g. `"</s>"`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn token_to_id(&self, content: &str) -> Option<u32> {
        self.inner.token_to_id(content)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Incremental detokenization: feed ids one at a time, get back the text they add.
///
/// Decoding token by token is wrong when a character spans tokens (byte-fallback tokens of a
/// multi-byte character) and loses the spaces that SentencePiece-style decoders strip at the
/// start of a string. So it decodes a window of the growing id list (starting at the last point
/// where the text was complete) and returns only the new suffix, holding it back while it ends
/// in an incomplete character (U+FFFD). Special tokens are skipped. The concatenation of all
/// returned pieces (and [`StreamDecoder::finish`]) is the text the continuation adds after the
/// prompt: `decode(prompt + generated)` less `decode(prompt)`.
pub struct StreamDecoder<'a> {
    tok: &'a TextTokenizer,
    /// Non-special ids: the prompt's, then the generated ones.
    ids: Vec<u32>,
    /// Start of the decode window.
    prefix_offset: usize,
    /// End of the text already returned.
    read_offset: usize,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder whose text starts after `prompt` (which is not returned).
    pub fn new(tok: &'a TextTokenizer, prompt: &[u32]) -> Self {
        let ids: Vec<u32> = prompt
            .iter()
            .copied()
            .filter(|&i| !tok.is_special(i))
            .collect();
        let n = ids.len();
        StreamDecoder {
            tok,
            ids,
            prefix_offset: 0,
            read_offset: n,
        }
    }

    /// Adds `id`; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        if self.tok.is_special(id) {
            return Ok(String::new());
        }
        self.ids.push(id);
        let prefix = self
            .tok
            .decode_raw(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = self.tok.decode_raw(&self.ids[self.prefix_offset..])?;
        if full.len() > prefix.len() && full.starts_with(&prefix) && !full.ends_with('\u{FFFD}') {
            let new = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            return Ok(new);
        }
        Ok(String::new())
    }

    /// The text held back at the end (an incomplete character shown as U+FFFD).
    pub fn finish(&mut self) -> Result<String> {
        if self.read_offset >= self.ids.len() {
            return Ok(String::new());
        }
        let prefix = self
            .tok
            .decode_raw(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = self.tok.decode_raw(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        // The window's text can only grow at its end; otherwise return what differs.
        let common = full
            .char_indices()
            .zip(prefix.chars())
            .find(|((_, a), b)| a != b)
            .map(|((i, _), _)| i)
            .unwrap_or_else(|| prefix.len().min(full.len()));
        Ok(full[common..].to_string())
    }
}

/// Stop strings over streamed text: holds back a tail that may be the start of a stop string,
/// and on a match keeps only the text before it.
pub struct StopFilter {
    stops: Vec<String>,
    /// Text received so far (cut at the match once one is found).
    text: String,
    /// Bytes of `text` released.
    released: usize,
    stopped: bool,
}

impl StopFilter {
    /// Empty strings are ignored.
    pub fn new(stops: &[String]) -> Self {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            text: String::new(),
            released: 0,
            stopped: false,
        }
    }

    /// Adds streamed text; returns what may be shown now. After a match [`Self::stopped`] is
    /// true and later calls return nothing.
    pub fn push(&mut self, chunk: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.text.push_str(chunk);
        let tail = &self.text[self.released..];
        // The earliest match among all stop strings (a match cannot start in released text:
        // any tail that could begin one is held back).
        let hit = self
            .stops
            .iter()
            .filter_map(|s| tail.find(s.as_str()))
            .min();
        if let Some(pos) = hit {
            let cut = self.released + pos;
            self.text.truncate(cut);
            self.stopped = true;
            let out = self.text[self.released..].to_string();
            self.released = cut;
            return out;
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (k, _) in s.char_indices().skip(1) {
                if k > hold && tail.ends_with(&s[..k]) {
                    hold = k;
                }
            }
        }
        let end = self.text.len() - hold;
        let out = self.text[self.released..end].to_string();
        self.released = end;
        out
    }

    /// Releases the held-back tail (the stream ended without a match).
    pub fn finish(&mut self) -> String {
        let out = self.text[self.released..].to_string();
        self.released = self.text.len();
        out
    }

    /// Whether a stop string was found.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// All text released so far (at the end: the output, cut before the stop string).
    pub fn text(&self) -> &str {
        &self.text[..self.released]
    }
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

    fn fixture_tokenizer() -> TextTokenizer {
        let fixtures = std::env::var_os("ZAMBA2C_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
        let p = fixtures.join("tokenizer/tokenizer.json");
        TextTokenizer::from_file(&p).unwrap()
    }

    /// Streams `gen` after `prompt` and returns the concatenated pieces.
    fn stream(tok: &TextTokenizer, prompt: &[u32], gen: &[u32]) -> String {
        let mut d = StreamDecoder::new(tok, prompt);
        let mut out = String::new();
        for &id in gen {
            out += &d.push(id).unwrap();
        }
        out += &d.finish().unwrap();
        out
    }

    fn expected(tok: &TextTokenizer, prompt: &[u32], gen: &[u32]) -> String {
        let all: Vec<u32> = prompt.iter().chain(gen).copied().collect();
        let full = tok.decode(&all).unwrap();
        let p = tok.decode(prompt).unwrap();
        assert!(full.starts_with(&p), "{full:?} / {p:?}");
        full[p.len()..].to_string()
    }

    #[test]
    fn streaming_equals_decoding_the_whole() {
        let tok = fixture_tokenizer();
        let texts = [
            "Hello, my name is John and I like naïve café crème 😀🎉 日本語のテキスト",
            "  two  spaces\n\nand tabs\t\there 🤖",
            "emoji first 🧑‍🚀 then ZWJ, then Ελληνικά and Русский текст",
            "end with a multibyte char: ✓",
        ];
        for text in texts {
            let ids = tok.encode(text).unwrap();
            for split in 1..ids.len() {
                let (p, g) = ids.split_at(split);
                if tok.decode(p).unwrap().ends_with('\u{FFFD}') {
                    continue; // a prompt never ends inside a character
                }
                assert_eq!(
                    stream(&tok, p, g),
                    expected(&tok, p, g),
                    "{text:?} split at {split}"
                );
            }
        }
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let tok = fixture_tokenizer();
        let ids = tok.encode("a 😀 b").unwrap();
        let mut d = StreamDecoder::new(&tok, &ids[..1]);
        for &id in &ids[1..] {
            let piece = d.push(id).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        }
    }

    #[test]
    fn special_tokens_are_not_shown() {
        let tok = fixture_tokenizer();
        let hello = tok.encode("Hello world").unwrap();
        let eos = tok.token_to_id("</s>").unwrap();
        assert_eq!(eos, 2);
        assert!(tok.is_special(1) && tok.is_special(2) && !tok.is_special(hello[1]));
        let gen = [hello[2], eos, hello[1]];
        assert_eq!(stream(&tok, &hello[..2], &gen), " world Hello");
    }

    #[test]
    fn incomplete_tail_is_flushed() {
        let tok = fixture_tokenizer();
        // The first byte of a 3-byte character alone.
        let b = tok.token_to_id("<0xE2>").unwrap();
        let hello = tok.encode("Hello").unwrap();
        assert_eq!(stream(&tok, &hello, &[b]), "\u{FFFD}");
    }

    #[test]
    fn stop_filter_holds_back_and_cuts() {
        let mut f = StopFilter::new(&["\n\n".to_string(), "ENDS".to_string()]);
        let mut out = String::new();
        for piece in ["Hello", " E", "N", "D?", " more\n", "\nignored"] {
            out += &f.push(piece);
            if f.stopped() {
                break;
            }
        }
        assert!(f.stopped());
        assert_eq!(out, "Hello END? more");
        assert_eq!(f.text(), "Hello END? more");
        assert_eq!(f.push("x"), "");

        let mut f = StopFilter::new(&["stop".to_string()]);
        assert_eq!(f.push("a st"), "a ");
        assert_eq!(f.push("o"), "");
        assert_eq!(f.finish(), "sto");
        assert!(!f.stopped());
        assert_eq!(f.text(), "a sto");

        // A match inside one chunk, and the earliest of several stop strings wins.
        let mut f = StopFilter::new(&["c".to_string(), "b".to_string()]);
        assert_eq!(f.push("aabcc"), "aa");
        assert!(f.stopped());

        // Multi-byte stop strings are held back on character boundaries.
        let mut f = StopFilter::new(&["é!".to_string()]);
        assert_eq!(f.push("caf"), "caf");
        assert_eq!(f.push("é"), "");
        assert_eq!(f.push("!"), "");
        assert_eq!(f.text(), "caf");

        // No stop strings: everything passes.
        let mut f = StopFilter::new(&[]);
        assert_eq!(f.push("anything"), "anything");
    }

    #[test]
    fn newline_stripping() {
        assert_eq!(strip_one_newline("a\n\n"), "a\n");
        assert_eq!(strip_one_newline("a\r\n"), "a");
        assert_eq!(strip_one_newline("a"), "a");
    }
}
