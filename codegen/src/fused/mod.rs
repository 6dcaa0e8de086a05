//! Kernel families of the fused ops (docs/KERNELS.md): what the passes fused, codegen emits as
//! the fewest launches the data dependencies allow. A fused op this module cannot serve (a
//! phase or shape it has no kernel for) is emitted through its decomposition, and the reason is
//! recorded in the program ([`zamba2c_ir::kernel::Decomposed`]) so `inspect` names it.

use zamba2c_ir::fused::Proj;
use zamba2c_ir::{DType, Op, Phase};

use crate::families::KernelSpec;
use crate::program::{NodeCtx, Operand};

mod attention;
mod gemv;
mod mixer;
mod prompt;
mod rows;
mod ssd;

pub use attention::{attention_decode, attn_splits};
use gemv::{adapters_first, gemv, projection, Epilogue, InSeg, Input};
use mixer::mamba_step;

/// What a kernel-internal temporary holds when its launch begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Whatever an earlier launch left.
    Any,
    /// Zeros, which the kernel using it leaves at zero again (counters, as attention_decode's:
    /// `GraphProgram::zeroed`).
    Zero,
}

/// Allocates a kernel-internal temporary `[rows, width]` of `dtype` (not an IR value).
pub type Temp<'t> = dyn FnMut(usize, DType, Init) -> Operand + 't;

/// The kernels of fused op `ctx.op`, or why it is decomposed instead.
pub fn fused_specs(ctx: &NodeCtx, temp: &mut Temp) -> Result<Vec<KernelSpec>, String> {
    let (op, residual) = match ctx.op {
        Op::Residual { inner } => {
            let r = *ctx.inputs.last().ok_or("a residual without operands")?;
            (&**inner, Some(r))
        }
        op => (op, None),
    };
    if ctx.phase != Phase::Decode {
        return prompt::prompt_specs(ctx, temp, op, residual);
    }
    if ctx.gemm {
        // The decode graph's `decode_rows` table: projections on the GEMM.
        return rows::rows_specs(ctx, temp, op, residual);
    }
    let ins = &ctx.inputs;
    let x = |i: usize| ins.get(i).copied().ok_or(format!("operand {i} missing"));
    match op {
        Op::Linear { .. } | Op::LinearLora { .. } => {
            let p = Proj::of(op).ok_or("not a projection")?;
            projection(
                ctx,
                temp,
                Input::plain(x(0)?),
                None,
                &[p],
                residual,
                ctx.out,
            )
        }
        Op::NormLinear { norm, projs } => {
            let input = Input::plain(x(0)?);
            projection(ctx, temp, input, Some(norm), projs, residual, ctx.out)
        }
        Op::EmbedHalfProj {
            norm,
            weights,
            hidden,
        } => {
            let e = x(0)?;
            let input = Input {
                segs: vec![InSeg::new("x", e, 0, *hidden, *hidden, *hidden)],
                groups: vec![*hidden],
                split: None,
                after_light_launch: false,
            };
            let projs: Vec<Proj> = weights
                .iter()
                .map(|w| Proj {
                    weight: w.clone(),
                    adapter: None,
                })
                .collect();
            projection(ctx, temp, input, Some(norm), &projs, residual, ctx.out)
        }
        Op::SplitNormLinear {
            norm,
            projs,
            hidden,
        } => {
            let (h, e) = (x(0)?, x(1)?);
            let concat = Input {
                segs: vec![
                    InSeg::new("x", h, 0, *hidden, 0, 0),
                    InSeg::new("e", e, 0, *hidden, *hidden, *hidden),
                ],
                groups: vec![2 * hidden],
                split: None,
                after_light_launch: false,
            };
            match ins.get(2) {
                // No shared embedding half: the norm over the concatenation, both halves read.
                None => projection(ctx, temp, concat, Some(norm), projs, residual, ctx.out),
                Some(&emb) => {
                    // Adapters read all 2H columns of the normalised concatenation.
                    let a = adapters_first(ctx, temp, &concat, Some(norm), projs)?;
                    let mut e_only = InSeg::new("e", e, 0, *hidden, *hidden, *hidden);
                    e_only.read_w = false;
                    e_only.ss = 1;
                    let split = Input {
                        segs: vec![InSeg::new("x", h, 0, *hidden, 0, 0), e_only],
                        groups: vec![*hidden, *hidden],
                        split: Some((emb, *hidden)),
                        after_light_launch: false,
                    };
                    let mut out = a.specs;
                    out.push(gemv(
                        ctx,
                        &split,
                        Some(norm),
                        projs,
                        a.lora,
                        Epilogue {
                            residual,
                            gelu_inter: None,
                        },
                        ctx.out,
                    )?);
                    Ok(out)
                }
            }
        }
        Op::GatedMlp {
            norm,
            gate_up,
            down,
            post,
            inter,
        } => {
            let input = Input::plain(x(0)?);
            let mut out = Vec::new();
            let a = adapters_first(
                ctx,
                temp,
                &input,
                norm.as_ref(),
                std::slice::from_ref(gate_up),
            )?;
            out.extend(a.specs);
            let act = ctx.out.dtype;
            let f = temp(*inter, act, Init::Any);
            out.push(gemv(
                ctx,
                &input,
                norm.as_ref(),
                std::slice::from_ref(gate_up),
                a.lora,
                Epilogue {
                    residual: None,
                    gelu_inter: Some(*inter),
                },
                f,
            )?);
            let down_p = [Proj {
                weight: down.clone(),
                adapter: None,
            }];
            match post {
                None => out.push(gemv(
                    ctx,
                    &Input::plain(f),
                    None,
                    &down_p,
                    None,
                    Epilogue::residual(residual),
                    ctx.out,
                )?),
                Some(pw) => {
                    let d = temp(ctx.out.width, act, Init::Any);
                    out.push(gemv(
                        ctx,
                        &Input::plain(f),
                        None,
                        &down_p,
                        None,
                        Epilogue::residual(None),
                        d,
                    )?);
                    let post_p = [Proj {
                        weight: pw.clone(),
                        adapter: None,
                    }];
                    out.push(gemv(
                        ctx,
                        &Input::plain(d),
                        None,
                        &post_p,
                        None,
                        Epilogue::residual(residual),
                        ctx.out,
                    )?);
                }
            }
            Ok(out)
        }
        Op::MambaMixer {
            norm,
            out_proj: Some(out_proj),
            heads,
            head_dim,
            groups,
            ..
        } => {
            let din = heads * head_dim;
            let gated = temp(din, DType::F32, Init::Any);
            let mut out = vec![mamba_step(ctx, op, x(0)?, gated, None)?];
            if *groups == 0 || !din.is_multiple_of(*groups) {
                return Err(format!("{din} channels in {groups} norm groups"));
            }
            let gs = din / groups;
            let input = Input {
                segs: (0..*groups)
                    .map(|g| {
                        let mut s = InSeg::new("x", gated, g * gs, gs, g * gs, g * gs);
                        s.grp = g;
                        s.ss = g;
                        s
                    })
                    .collect(),
                groups: vec![gs; *groups],
                split: None,
                // out_proj follows mamba_step, which moves a few MB.
                after_light_launch: true,
            };
            let p = [Proj {
                weight: out_proj.clone(),
                adapter: None,
            }];
            out.push(gemv(
                ctx,
                &input,
                Some(norm),
                &p,
                None,
                Epilogue::residual(residual),
                ctx.out,
            )?);
            Ok(out)
        }
        Op::MambaMixer { out_proj: None, .. } => {
            Err("a mixer without its out_proj: the gated norm has no kernel of its own".into())
        }
        other => Err(format!("no fused kernel family for {}", other.name())),
    }
}
