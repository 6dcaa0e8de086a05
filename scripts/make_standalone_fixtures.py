#!/usr/bin/env python3
"""Tiny checkpoints in the layout of Zyphra's original standalone Zamba2 code (spec ZAMBA2.md §5.2),
with reference logits, for zamba2c's tests (issue 14): tests/fixtures/standalone/<variant>/.

The references come from the ORIGINAL CODE (public Zyphra/Zamba2: mamba_model.py, mamba_config.py, ...),
which runs only on a GPU (its Mamba2 scan is Triton). On the GPU machine, from the repository root:

    python3 scripts/make_standalone_fixtures.py --backend original \\
        --original .zyphra --stand-ins ../shared/tools/zyphra-original

  .zyphra/ holds the original source (never committed; scripts/prepare_zyphra_original.sh makes it,
  log1p patch included, and puts einops beside it); the stand-ins folder (../shared/tools/zyphra-original,
  see its README) replaces transformer_engine, causal_conv1d and the CUDA extensions. The script puts the
  stand-ins first on sys.path, then the original's folder, turns TF32 off (TRITON_F32_DEFAULT=ieee,
  torch.backends.*.allow_tf32 = False) and runs float32 on CUDA. It takes well under a minute.

Without a GPU, `--backend original --interpret` runs the same original code with Triton's CPU interpreter
(TRITON_INTERPRET=1: the same kernels, executed with numpy; about 2 minutes here), and
`--backend transformers` makes the same files from the same weights
with transformers 5.24 on the CPU: the state dict mapped to the HF layout per §5.2 and run with no dt
clamp (each mixer's time_step_limit set to (0, inf); the shared tools' README measured this within 7e-6 of the
original). meta.json's "backend" says which made a fixture; the committed references must come from
`--backend original`.

For every variant below the script
  1. makes the original's state dict (its parameter names and shapes, `MambaModel.state_dict()`), every
     tensor random and well conditioned from a fixed seed, the same for both backends; with
     dtype bf16 the values are rounded to bfloat16 and stored as such (the references are f32 math over
     the rounded values);
  2. saves it with torch.save as pytorch_model.bin, beside a config.json with the fields
     MambaModel.from_pretrained reads;
  3. writes reference.safetensors:
       tokens         int64   [T]     random prompt ids
       logits         float32 [T, V]  one forward of the whole prompt without a cache (prompt path)
       decode_from    int64   [1]     K
       decode_logits  float32 [T, V]  tokens[:K] as one call with a cache, then tokens[K:] one at a time
                                      (decode path; the original: its inference_params cache, with the
                                      SSM state allocated in float32 through its own
                                      allocate_inference_cache(dtype=torch.float32))
     and meta.json (variant, backend, versions, checks). With the original backend meta.json also
     records how far the original's DEFAULT decode path is from that: it keeps the SSM state in
     bfloat16 whatever the model dtype (mamba2_layer.py, _get_states_from_cache), a precision choice
     zamba2c's f32 plans do not copy.
"""
import argparse
import collections
import contextlib
import functools
import json
import math
import os
import struct
import sys
import types

os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")  # before triton is imported: no TF32 in tl.dot
if "--interpret" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # Triton's CPU interpreter (numpy), read when triton loads

import torch  # noqa: E402

torch.set_grad_enabled(False)

M, G = "m", "g"

# Config fields in the names MambaModel.from_pretrained reads (mamba_model.py). ffn_hidden_size must be
# 4*hidden_size (the original's shared MLP hard-codes fc1 = 8H), kv_channels = H/heads, num_query_groups
# = heads (its fused qkv is 6H wide).
VARIANTS = [
    dict(
        name="two_blocks_no_clamp",
        features=["2.7B-like: num_mem_blocks=2, 3 hybrids A,B,A, no attention LoRA, no RoPE",
                  "dt_bias = -12,-10,-9 on heads 0..2 of every mixer: softplus < 0.001, so transformers' "
                  "prompt-path clamp would change the logits; the original has no clamp"],
        cfg=dict(num_hidden_layers=6, hidden_size=32, state_size=8, conv_dimension=4, expansion_factor=2,
                 num_attention_heads=4, mamba_headdim=8, layers_block_type=[M, G, M, G, M, G],
                 add_bias_linear=False, use_shared_block_lora=True, lora_rank=4, gated_linear_unit=True,
                 kv_channels=8, ffn_hidden_size=128, vocab_size=80, num_query_groups=4, use_mem_rope=False,
                 num_mem_blocks=2, mamba_ngroups=1, use_shared_attention_lora=False),
        dt_bias_override=[-12.0, -10.0, -9.0], T=20, K=9, seed=1401, dtype="float32",
    ),
    dict(
        name="one_block_lora_rope",
        features=["1.2B-like: num_mem_blocks=1, 2 hybrids A,A, attention LoRA, RoPE",
                  "mamba_ngroups=2", "vocab 96"],
        cfg=dict(num_hidden_layers=5, hidden_size=32, state_size=8, conv_dimension=4, expansion_factor=2,
                 num_attention_heads=2, mamba_headdim=8, layers_block_type=[M, G, M, M, G],
                 add_bias_linear=False, use_shared_block_lora=True, lora_rank=4, gated_linear_unit=True,
                 kv_channels=16, ffn_hidden_size=128, vocab_size=96, num_query_groups=2, use_mem_rope=True,
                 num_mem_blocks=1, mamba_ngroups=2, use_shared_attention_lora=True),
        T=17, K=6, seed=1402, dtype="float32",
    ),
    dict(
        name="bf16_two_blocks_lora_rope",
        features=["state dict stored in bfloat16 (BFloat16Storage)", "hybrid first layer, 4 hybrids A,B,A,B",
                  "attention LoRA and RoPE with num_mem_blocks=2 (every block keeps a LoRA slot per hybrid)",
                  "decode_from K=1"],
        cfg=dict(num_hidden_layers=6, hidden_size=32, state_size=8, conv_dimension=3, expansion_factor=2,
                 num_attention_heads=4, mamba_headdim=16, layers_block_type=[G, M, G, G, M, G],
                 add_bias_linear=False, use_shared_block_lora=True, lora_rank=4, gated_linear_unit=True,
                 kv_channels=8, ffn_hidden_size=128, vocab_size=64, num_query_groups=4, use_mem_rope=True,
                 num_mem_blocks=2, mamba_ngroups=1, use_shared_attention_lora=True),
        T=15, K=1, seed=1403, dtype="bfloat16",
    ),
]


def dims(c):
    H = c["hidden_size"]
    din = c["expansion_factor"] * H
    nh = din // c["mamba_headdim"]
    gn = c["mamba_ngroups"] * c["state_size"]
    return dict(H=H, Din=din, NH=nh, CD=din + 2 * gn, DIP=2 * din + 2 * gn + nh, K=c["conv_dimension"],
                r=c["lora_rank"], V=c["vocab_size"], hyb=[i for i, t in enumerate(c["layers_block_type"]) if t == G])


def state_dict(v):
    """The original MambaModel's state dict (names and shapes of its modules), random, in float32."""
    c, d = v["cfg"], dims(v["cfg"])
    H, r = d["H"], d["r"]
    g = torch.Generator().manual_seed(v["seed"])
    sd = collections.OrderedDict()

    def lin(name, out, inp):
        sd[name] = torch.randn(out, inp, generator=g) / math.sqrt(inp)

    def norm(name, n):
        sd[name] = 1.0 + 0.3 * torch.randn(n, generator=g)

    sd["embedding.weight"] = 0.5 * torch.randn(d["V"], H, generator=g)
    for i in range(c["num_hidden_layers"]):
        p = f"decoder.layers.{i}"
        norm(f"{p}.norm.weight", H)
        lin(f"{p}.mixer.in_proj.0.weight", d["DIP"], H)
        sd[f"{p}.mixer.conv1d.weight"] = torch.randn(d["CD"], 1, d["K"], generator=g) * (0.6 / math.sqrt(d["K"]))
        sd[f"{p}.mixer.conv1d.bias"] = 0.2 * torch.randn(d["CD"], generator=g)
        dt_bias = -1.0 + 0.5 * torch.randn(d["NH"], generator=g)
        for h, x in enumerate(v.get("dt_bias_override", [])):
            dt_bias[h] = x
        sd[f"{p}.mixer.dt_bias"] = dt_bias
        sd[f"{p}.mixer.A_log"] = torch.rand(d["NH"], generator=g) * 2.5 - 1.0
        sd[f"{p}.mixer.D"] = 1.0 + 0.5 * torch.randn(d["NH"], generator=g)
        norm(f"{p}.mixer.norm.weight", d["Din"])
        lin(f"{p}.mixer.out_proj.weight", H, d["Din"])
    n_hyb = len(d["hyb"])
    for b in range(c["num_mem_blocks"]):
        p = f"decoder.blocks.{b}"
        norm(f"{p}.sa.norm.weight", 2 * H)
        lin(f"{p}.sa.mixer.linear_qkv.weight", 6 * H, 2 * H)
        lin(f"{p}.sa.mixer.linear_proj.weight", H, 2 * H)
        if c["use_shared_attention_lora"]:
            for x in "qkv":
                for k in range(n_hyb):
                    lin(f"{p}.sa.mixer.linear_{x}_lora_A_list.{k}.weight", r, 2 * H)
                    lin(f"{p}.sa.mixer.linear_{x}_lora_B_list.{k}.weight", 2 * H, r)
        norm(f"{p}.mlp.norm.weight", H)
        lin(f"{p}.mlp.mixer.linear_fc1.weight", 8 * H, H)
        lin(f"{p}.mlp.mixer.linear_fc2.weight", H, 4 * H)
        for k in range(n_hyb):
            lin(f"{p}.mlp.mixer.linear_fc1_lora_A_list.{k}.weight", r, H)
            lin(f"{p}.mlp.mixer.linear_fc1_lora_B_list.{k}.weight", 8 * H, r)
    for i in d["hyb"]:
        lin(f"decoder.block_map.{i}.weight", H, H)
    norm("decoder.final_layernorm.weight", H)
    if v["dtype"] == "bfloat16":
        sd = collections.OrderedDict((k, t.bfloat16()) for k, t in sd.items())
    return sd


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


# ---------------------------------------------------------------------------------------------------
# backend: the original code (GPU)
# ---------------------------------------------------------------------------------------------------
class InferenceParams:
    """The fields of mamba_ssm's InferenceParams that the original reads (attention.py, mamba2_layer.py,
    mamba_block.py); mamba_ssm itself is not installed on the GPU machine."""

    def __init__(self, max_sequence_length, max_batch_size=1):
        self.max_sequence_length = max_sequence_length
        self.max_batch_size = max_batch_size
        self.sequence_len_offset = 0
        self.batch_size_offset = 0
        self.key_value_memory_dict = {}
        self.key_value_memory_dict_mamba = {}


def stub_hub_imports():
    """hf_utils.py imports transformers and safetensors at module level for from_pretrained's Hub download,
    which this script does not use; where they are not installed, empty stand-ins let the import pass."""
    for mod, attrs in [("transformers", {}), ("transformers.utils", dict(CONFIG_NAME="config.json",
                                                                          WEIGHTS_NAME="pytorch_model.bin")),
                       ("transformers.utils.hub", dict(cached_file=None)),
                       ("safetensors", {}), ("safetensors.torch", dict(load_file=None))]:
        try:
            __import__(mod)
        except ImportError:
            m = types.ModuleType(mod)
            m.__dict__.update(attrs)
            sys.modules[mod] = m


def causal_conv1d_fn(x, weight, bias=None, activation=None):
    """causal_conv1d's causal_conv1d_fn: x [B, D, L], weight [D, W] -> [B, D, L]."""
    d, w = weight.shape
    out = torch.nn.functional.conv1d(x, weight.unsqueeze(1), bias, padding=w - 1, groups=d)[..., : x.shape[-1]]
    return torch.nn.functional.silu(out) if activation in ("silu", "swish") else out


def interpret_on_cpu():
    """Lets the original code run without a GPU through Triton's interpreter (TRITON_INTERPRET=1),
    which runs the very same Triton kernels with numpy: allocations the original makes on "cuda" go
    to the CPU, the autotuner takes its first config instead of timing them, and the kernels'
    libdevice.log1p (which the interpreter lacks) is numpy's log1p. The math is the original's."""
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.device = lambda *a, **k: contextlib.nullcontext()

    def on_cpu(f):
        @functools.wraps(f)
        def g(*a, **k):
            if str(k.get("device", "")).startswith("cuda"):
                k["device"] = "cpu"
            return f(*a, **k)
        return g

    for name in ["empty", "zeros", "ones", "full", "arange", "tensor", "empty_strided", "rand", "randn"]:
        setattr(torch, name, on_cpu(getattr(torch, name)))
    import triton.runtime.autotuner as autotuner
    autotuner.Autotuner._bench = lambda self, *a, config, **meta: [1.0, 1.0, 1.0]


def interpreter_log1p(x, *args, **kwargs):
    import numpy as np
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle
    return tl.tensor(TensorHandle(np.log1p(x.handle.data), x.handle.dtype), x.type)


class Original:
    name = "original"

    def __init__(self, args):
        self.device = "cpu" if args.interpret else "cuda"
        if args.interpret:
            interpret_on_cpu()
            self.name = "original-triton-interpreter-cpu"
        for p in [args.original, args.stand_ins]:  # stand-ins end up first
            sys.path.insert(0, os.path.abspath(p))
        if os.path.isdir(os.path.join(args.original, "site")):
            sys.path.append(os.path.abspath(os.path.join(args.original, "site")))
        stub_hub_imports()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        from mamba_config import MambaConfig
        from mamba_model import MambaModel
        import mamba2_layer
        # The stand-in causal_conv1d package sets causal_conv1d_fn = None, and the original's own
        # nn.Conv1d fallback (mamba2_layer.py, the cached prompt path) keeps the conv's right padding:
        # its output is K-1 steps too long and mamba_chunk_scan_combined asserts. So the cached path
        # gets the package function itself: depthwise causal conv + SiLU, what causal_conv1d_fn
        # computes (as ../shared/tools/zyphra-original/causal_conv1d_cuda.py does for the fused path).
        mamba2_layer.causal_conv1d_fn = causal_conv1d_fn
        if args.interpret:
            import ops.triton.selective_state_update as ssu
            import ops.triton.ssd_chunk_state as scs
            for mod in (ssu, scs):
                mod.libdevice = types.SimpleNamespace(log1p=interpreter_log1p)
        self.MambaConfig, self.MambaModel = MambaConfig, MambaModel
        self.versions = {"torch": torch.__version__}
        try:
            import triton
            self.versions["triton"] = triton.__version__
        except ImportError:
            pass

    def build(self, v, sd):
        j = v["cfg"]
        # exactly the MambaConfig(...) call of MambaModel.from_pretrained
        config = self.MambaConfig(
            num_layers=j["num_hidden_layers"], hidden_size=j["hidden_size"], state_size=j["state_size"],
            conv_dimension=j["conv_dimension"], expansion_factor=j["expansion_factor"], rms_norm=True,
            use_mem_mlp=True, num_attention_heads=j["num_attention_heads"], num_mem_heads=j["num_attention_heads"],
            mamba_headdim=j["mamba_headdim"], mamba_ngroups=j.get("mamba_ngroups", 1),
            layer_mapping=j["layers_block_type"], add_bias_linear=j["add_bias_linear"],
            use_shared_block_lora=j["use_shared_block_lora"], lora_rank=j["lora_rank"],
            gated_linear_unit=j["gated_linear_unit"], kv_channels=j["kv_channels"],
            ffn_hidden_size=j["ffn_hidden_size"], vocab_size=j["vocab_size"],
            num_mem_blocks=j.get("num_mem_blocks", 2), num_query_groups=j["num_query_groups"],
            use_shared_attention_lora=j.get("use_shared_attention_lora", False), use_mem_rope=j["use_mem_rope"])
        model = self.MambaModel(config=config, max_sequence_length=4096).to(self.device).float().eval()
        own = set(model.state_dict())
        if own != set(sd):
            raise SystemExit(f"{v['name']}: the original's state dict differs from the script's: "
                             f"missing {sorted(own - set(sd))}, unexpected {sorted(set(sd) - own)}")
        model.load_state_dict({k: t.float() for k, t in sd.items()}, strict=True)
        return model

    def prompt(self, model, tokens):
        return model(tokens[:, None].to(self.device))[0].float().cpu()

    def decode(self, model, tokens, K, ssm_f32=True):
        T = len(tokens)
        ip = InferenceParams(T)
        if ssm_f32:
            for layer in model.decoder.layers:
                m = layer.mixer
                ip.key_value_memory_dict_mamba[m.layer_idx] = m.allocate_inference_cache(1, T, dtype=torch.float32)
        ids = tokens[:, None].to(self.device)
        rows = [model(ids[:K], inference_params=ip)[0].float().cpu()]
        for t in range(K, T):
            ip.sequence_len_offset = t
            rows.append(model(ids[t:t + 1], inference_params=ip)[0].float().cpu())
        return torch.cat(rows, 0)

    def extra_checks(self, model, tokens, K, dec):
        default = self.decode(model, tokens, K, ssm_f32=False)
        return {"decode_with_the_originals_default_bf16_ssm_state_vs_f32_state_rel": rel(default, dec)}


# ---------------------------------------------------------------------------------------------------
# backend: transformers 5.24 on the CPU, spec §5.2 mapping, no dt clamp (development only)
# ---------------------------------------------------------------------------------------------------
def to_hf(v, sd):
    """Spec §5.2: the original's names to transformers', q/k/v de-interleaved."""
    c, d = v["cfg"], dims(v["cfg"])
    hyb, nmb, ha = d["hyb"], c["num_mem_blocks"], c["num_attention_heads"]
    hd = 2 * d["H"] // ha
    out = {"model.embed_tokens.weight": sd["embedding.weight"],
           "model.final_layernorm.weight": sd["decoder.final_layernorm.weight"]}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}.mamba_decoder" if i in hyb else f"model.layers.{i}"
        s = f"decoder.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = sd[f"{s}.norm.weight"]
        out[f"{p}.mamba.in_proj.weight"] = sd[f"{s}.mixer.in_proj.0.weight"]
        for t in ["conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight", "out_proj.weight"]:
            out[f"{p}.mamba.{t}"] = sd[f"{s}.mixer.{t}"]
    for k, i in enumerate(hyb):
        out[f"model.layers.{i}.linear.weight"] = sd[f"decoder.block_map.{i}.weight"]
        if k >= nmb:
            continue
        b, p = f"decoder.blocks.{k}", f"model.layers.{i}.shared_transformer"
        out[f"{p}.input_layernorm.weight"] = sd[f"{b}.sa.norm.weight"]
        qkv = sd[f"{b}.sa.mixer.linear_qkv.weight"].reshape(ha, 3, hd, -1)
        for n, x in enumerate("qkv"):
            out[f"{p}.self_attn.{x}_proj.weight"] = qkv[:, n].reshape(ha * hd, -1).contiguous()
        out[f"{p}.self_attn.o_proj.weight"] = sd[f"{b}.sa.mixer.linear_proj.weight"]
        out[f"{p}.pre_ff_layernorm.weight"] = sd[f"{b}.mlp.norm.weight"]
        out[f"{p}.feed_forward.gate_up_proj.weight"] = sd[f"{b}.mlp.mixer.linear_fc1.weight"]
        out[f"{p}.feed_forward.down_proj.weight"] = sd[f"{b}.mlp.mixer.linear_fc2.weight"]
        for j in range(k, len(hyb), nmb):
            for ab, part in (("A", 0), ("B", 1)):
                out[f"{p}.feed_forward.gate_up_proj_adapter_list.{j}.{part}.weight"] = \
                    sd[f"{b}.mlp.mixer.linear_fc1_lora_{ab}_list.{j}.weight"]
                if c["use_shared_attention_lora"]:
                    for x in "qkv":
                        out[f"{p}.self_attn.linear_{x}_adapter_list.{j}.{part}.weight"] = \
                            sd[f"{b}.sa.mixer.linear_{x}_lora_{ab}_list.{j}.weight"]
    return out


class Transformers:
    name = "transformers-cpu-dev"

    def __init__(self, args):
        import transformers
        from transformers import Zamba2Config, Zamba2ForCausalLM
        assert transformers.__version__ == "5.24.0", transformers.__version__
        self.Zamba2Config, self.Zamba2ForCausalLM = Zamba2Config, Zamba2ForCausalLM
        self.versions = {"torch": torch.__version__, "transformers": transformers.__version__}

    def build(self, v, sd):
        c, d = v["cfg"], dims(v["cfg"])
        cfg = self.Zamba2Config(
            vocab_size=d["V"], hidden_size=d["H"], num_hidden_layers=c["num_hidden_layers"],
            layers_block_type=["hybrid" if t == G else "mamba" for t in c["layers_block_type"]],
            mamba_d_state=c["state_size"], mamba_d_conv=c["conv_dimension"], mamba_expand=c["expansion_factor"],
            mamba_ngroups=c["mamba_ngroups"], n_mamba_heads=d["NH"], intermediate_size=4 * d["H"],
            num_attention_heads=c["num_attention_heads"], num_key_value_heads=c["num_attention_heads"],
            num_mem_blocks=c["num_mem_blocks"], use_shared_attention_adapter=c["use_shared_attention_lora"],
            adapter_rank=c["lora_rank"], use_mem_rope=c["use_mem_rope"], chunk_size=256,
            max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1,
            eos_token_id=2, time_step_min=0.001)
        cfg._attn_implementation = "sdpa"
        model = self.Zamba2ForCausalLM(cfg).float().eval()
        hf = {k: t.float() for k, t in to_hf(v, sd).items()}
        missing, unexpected = model.load_state_dict(hf, strict=False)
        # What is not loaded by name must be tied: lm_head, and the later hybrid layers' shared blocks.
        own = model.state_dict()
        assert not unexpected, unexpected
        for k in missing:
            src = "model.embed_tokens.weight" if k == "lm_head.weight" else None
            if src is None:
                i, rest = k.split(".")[2], k.split(".shared_transformer.")[1]
                kk = d["hyb"].index(int(i)) % c["num_mem_blocks"]
                src = f"model.layers.{d['hyb'][kk]}.shared_transformer.{rest}"
            assert torch.equal(own[k], hf[src]), (k, src)
        # No dt clamp, as the original (spec §5.2): each mixer's clamp range (time_step_limit, made from
        # time_step_min at construction; time_step_min = 0 itself breaks transformers' weight init) set
        # to (0, inf), which softplus never leaves.
        for layer in model.model.layers:
            mix = layer.mamba_decoder.mamba if hasattr(layer, "mamba_decoder") else layer.mamba
            mix.time_step_limit = (0.0, float("inf"))
        return model

    def prompt(self, model, tokens):
        return model(input_ids=tokens[None], use_cache=False).logits[0].float()

    def decode(self, model, tokens, K):
        out = model(input_ids=tokens[None, :K], use_cache=True)
        cache = out.past_key_values
        rows = [out.logits[0]]
        for t in range(K, len(tokens)):
            o = model(input_ids=tokens[None, t:t + 1], past_key_values=cache, use_cache=True)
            cache = o.past_key_values
            rows.append(o.logits[0])
        return torch.cat(rows, 0).float()

    def extra_checks(self, model, tokens, K, dec):
        # How much transformers' own prompt-path clamp (time_step_min 0.001) would change the logits.
        no_clamp = self.prompt(model, tokens)
        mixers = [l.mamba_decoder.mamba if hasattr(l, "mamba_decoder") else l.mamba for l in model.model.layers]
        for m in mixers:
            m.time_step_limit = (0.001, float("inf"))
        clamped = self.prompt(model, tokens)
        for m in mixers:
            m.time_step_limit = (0.0, float("inf"))
        return {"prompt_with_transformers_dt_clamp_vs_without_rel": rel(clamped, no_clamp)}


# ---------------------------------------------------------------------------------------------------
def save_safetensors(path, tensors):
    """A safetensors file (the format is a JSON header + raw little-endian data), without the
    safetensors and numpy packages, which the GPU machine may lack."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous().cpu()
        dt = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        b = bytes(t.flatten().view(torch.uint8).tolist())  # little-endian hosts; no numpy needed
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["original", "transformers"], required=True)
    ap.add_argument("--original", default=".zyphra", help="folder with the original Zyphra/Zamba2 source")
    ap.add_argument("--stand-ins", default=None,
                    help="the shared tools' zyphra-original folder (default: ../shared/tools/zyphra-original "
                         "or shared/tools/zyphra-original, whichever exists)")
    ap.add_argument("--interpret", action="store_true",
                    help="original backend without a GPU: Triton's CPU interpreter (slow; development)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                  "tests", "fixtures", "standalone"))
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    if args.backend == "original":
        if args.stand_ins is None:
            found = [p for p in ("../shared/tools/zyphra-original", "shared/tools/zyphra-original")
                     if os.path.isdir(p)]
            if not found:
                raise SystemExit("no stand-ins folder: pass --stand-ins PATH/TO/shared/tools/zyphra-original")
            args.stand_ins = found[0]
        for need in (os.path.join(args.original, "mamba_model.py"), os.path.join(args.stand_ins, "transformer_engine")):
            if not os.path.exists(need):
                raise SystemExit(f"{need} is missing (see the docstring: scripts/prepare_zyphra_original.sh)")
    backend = Original(args) if args.backend == "original" else Transformers(args)
    for v in VARIANTS:
        if args.only and v["name"] not in args.only:
            continue
        d = os.path.join(os.path.normpath(args.out), v["name"])
        os.makedirs(d, exist_ok=True)
        sd = state_dict(v)
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(dict(v["cfg"], pad_token_id=0, bos_token_id=1, eos_token_id=2), f, indent=2)
            f.write("\n")
        model = backend.build(v, sd)
        T, K, V = v["T"], v["K"], v["cfg"]["vocab_size"]
        tokens = torch.randint(3, V, (T,), generator=torch.Generator().manual_seed(v["seed"] + 1))
        logits = backend.prompt(model, tokens)
        dec = backend.decode(model, tokens, K)
        assert logits.shape == (T, V) and dec.shape == (T, V) and torch.isfinite(logits).all()
        save_safetensors(os.path.join(d, "reference.safetensors"), {
            "tokens": tokens.to(torch.int64), "logits": logits.contiguous(),
            "decode_from": torch.tensor([K], dtype=torch.int64), "decode_logits": dec.contiguous()})
        checks = {"decode_vs_prompt_rel": rel(dec, logits), "logits_abs_max": float(logits.abs().max())}
        checks.update(backend.extra_checks(model, tokens, K, dec))
        meta = {"name": v["name"], "features": v["features"], "generator": "scripts/make_standalone_fixtures.py",
                "backend": backend.name, "versions": backend.versions, "seed": v["seed"],
                "state_dict_dtype": v["dtype"], "reference_compute_dtype": "float32", "T": T, "K": K,
                "checks": checks}
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        print(f"{v['name']:28s} {backend.name:22s} decode-vs-prompt {checks['decode_vs_prompt_rel']:.2e} "
              + " ".join(f"{k}={x:.2e}" for k, x in checks.items() if k.endswith("_rel") and k != "decode_vs_prompt_rel"))


if __name__ == "__main__":
    main()
