#!/usr/bin/env python3
"""Does a 16-bit SSM state drift over a long decode? The CPU interpreter's logits with an f16 (or
bf16) state against the same plan's with an f32 state, over 10,000 decode steps, on a small
model whose outputs the state carries.

    python3 scripts/state_dtype_drift.py [--steps 10000] [--bc-scale 64] [--out DIR]
        [--zamba2c target/release/zamba2c] [--state f16]

Runs on the CPU (~4 min on 2 cores): transformers makes a random Zamba2 (hidden 256, 6 layers,
2 hybrid, 8 Mamba heads of 64 dims, d_state 64), scales every mixer's B and C rows by
--bc-scale (scripts/zamba2_emulation.py `scale_bc`: at 64 zeroing the state moves the outputs
by about half) and saves it in bf16; zamba2c compiles it twice (`--state-dtype f32` and the
state dtype tested) and decodes the same random tokens one at a time from a one-token prompt
(`logits --decode-from 1`). Reports the largest relative difference (max|d| / max|ref|) and the
top-1 agreement per window of positions (growth would show as a rising column), and
transformers' own figures on the first 300 tokens of its decode path as controls: the state
zeroed at every step (what the state is worth) and rounded to the tested dtype.
Writes state_dtype_drift.json into --out.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import Zamba2Config, Zamba2ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zamba2_emulation import scale_bc  # noqa: E402


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--bc-scale", type=float, default=64.0)
    ap.add_argument("--state", default="f16", choices=["f16", "bf16"])
    ap.add_argument("--zamba2c", default="target/release/zamba2c")
    ap.add_argument("--work", default="/tmp/state_drift")
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    torch.manual_seed(0)
    cfg = Zamba2Config(hidden_size=256, num_hidden_layers=6,
                       layers_block_type=["mamba", "mamba", "hybrid", "mamba", "mamba", "hybrid"],
                       n_mamba_heads=8, mamba_d_state=64, mamba_expand=2, mamba_ngroups=1,
                       intermediate_size=512, num_attention_heads=4, num_key_value_heads=4,
                       num_mem_blocks=2, use_shared_attention_adapter=False, use_mem_rope=False,
                       vocab_size=512, max_position_embeddings=args.steps + 1024, chunk_size=256)
    model = Zamba2ForCausalLM(cfg)
    scale_bc(model, cfg, args.bc_scale)
    model = model.to(torch.bfloat16)
    ck = os.path.join(args.work, "ckpt")
    model.save_pretrained(ck)
    res = {"steps": args.steps, "bc_scale": args.bc_scale, "state": args.state}

    # transformers' controls (its decode path, f32 math on the bf16 weights): imported here
    # because the module patches transformers' state update when loaded.
    import ssm_state_precision as sp
    model = model.float().eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, cfg.vocab_size, (1, 300), generator=g)
    ref, _ = sp.decode_path(model, ids, 1, None)
    for name, dt in [("zero", "zero"), (args.state, {"f16": torch.float16, "bf16": torch.bfloat16}[args.state])]:
        out, _ = sp.decode_path(model, ids, 1, dt)
        res[f"transformers_state_{name}_300"] = {"rel": sp.rel(out, ref), "top1_agree": sp.top1(out, ref)}
        print(f"transformers state_{name} (300 tokens)", res[f"transformers_state_{name}_300"], flush=True)
    del model

    rng = random.Random(2)
    toks = ",".join(str(rng.randrange(3, cfg.vocab_size)) for _ in range(args.steps + 1))
    logits = {}
    for st in ("f32", args.state):
        plan = os.path.join(args.work, f"plan-{st}")
        subprocess.run([args.zamba2c, "compile", ck, "-o", plan, "--dtype", "bf16", "--state-dtype", st],
                       check=True, stdout=subprocess.DEVNULL)
        out = os.path.join(args.work, f"decode-{st}.safetensors")
        t = time.time()
        subprocess.run([args.zamba2c, "logits", plan, "--tokens", toks, "--out", out, "--device", "cpu",
                        "--decode-from", "1", "--max-context", str(args.steps + 1)], check=True)
        res[f"decode_{st}_s"] = time.time() - t
        logits[st] = load_file(out)["logits"]
    a, b = logits[args.state], logits["f32"]
    scale = np.abs(b).max()
    per_pos = np.abs(a - b).max(-1) / scale
    n = a.shape[0]
    windows = []
    for start in sorted({0, 100, 1000, n // 5, 2 * n // 5, 3 * n // 5, 4 * n // 5, n - 100}):
        sl = slice(start, min(n, start + 100))
        windows.append({"from": start, "rel": float(per_pos[sl].max()),
                        "top1_agree": float((a[sl].argmax(-1) == b[sl].argmax(-1)).mean())})
    res["windows"] = windows
    res["rel"] = rel(a, b)
    res["top1_agree"] = float((a.argmax(-1) == b.argmax(-1)).mean())
    for w in windows:
        print(f"positions {w['from']:>6}..+100: rel {w['rel']:.2e} top1 {w['top1_agree']:.3f}")
    print(f"all {n} positions: rel {res['rel']:.2e} top1 {res['top1_agree']:.4f}")
    with open(os.path.join(args.out, "state_dtype_drift.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
