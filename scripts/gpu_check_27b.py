#!/usr/bin/env python3
"""On the GPU machine: zamba2c vs transformers at the exact Zamba2-2.7B shape, random weights.

    python3 scripts/gpu_check_27b.py [--zamba2c .gpu/bin/zamba2c] [--out $OUT] [--tokens 256]

1. Builds Zamba2-2.7B (n_mamba_heads 80, num_mem_blocks 2, no rope, no attention adapters) with
   transformers' own random initialisation on the GPU, rounds it to bfloat16 and saves it.
2. Reference: transformers in float32 over those bf16 weights, logits at every position of a
   random prompt (prompt path), and the same tokens with the first K as a prompt and the rest
   decoded one at a time through the cache (decode path).
3. zamba2c compiles f32 and bf16 plans (kernels compiled ahead of time for sm_90), runs
   `logits --device cuda` on the prompt path and with --decode-from K, and reports
   rel = max|ours - ref| / max|ref| and the teacher-forced top-1 agreement.
4. `zamba2c bench` on the bf16 plan.
Writes gpu_27b.json (figures) into --out.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import shutil

import numpy as np
import torch
from safetensors.numpy import load_file
import transformers
from transformers import Zamba2Config, Zamba2ForCausalLM


def sh(cmd):
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.time() - t
    print(f"$ {' '.join(cmd)}  ({dt:.1f}s, rc={r.returncode})", flush=True)
    if r.returncode != 0:
        print(r.stdout[-4000:], r.stderr[-4000:], flush=True)
        raise SystemExit(f"command failed: {cmd}")
    return r.stdout, dt


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def flip_margins(ours, ref):
    """Where the top-1 differs, the reference's gap between its top two logits, relative to
    max|ref|: how near a tie each flipped position was (random weights give small margins, so a
    tiny perturbation flips some; docs/PERFORMANCE.md, 2026-12-02 seventh session)."""
    top2 = np.sort(ref, axis=-1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]) / np.abs(ref).max()
    flipped = ours.argmax(-1) != ref.argmax(-1)
    return {"flipped_margins": [float(m) for m in margin[flipped]], "median_margin": float(np.median(margin))}


def long_run(z, plan, work, n, vocab):
    """n decode steps after a 1-token prompt vs one prompt pass over the same n+1 tokens: the
    recurrent state must not drift (issue 6). Compares the last 64 positions."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, vocab, (n + 1,), generator=g).tolist()
    tf = os.path.join(work, "long_tokens.txt")
    toks = ",".join(map(str, ids))
    a, b = os.path.join(work, "long_dec.safetensors"), os.path.join(work, "long_pre.safetensors")
    _, t_dec = sh([z, "logits", plan, "--tokens", toks, "--out", a, "--device", "cuda", "--decode-from", "1", "--max-context", str(n + 1)])
    _, t_pre = sh([z, "logits", plan, "--tokens", toks, "--out", b, "--device", "cuda", "--max-context", str(n + 1)])
    da, db = load_file(a)["logits"][-64:], load_file(b)["logits"][-64:]
    os.remove(a)
    os.remove(b)
    return {"decode_steps": n, "decode_cmd_s": t_dec, "prompt_cmd_s": t_pre, "rel_last64": rel(da, db),
            "top1_agree_last64": float((da.argmax(-1) == db.argmax(-1)).mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zamba2c", default=".gpu/bin/zamba2c")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--work", default="/tmp/z27")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--decode-from", type=int, default=192)
    # Random weights barely use the SSM state (zeroing it moves the logits by 1.4e-3,
    # docs/PERFORMANCE.md seventh session), so a state-path change (`--state-dtype`) cannot show
    # here. S scales every mixer's B and C rows of in_proj (S·C by S²): at 16 the state carries
    # the outputs (zeroing it: 0.54 relative; scripts/ssm_state_precision.py).
    ap.add_argument("--bc-scale", type=float, default=1.0)
    ap.add_argument("--long-run", type=int, default=0, help="decode steps of the drift check (0: skip)")
    # Top-1 agreement over 256 positions of one random prompt counts a handful of near-ties: the
    # bf16 and f16 plans flipped 1 and 4 with the same max error (docs/PERFORMANCE.md, ninth
    # session). N > 1 adds N - 1 more random prompts of --tokens each on the prompt path, pooled.
    ap.add_argument("--seeds", type=int, default=1, help="random prompts whose prompt-path top-1 is pooled")
    ap.add_argument("--plans", default="f32:f32,bf16:bf16,bf16:f32,bf16:f32:f32",
                    help="weight:activation[:kv] dtypes of the plans to check (kv: compile --kv-dtype)")
    ap.add_argument("--tokenizer", default="tests/fixtures/tokenizer/tokenizer.json")
    args = ap.parse_args()
    res = {"transformers": transformers.__version__, "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
    torch.manual_seed(0)
    cfg = Zamba2Config(n_mamba_heads=80, num_mem_blocks=2, use_shared_attention_adapter=False,
                       use_mem_rope=False, vocab_size=32000)
    t = time.time()
    with torch.device("cuda"):
        model = Zamba2ForCausalLM(cfg)
    if args.bc_scale != 1.0:
        from zamba2_emulation import scale_bc

        scale_bc(model, cfg, args.bc_scale)
    res["bc_scale"] = args.bc_scale
    model = model.to(torch.bfloat16).eval()
    ck = os.path.join(args.work, "ckpt")
    model.save_pretrained(ck)
    import shutil
    shutil.copy(args.tokenizer, os.path.join(ck, "tokenizer.json"))
    res["params"] = sum(p.numel() for p in model.parameters())
    res["make_checkpoint_s"] = time.time() - t
    model = model.float()
    T, K = args.tokens, args.decode_from
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, cfg.vocab_size, (1, T), generator=g).cuda()
    with torch.no_grad():
        ref = model(ids, use_cache=False).logits[0].float().cpu().numpy()
        out = model(ids[:, :K], use_cache=True)
        rows = [out.logits[0].float().cpu().numpy()]
        cache = getattr(out, "past_key_values", None)
        for t_ in range(K, T):
            o = model(ids[:, t_:t_ + 1], past_key_values=cache, use_cache=True)
            cache = o.past_key_values
            rows.append(o.logits[0].float().cpu().numpy())
        ref_dec = np.concatenate(rows, 0)
    res["hf_decode_vs_prompt_rel"] = rel(ref_dec, ref)
    # More prompts for the pooled top-1 (--seeds): their ids and the reference's logits.
    extra = []
    for sd in range(2, args.seeds + 1):
        gs = torch.Generator().manual_seed(sd)
        ids_s = torch.randint(3, cfg.vocab_size, (1, T), generator=gs).cuda()
        with torch.no_grad():
            ref_s = model(ids_s, use_cache=False).logits[0].float().cpu().numpy()
        extra.append((",".join(str(int(x)) for x in ids_s[0].tolist()), ref_s))
    # transformers' own bf16 run against its f32 run: what "bf16 activations" costs there.
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        hf16 = model(ids, use_cache=False).logits[0].float().cpu().numpy()
    res["hf_bf16_vs_f32"] = {"rel": rel(hf16, ref), "top1_agree": float((hf16.argmax(-1) == ref.argmax(-1)).mean())}
    print("hf bf16 vs f32", res["hf_bf16_vs_f32"], flush=True)
    del model
    torch.cuda.empty_cache()
    toks = ",".join(str(int(x)) for x in ids[0].tolist())
    z = args.zamba2c
    for spec in args.plans.split(","):
        # dtype:act[:kv][:KNOB=V...]: the KV-cache dtype, then codegen's ZAMBA2C_TUNE_<KNOB>
        # settings (variants of one round); STATE=<dtype> is `compile --state-dtype`,
        # SHARED=<dtype> `compile --shared-dtype` (a bf16 plan's default is f16 since the
        # seventeenth session: SHARED=bf16 gives every GEMM two bf16 planes, the earlier plan);
        # INVARIANT=1 `compile --batch-invariant` (every decode step on decode_rows' GEMMs with
        # one algorithm at every row count: the arithmetic of `run --prompts-file`'s engine).
        dtype, act, *rest = spec.split(":")
        kv = rest[0] if rest and "=" not in rest[0] else None
        flags = ("STATE=", "SHARED=", "INVARIANT=")
        invariant = "INVARIANT=1" in rest
        knobs = [k for k in rest if "=" in k and not k.startswith(flags)]
        state = next((k.split("=")[1] for k in rest if k.startswith("STATE=")), None)
        shared = next((k.split("=")[1] for k in rest if k.startswith("SHARED=")), None)
        key = dtype if dtype == act else f"{dtype}_act_{act}"
        kv_flag = []
        if kv is not None:
            key += f"_kv_{kv}"
            kv_flag = ["--kv-dtype", kv]
        key += "".join(f"_{k.lower()}" for k in knobs)
        if state is not None:
            key += f"_state_{state}"
            kv_flag += ["--state-dtype", state]
        if shared is not None:
            key += f"_shared_{shared}"
            kv_flag += ["--shared-dtype", shared]
        if invariant:
            key += "_invariant"
            kv_flag += ["--batch-invariant"]
        plan = os.path.join(args.work, f"plan-{key}")
        env = dict(os.environ)
        for k in knobs:
            name, val = k.split("=")
            env[f"ZAMBA2C_TUNE_{name}"] = val
        t0 = time.time()
        subprocess.run([z, "compile", ck, "-o", plan, "--dtype", dtype, "--act-dtype", act, "--arch", "sm_90"]
                       + kv_flag, check=True, env=env, stdout=subprocess.DEVNULL)
        dt = time.time() - t0
        r = {"compile_s": dt}
        lo = os.path.join(args.work, f"logits-{key}.safetensors")
        _, dt = sh([z, "logits", plan, "--tokens", toks, "--out", lo, "--device", "cuda"])
        ours = load_file(lo)["logits"]
        r["prompt_rel"] = rel(ours, ref)
        r["prompt_top1_agree"] = float((ours.argmax(-1) == ref.argmax(-1)).mean())
        r["prompt_flips"] = flip_margins(ours, ref)
        r["logits_cmd_s"] = dt
        if extra:
            # Pooled over every prompt (this one first): flips, positions, the largest rel.
            flips, worst = int((ours.argmax(-1) != ref.argmax(-1)).sum()), r["prompt_rel"]
            for toks_s, ref_s in extra:
                sh([z, "logits", plan, "--tokens", toks_s, "--out", lo, "--device", "cuda"])
                ours_s = load_file(lo)["logits"]
                flips += int((ours_s.argmax(-1) != ref_s.argmax(-1)).sum())
                worst = max(worst, rel(ours_s, ref_s))
            n_pos = T * (1 + len(extra))
            r["pooled"] = {"prompts": 1 + len(extra), "positions": n_pos, "flips": flips,
                           "top1_agree": 1.0 - flips / n_pos, "max_rel": worst}
        sh([z, "logits", plan, "--tokens", toks, "--out", lo, "--device", "cuda", "--decode-from", str(K)])
        ours = load_file(lo)["logits"]
        r["decode_rel"] = rel(ours, ref_dec)
        r["decode_top1_agree"] = float((ours.argmax(-1) == ref_dec.argmax(-1)).mean())
        r["decode_flips"] = flip_margins(ours, ref_dec)
        res[key] = r
        print(key, json.dumps(r), flush=True)
        if dtype in ("bf16", "f16"):
            short = knobs or invariant
            for pl, gl in [(512, 128), (2048, 32), (4064, 32)] if not short else [(512, 32), (2048, 8)]:
                o, _ = sh([z, "bench", plan, "--device", "cuda", "--prompt-len", str(pl), "--gen-len", str(gl), "--json"])
                res[f"bench_{key}_{pl}_{gl}"] = json.loads(o.strip().split("\n")[-1])
                print(json.dumps(res[f"bench_{key}_{pl}_{gl}"]), flush=True)
        if dtype == "bf16" and not knobs and not invariant:
            # The same decode without CUDA graphs, to measure what capture buys.
            os.environ["ZAMBA2C_NO_CUDA_GRAPH"] = "1"
            o, _ = sh([z, "bench", plan, "--device", "cuda", "--prompt-len", "512", "--gen-len", "64", "--json"])
            del os.environ["ZAMBA2C_NO_CUDA_GRAPH"]
            res[f"bench_{key}_512_64_no_graph"] = json.loads(o.strip().split("\n")[-1])
        if dtype == "bf16" and act == "f32" and not knobs and kv is None and not invariant:
            o, _ = sh([z, "run", plan, "--prompt", "The capital of France is", "--max-new-tokens", "16",
                       "--device", "cuda", "--json"])
            res["run_prompt_cuda"] = json.loads(o.strip().split("\n")[-1])
        # The drift check on every plan of f32 activations without codegen knobs (a state dtype
        # is a compile flag, not a knob: its control is the same check on --state-dtype f32).
        if args.long_run and act == "f32" and not knobs and kv is None and not invariant:
            r["long_run"] = long_run(z, plan, args.work, args.long_run, cfg.vocab_size)
            print("long run", key, json.dumps(r["long_run"]), flush=True)
        if dtype == "f32":
            shutil.rmtree(plan, ignore_errors=True)
    with open(os.path.join(args.out, "gpu_27b.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))
    # One line per plan last, so a caller that keeps only the tail of the output still has them.
    for key, r in res.items():
        if isinstance(r, dict) and "prompt_rel" in r:
            pooled = r.get("pooled")
            more = (f" pooled top1 {pooled['top1_agree']:.4f} ({pooled['flips']} flips in {pooled['positions']}"
                    f" positions, max rel {pooled['max_rel']:.3e})") if pooled else ""
            lr = r.get("long_run")
            if lr:
                more += f" long_run {lr['decode_steps']} rel {lr['rel_last64']:.3e} top1 {lr['top1_agree_last64']:.4f}"
            print(f"FIDELITY {key} prompt_rel {r['prompt_rel']:.3e} top1 {r['prompt_top1_agree']:.4f} "
                  f"decode_rel {r['decode_rel']:.3e} top1 {r['decode_top1_agree']:.4f}{more}", flush=True)


if __name__ == "__main__":
    main()
