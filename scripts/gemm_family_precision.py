#!/usr/bin/env python3
"""Which projections can take one f16 plane: top-1 flips against transformers f32 when only some
families of `nn.Linear` get their inputs rounded once to f16.

    python3 scripts/gemm_family_precision.py [--device cuda] [--seeds 16] [--out DIR]
    python3 scripts/gemm_family_precision.py --device cpu --tiny --seeds 2   (a smoke test)

The f16 plan (`compile --dtype f16`: one f16 plane into every GEMM) flips about twice as many
top-1 positions as the default bf16 plan (two bf16 planes, ~16 bits kept) on the 2.7B shape
(docs/PERFORMANCE.md, seventeenth session: 40 and 18 of 4,096). A plan could give one plane to
some projections and two to the rest; this measures, by emulation, which families the flips come
from. The model and prompts are scripts/gpu_check_27b.py's (the same seed on the same device
gives the same weights), run in float32 with hooks that emulate a plan's roundings:
- every variant rounds the key and value projections' outputs to bf16 (the default plan's KV
  cache; this config has no RoPE, so the cache holds exactly these values);
- a family in the variant gets each input of its `nn.Linear` modules rounded once to f16 (what
  a tensor-core GEMM fed one f16 plane computes) and its weights through f16 (what
  `compile --dtype f16` keeps of a bf16 checkpoint).
Variants: `none` (the bf16 plan's emulation), `all` (the f16 plan's), each family alone, and all
families but one; or --variants NAME=FAM+FAM,... (combinations, which may name a column part
of the mixers' in_proj: its z, x or B/C/dt rows alone on one f16 plane). Reports pooled flips and rel = max|d| / max|ref| for each; writes
gemm_family_precision.json into --out.
"""
import argparse
import json
import os
import time

import torch
from transformers import Zamba2Config, Zamba2ForCausalLM

# Families by the last component of the module name (transformers' Zamba2 names); the shared
# MLP's LoRA adapters go with the projection they adapt.
FAMILIES = {
    "in_proj": ("in_proj",),
    "out_proj": ("out_proj",),
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "o_proj": ("o_proj",),
    "gate_up": ("gate_up_proj", "gate_up_proj_adapter_list"),
    "down_proj": ("down_proj",),
    "linear": ("linear",),
    "lm_head": ("lm_head",),
}


# Column parts of the mixers' in_proj (rows z, x, B, C, dt: docs/ZAMBA2.md §3.1): a plan could
# store the rows of one part in f16 and give only their GEMM one f16 plane of the same input.
PARTS = ("in_proj_z", "in_proj_x", "in_proj_bcdt")


def part_rows(cfg, part):
    """The in_proj weight rows of `part`."""
    d_inner = cfg.mamba_expand * cfg.hidden_size
    return {"in_proj_z": (0, d_inner), "in_proj_x": (d_inner, 2 * d_inner),
            "in_proj_bcdt": (2 * d_inner, None)}[part]


def part_hook(rows):
    """A forward hook that recomputes output columns `rows` of a linear from its input rounded
    once to f16 and those weight rows through f16 (the rest as computed)."""
    a, b = rows

    def hook(m, i, o):
        x = i[0].to(torch.float16).float()
        w = m.weight[a:b].half().float()
        o = o.clone()
        o[..., a:b] = x @ w.T
        return o
    return hook


def family_of(name):
    parts = name.split(".")
    for fam, keys in FAMILIES.items():
        if parts[-1] in keys or any(k in parts for k in keys if k.endswith("_list")):
            return fam
    return None


def build(args):
    torch.manual_seed(0)
    if args.tiny:
        kinds = ["mamba", "hybrid", "mamba", "mamba", "hybrid", "mamba"]
        cfg = Zamba2Config(hidden_size=64, num_hidden_layers=len(kinds), layers_block_type=kinds,
                           n_mamba_heads=8, num_mem_blocks=2, use_shared_attention_adapter=False,
                           use_mem_rope=False, vocab_size=500, num_attention_heads=4,
                           mamba_d_state=8, mamba_headdim=16, adapter_rank=4)
    else:
        # scripts/gpu_check_27b.py's model, built the same way.
        cfg = Zamba2Config(n_mamba_heads=80, num_mem_blocks=2, use_shared_attention_adapter=False,
                           use_mem_rope=False, vocab_size=32000)
    with torch.device(args.device):
        model = Zamba2ForCausalLM(cfg)
    return cfg, model.to(torch.bfloat16).float().eval()


def prompts(args, vocab):
    """gpu_check_27b.py's prompts: seed 1 first, then seeds 2..--seeds."""
    out = []
    for sd in [1] + list(range(2, args.seeds + 1)):
        g = torch.Generator().manual_seed(sd)
        out.append(torch.randint(3, vocab, (1, args.tokens), generator=g).to(args.device))
    return out


def run(model, ids_list):
    with torch.no_grad():
        return [model(ids, use_cache=False).logits[0].float() for ids in ids_list]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--tiny", action="store_true", help="a small config (smoke test)")
    ap.add_argument("--variants", default="",
                    help="NAME=FAM+FAM,... instead of the default set (none, all, each family "
                         "alone, all but each); `none` and `all` are always run; a FAM may also "
                         "be a column part of the mixers' in_proj (in_proj_z, in_proj_x, "
                         "in_proj_bcdt)")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    args = ap.parse_args()
    t = time.time()
    cfg, model = build(args)
    ids_list = prompts(args, cfg.vocab_size)
    res = {"transformers": __import__("transformers").__version__, "device": args.device,
           "tokens": args.tokens, "prompts": len(ids_list), "build_s": time.time() - t}
    refs = run(model, ids_list)
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    by_family = {f: [m for n, m in mods if family_of(n) == f] for f in FAMILIES}
    res["modules"] = {f: len(ms) for f, ms in by_family.items()}
    unassigned = [n for n, _ in mods if family_of(n) is None]
    if unassigned:
        raise SystemExit(f"linear modules in no family: {unassigned}")
    kv = [m for n, m in mods if n.endswith("k_proj") or n.endswith("v_proj")]
    fams = list(FAMILIES)
    variants = [("none", []), ("all", fams)]
    if args.variants:
        for v in args.variants.split(","):
            name, _, fs = v.partition("=")
            chosen = fs.split("+")
            bad = [f for f in chosen if f not in FAMILIES and f not in PARTS]
            if bad:
                raise SystemExit(f"--variants {name}: unknown families {bad} (known: {fams})")
            variants.append((name, chosen))
    else:
        variants += [(f"only_{f}", [f]) for f in fams]
        variants += [(f"all_but_{f}", [g for g in fams if g != f]) for f in fams]
    for name, chosen in variants:
        t = time.time()
        hooks = [m.register_forward_hook(lambda _m, _i, o: o.to(torch.bfloat16).float()) for m in kv]
        saved = []
        for f in chosen:
            if f in PARTS:
                hooks += [m.register_forward_hook(part_hook(part_rows(cfg, f)))
                          for m in by_family["in_proj"]]
                continue
            for m in by_family[f]:
                hooks.append(m.register_forward_pre_hook(
                    lambda _m, i: (i[0].to(torch.float16).float(),) + tuple(i[1:])))
                with torch.no_grad():
                    w = m.weight
                    saved.append((w, w.detach().clone()))
                    w.copy_(w.half().float())
        outs = run(model, ids_list)
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for w, orig in saved:
                w.copy_(orig)
        flips = sum(int((o.argmax(-1) != r.argmax(-1)).sum()) for o, r in zip(outs, refs))
        first = int((outs[0].argmax(-1) != refs[0].argmax(-1)).sum())
        worst = max(float((o - r).abs().max() / r.abs().max()) for o, r in zip(outs, refs))
        n_pos = args.tokens * len(ids_list)
        r = {"families": chosen, "flips": flips, "positions": n_pos, "first_prompt_flips": first,
             "top1_agree": 1 - flips / n_pos, "max_rel": worst, "s": time.time() - t}
        res[name] = r
        print(f"{name:20s} flips {flips:4d}/{n_pos} (first prompt {first:2d}) max rel {worst:.3e}", flush=True)
    with open(os.path.join(args.out, "gemm_family_precision.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
