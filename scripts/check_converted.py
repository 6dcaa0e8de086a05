#!/usr/bin/env python3
"""Issue 14 check: `zamba2c convert` of every standalone fixture (tests/fixtures/standalone/<variant>/,
Zyphra's original layout, references from scripts/make_standalone_fixtures.py), loaded with transformers
5.24 as an ordinary Hugging Face checkpoint, must give the fixture's reference logits within 1e-4
(rel = max|ours - ref| / max|ref|), on the prompt path (one forward, no cache) and on the decode path
(tokens[:K] as one call with a cache, then one token at a time).

    cargo build --release && python3 scripts/check_converted.py [--zamba2c target/release/zamba2c]

Needs torch, transformers==5.24.0, safetensors. Nothing is patched: the converted config.json alone
(time_step_min = 1e-30 for a standalone source, see src/cli/convert.rs) makes transformers' prompt-path
dt clamp inert, matching the original code, which has none.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file
from transformers import Zamba2ForCausalLM
from transformers.utils import logging as hf_logging

assert transformers.__version__ == "5.24.0", transformers.__version__
torch.set_grad_enabled(False)
hf_logging.set_verbosity_error()
TOL = 1e-4
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def decode_path(model, ids, K):
    out = model(input_ids=ids[None, :K], use_cache=True)
    cache, rows = out.past_key_values, [out.logits[0]]
    for t in range(K, len(ids)):
        o = model(input_ids=ids[None, t:t + 1], past_key_values=cache, use_cache=True)
        cache = o.past_key_values
        rows.append(o.logits[0])
    return torch.cat(rows, 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zamba2c", default=os.path.join(ROOT, "target", "release", "zamba2c"))
    ap.add_argument("--fixtures", default=os.path.join(ROOT, "tests", "fixtures", "standalone"))
    args = ap.parse_args()
    worst, failed = 0.0, []
    models = sorted(d for d in glob.glob(os.path.join(args.fixtures, "*")) if os.path.isdir(d))
    assert models, f"no fixtures under {args.fixtures}"
    with tempfile.TemporaryDirectory() as tmp:
        for d in models:
            name = os.path.basename(d)
            out = os.path.join(tmp, name)
            subprocess.run([args.zamba2c, "convert", d, "-o", out], check=True)
            model = Zamba2ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
            ref = load_file(os.path.join(d, "reference.safetensors"))
            ids, K = ref["tokens"], int(ref["decode_from"][0])
            e_prompt = rel(model(input_ids=ids[None], use_cache=False).logits[0], ref["logits"])
            e_decode = rel(decode_path(model, ids, K), ref["decode_logits"])
            print(f"{name:28s} prompt {e_prompt:.2e}  decode {e_decode:.2e}")
            worst = max(worst, e_prompt, e_decode)
            if max(e_prompt, e_decode) > TOL:
                failed.append(name)
    print(f"worst {worst:.2e} (tolerance {TOL:g})")
    if failed:
        sys.exit(f"over tolerance: {', '.join(failed)}")


if __name__ == "__main__":
    main()
