#!/usr/bin/env python3
"""How far from transformers f32 a 16-bit SSM state would put the 2.7B shape's decode path.

    python3 scripts/ssm_state_precision.py [--tokens 256] [--decode-from 192] [--out FILE]

Runs on the CPU (no GPU, no zamba2c; ~15 min on 2 cores, 16 GB): transformers' Zamba2 at the
2.7B shape, its own random init in bf16, run in f32 on the decode path of
`scripts/gpu_check_27b.py` (the first K tokens as a prompt, the rest decoded one at a time
through the cache). Emulated with hooks, as `scripts/gemm_input_precision.py` does:
- `kv_bf16`: the key and value projections' outputs rounded to bf16 (the default plan's cache);
- `gemm_f16`: every `nn.Linear` input rounded once to f16 (f16-weight plans' tensor-core GEMMs);
- `state_zero`: a control: every stored state zeroed, what the state weighs in the outputs;
- `state_<dtype>`: the Mamba2 SSM state stored in <dtype> (f16 or bf16): the prompt's final
  state and every decode step's new state rounded when stored, the step's output computed from
  the unrounded one (as a kernel that keeps the new state in registers for y = S·C would).
The state is ~all of a batched decode step's per-sequence traffic (71 MB of f32 a sequence on
the 2.7B shape, read and written every step): a 16-bit state halves it. Reports rel =
max|d| / max|ref| and the top-1 agreement against the unrounded f32 decode.
"""
import argparse
import time

import torch
from transformers import Zamba2Config
from transformers.models.zamba2 import modeling_zamba2

from zamba2_emulation import SHAPE_27B, random_model, record, rel, rounding_hook, scale_bc, top1, write


STATE_DTYPE = {"value": None}
_original_step = modeling_zamba2.mamba2_selective_state_update


def rounding_step(state, *args, **kwargs):
    out = _original_step(state, *args, **kwargs)
    if STATE_DTYPE["value"] == "zero":
        state.zero_()
    elif STATE_DTYPE["value"] is not None:
        state.copy_(state.to(STATE_DTYPE["value"]).float())
    return out


modeling_zamba2.mamba2_selective_state_update = rounding_step


def round_cache_states(cache, dtype):
    """Rounds every SSM state held by `cache` in place (the prompt's final states)."""
    seen = 0
    for i in range(len(cache.layers)):
        try:
            s = cache.get_recurrent_state(i, state_idx=0)
        except (KeyError, IndexError, AttributeError, ValueError):
            continue
        if torch.is_tensor(s) and s.numel() > 0:
            if dtype == "zero":
                s.zero_()
            else:
                s.copy_(s.to(dtype).float())
            seen += 1
    return seen


def decode_path(model, ids, k, state_dtype):
    STATE_DTYPE["value"] = state_dtype
    with torch.no_grad():
        out = model(ids[:, :k], use_cache=True)
        cache = out.past_key_values
        rounded = round_cache_states(cache, state_dtype) if state_dtype is not None else 0
        rows = [out.logits[0].float()]
        for t in range(k, ids.shape[1]):
            o = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
            cache = o.past_key_values
            rows.append(o.logits[0].float())
    STATE_DTYPE["value"] = None
    return torch.cat(rows, 0), rounded


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--decode-from", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/ssm_state_precision.json")
    ap.add_argument("--small", action="store_true", help="a tiny config: a smoke test of the script")
    ap.add_argument("--bc-scale", type=float, default=1.0,
                    help="scale in_proj's B and C rows of every mixer by this (S·C grows by its "
                    "square): a random model whose outputs depend on the state (state_zero shows "
                    "how much)")
    ap.add_argument("--variants", default="kv_bf16,kv_bf16+state_f16,kv_bf16+state_bf16,"
                    "kv_bf16+gemm_f16+state_f16")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    cfg = Zamba2Config(**SHAPE_27B)
    if args.small:
        cfg = Zamba2Config(hidden_size=64, num_hidden_layers=4, n_mamba_heads=4, mamba_d_state=16,
                           num_attention_heads=4, num_key_value_heads=4, intermediate_size=128,
                           num_mem_blocks=1, use_shared_attention_adapter=False, use_mem_rope=False,
                           vocab_size=200, layers_block_type=["mamba", "hybrid", "mamba", "hybrid"])
    t = time.time()
    model = random_model(cfg)
    if args.bc_scale != 1.0:
        scale_bc(model, cfg, args.bc_scale)
    res = {"bc_scale": args.bc_scale,"tokens": args.tokens, "decode_from": args.decode_from, "seed": args.seed,
           "init_s": time.time() - t}
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, cfg.vocab_size, (1, args.tokens), generator=g)
    t = time.time()
    ref, _ = decode_path(model, ids, args.decode_from, None)
    res["ref_s"] = time.time() - t
    for variant in args.variants.split(","):
        hooks, state = [], None
        for part in variant.split("+"):
            h = rounding_hook(model, part)
            if h is not None:
                hooks += h
            elif part.startswith("state_"):
                # state_zero: a control, every stored state zeroed (what the state is worth to
                # the outputs at all on these weights).
                state = {"f16": torch.float16, "bf16": torch.bfloat16, "zero": "zero"}[part[6:]]
            else:
                raise SystemExit(f"unknown variant part {part}")
        t = time.time()
        out, rounded = decode_path(model, ids, args.decode_from, state)
        for h in hooks:
            h.remove()
        dec = slice(args.decode_from, None)
        record(res, variant, {"rel": rel(out, ref), "top1_agree": top1(out, ref),
                              "decoded_rel": rel(out[dec], ref[dec]),
                              "decoded_top1_agree": top1(out[dec], ref[dec]),
                              "prompt_states_rounded": rounded, "s": time.time() - t})
    write(res, args.out)


if __name__ == "__main__":
    main()
