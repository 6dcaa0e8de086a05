//! The IR's operations: coarse, semantic ops that mirror the model's modules (STYLE.md), each
//! with a meaning defined by the CPU interpreter in `zamba2c-runtime`.

use serde::{Deserialize, Serialize};

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
            _ => vec![],
        }
    }

    /// Number of operands the op takes (`None`: variadic).
    pub fn arity(&self) -> Option<usize> {
        match self.kind() {
            OpKind::Tokens => Some(0),
            OpKind::Add | OpKind::Mul | OpKind::GatedRmsNorm => Some(2),
            OpKind::Attention => Some(3),
            OpKind::SsmScan => Some(4),
            OpKind::Concat => None,
            _ => Some(1),
        }
    }

    /// The state region the op reads and writes, if any.
    pub fn state(&self) -> Option<StateId> {
        match self {
            Op::CausalConv1d { state, .. } | Op::SsmScan { state, .. } => Some(*state),
            Op::Attention { cache, .. } => Some(*cache),
            _ => None,
        }
    }
}
