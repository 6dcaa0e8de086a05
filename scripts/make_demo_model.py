#!/usr/bin/env python3
"""Build examples/demo-model/: a small RANDOM Zamba2 checkpoint with the real 32000-token Mistral/Zamba2
vocabulary, for demonstrating the zamba2c pipeline (compile -> run -> detokenize) in the README.

    python3 scripts/make_tokenizer_fixture.py   # first: produces tests/fixtures/tokenizer/tokenizer.json
    python3 scripts/make_demo_model.py [--out examples/demo-model]

The weights are random (fixed seed), so the generated text is gibberish; the checkpoint only has the same
*format* as the Hub Zamba2 models (HF layout, bfloat16, tied embeddings, 2 shared blocks, vocab 32000,
bos 1 / eos 2 / pad 0). Needs transformers==5.24.0.
"""
import argparse
import json
import math
import os
import shutil

import torch
import transformers
from transformers import AutoTokenizer, Zamba2Config, Zamba2ForCausalLM
from transformers.utils import logging as hf_logging

assert transformers.__version__ == "5.24.0", f"need transformers 5.24.0, found {transformers.__version__}"
torch.set_grad_enabled(False)
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
TOK_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
SEED = 2024

README = """# demo-model — a tiny RANDOM Zamba2 checkpoint

**These weights are random.** This model has not been trained and produces gibberish. It exists only to
demonstrate the zamba2c pipeline end to end (load a Hub-format checkpoint, compile, run, detokenize)
without downloading gigabytes of real weights.

It has the same *format* as the Zyphra Zamba2 checkpoints on the Hugging Face Hub:

* `config.json`: a `Zamba2ForCausalLM` config written by transformers {tv}.
  `vocab_size` is 32000, `hidden_size` 64, {L} layers `{types}` (hybrid layers {hyb}),
  `num_mem_blocks` 2, {ha} attention heads, {nh} Mamba heads, `mamba_d_state` {ds},
  `intermediate_size` {inter}, `adapter_rank` {r}, no attention adapters, no RoPE (like Zamba2-2.7B),
  and tied embeddings. bos/eos/pad are 1/2/0.
* `model.safetensors`: {ntens} tensors in the HF 5.x layout, stored in **bfloat16** ({mb:.1f} MB, {params:,} parameters).
* `generation_config.json`: as written by `save_pretrained`.
* `tokenizer.json`, `tokenizer_config.json`: the real 32000-token Mistral v0.1 / Zamba2 SentencePiece vocabulary,
  converted to a fast tokenizer by transformers (copied from `tests/fixtures/tokenizer/`).

Regenerate with `python3 scripts/make_demo_model.py` (seed {seed}; run `scripts/make_tokenizer_fixture.py` first).

For reference, transformers {tv} (float32 math over these bf16 weights) greedily continues the prompt
`{prompt!r}` (ids `{pids}`) with the {n} tokens `{gen}`, i.e. `{gentext!r}`.
"""


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        r = lambda: torch.randn(p.shape, generator=g)  # noqa: E731
        if name.endswith("embed_tokens.weight"):
            val = r() * 0.5
        elif name.endswith("A_log"):
            val = torch.rand(p.shape, generator=g) * 2.5 - 1.0
        elif name.endswith(".D"):
            val = 1.0 + 0.5 * r()
        elif name.endswith("dt_bias"):
            val = -1.0 + 0.5 * r()
        elif name.endswith("conv1d.bias"):
            val = 0.2 * r()
        elif name.endswith("conv1d.weight"):
            val = r() * (0.6 / math.sqrt(p.shape[-1]))
        elif p.ndim == 1:
            val = 1.0 + 0.3 * r()
        else:
            val = r() / math.sqrt(p.shape[-1])
        p.copy_(val)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "examples", "demo-model"))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    assert os.path.exists(os.path.join(TOK_DIR, "tokenizer.json")), "run scripts/make_tokenizer_fixture.py first"
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)

    types = ["mamba", "hybrid", "mamba", "hybrid"]
    cfg = Zamba2Config(
        vocab_size=32000, hidden_size=64, num_hidden_layers=len(types), layers_block_type=types,
        num_mem_blocks=2, num_attention_heads=4, n_mamba_heads=8, mamba_d_state=16, mamba_d_conv=4,
        mamba_expand=2, mamba_ngroups=1, intermediate_size=128, adapter_rank=8,
        use_shared_attention_adapter=False, use_mem_rope=False, chunk_size=256, max_position_embeddings=4096,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    model = Zamba2ForCausalLM(cfg).float().eval()
    randomise(model, SEED + 1)
    params = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16).save_pretrained(out)

    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(TOK_DIR, f)):
            shutil.copy(os.path.join(TOK_DIR, f), os.path.join(out, f))

    # sanity: reload in f32, tokenize, greedy-generate
    m = Zamba2ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 32000 and tok.bos_token_id == 1 and tok.eos_token_id == 2
    prompt = "Hello, my name is"
    ids = tok(prompt, return_tensors="pt").input_ids
    gen = m.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8,
                     eos_token_id=2**31 - 1, pad_token_id=0)
    new = gen[0, ids.shape[1]:].tolist()
    gentext = tok.decode(new, skip_special_tokens=False)

    with open(os.path.join(out, "config.json")) as fh:
        c = json.load(fh)
    st = os.path.join(out, "model.safetensors")
    from safetensors import safe_open
    with safe_open(st, "pt") as fh:
        ntens = len(list(fh.keys()))
        assert all(fh.get_tensor(k).dtype == torch.bfloat16 for k in fh.keys())
    with open(os.path.join(out, "README.md"), "w") as fh:
        fh.write(README.format(tv=transformers.__version__, L=len(types), types=c["layers_block_type"],
                               hyb=c["hybrid_layer_ids"], ha=cfg.num_attention_heads, nh=cfg.n_mamba_heads,
                               ds=cfg.mamba_d_state, inter=cfg.intermediate_size, r=cfg.adapter_rank,
                               ntens=ntens, mb=os.path.getsize(st) / 1e6, params=params, seed=SEED,
                               prompt=prompt, pids=ids[0].tolist(), n=len(new), gen=new, gentext=gentext))
    total = 0
    for f in sorted(os.listdir(out)):
        sz = os.path.getsize(os.path.join(out, f))
        total += sz
        print(f"{f:28s} {sz:>10,d}")
    print(f"{'total':28s} {total:>10,d}")
    print(f"prompt {prompt!r} {ids[0].tolist()} -> {new} {gentext!r}")
    assert os.path.getsize(st) < 6e6, "model.safetensors should stay under 6 MB"


if __name__ == "__main__":
    main()
