"""Shared by the CPU emulation scripts (gemm_input_precision.py, ssm_state_precision.py; and
gpu_check_27b.py's `scale_bc`):
transformers' Zamba2 at the 2.7B shape with its own random init in bf16, run in f32, and hooks
that emulate a zamba2c plan's roundings on its `nn.Linear` modules."""
import json

import torch
from transformers import Zamba2Config, Zamba2ForCausalLM

# The fidelity checks' 2.7B shape (scripts/gpu_check_27b.py).
SHAPE_27B = dict(n_mamba_heads=80, num_mem_blocks=2, use_shared_attention_adapter=False,
                 use_mem_rope=False, vocab_size=32000)


def scale_bc(model, cfg, s):
    """Scales every mixer's B and C rows of in_proj by `s` (so S·C by s²): a random model whose
    outputs the SSM state carries (random init barely uses it). in_proj rows: z (d_inner),
    x (d_inner), B (G·N), C (G·N), dt (heads) (ZAMBA2.md §3.2)."""
    d_inner = cfg.mamba_expand * cfg.hidden_size
    gn = cfg.mamba_ngroups * cfg.mamba_d_state
    with torch.no_grad():
        for n, m in model.named_modules():
            if n.endswith("mamba.in_proj"):
                m.weight[2 * d_inner:2 * d_inner + 2 * gn] *= s


def rel(a, b):
    """max|a - b| / max|b|: the figure docs/PERFORMANCE.md measures plans by."""
    return float((a - b).abs().max() / b.abs().max())


def top1(a, b):
    """The share of positions whose largest logit is the same."""
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


def record(res, variant, r):
    """Prints one variant's figures as they come (a run takes minutes) and keeps them."""
    res[variant] = r
    print(variant, json.dumps(r), flush=True)


def write(res, path):
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


def random_model(cfg):
    """`cfg`'s model initialised in bf16 (as the GPU check rounds its init to bf16), in f32."""
    torch.set_default_dtype(torch.bfloat16)
    model = Zamba2ForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    return model.float().eval()


def model_27b():
    return random_model(Zamba2Config(**SHAPE_27B))


def linears(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def rounding_hook(model, part):
    """The hooks of one rounding, or None when `part` is not one: `kv_<bf16|f16>` (the key and
    value projections' outputs to that type: the cache, this config having no RoPE) or
    `gemm_<bf16|f16>` (every `nn.Linear` input rounded once, as a tensor-core GEMM fed one plane
    does)."""
    if part in ("kv_bf16", "kv_f16"):
        dt = {"bf16": torch.bfloat16, "f16": torch.float16}[part[3:]]
        return [m.register_forward_hook(lambda _m, _i, o, dt=dt: o.to(dt).float())
                for n, m in linears(model) if n.endswith("k_proj") or n.endswith("v_proj")]
    if part.startswith("gemm_"):
        dt = {"bf16": torch.bfloat16, "f16": torch.float16}[part[5:]]
        return [m.register_forward_pre_hook(lambda _m, i, dt=dt: (i[0].to(dt).float(),) + tuple(i[1:]))
                for _, m in linears(model)]
    return None
