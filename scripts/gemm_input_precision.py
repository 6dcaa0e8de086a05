#!/usr/bin/env python3
"""How far from transformers f32 each way of rounding the GEMM inputs puts the 2.7B shape.

    python3 scripts/gemm_input_precision.py [--tokens 256] [--out FILE]  (~11 min on 2 cores, 16 GB)

Runs on the CPU (no GPU, no zamba2c): transformers' Zamba2 at the exact 2.7B shape, its own
random initialisation rounded to bfloat16 (as `scripts/gpu_check_27b.py` builds it), in float32,
with the roundings a zamba2c plan applies emulated by hooks:
- `kv_bf16`: the key and value projections' outputs rounded to bf16 (the default plan's bf16 KV
  cache; this config has no RoPE, so the cache holds exactly these values); `kv_f16` likewise
  to f16 (`compile --kv-dtype f16`);
- `gemm_<dtype>`: every `nn.Linear`'s input rounded once to <dtype> (bf16 or f16) before the
  product, as a tensor-core GEMM fed one plane of that type does. The weights are exactly
  representable in f16 as well where |w| >= 2^-17 (bf16 has 8 significant bits, f16 11), so
  only the activation rounding differs between the two;
- `gemm_bf16_fp8lo`: every `nn.Linear` as two planes, the hi plane bf16 and the lo plane (and
  a copy of the weight) in FP8 e4m3 with a tensor-wide scale: what a bf16 + FP8 pair of GEMMs
  would compute (scripts/zamba2_emulation.py `bf16_fp8lo_linear`);
- `w_f16`: every `nn.Linear` weight converted to f16 and back (`compile --dtype f16` of a bf16
  checkpoint: only the few weights below 2^-17 in magnitude change), restored afterwards.
Reports, against the unrounded f32 run over --tokens positions, rel = max|d| / max|ref| and the
top-1 agreement, the figures docs/PERFORMANCE.md measures plans by. The bf16 rows calibrate the
emulation against what the H200 measured for the real kernels (the default plan 4.5e-3 / 99.6%,
one bf16 rounding of GEMM inputs 4.0e-2 / 93.0%).
"""
import argparse
import time

import torch

from zamba2_emulation import linears, model_27b, record, rel, rounding_hook, top1, write


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/gemm_input_precision.json")
    ap.add_argument("--variants", default="kv_bf16,kv_bf16+gemm_bf16,kv_bf16+gemm_f16,gemm_f16")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    t = time.time()
    model = model_27b()
    res = {"tokens": args.tokens, "seed": args.seed, "init_s": time.time() - t}
    # The share of weights a bf16 -> f16 conversion would not keep exactly (|w| < 2^-17 and
    # nonzero low bits, or beyond f16's range).
    inexact = total = 0
    for name, p in model.named_parameters():
        if p.dim() == 2 and "embed" not in name:
            w = p.detach()
            inexact += int((w.half().float() != w).sum())
            total += w.numel()
    res["matrix_weights"] = total
    res["f16_inexact_weights"] = inexact
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (1, args.tokens), generator=g)
    with torch.no_grad():
        t = time.time()
        ref = model(ids, use_cache=False).logits[0].float()
        res["ref_s"] = time.time() - t
    res["linears"] = len(linears(model))
    for variant in args.variants.split(","):
        hooks = []
        saved = []
        # Forward hooks run in the order they were registered, and gemm_bf16_fp8lo's replaces a
        # projection's output: it goes first, so a kv_* rounding applies to what it computed.
        parts = sorted(variant.split("+"), key=lambda p: p != "gemm_bf16_fp8lo")
        for part in parts:
            h = rounding_hook(model, part)
            if h is not None:
                hooks += h
            elif part == "w_f16":
                with torch.no_grad():
                    for _, m in linears(model):
                        w = m.weight
                        idx = (w.half().float() != w).nonzero(as_tuple=True)
                        saved.append((w, idx, w[idx].clone()))
                        w[idx] = w[idx].half().float()
            else:
                raise SystemExit(f"unknown variant part {part}")
        with torch.no_grad():
            t = time.time()
            out = model(ids, use_cache=False).logits[0].float()
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for w, idx, orig in saved:
                w[idx] = orig
        record(res, variant, {"rel": rel(out, ref), "top1_agree": top1(out, ref), "s": time.time() - t})
    write(res, args.out)


if __name__ == "__main__":
    main()
