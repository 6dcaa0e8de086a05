#!/usr/bin/env python3
"""Build the tokenizer fixture for zamba2c: the Mistral v0.1 / Zamba2 32000-token SentencePiece vocabulary
converted to a Hugging Face fast tokenizer (tokenizer.json), plus reference encodings.

    python3 scripts/make_tokenizer_fixture.py [--out tests/fixtures/tokenizer]

Needs transformers==5.24.0, tokenizers, sentencepiece and mistral-common (which ships the SentencePiece
model as mistral_common/data/tokenizer.model.v1). Deterministic.

Steps
  1. copy tokenizer.model.v1 into a temp dir as tokenizer.model, next to a tokenizer_config.json naming
     LlamaTokenizer (add_bos_token true, add_eos_token false, legacy true, <s> </s> <unk>);
  2. AutoTokenizer.from_pretrained(tempdir) (transformers converts the SentencePiece model to a fast,
     `tokenizers`-backed tokenizer), save_pretrained(out) -> tokenizer.json, tokenizer_config.json
     (5.24 writes no special_tokens_map.json);
  3. reload the FAST tokenizer from `out` and write cases.jsonl, one JSON object per line:
       {"text": str, "ids": tokenizer(text).input_ids (with BOS), "decoded": tokenizer.decode(ids[1:],
        skip_special_tokens=False)}
     It also checks that the plain `tokenizers` library (tokenizers.Tokenizer.from_file(tokenizer.json), which
     is what a Rust `tokenizers` implementation reproduces) gives the same ids for every case, and prints how
     many cases differ from the original SentencePiece model (informational only).
"""
import argparse
import json
import os
import random
import shutil
import sys
import tempfile

import mistral_common
import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

assert transformers.__version__ == "5.24.0", f"need transformers 5.24.0, found {transformers.__version__}"
hf_logging.set_verbosity_error()

SP_MODEL = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
TOKENIZER_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "add_bos_token": True,
    "add_eos_token": False,
    "legacy": True,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "clean_up_tokenization_spaces": False,
}

# ------------------------------------------------------------------------------------------------------
# hand-written cases
# ------------------------------------------------------------------------------------------------------
HAND = [
    "", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n\n", " \n ", "\t\t\tx", "x\t\t\t", "a", "A", "ab", "Hello",
    "Hello world", "Hello world!", " Hello", "Hello ", "  Hello  ", "hello\nworld", "hello\n\nworld", "hello\r\nworld",
    "Hey how are you doing on this lovely evening?",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "I'm doing well, thanks for asking. You're welcome; it's fine -- isn't it?",
    "New York City, U.S.A. -- e.g., i.e., etc.",
    "<s>", "</s>", "<unk>", "<s> </s> <unk>", "<s>hello</s>", "hi <s> there", "text</s>more", "<s><s><s>",
    "< s >", "<S>", "</ s>", "<pad>", "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>",
    "[INST]", "[/INST]", "[INST] What is 2+2? [/INST] 4</s>", "<s>[INST] Hello [/INST]", "<<SYS>>\nBe nice.\n<</SYS>>",
    "0", "1", "12", "123", "1234", "12345", "3.14159", "-42", "+1 (555) 010-9999", "1,000,000", "1e-5", "0x7fffffff",
    "2024-06-01T12:34:56Z", "31415926535897932384626433832795028841971693993751058209749445923078164062862089986280",
    "99999999999999999999999999999999999999999999999999", "1.0e+308", "½ ¼ ¾ ⅓", "① ② ③", "١٢٣٤٥ ٦٧٨٩٠", "१२३ ४५६",
    "def f(x):\n    return x * 2\n",
    "fn main() {\n    println!(\"Hello, {}!\", name);\n}\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i] * c; }",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "SELECT * FROM users WHERE id = 1 AND name LIKE '%bob%';",
    "const x = () => { return [1, 2, 3].map(v => v ** 2); };",
    "if __name__ == \"__main__\":\n\tmain()\n",
    "    indented with four spaces\n        and eight",
    "{\"key\": [1, 2, {\"nested\": null}], \"b\": true}",
    "<div class=\"a\"><p>Hi &amp; bye</p></div>",
    "$ cargo build --release && ./target/release/zamba2c --help",
    "a_b-c.d/e\\f|g~h`i^j",
    "!!!???...,,,;;;:::",
    "https://huggingface.co/Zyphra/Zamba2-2.7B/resolve/main/config.json",
    "http://example.com/path?query=1&b=%20x#frag",
    "mailto:someone@example.org", "ftp://ftp.example.net/pub/file.tar.gz", "www.example.com/~user/index.html",
    "Ünïcödé façade naïve coöperate résumé Ångström Øresund Łódź ß",
    "Ελληνικά: Καλημέρα κόσμε", "Русский: Привет, мир!", "Українська: Ґанок, їжак, є",
    "العربية: مرحبا بالعالم", "עברית: שלום עולם", "हिन्दी: नमस्ते दुनिया", "বাংলা: হ্যালো বিশ্ব",
    "தமிழ்: வணக்கம் உலகம்", "ไทย: สวัสดีชาวโลก", "ລາວ: ສະບາຍດີ", "ქართული: გამარჯობა", "Հայերեն: Բարեւ",
    "አማርኛ: ሰላም ዓለም", "ᏣᎳᎩ", "ᚠᛇᚻ᛫ᛒᛦᚦ", "Tiếng Việt: Xin chào thế giới",
    "中文：你好，世界！", "繁體中文：你好，世界！", "日本語：こんにちは世界。カタカナ、ひらがな。",
    "한국어: 안녕하세요 세계", "漢字かなカナ한글混合 text", "𠜎𠜱𠝹𠱓𠱸𠲖𠳏", "龘靐齉齾",
    "😀", "😀😃😄😁", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇯🇵🇫🇷", "🤷🏽‍♀️", "🧑🏿‍💻", "❤️‍🔥", "👩🏻‍❤️‍💋‍👨🏼",
    "1️⃣ #️⃣ *️⃣", "☃ ☂ ☀ ★ ☆ ♠ ♣ ♥ ♦", "∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x|", "∑_{i=1}^{n} i = n(n+1)/2",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝 𝓢𝓬𝓻𝓲𝓹𝓽", "𓀀𓀁𓀂", "𐀀𐀁𐀂", "\U000f0000\U0010fffd", "\ue000\uf8ff",
    "\u0000", "\u0001\u0002\u0003", "\u007f", "\u0080\u0085\u009f", "\u00a0non-breaking\u00a0space",
    "\u2002en\u2003em\u2009thin\u200ahair", "\u3000ideographic\u3000space", "zero\u200bwidth\u200cjoiners\u200d",
    "\ufeffBOM at start", "soft\u00adhyphen", "e\u0301 vs \u00e9", "Z\u0351\u0361a\u0300\u0301l\u0310g\u0337o\u0358",
    "\u202eright-to-left override\u202c", "line\u2028separator\u2029para",
    "▁", "▁▁", "▁hello", "a▁b", "<0x0A>", "<0x41>", "\\n", "\\u0041",
    "tab\tseparated\tvalues\t", "trailing spaces   ", "   leading spaces", "\n\nleading newlines",
    "trailing newline\n", "mixed \t \n \r whitespace", "a" * 50, "ab" * 40, " " * 30, "\n" * 12, "\t" * 9,
    "ha" * 25 + "!", "-" * 60, "=" * 33, "." * 20, "_" * 17, "0" * 40,
]


def pools():
    rng_ranges = {
        "ascii_lower": "abcdefghijklmnopqrstuvwxyz",
        "ascii_upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "digits": "0123456789",
        "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        "ws": " \t\n\r\u00a0\u3000\u2009",
        "latin1": "".join(chr(c) for c in range(0xC0, 0x100)),
        "latin_ext": "".join(chr(c) for c in range(0x100, 0x180)),
        "greek": "".join(chr(c) for c in range(0x391, 0x3CA) if c != 0x3A2),
        "cyrillic": "".join(chr(c) for c in range(0x410, 0x450)),
        "arabic": "".join(chr(c) for c in range(0x621, 0x64B)),
        "hebrew": "".join(chr(c) for c in range(0x5D0, 0x5EB)),
        "devanagari": "".join(chr(c) for c in range(0x905, 0x939)) + "\u093e\u093f\u0940\u094d",
        "thai": "".join(chr(c) for c in range(0xE01, 0xE2F)),
        "hangul": "".join(chr(c) for c in range(0xAC00, 0xAC00 + 400, 3)),
        "hiragana": "".join(chr(c) for c in range(0x3041, 0x3097)),
        "katakana": "".join(chr(c) for c in range(0x30A1, 0x30FB)),
        "cjk": "".join(chr(c) for c in range(0x4E00, 0x4E00 + 3000, 7)),
        "cjk_ext_b": "".join(chr(c) for c in range(0x20000, 0x20000 + 500, 11)),
        "emoji": "".join(chr(c) for c in range(0x1F600, 0x1F650)) + "".join(chr(c) for c in range(0x1F300, 0x1F340)),
        "symbols": "".join(chr(c) for c in range(0x2190, 0x21FF)) + "".join(chr(c) for c in range(0x2200, 0x2260)),
        "math_alnum": "".join(chr(c) for c in range(0x1D400, 0x1D4A0)),
        "rare": "".join(chr(c) for c in range(0x10000, 0x1005D)) + "".join(chr(c) for c in range(0x13000, 0x13040)),
        "combining": "".join(chr(c) for c in range(0x300, 0x34F)),
        "control": "".join(chr(c) for c in range(1, 32) if c not in (9, 10, 13)) + "\x7f",
        "pua": "".join(chr(c) for c in range(0xE000, 0xE040)),
    }
    return {k: list(v) for k, v in rng_ranges.items()}


ZWJ = ["👨‍👩‍👧‍👦", "👩‍💻", "🏳️‍🌈", "🧑‍🤝‍🧑", "👁️‍🗨️", "🐻‍❄️", "❤️‍🩹", "🤷🏽‍♀️", "🏃🏾‍♂️", "👩🏻‍🔬"]
SKIN = ["\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
FLAGS = ["🇩🇪", "🇬🇧", "🇨🇳", "🇧🇷", "🇮🇳", "🇿🇦"]
WORDS = ("the of and to in is was for that with as on by at from this be are it an or which have not has but "
         "model language token state space attention layer hidden chunk decode prefill cache compiler kernel "
         "Zamba2 Mamba2 transformer SentencePiece tokenizer byte fallback unicode emoji number").split()
SPECIAL = ["<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"]
CODE = ["def ", "return ", "fn ", "let mut ", "{", "}", "(", ")", "[", "]", ";", "->", "=>", "==", "!=", "::", "//",
        "/* */", "#", "\"str\"", "'c'", "0x1F", "self.", "&mut ", "    ", "\n", "\t", "import ", "pub ", "<T>"]
TLDS = ["com", "org", "net", "io", "co.uk", "de", "jp"]


def random_cases(seed=20240601):
    rng = random.Random(seed)
    P = pools()
    names = sorted(P)
    out = []

    def chars(pool, n):
        return "".join(rng.choice(P[pool]) for _ in range(n))

    # 1. single-script random strings, with some spaces
    for name in names:
        for _ in range(6):
            n = rng.randint(1, 24)
            s = "".join(rng.choice(P[name]) if rng.random() > 0.2 else " " for _ in range(n))
            out.append(s)
    # 2. mixed-script soup
    for _ in range(120):
        parts = [chars(rng.choice(names), rng.randint(1, 6)) for _ in range(rng.randint(1, 8))]
        sep = rng.choice(["", " ", "  ", "\n", "\t", " \n"])
        out.append(sep.join(parts))
    # 3. word salad with punctuation, capitalisation, digits
    for _ in range(100):
        words = []
        for _ in range(rng.randint(1, 16)):
            w = rng.choice(WORDS)
            r = rng.random()
            if r < 0.15:
                w = w.capitalize()
            elif r < 0.2:
                w = w.upper()
            elif r < 0.3:
                w = w + rng.choice(",.;:!?")
            elif r < 0.35:
                w = str(rng.randint(0, 10 ** rng.randint(1, 12)))
            words.append(w)
        s = rng.choice([" ", " ", " ", "  ", "\n", "\t"]).join(words)
        if rng.random() < 0.3:
            s = " " * rng.randint(1, 3) + s
        if rng.random() < 0.3:
            s = s + rng.choice([" ", "\n", "  ", "\t", "\n\n"])
        out.append(s)
    # 4. numbers
    for _ in range(40):
        k = rng.randint(1, 60)
        s = "".join(rng.choice("0123456789") for _ in range(k))
        if rng.random() < 0.3:
            s = s[: k // 2] + "." + s[k // 2:]
        if rng.random() < 0.2:
            s = "-" + s
        if rng.random() < 0.3:
            s = f"{rng.choice(WORDS)} {s} {rng.choice(WORDS)}"
        out.append(s)
    # 5. emoji sequences
    for _ in range(40):
        parts = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.3:
                parts.append(rng.choice(ZWJ))
            elif r < 0.5:
                parts.append(rng.choice(P["emoji"]) + rng.choice(SKIN))
            elif r < 0.65:
                parts.append(rng.choice(FLAGS))
            else:
                parts.append(rng.choice(P["emoji"]))
        out.append(rng.choice(["", " "]).join(parts))
    # 6. special-token text in context
    for _ in range(30):
        parts = []
        for _ in range(rng.randint(1, 6)):
            parts.append(rng.choice(SPECIAL) if rng.random() < 0.5 else rng.choice(WORDS))
        out.append(rng.choice(["", " ", "\n"]).join(parts))
    # 7. code-like
    for _ in range(40):
        out.append("".join(rng.choice(CODE + WORDS[:10]) for _ in range(rng.randint(3, 25))))
    # 8. URLs
    for _ in range(25):
        host = ".".join(rng.choice(WORDS).lower() for _ in range(rng.randint(1, 3)))
        path = "/".join(rng.choice(WORDS) for _ in range(rng.randint(0, 4)))
        q = "" if rng.random() < 0.5 else f"?{rng.choice(WORDS)}={rng.randint(0, 99999)}&x=%2F{rng.choice(WORDS)}"
        out.append(f"{rng.choice(['http', 'https'])}://{host}.{rng.choice(TLDS)}/{path}{q}")
    # 9. whitespace runs
    for _ in range(30):
        out.append("".join(rng.choice([" ", " ", "\t", "\n", "\r\n", "x", "yz", "\u00a0"]) for _ in range(rng.randint(1, 20))))
    # 10. byte-fallback-heavy strings (characters unlikely to be in the vocab)
    for _ in range(30):
        pool = rng.choice(["rare", "math_alnum", "pua", "control", "cjk_ext_b", "combining"])
        out.append(chars(pool, rng.randint(1, 10)) + rng.choice(["", " ", " a", "b "]))
    # 11. long strings
    long_words = " ".join(rng.choice(WORDS) for _ in range(700))
    out.append(long_words)
    out.append("".join(rng.choice(P["cjk"]) for _ in range(1200)))
    out.append("\n".join("    " + " ".join(rng.choice(CODE + WORDS) for _ in range(12)) for _ in range(60)))
    out.append("".join(rng.choice(P[rng.choice(names)]) for _ in range(1500)))
    out.append(" " * 257 + "end")
    out.append("9" * 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                  "tests", "fixtures", "tokenizer"))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(SP_MODEL, os.path.join(tmp, "tokenizer.model"))
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as fh:
            json.dump(TOKENIZER_CONFIG, fh, indent=2)
        tok = AutoTokenizer.from_pretrained(tmp)
        assert tok.is_fast, "expected a fast tokenizer"
        tok.save_pretrained(out)
    # transformers 5.24 drops `legacy`, `add_bos_token` and `add_eos_token` from the saved tokenizer_config.json.
    # Without `legacy: true` a reload defaults to legacy=False and silently rewrites the Metaspace pre-tokenizer
    # from prepend_scheme "always" (what tokenizer.json says) to "first", so AutoTokenizer and tokenizer.json would
    # disagree on text that follows a special token ("<s>hello"). Put the keys back so both agree.
    cfg_path = os.path.join(out, "tokenizer_config.json")
    with open(cfg_path) as fh:
        saved_cfg = json.load(fh)
    dropped = [k for k in ("legacy", "add_bos_token", "add_eos_token") if k not in saved_cfg]
    for k in ("legacy", "add_bos_token", "add_eos_token"):
        saved_cfg[k] = TOKENIZER_CONFIG[k]
    for k in ("is_local", "local_files_only"):  # machine-local bookkeeping, not tokenizer semantics
        saved_cfg.pop(k, None)
    with open(cfg_path, "w") as fh:
        json.dump(saved_cfg, fh, indent=2, sort_keys=True)
        fh.write("\n")
    if dropped:
        print(f"note: transformers did not save {dropped} in tokenizer_config.json; restored them")
    with open(os.path.join(out, "tokenizer.json")) as fh:
        tj = json.load(fh)
    assert tj["pre_tokenizer"] == {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                                   "split": False}, tj["pre_tokenizer"]
    kept = sorted(os.listdir(out))
    for f in kept:
        if f not in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            os.remove(os.path.join(out, f))
    kept = sorted(os.listdir(out))

    # reload the FAST tokenizer from what was saved
    tok = AutoTokenizer.from_pretrained(out)
    raw = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    assert tok.is_fast
    assert json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"]["prepend_scheme"] == "always"
    assert len(tok) == 32000 and raw.get_vocab_size(with_added_tokens=True) == 32000, len(tok)
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2 and tok.unk_token_id == 0
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "<s>", "</s>"]

    try:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=SP_MODEL)
    except Exception:  # noqa
        sp = None

    texts = []
    seen = set()
    for s in HAND + random_cases():
        if s not in seen:
            seen.add(s)
            texts.append(s)
    n_raw_mismatch = 0
    n_sp_mismatch = 0
    sp_examples = []
    path = os.path.join(out, "cases.jsonl")
    with open(path, "w", encoding="utf-8") as fh:
        for s in texts:
            ids = tok(s)["input_ids"]
            assert ids[0] == 1, (s, ids)
            dec = tok.decode(ids[1:], skip_special_tokens=False)
            if raw.encode(s).ids != ids:
                n_raw_mismatch += 1
            if sp is not None and [1] + sp.encode(s) != ids:
                n_sp_mismatch += 1
                if len(sp_examples) < 6:
                    sp_examples.append((s, ids, [1] + sp.encode(s)))
            fh.write(json.dumps({"text": s, "ids": ids, "decoded": dec}, ensure_ascii=False) + "\n")
    size = os.path.getsize(path)
    assert n_raw_mismatch == 0, f"{n_raw_mismatch} cases: tokenizers.Tokenizer != AutoTokenizer"
    assert len(texts) >= 600, len(texts)
    n_rt = sum(1 for s in texts if tok.decode(tok(s)["input_ids"][1:], skip_special_tokens=False) == s)
    print(f"wrote {path}: {len(texts)} cases, {size / 1024:.1f} KiB")
    print(f"files in {out}: {kept + ['cases.jsonl']}")
    print(f"vocab {len(tok)}, bos {tok.bos_token_id}, eos {tok.eos_token_id}, unk {tok.unk_token_id}")
    print(f"plain `tokenizers` library agrees with AutoTokenizer on all {len(texts)} cases")
    print(f"decode(encode(text)) == text for {n_rt}/{len(texts)} cases")
    if sp is not None:
        print(f"informational: {n_sp_mismatch}/{len(texts)} cases differ from the original SentencePiece model "
              f"(BOS + sp.encode(text)), e.g.:")
        for s, a, b in sp_examples:
            print(f"   {s!r}: fast {a[:12]} vs sentencepiece {b[:12]}")
    assert size < 1_100_000, size


if __name__ == "__main__":
    sys.exit(main())
