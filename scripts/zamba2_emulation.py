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


def fp8(t):
    """t through float8 e4m3 with one scale for the whole tensor (its largest magnitude maps
    to e4m3's largest finite value, 448), back in float32: a tensor-wide-scaled FP8 GEMM
    operand."""
    amax = t.abs().max()
    if amax == 0:
        return t
    s = 448.0 / amax
    return (t * s).to(torch.float8_e4m3fn).float() / s


def bf16_fp8lo_linear(m, x):
    """A two-plane product whose second plane is FP8: x = hi + lo with hi = bf16(x); out =
    W·hi + W8·lo8, W8 and lo8 the weight and lo through tensor-wide-scaled e4m3 (an FP8 GEMM
    runs at twice the bf16 rate, so the pair costs 1.5 bf16 GEMMs instead of 2; lo is at most
    2^-9 of x, so e4m3's 2^-4 rounding of lo and of W costs ~2^-13 of each product)."""
    hi = x.to(torch.bfloat16).float()
    lo = x - hi
    # The weight's FP8 copy is made per call, not kept: a copy of every weight in f32 would
    # double the emulation's 11 GB.
    out = torch.nn.functional.linear(hi, m.weight) + torch.nn.functional.linear(fp8(lo), fp8(m.weight))
    return out if m.bias is None else out + m.bias


def rounding_hook(model, part):
    """The hooks of one rounding, or None when `part` is not one: `kv_<bf16|f16>` (the key and
    value projections' outputs to that type: the cache, this config having no RoPE) or
    `gemm_<bf16|f16>` (every `nn.Linear` input rounded once, as a tensor-core GEMM fed one plane
    does)."""
    if part in ("kv_bf16", "kv_f16"):
        dt = {"bf16": torch.bfloat16, "f16": torch.float16}[part[3:]]
        return [m.register_forward_hook(lambda _m, _i, o, dt=dt: o.to(dt).float())
                for n, m in linears(model) if n.endswith("k_proj") or n.endswith("v_proj")]
    if part == "gemm_bf16_fp8lo":
        return [m.register_forward_hook(lambda m, i, o: bf16_fp8lo_linear(m, i[0]))
                for _, m in linears(model)]
    if part.startswith("gemm_"):
        dt = {"bf16": torch.bfloat16, "f16": torch.float16}[part[5:]]
        return [m.register_forward_pre_hook(lambda _m, i, dt=dt: (i[0].to(dt).float(),) + tuple(i[1:]))
                for _, m in linears(model)]
    return None
