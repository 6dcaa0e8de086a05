#!/usr/bin/env python3
"""Issue 12's GPU check on the 2.7B shape: a batch of prompts against each prompt run alone.

    python3 scripts/gpu_batch_check.py --zamba2c .gpu/bin/zamba2c --out $OUT [--batch 64]

Compiles the 2.7B config (examples/zamba2-2.7b-config, random weights: --dummy-weights) with
the demo model's tokenizer (the same 32,000-token vocabulary), writes --prompts random prompts
of 8 to 400 words, and runs them twice with greedy decoding and --ignore-eos: all at once
(`run --prompts-file F --max-batch B`: steps of up to B rows, the device's greedy picks) and one
at a time (`--max-batch 1`). Both go through the batched engine, which is batch-invariant since
the twenty-second session (every step on decode_rows, its library GEMMs on one algorithm at
every row count; docs/KERNELS.md "Batch invariance"): the bar is then every token. (Before, a
one-slot run took the one-sequence decode table, and steps of 2+ rows decode_rows with the
library's algorithm for each row count.) Both runs are the same plan on the same GPU, and the batch splits
a prompt only where the run alone does (at the engine's prompt launch size), so the only
differences are the kernels a step of many rows takes (docs/KERNELS.md "decode_rows",
"linear_rows"). Reports, over every generated position, the
share where both runs picked the same token, the share of each prompt's tokens before its
first difference, and how many prompts are identical. Issue 12's bar: the same greedy tokens at
>= 99% of positions. At each first difference (up to --margin-prompts) it reports how near a
tie the alone run's choice was, from that history's logits. The logits themselves are compared with the CPU interpreter by the
`cuda_batch` tests (runtime/tests/cuda_batch.rs), not here.

With --reference the weights are transformers' own random initialisation of the config (rounded
to bf16 and saved, as scripts/gpu_check_27b.py makes them) instead of --dummy-weights, and at
each first difference transformers in f32 scores the same history: which of the two tokens is
its argmax, and the gap between them in its logits. Over many near-tie flips this says whether
the batched path or the alone path is nearer the model's meaning where they part
(docs/PERFORMANCE.md, twentieth session).
"""

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "zamba2-2.7b-config" / "config.json"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"]
TOKENIZER_DIR = ROOT / "examples" / "demo-model"
WORDS = (
    "the a model state token cache layer batch engine kernel memory river stone light "
    "garden window paper music number future simple quiet bright early winter market "
    "letter forest silver coffee engine signal travel summer animal doctor island"
).split()


def compile_plan(z: str, work: Path, config: Path, arch: list, dtype: str, kv: list = (),
                 reference=None) -> Path:
    """The plan of `config`: from `reference`'s weights (a transformers model, saved into the
    checkpoint) where given, else `--dummy-weights`."""
    model = work / "model"
    if reference is not None:
        reference.save_pretrained(model)
    else:
        model.mkdir()
        shutil.copy(config, model / "config.json")
    for f in TOKENIZER_FILES:
        if (TOKENIZER_DIR / f).exists():
            shutil.copy(TOKENIZER_DIR / f, model / f)
    plan = work / "plan"
    weights = [] if reference is not None else ["--dummy-weights"]
    subprocess.run(
        [z, "compile", str(model), "-o", str(plan), *weights, "--dtype", dtype, *kv, *arch],
        check=True, stdout=subprocess.DEVNULL,
    )
    return plan


def reference_model(config: Path, device: str):
    """transformers' random initialisation of `config` (seed 0) on `device`, rounded to bf16 as
    a checkpoint stores it."""
    import torch
    from transformers import Zamba2Config, Zamba2ForCausalLM

    torch.manual_seed(0)
    cfg = Zamba2Config.from_json_file(str(config))
    with torch.device(device):
        model = Zamba2ForCausalLM(cfg)
    return model.to(torch.bfloat16).eval()


def reference_verdicts(model, batched: list, alone: list, limit: int) -> list:
    """At the first difference of up to `limit` prompts: transformers' f32 logits after the
    common history (the prompt and the tokens both runs generated before it), its argmax against
    each run's token, and the gap between the two tokens over the logits' largest magnitude
    (positive: the alone run's token scores higher)."""
    import torch

    model = model.float()
    dev = next(model.parameters()).device
    out = []
    for b, s in zip(batched, alone):
        if len(out) >= limit:
            break
        gb, gs = b["generated_tokens"], s["generated_tokens"]
        k = next((i for i in range(min(len(gb), len(gs))) if gb[i] != gs[i]), None)
        if k is None:
            continue
        ids = torch.tensor([s["prompt_tokens"] + gs[:k]], device=dev)
        with torch.no_grad():
            last = model(ids, use_cache=False).logits[0, -1].float()
        top = int(torch.argmax(last))
        out.append({
            "prompt": b.get("index"),
            "position": k,
            "reference_argmax_is_alone": top == gs[k],
            "reference_argmax_is_batched": top == gb[k],
            "reference_pair": float((last[gs[k]] - last[gb[k]]) / last.abs().max().clamp(min=1e-30)),
        })
    return out


def run(z: str, plan: Path, prompts: Path, batch: int, gen: int, context: int, device: str) -> list:
    t = time.time()
    out = subprocess.run(
        [z, "run", str(plan), "--prompts-file", str(prompts), "--max-batch", str(batch),
         "-n", str(gen), "--ignore-eos", "--temperature", "0", "--device", device,
         "--max-context", str(context), "--quiet"],
        check=True, capture_output=True, text=True,
    )
    rows = [json.loads(line) for line in out.stdout.split("\n") if line.strip()]
    print(f"batch {batch}: {len(rows)} results in {time.time() - t:.1f} s", flush=True)
    return rows


def first_difference_margins(a, plan: Path, work: Path, batched: list, alone: list, context: int) -> list:
    """At the first difference of up to --margin-prompts prompts: how near a tie the alone run's
    choice was. The logits of the alone run's history up to that position (`zamba2c logits`,
    the prompt on the prompt path and the generated tokens on the decode path, as the alone run
    did), scaled by their largest magnitude as gpu_check_27b.py does: `top2` the gap between
    the two largest, `pair` the gap between the alone run's token and the batched run's, and
    `median_top2` the median gap over every position of that history (the scale of a
    non-tie)."""
    out = []
    for b, s in zip(batched, alone):
        if len(out) >= a.margin_prompts:
            break
        gb, gs = b["generated_tokens"], s["generated_tokens"]
        k = next((i for i in range(min(len(gb), len(gs))) if gb[i] != gs[i]), None)
        if k is None:
            continue
        # Only needed once two runs differ (the CPU dry run has no numpy).
        import numpy as np
        from safetensors.numpy import load_file

        prompt = s["prompt_tokens"]
        toks = ",".join(str(t) for t in prompt + gs[:k])
        f = work / "margin.safetensors"
        subprocess.run(
            [a.zamba2c, "logits", str(plan), "--tokens", toks, "--out", str(f), "--device",
             a.device, "--decode-from", str(len(prompt)), "--max-context", str(context)],
            check=True, stdout=subprocess.DEVNULL,
        )
        logits = load_file(str(f))["logits"]
        scale = float(np.abs(logits[-1]).max()) or 1.0
        top2 = np.sort(logits, axis=1)[:, -2:]
        gaps = (top2[:, 1] - top2[:, 0]) / np.abs(logits).max(axis=1).clip(min=1e-30)
        last = logits[-1]
        out.append({
            "prompt": b.get("index"),
            "position": k,
            "alone_is_argmax": int(np.argmax(last)) == gs[k],
            "top2": float(gaps[-1]),
            "pair": float((last[gs[k]] - last[gb[k]]) / scale),
            "median_top2": float(np.median(gaps)),
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zamba2c", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--max-words", type=int, default=400)
    # A dry run of the script on the CPU: --config examples/demo-model/config.json --device cpu.
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--device", default="cuda")
    # The plan's weight dtype: bf16 (the default plan) or f16 (f16 GEMM inputs, docs/KERNELS.md).
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16"])
    # The KV cache dtype (`compile --kv-dtype`); the compile's default when not given.
    ap.add_argument("--kv-dtype", choices=["f32", "bf16", "f16"])
    # `compile --batch-invariant`: every engine of the plan batch-invariant (the bar is 100%).
    ap.add_argument("--batch-invariant", action="store_true")
    # Prompts whose first difference gets its near-tie measured (one `logits` run each).
    ap.add_argument("--margin-prompts", type=int, default=8)
    # transformers' random weights, and its f32 verdict at every first difference.
    ap.add_argument("--reference", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        arch = ["--arch", "sm_90"] if a.device == "cuda" else []
        kv = ["--kv-dtype", a.kv_dtype] if a.kv_dtype else []
        kv += ["--batch-invariant"] if a.batch_invariant else []
        ref = reference_model(a.config, a.device) if a.reference else None
        plan = compile_plan(a.zamba2c, work, a.config, arch, a.dtype, kv, ref)
        prompts = work / "prompts.txt"
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, a.max_words)))
                 for _ in range(a.prompts)]
        prompts.write_text("\n".join(lines) + "\n")
        context = 1024
        batched = run(a.zamba2c, plan, prompts, a.batch, a.gen, context, a.device)
        alone = run(a.zamba2c, plan, prompts, 1, a.gen, context, a.device)
        if len(batched) != len(alone) or len(batched) != a.prompts:
            print(f"BATCH_CHECK failed: {len(batched)} batched and {len(alone)} alone results")
            return 1
        margins = first_difference_margins(a, plan, work, batched, alone, context)
        verdicts = reference_verdicts(ref, batched, alone, a.prompts) if ref is not None else []
    same = total = prefix = identical = 0
    first_diff = []
    for b, s in zip(batched, alone):
        if b["prompt_tokens"] != s["prompt_tokens"]:
            print(f"BATCH_CHECK failed: prompt {b.get('index')} tokenized differently")
            return 1
        gb, gs = b["generated_tokens"], s["generated_tokens"]
        n = min(len(gb), len(gs))
        total += max(len(gb), len(gs))
        same += sum(x == y for x, y in zip(gb, gs))
        k = next((i for i in range(n) if gb[i] != gs[i]), n)
        prefix += k
        identical += gb == gs
        if gb != gs:
            first_diff.append(k)
    summary = {
        "batch": a.batch,
        "prompts": a.prompts,
        "generated_per_prompt": a.gen,
        "positions_same": same / total if total else 0.0,
        "positions_before_first_difference": prefix / total if total else 0.0,
        "prompts_identical": identical,
        "first_differences": sorted(first_diff),
        "first_difference_margins": margins,
    }
    if a.reference:
        summary["reference_verdicts"] = verdicts
        summary["reference_prefers_alone"] = sum(v["reference_argmax_is_alone"] for v in verdicts)
        summary["reference_prefers_batched"] = sum(v["reference_argmax_is_batched"] for v in verdicts)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "batch_check.json").write_text(json.dumps(summary, indent=1) + "\n")
    ok = summary["positions_same"] >= 0.99
    print(
        f"BATCH_CHECK B={a.batch} prompts={a.prompts} positions_same="
        f"{summary['positions_same']:.4f} before_first_difference="
        f"{summary['positions_before_first_difference']:.4f} identical={identical}/{a.prompts} "
        f"{'ok' if ok else 'BELOW 0.99'}"
    )
    for m in margins:
        print(f"BATCH_CHECK first difference: prompt {m['prompt']} position {m['position']} "
              f"top2 {m['top2']:.2e} pair {m['pair']:.2e} (median top2 {m['median_top2']:.2e}, "
              f"alone token is the argmax: {m['alone_is_argmax']})")
    if a.reference:
        print(f"BATCH_CHECK transformers f32 at the {len(verdicts)} first differences: its argmax "
              f"is the alone run's token {summary['reference_prefers_alone']} times, the batched "
              f"run's {summary['reference_prefers_batched']} times")
        for v in verdicts:
            print(f"BATCH_CHECK reference: prompt {v['prompt']} position {v['position']} "
                  f"alone {v['reference_argmax_is_alone']} batched {v['reference_argmax_is_batched']} "
                  f"pair {v['reference_pair']:.2e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
