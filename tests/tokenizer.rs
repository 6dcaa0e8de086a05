//! The Mistral v0.1 tokenizer through the `tokenizers` crate: ids equal transformers' fast
//! tokenizer on every string of tests/fixtures/tokenizer/cases.jsonl, and decoding gives back
//! what transformers decodes (`decode(ids[1:], skip_special_tokens=False)`: the ids after the
//! BOS the tokenizer added, special tokens kept as text).

mod common;

use tokenizers::Tokenizer;

fn load() -> Tokenizer {
    let p = common::fixtures().join("tokenizer/tokenizer.json");
    Tokenizer::from_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Case {
    line: usize,
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

fn cases() -> Vec<Case> {
    let p = common::fixtures().join("tokenizer/cases.jsonl");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let v: Vec<Case> = s
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
            Case {
                line: i + 1,
                text: v["text"].as_str().expect("text").to_string(),
                ids: v["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect(),
                decoded: v["decoded"].as_str().expect("decoded").to_string(),
            }
        })
        .collect();
    assert!(v.len() >= 600, "only {} cases", v.len());
    v
}

#[test]
fn vocabulary_and_special_tokens() {
    let t = load();
    assert_eq!(t.get_vocab_size(true), 32000);
    assert_eq!(t.token_to_id("<unk>"), Some(0));
    assert_eq!(t.token_to_id("<s>"), Some(1));
    assert_eq!(t.token_to_id("</s>"), Some(2));
}

#[test]
fn encoding_equals_transformers() {
    let t = load();
    let mut bad = Vec::new();
    let all = cases();
    for c in &all {
        let enc = t.encode(c.text.as_str(), true).expect("encode");
        if enc.get_ids() != c.ids.as_slice() {
            bad.push(format!(
                "line {}: {:?}: got {:?}, transformers {:?}",
                c.line,
                c.text,
                enc.get_ids(),
                c.ids
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} cases differ:\n{}",
        bad.len(),
        all.len(),
        bad.join("\n")
    );
}

#[test]
fn decoding_skips_special_tokens_when_asked() {
    let t = load();
    let ids = t.encode("Hello world", true).unwrap().get_ids().to_vec();
    let mut with_eos = ids.clone();
    with_eos.push(2);
    assert_eq!(t.decode(&with_eos, true).unwrap(), "Hello world");
    assert_eq!(t.decode(&with_eos, false).unwrap(), "<s> Hello world</s>");
}

#[test]
fn bos_is_added_by_the_post_processor() {
    let t = load();
    for text in ["", "Hello", " leading space", "日本語"] {
        let with = t.encode(text, true).unwrap();
        let without = t.encode(text, false).unwrap();
        assert_eq!(with.get_ids()[0], 1, "{text:?}");
        assert_eq!(&with.get_ids()[1..], without.get_ids(), "{text:?}");
    }
}

#[test]
fn decoding_round_trips() {
    let t = load();
    let mut bad = Vec::new();
    let all = cases();
    for c in &all {
        assert_eq!(c.ids.first(), Some(&1), "line {}: no BOS", c.line);
        let got = t.decode(&c.ids[1..], false).expect("decode");
        if got != c.decoded {
            bad.push(format!(
                "line {}: {:?}: got {:?}, transformers {:?}",
                c.line, c.ids, got, c.decoded
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} cases differ:\n{}",
        bad.len(),
        all.len(),
        bad.join("\n")
    );
}
