//! `mamba_step` (templates/mamba_step.cu): one decode step of a Mamba2 mixer between in_proj
//! and out_proj; docs/KERNELS.md.

use zamba2c_ir::{DType, Op, StateSpec};

use crate::families::{weight_ref, Builder, KernelSpec};
use crate::program::{Arg, CType, Extent, NodeCtx, Operand};

/// Rows of an SSM head one `mamba_step` block updates, and its threads.
const STEP_ROWS: usize = 16;
const STEP_THREADS: usize = 256;
/// The same in the `decode_rows` table (`ZAMBA2C_TUNE_STEP_ROWS_BATCHED` sets it for
/// measurements). A 64-row step of the 2.7B shape took 11.03 ms with 32-row blocks, 11.70 with
/// 16 and 13.21 with a whole head (64 rows) per block (docs/PERFORMANCE.md, 2026-12-02 sixth
/// session). A 32-row block computes the group's B/C conv for twice the rows of a 16-row one;
/// why the whole-head block loses has not been profiled.
const STEP_ROWS_BATCHED: usize = 32;

/// The mixer's gated group norm split around out_proj (`decode_rows` with one norm group;
/// `ZAMBA2C_TUNE_STEP_NORM_AFTER=0` turns it off): `mamba_step_pipe` writes out_proj's input
/// planes of `w ⊙ v` (the gated output times the norm weight, not yet normalised) and each
/// block's Σ v² into `ws` (a partial sum a block, `heads / hpb` a row); the `pair_sum` after out_proj multiplies the row's product by
/// `1 / sqrt(Σ v² / channels + eps)`. With one group that scale is one number a row, so it
/// commutes with the projection (docs/KERNELS.md "mamba_step").
pub(super) struct NormAfter<'n> {
    pub weight: &'n str,
    pub ws: Operand,
}

/// Whether `mamba_step` runs as `mamba_step_pipe` writing out_proj's planes unnormalised
/// ([`NormAfter`]) for `op` in this context (decode_rows, f32 activations, one norm group, the
/// pipelined shape; `ZAMBA2C_TUNE_STEP_NORM_AFTER=0` never): the heads a block takes (its
/// partial sums a row: heads / that). The 2.7B's 64-row step: 7.431 -> 7.256 ms with 54
/// group_rms_norm launches gone (docs/PERFORMANCE.md, twentieth session).
pub(super) fn norm_after_heads(ctx: &NodeCtx, op: &Op) -> Option<usize> {
    let Op::MambaMixer {
        heads,
        head_dim,
        d_state,
        groups,
        ssm_state,
        ..
    } = op
    else {
        return None;
    };
    let first = ctx.inputs.first()?;
    if crate::tune_mode("STEP_NORM_AFTER", 1) != 1 || first.dtype != DType::F32 || *groups != 1 {
        return None;
    }
    let sdt = crate::families::ssm_state_dtype(ctx, *ssm_state).ok()?;
    pipe_shape(ctx.gemm, *heads, *head_dim, *d_state, sdt).map(|p| p.heads)
}

/// The decode step of a mixer: conv + SiLU + SSM update + D skip + gate
/// (templates/mamba_step.cu), writing the gated output into `gated` (f32); with `norm`, the
/// pipelined kernel writes `gated` as out_proj's bf16 input planes of `w ⊙ v` instead and the
/// rows' partial Σ v² ([`NormAfter`]).
pub(super) fn mamba_step(
    ctx: &NodeCtx,
    op: &Op,
    zx: Operand,
    gated: Operand,
    norm: Option<NormAfter>,
) -> Result<KernelSpec, String> {
    let Op::MambaMixer {
        conv_weight,
        conv_bias,
        conv_state,
        dt_bias,
        a_log,
        d,
        heads,
        head_dim,
        d_state,
        groups,
        ssm_state,
        dt_min,
        ..
    } = op
    else {
        return Err("not a mixer".into());
    };
    if dt_min.is_some() {
        return Err("the decode step has no dt clamp (spec §3.5)".into());
    }
    let (channels, k, cdt) = match ctx.module.states.get(*conv_state) {
        Some(StateSpec::Conv {
            channels,
            kernel,
            dtype,
            ..
        }) => (*channels, *kernel, *dtype),
        _ => return Err(format!("state {conv_state} is not a conv state")),
    };
    let din = heads * head_dim;
    let gn = groups * d_state;
    if *groups == 0 || !heads.is_multiple_of(*groups) || channels != din + 2 * gn || k == 0 {
        return Err(format!(
            "{heads} heads in {groups} groups, {channels} conv channels"
        ));
    }
    // in_proj's output, or its two products side by side (`NodeCtx::pair_out`: twice the
    // width, f32), summed here as they are read: the same f32 add `pair_sum` does.
    let width = din + channels + heads;
    let pair = zx.width == 2 * width && zx.dtype == DType::F32 && zx.stride == zx.width;
    if cdt != zx.dtype || (zx.width != width && !pair) {
        return Err("conv state dtype or in_proj width does not match".into());
    }
    let sdt = crate::families::ssm_state_dtype(ctx, *ssm_state)?;
    let wsz = |w: &str| {
        weight_ref(ctx, w).map_or(0, |r| {
            (r.shape.iter().product::<usize>() * r.dtype.size()) as u64
        })
    };
    let csz = cdt.size() as u64;
    let cost = zamba2c_ir::kernel::LaunchCost {
        weight_bytes: wsz(conv_weight) + wsz(conv_bias) + wsz(dt_bias) + wsz(a_log) + wsz(d),
        // in_proj's output read (both products of a pair), the gated output written (f32).
        bytes_per_row: zx.width as u64 * zx.dtype.size() as u64 + din as u64 * 4,
        // The SSM state read and written; the conv ring: K-1 older inputs read, one written.
        bytes_per_seq: 2 * (din * d_state * sdt.size()) as u64 + channels as u64 * k as u64 * csz,
        flops_per_row: (6 * din * d_state + 2 * channels * k) as u64,
        ..Default::default()
    };
    // What both kernels take: the shapes, in_proj's output, the weights, both states, the rows'
    // positions and slots, the gated output.
    let common = |b: Builder| {
        b.cost(cost)
            .set("pdl_inside", true)
            .set("n", *d_state)
            .set("k", k)
            .set("din", din)
            .set("gn", gn)
            .set("channels", channels)
            .set("heads", *heads)
            .set("head_dim", *head_dim)
            .set("heads_per_group", heads / groups)
            .set("zx_stride", zx.stride)
            .set("zx_pair", if pair { width } else { 0 })
            .set("ssm_t", CType::elem(sdt))
            .input("zxbcdt", &zx)
            .weight("conv_weight", ctx, conv_weight)
            .weight("conv_bias", ctx, conv_bias)
            .weight("dt_bias", ctx, dt_bias)
            .weight("a_log", ctx, a_log)
            .weight("d_skip", ctx, d)
            .state("conv_state", cdt, *conv_state, 0)
            .state("ssm_state", sdt, *ssm_state, 0)
            .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
            .output(&gated)
    };
    // Blocks an SM must hold in decode_rows (`ZAMBA2C_TUNE_STEP_MIN_BLOCKS`, a measurement):
    // the 64-row step's blocks are latency-bound and 48 registers hold the SM to 5 of them (15.5
    // waves); ptxas fits 6 in 40 registers without spilling, 8 in 32 with 36 bytes spilled.
    // The pipelined step writing out_proj's planes takes 59 registers unbounded (4 blocks an
    // SM); held to 5 blocks it fits the 48 of the plain form without spilling, and the 2.7B's
    // 64-row step took 7.256 ms against 7.329 (docs/PERFORMANCE.md, twentieth session).
    let pipe = pipe_shape(ctx.gemm, *heads / *groups, *head_dim, *d_state, sdt);
    let default_blocks = if pipe.is_some() && norm.is_some() {
        5
    } else {
        0
    };
    let min_blocks = crate::tune("STEP_MIN_BLOCKS", default_blocks);
    let bounded = |b: Builder| {
        if ctx.gemm && min_blocks > 1 {
            b.set("min_blocks", min_blocks.min(8))
        } else {
            b
        }
    };
    if let Some(pipe) = pipe {
        let mut b = bounded(common(Builder::new("mamba_step_pipe", zx.dtype)))
            .set("hpb", pipe.heads)
            .set("tpr", pipe.tpr)
            .set("npt", pipe.npt)
            .set("rpt", STEP_THREADS / pipe.tpr)
            .set("stages", pipe.stages)
            .set("norm_after", norm.is_some());
        if let Some(n) = norm {
            let nb = heads / pipe.heads;
            if *groups != 1
                || gated.dtype != DType::BF16
                || gated.width != 2 * din
                || gated.stride != 2 * din
                || n.ws.width < nb
            {
                return Err("the unnormalised planes need one group, two bf16 planes and a partial sum a block".into());
            }
            b = b
                .cost(zamba2c_ir::kernel::LaunchCost {
                    weight_bytes: cost.weight_bytes + wsz(n.weight),
                    bytes_per_row: cost.bytes_per_row + 4 * nb as u64,
                    flops_per_row: cost.flops_per_row + 3 * din as u64,
                    ..cost
                })
                .set("ws_stride", n.ws.stride)
                .weight("norm_weight", ctx, n.weight)
                .param("norm_ws", CType::Ptr(DType::F32), n.ws.arg());
        }
        return Ok(b.finish(
            [
                Extent::Const((heads / pipe.heads) as u32),
                Extent::Batch,
                Extent::Const(1),
            ],
            STEP_THREADS,
        ));
    }
    if norm.is_some() {
        return Err("the gated norm folds only into mamba_step_pipe".into());
    }
    // `mamba_step`'s shape (the decode table, and decode_rows where the pipelined form does not
    // fit or `ZAMBA2C_TUNE_STEP_PIPE=0`).
    // In decode_rows, the knob's rows where they split the head, 16 otherwise.
    let rows = match crate::tune("STEP_ROWS_BATCHED", STEP_ROWS_BATCHED) {
        r if ctx.gemm && head_dim.is_multiple_of(r.min(*head_dim)) => r,
        _ => STEP_ROWS,
    };
    // Heads a block updates in decode_rows (`ZAMBA2C_TUNE_STEP_HEADS`, a measurement): whole
    // heads of one group, all their state loaded before the wait and the group's B/C conv
    // computed once for them. Nsight Compute shows the 64-row step's 32-row blocks at 31% of
    // DRAM bandwidth, 15.5 waves of ~3 µs; yet 2 and 4 heads a block were measured slower
    // (f16 plan, 64 rows: 8.45 -> 8.57 / 8.78 ms a step; docs/PERFORMANCE.md, eleventh session).
    let hpb = match crate::tune("STEP_HEADS", 1) {
        hb if ctx.gemm && hb > 1 && (heads / groups).is_multiple_of(hb) => hb,
        _ => 1,
    };
    let rows = if hpb > 1 { *head_dim } else { rows };
    let pb = (*head_dim).min(rows.max(1));
    let psplit = head_dim.div_ceil(pb);
    if psplit * pb != *head_dim {
        return Err(format!(
            "head dim {head_dim} does not split into rows of {pb}"
        ));
    }
    // Threads per state row: a power of two, so a row's threads are aligned lanes of one warp.
    let mut tpr = 32;
    while tpr > 1 && pb * tpr > STEP_THREADS {
        tpr /= 2;
    }
    let b = bounded(common(Builder::new("mamba_step", zx.dtype)))
        .set("pb", pb)
        .set("hpb", hpb)
        .set("passes", (hpb * pb).div_ceil(STEP_THREADS / tpr))
        .set("psplit", psplit)
        .set("tpr", tpr)
        .set("npt", d_state.div_ceil(tpr))
        .set("vec4", d_state.is_multiple_of(4 * tpr));
    Ok(b.finish(
        [
            Extent::Const((heads / hpb * psplit) as u32),
            Extent::Batch,
            Extent::Const(1),
        ],
        STEP_THREADS,
    ))
}

/// How `mamba_step_pipe` (templates/mamba_step_pipe.cu) covers a `decode_rows` mixer: whole
/// heads a block, threads a state row, state columns a thread, cp.async stages.
struct PipeShape {
    heads: usize,
    tpr: usize,
    npt: usize,
    stages: usize,
}

/// Heads a `mamba_step_pipe` block streams (`ZAMBA2C_TUNE_STEP_PIPE_HEADS`; the largest divisor
/// of a group's heads up to it). A 64-row step of the 2.7B shape: 7.596 ms with 4 (1,280
/// blocks), 7.860 with 8 (640 blocks of 60 registers: 1.2 waves), 7.602 with 16
/// (docs/PERFORMANCE.md, nineteenth session).
const PIPE_HEADS: usize = 4;
/// Its cp.async stages (`ZAMBA2C_TUNE_STEP_PIPE_STAGES`, 2..8): three tiles in flight behind the
/// one being updated.
const PIPE_STAGES: usize = 4;

/// The pipelined step's shape in `decode_rows` (`gemm`), or None where it does not apply (then
/// `mamba_step`, as `ZAMBA2C_TUNE_STEP_PIPE=0` asks): each thread's chunk of a state row must
/// be 16 bytes (4 f32 or 8 16-bit columns) and a row's threads a power of two within a warp.
/// The 2.7B's 64-row step: 8.19 -> 7.60 ms (docs/PERFORMANCE.md, nineteenth session).
fn pipe_shape(
    gemm: bool,
    heads_per_group: usize,
    head_dim: usize,
    d_state: usize,
    state: DType,
) -> Option<PipeShape> {
    if !gemm || crate::tune_mode("STEP_PIPE", 1) == 0 {
        return None;
    }
    let npt = 16 / state.size();
    let tpr = d_state / npt;
    if !d_state.is_multiple_of(npt) || !tpr.is_power_of_two() || tpr > 32 || head_dim == 0 {
        return None;
    }
    let want = crate::tune("STEP_PIPE_HEADS", PIPE_HEADS).max(1);
    let heads = (1..=want.min(heads_per_group))
        .rev()
        .find(|h| heads_per_group.is_multiple_of(*h))?;
    let stages = crate::tune("STEP_PIPE_STAGES", PIPE_STAGES).clamp(2, 8);
    Some(PipeShape {
        heads,
        tpr,
        npt,
        stages,
    })
}
