#!/usr/bin/env python3
"""Fidelity on configurations no test has seen: random tiny Zamba2 configs are built with
transformers (via make_fixtures.build_variant, into a scratch directory, never committed), then
compiled and run with zamba2c; prints the relative errors of the prompt and decode paths and
whether greedy tokens match.

    python3 scripts/stress_unseen.py [--n 12] [--seed 0] [--zamba2c target/release/zamba2c]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402


def random_variant(rng, i):
    H = rng.choice([16, 24, 32, 48, 64])
    HA = rng.choice([h for h in [1, 2, 4, 8] if (2 * H) % h == 0 and H % h == 0])
    HKV = rng.choice([k for k in [1, 2, 4, 8] if HA % k == 0 and k <= HA])
    expand = rng.choice([1, 2])
    din = expand * H
    NH = rng.choice([n for n in [1, 2, 4, 8] if din % n == 0])
    G = rng.choice([g for g in [1, 2, 4] if NH % g == 0])
    L = rng.randint(2, 7)
    types = [rng.choice(["mamba", "hybrid"]) for _ in range(L)]
    if "hybrid" not in types:
        types[rng.randrange(L)] = "hybrid"
    adapters = HKV == HA and rng.random() < 0.5
    cfg = dict(vocab_size=rng.choice([64, 100, 160, 257]), hidden_size=H, layers_block_type=types,
               num_mem_blocks=rng.choice([1, 2, 3]), num_attention_heads=HA, num_key_value_heads=HKV,
               n_mamba_heads=NH, mamba_d_state=rng.choice([4, 8, 16]), mamba_ngroups=G, mamba_expand=expand,
               mamba_d_conv=rng.choice([2, 3, 4]), adapter_rank=rng.choice([2, 4, 8]),
               intermediate_size=rng.choice([None, 40, 96]), use_shared_attention_adapter=adapters,
               use_mem_rope=rng.random() < 0.5, chunk_size=rng.choice([4, 8, 256]),
               tie_word_embeddings=rng.random() < 0.7, rms_norm_eps=rng.choice([1e-5, 1e-6]))
    if cfg["intermediate_size"] is None:
        del cfg["intermediate_size"]
    T = rng.randint(3, 30)
    return dict(name=f"stress_{i}", features=["random"], cfg=cfg, T=T, K=rng.randint(1, T), N=8, P=4,
                seed=1000 + i, bf16=rng.random() < 0.2)


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zamba2c", default="target/release/zamba2c")
    ap.add_argument("--hf-init", action="store_true", help="keep transformers' own init (no randomise)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    if args.hf_init:
        mf.randomise = lambda *a, **k: None
    root = tempfile.mkdtemp(prefix="zamba2c-stress-")
    worst = 0.0
    for i in range(args.n):
        v = random_variant(rng, i)
        try:
            mf.build_variant(v, root)
        except AssertionError as e:  # the fixture builder's own sanity checks (margins etc.)
            print(f"{v['name']}: skipped by the builder ({e})")
            continue
        d = os.path.join(root, v["name"])
        ref = load_file(os.path.join(d, "reference.safetensors"))
        plan = os.path.join(root, v["name"] + ".plan")
        z = args.zamba2c
        subprocess.run([z, "compile", d, "-o", plan], check=True, capture_output=True)
        toks = ",".join(str(int(t)) for t in ref["tokens"])
        out = os.path.join(root, "l.safetensors")
        subprocess.run([z, "logits", plan, "--tokens", toks, "--out", out], check=True)
        e1 = rel(load_file(out)["logits"], ref["logits"])
        k = int(ref["decode_from"][0])
        subprocess.run([z, "logits", plan, "--tokens", toks, "--out", out, "--decode-from", str(k)], check=True)
        e2 = rel(load_file(out)["logits"], ref["decode_logits"])
        prompt = ",".join(str(int(t)) for t in ref["greedy_prompt"])
        r = subprocess.run([z, "run", plan, "--tokens", prompt, "--max-new-tokens", str(len(ref["greedy_tokens"])),
                            "--ignore-eos", "--json"], check=True, capture_output=True, text=True)
        got = json.loads(r.stdout.strip().split("\n")[-1])["generated_tokens"]
        same = got == [int(t) for t in ref["greedy_tokens"]]
        worst = max(worst, e1, e2)
        print(f"{v['name']}: prompt {e1:.2e} decode(K={k}) {e2:.2e} greedy {'same' if same else 'DIFFERENT'} "
              f"cfg={json.dumps(v['cfg'])}", flush=True)
    print(f"worst rel err {worst:.2e}")


if __name__ == "__main__":
    main()
