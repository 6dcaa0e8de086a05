//! The `decode_rows` launch table's fused ops (docs/KERNELS.md "decode_rows"): a decode step of
//! many rows keeps the decode graph's state kernels (`mamba_step`, `attention_decode`, each row
//! at its own position and slot) and lowers every projection as the prompt path does (norm
//! kernels, `split_bf16` (or `round_f16`), `linear_mma_pipe` with residual and adapter epilogues), so each input
//! tile serves 128 output features instead of the GEMV's 2 (docs/PERFORMANCE.md, "What bounds
//! it").

use zamba2c_ir::fused::{Norm, Proj};
use zamba2c_ir::kernel::LaunchCost;
use zamba2c_ir::{DType, Op};

use super::mixer::{self, mamba_step};
use super::prompt::{prompt_specs, Emit};
use super::{Init, Temp};
use crate::families::{self, flit, Builder, KernelSpec};
use crate::program::{Epilogue, Extent, NodeCtx, Operand};

/// Threads of a `group_rms_norm` block (one block per row and norm group).
const NORM_BLOCK: usize = 256;

/// The `decode_rows` kernels of fused op `op` (`residual`: the `Residual` wrapper's operand).
/// The mixer is the decode step (`mamba_step`) followed by its gated norm and `out_proj` on the
/// GEMM, or (one norm group) the step writing out_proj's planes and the norm's scale applied
/// after it; every other op is lowered as in a prompt (ir/src/fused.rs gives the same meaning).
pub fn rows_specs(
    ctx: &NodeCtx,
    temp: &mut Temp,
    op: &Op,
    residual: Option<Operand>,
) -> Result<Vec<KernelSpec>, String> {
    let Op::MambaMixer {
        norm,
        out_proj,
        heads,
        head_dim,
        groups,
        ..
    } = op
    else {
        return prompt_specs(ctx, temp, op, residual);
    };
    let Some(out_proj) = out_proj else {
        return Err("a mixer without its out_proj: the gated norm has no kernel of its own".into());
    };
    let zx = *ctx.inputs.first().ok_or("operand 0 missing")?;
    let din = heads * head_dim;
    if *groups == 0 || !din.is_multiple_of(*groups) {
        return Err(format!("{din} channels in {groups} norm groups"));
    }
    let mut e = Emit {
        ctx,
        temp,
        specs: Vec::new(),
    };
    let p = [Proj {
        weight: out_proj.clone(),
        adapter: None,
    }];
    // With one norm group and two bf16 planes (`ZAMBA2C_TUNE_STEP_NORM_AFTER=0`: never), the
    // pipelined step writes out_proj's planes of w ⊙ v and its partial Σ v², and the pair_sum
    // after the stacked GEMM applies the row's 1 / rms (mixer::NormAfter, `Emit::scaled_linear`):
    // no group_rms_norm launch.
    if let Some(hpb) = mixer::norm_after_heads(ctx, op) {
        if e.stacked_planes_for(out_proj, din)? {
            let ws = (e.temp)(heads / hpb, DType::F32, Init::Any);
            let planes = e.planes_temp(din, [out_proj.as_str()])?;
            let n = mixer::NormAfter {
                weight: &norm.weight,
                ws,
            };
            e.specs.push(mamba_step(ctx, op, zx, planes, Some(n))?);
            let scale = families::RowScale {
                ws,
                parts: heads / hpb,
                count: din,
                eps: norm.eps,
            };
            let epilogue = residual.map_or(Epilogue::None, Epilogue::Residual);
            e.scaled_linear(out_proj, planes, ctx.out, epilogue, &scale)?;
            return Ok(e.specs);
        }
    }
    // The step, then the gated group norm, as planes when out_proj's GEMM reads them
    // (`Emit::norm_project`).
    let gated = (e.temp)(din, DType::F32, Init::Any);
    let emit_norm = |e: &mut Emit, dst: Operand, split: bool| {
        e.specs.push(mamba_step(ctx, op, zx, gated, None)?);
        e.specs
            .push(group_rms_norm(ctx, norm, *groups, gated, dst, split)?);
        Ok(())
    };
    e.norm_project_with(din, emit_norm, &p, ctx.out, residual)?;
    Ok(e.specs)
}

/// `out = w ⊙ groupnorm(x)` over `groups` equal groups of channels (templates/group_rms_norm.cu):
/// the mixer's gated norm on `mamba_step`'s gated f32 output; with `split`, `out` is the GEMM
/// input planes of that (`families::gemm_planes` of its dtype: bf16 hi and lo, width 2·w, or one
/// f16 plane).
fn group_rms_norm(
    ctx: &NodeCtx,
    norm: &Norm,
    groups: usize,
    x: Operand,
    out: Operand,
    split: bool,
) -> Result<KernelSpec, String> {
    let w = x.width;
    let wr = families::required_weight(ctx, &norm.weight)?;
    let (plane_dtype, count) = families::gemm_planes(out.dtype);
    let planes = if split { count } else { 1 };
    if wr.shape != [w]
        || out.width != planes * w
        || out.stride != planes * w
        || (split && out.dtype != plane_dtype)
    {
        return Err(format!(
            "norm weight {:?} for {w} channels into a value of width {}",
            wr.shape, out.width
        ));
    }
    let cost = LaunchCost {
        weight_bytes: (w * wr.dtype.size()) as u64,
        bytes_per_row: (w * x.dtype.size() + out.width * out.dtype.size()) as u64,
        flops_per_row: 4 * w as u64,
        ..Default::default()
    };
    let act = if split { DType::F32 } else { out.dtype };
    Ok(Builder::new("group_rms_norm", act)
        .cost(cost)
        .set("width", w)
        .set("split", split)
        .set("planes", planes)
        .set("group", w / groups)
        .set("eps", flit(norm.eps))
        .set("x_stride", x.stride)
        .input("x", &x)
        .weight("weight", ctx, &norm.weight)
        .output(&out)
        .finish(
            [
                Extent::Rows { mul: 1, div: 1 },
                Extent::Const(groups as u32),
                Extent::Const(1),
            ],
            NORM_BLOCK,
        ))
}
