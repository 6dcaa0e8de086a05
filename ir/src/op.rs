//! The IR's operations: coarse, semantic ops that mirror the model's modules (STYLE.md), each
//! with a meaning defined by the CPU interpreter in `zamba2c-runtime`.

use serde::{Deserialize, Serialize};

use crate::fused::{proj_weights, Adapter, Norm, Proj};

/// Index of a recurrent-state or cache region in [`crate::Module::states`].
pub type StateId = usize;

/// One IR operation. Inputs are the node's operands in order; weights are named by their key in
/// the module's weight table (HF names verbatim, spec §5.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Graph input: token ids `[B, T]`.
    Tokens,
    /// `weight[ids]`: `[B,T]` -> `[B,T,H]`, no scaling (spec §2.1).
    Embedding { weight: String },
    /// `w ⊙ x / sqrt(mean(x²) + eps)` over the last axis (spec §2.6).
    RmsNorm { weight: String, eps: f32 },
    /// `x · Wᵀ`, W stored `[out, in]`.
    Linear { weight: String },
    /// Elementwise sum of two equal-shaped tensors.
    Add,
    /// Elementwise product of two equal-shaped tensors.
    Mul,
    /// Concatenation of the operands along the last axis.
    Concat,
    /// `x[..., start .. start+len]`.
    Slice { start: usize, len: usize },
    /// Exact erf GELU (spec §6.11).
    Gelu,
    /// `x · σ(x)`.
    Silu,
    /// Depthwise causal conv over time, with the conv state of spec §4 as left context; reads
    /// the state, writes back the last `K` inputs. Bias included, no activation (spec §3.2).
    CausalConv1d {
        weight: String,
        bias: String,
        state: StateId,
    },
    /// The Mamba2 SSM (spec §3.2–3.5). Operands: `x [B,T,NH*P]`, `dt_raw [B,T,NH]`,
    /// `B [B,T,G*N]`, `C [B,T,G*N]`. Computes `dt = softplus(dt_raw + dt_bias)` (clamped below
    /// at `dt_min` when set: the prompt path of HF 5.24), runs the recurrence from the state and
    /// writes the final state back; output `y = S·C + D·x`, `[B,T,NH*P]`.
    SsmScan {
        dt_bias: String,
        a_log: String,
        d: String,
        heads: usize,
        head_dim: usize,
        d_state: usize,
        groups: usize,
        dt_min: Option<f32>,
        state: StateId,
    },
    /// Gated RMSNorm (spec §3.2): operands `y`, `z`; `w ⊙ groupnorm(y ⊙ silu(z))`.
    GatedRmsNorm {
        weight: String,
        groups: usize,
        eps: f32,
    },
    /// Causal multi-head attention with a KV cache (spec §2.4). Operands `q [B,T,HA*d]`,
    /// `k, v [B,T,HKV*d]`; applies RoPE (when `rope_theta` is set) at absolute positions,
    /// appends k, v to the cache, attends over the whole cache. Output `[B,T,HA*d]`.
    Attention {
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        scale: f32,
        rope_theta: Option<f32>,
        cache: StateId,
    },

    // ---- Fused ops: made only by passes, each meaning its `decompose()` (fused.rs). ----
    /// `x·Wᵀ + (x·Aᵀ)·Bᵀ`: a base projection with its per-invocation adapter (fuse-lora). The
    /// base weight stays shared.
    LinearLora { weight: String, adapter: Adapter },
    /// `RMSNorm(x)` feeding one or more projections; their outputs concatenated in order
    /// (fuse-norm-linear).
    NormLinear { norm: Norm, projs: Vec<Proj> },
    /// The embedding half of a shared block's input projections (specialise-shared-concat,
    /// spec §2.3): operand `e [B,T,H]`, output `concat_j W_j[:, H..2H]·RMSNorm_H(e; g[H..2H])`.
    /// The same at every invocation of a block, so computed once per block per forward.
    EmbedHalfProj {
        norm: Norm,
        weights: Vec<String>,
        hidden: usize,
    },
    /// `concat_j proj_j(RMSNorm_2H([h, e]))` without materialising the concat
    /// (specialise-shared-concat). Operands `h, e` and optionally the block's
    /// [`Op::EmbedHalfProj`] `E`; then the base projections are
    /// `(W_j[:, ..H]·(g_h⊙h) + rms(e)·E_j) / rms([h,e])` and only the h-half columns of each
    /// base weight are read. Adapters (per invocation) read all `2H` columns.
    SplitNormLinear {
        norm: Norm,
        projs: Vec<Proj>,
        hidden: usize,
    },
    /// `(GELU(gu[..I]) ⊙ gu[I..])·W_downᵀ (·W_postᵀ)` with `gu = proj(RMSNorm?(x))` (fuse-mlp,
    /// spec §2.5; `post` is the hybrid layer's own `linear`).
    GatedMlp {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        norm: Option<Norm>,
        gate_up: Proj,
        down: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        post: Option<String>,
        inter: usize,
    },
    /// The Mamba2 mixer between `in_proj` and `out_proj` (fuse-mixer, spec §3.2): operand
    /// `zxbcdt [B,T,DIP]`; split, causal conv + SiLU, SSM scan/step with D skip, gated RMSNorm.
    /// Output `[B,T,Din]`.
    MambaMixer {
        conv_weight: String,
        conv_bias: String,
        conv_state: StateId,
        dt_bias: String,
        a_log: String,
        d: String,
        heads: usize,
        head_dim: usize,
        d_state: usize,
        groups: usize,
        dt_min: Option<f32>,
        ssm_state: StateId,
        norm: Norm,
        /// The layer's `out_proj` applied to the normalised output, when fuse-mixer took it in
        /// (then the output is `[B,T,H]`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out_proj: Option<String>,
    },
    /// `r + inner(operands)`: a residual add taken into the op that produces its other
    /// operand (fuse-residual). Operands: `inner`'s, then `r`.
    Residual { inner: Box<Op> },
}

/// The discriminant of [`Op`], for pattern matching in passes and for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OpKind {
    Tokens,
    Embedding,
    RmsNorm,
    Linear,
    Add,
    Mul,
    Concat,
    Slice,
    Gelu,
    Silu,
    CausalConv1d,
    SsmScan,
    GatedRmsNorm,
    Attention,
    LinearLora,
    NormLinear,
    EmbedHalfProj,
    SplitNormLinear,
    GatedMlp,
    MambaMixer,
    Residual,
}

impl Op {
    /// The op's kind, without its fields.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Tokens => OpKind::Tokens,
            Op::Embedding { .. } => OpKind::Embedding,
            Op::RmsNorm { .. } => OpKind::RmsNorm,
            Op::Linear { .. } => OpKind::Linear,
            Op::Add => OpKind::Add,
            Op::Mul => OpKind::Mul,
            Op::Concat => OpKind::Concat,
            Op::Slice { .. } => OpKind::Slice,
            Op::Gelu => OpKind::Gelu,
            Op::Silu => OpKind::Silu,
            Op::CausalConv1d { .. } => OpKind::CausalConv1d,
            Op::SsmScan { .. } => OpKind::SsmScan,
            Op::GatedRmsNorm { .. } => OpKind::GatedRmsNorm,
            Op::Attention { .. } => OpKind::Attention,
            Op::LinearLora { .. } => OpKind::LinearLora,
            Op::NormLinear { .. } => OpKind::NormLinear,
            Op::EmbedHalfProj { .. } => OpKind::EmbedHalfProj,
            Op::SplitNormLinear { .. } => OpKind::SplitNormLinear,
            Op::GatedMlp { .. } => OpKind::GatedMlp,
            Op::MambaMixer { .. } => OpKind::MambaMixer,
            Op::Residual { .. } => OpKind::Residual,
        }
    }

    /// Short lower-case name, used in dumps and kernel names.
    pub fn name(&self) -> &'static str {
        match self.kind() {
            OpKind::Tokens => "tokens",
            OpKind::Embedding => "embedding",
            OpKind::RmsNorm => "rms_norm",
            OpKind::Linear => "linear",
            OpKind::Add => "add",
            OpKind::Mul => "mul",
            OpKind::Concat => "concat",
            OpKind::Slice => "slice",
            OpKind::Gelu => "gelu",
            OpKind::Silu => "silu",
            OpKind::CausalConv1d => "causal_conv1d",
            OpKind::SsmScan => "ssm_scan",
            OpKind::GatedRmsNorm => "gated_rms_norm",
            OpKind::Attention => "attention",
            OpKind::LinearLora => "linear_lora",
            OpKind::NormLinear => "norm_linear",
            OpKind::EmbedHalfProj => "embed_half_proj",
            OpKind::SplitNormLinear => "split_norm_linear",
            OpKind::GatedMlp => "gated_mlp",
            OpKind::MambaMixer => "mamba_mixer",
            OpKind::Residual => "residual",
        }
    }

    /// Names of the weights this op reads, in a fixed order.
    pub fn weights(&self) -> Vec<&str> {
        match self {
            Op::Embedding { weight }
            | Op::RmsNorm { weight, .. }
            | Op::Linear { weight }
            | Op::GatedRmsNorm { weight, .. } => vec![weight],
            Op::CausalConv1d { weight, bias, .. } => vec![weight, bias],
            Op::SsmScan {
                dt_bias, a_log, d, ..
            } => vec![dt_bias, a_log, d],
            Op::LinearLora { weight, adapter } => vec![weight, &adapter.a, &adapter.b],
            Op::NormLinear { norm, projs } | Op::SplitNormLinear { norm, projs, .. } => {
                let mut w = vec![norm.weight.as_str()];
                w.extend(proj_weights(projs));
                w
            }
            Op::EmbedHalfProj { norm, weights, .. } => {
                let mut w = vec![norm.weight.as_str()];
                w.extend(weights.iter().map(String::as_str));
                w
            }
            Op::GatedMlp {
                norm,
                gate_up,
                down,
                post,
                ..
            } => {
                let mut w: Vec<&str> = norm.iter().map(|n| n.weight.as_str()).collect();
                w.extend(proj_weights(std::slice::from_ref(gate_up)));
                w.push(down);
                w.extend(post.as_deref());
                w
            }
            Op::MambaMixer {
                conv_weight,
                conv_bias,
                dt_bias,
                a_log,
                d,
                norm,
                out_proj,
                ..
            } => {
                let mut w = vec![
                    conv_weight.as_str(),
                    conv_bias,
                    dt_bias,
                    a_log,
                    d,
                    &norm.weight,
                ];
                w.extend(out_proj.as_deref());
                w
            }
            Op::Residual { inner } => inner.weights(),
            _ => vec![],
        }
    }

    /// Number of operands the op takes (`None`: variadic).
    pub fn arity(&self) -> Option<usize> {
        if let Op::Residual { inner } = self {
            return inner.arity().map(|a| a + 1);
        }
        match self.kind() {
            OpKind::Tokens => Some(0),
            OpKind::Add | OpKind::Mul | OpKind::GatedRmsNorm => Some(2),
            OpKind::Attention => Some(3),
            OpKind::SsmScan => Some(4),
            OpKind::Concat => None,
            // h, e and, when the block's embedding half is shared, that half.
            OpKind::SplitNormLinear => None,
            _ => Some(1),
        }
    }

    /// The state region the op reads and writes, if any (for [`Op::MambaMixer`], which has
    /// two, the conv state; see [`Op::states`]).
    pub fn state(&self) -> Option<StateId> {
        self.states().first().copied()
    }

    /// Every state region the op reads and writes.
    pub fn states(&self) -> Vec<StateId> {
        match self {
            Op::CausalConv1d { state, .. } | Op::SsmScan { state, .. } => vec![*state],
            Op::Attention { cache, .. } => vec![*cache],
            Op::MambaMixer {
                conv_state,
                ssm_state,
                ..
            } => vec![*conv_state, *ssm_state],
            Op::Residual { inner } => inner.states(),
            _ => vec![],
        }
    }
}
