#!/usr/bin/env python3
"""Cross-check tests/fixtures/models/* against the independent float64 spec implementation (RefZamba2) in
the shared probe (../shared/tools/zamba2_probe.py, outside the repository; docs/ZAMBA2.md is our
account of the model). Reads only config.json + *.safetensors + reference.safetensors.

    python3 scripts/check_fixtures_vs_spec.py [--probe ../shared/tools/zamba2_probe.py] [--dir tests/fixtures/models]

Only the RefZamba2 class is taken from the probe (the probe's top-level code is not run).
"""
import argparse
import ast
import glob
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def load_ref_class(probe):
    tree = ast.parse(open(probe).read())
    ns = {"torch": torch, "F": F, "math": math}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "RefZamba2":
            exec(compile(ast.Module([node], []), probe, "exec"), ns)
            return ns["RefZamba2"]
    raise SystemExit(f"RefZamba2 not found in {probe}")


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", default=os.path.join(ROOT, "..", "shared", "tools", "zamba2_probe.py"))
    ap.add_argument("--dir", default=os.path.join(ROOT, "tests", "fixtures", "models"))
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    Ref = load_ref_class(args.probe)
    ok = True
    for d in sorted(glob.glob(os.path.join(args.dir, "*"))):
        if not os.path.isfile(os.path.join(d, "reference.safetensors")):
            continue
        cfg = json.load(open(os.path.join(d, "config.json")))
        cfg["layers_block_type"] = ["hybrid" if t in ("hybrid", "g") else "mamba" for t in cfg["layers_block_type"]]
        W = {}
        for f in os.listdir(d):
            if f.startswith("model") and f.endswith(".safetensors"):
                with safe_open(os.path.join(d, f), "pt") as fh:
                    for k in fh.keys():
                        W[k] = fh.get_tensor(k).float()
        r = load_file(os.path.join(d, "reference.safetensors"))
        toks, K = r["tokens"].tolist(), int(r["decode_from"][0])
        ref = Ref(W, cfg, clamp_prefill=True, clamp_decode=False)   # the HF 5.24 clamp behaviour
        lg = ref.prefill(toks)
        ref.reset()
        rows = [ref.prefill(toks[:K])] + [ref.decode(t)[None] for t in toks[K:]]
        dec = torch.cat(rows)
        ref.reset()
        o = ref.prefill(r["greedy_prompt"].tolist())[-1]
        g = []
        for _ in range(len(r["greedy_tokens"])):
            g.append(int(o.argmax()))
            o = ref.decode(g[-1])
        e1, e2, gm = rel(lg, r["logits"]), rel(dec, r["decode_logits"]), g == r["greedy_tokens"].tolist()
        ok &= e1 <= args.tol and e2 <= args.tol and gm
        print(f"{os.path.basename(d):28s} logits rel {e1:.2e}  decode_logits rel {e2:.2e}  greedy match {gm}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
