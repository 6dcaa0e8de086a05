//! The prompt path of the fused ops, built from the base families' kernels (tensor-core GEMMs,
//! norms, the conv, the scan) with what fusing buys there today: projections write straight
//! into their slice of the fused output (no concat), an adapter's product is added in its GEMM's
//! epilogue, the residual add happens in the last GEMM's epilogue, the conv applies its SiLU.
//! The scan runs as Mamba2's chunked algorithm (fused/ssd.rs).

use zamba2c_ir::fused::{Norm, Proj};
use zamba2c_ir::{DType, Op};

use super::Temp;
use crate::families::{self, KernelSpec};
use crate::program::{Epilogue, NodeCtx, Operand};

/// Columns `start..start+len` of `o`, as an operand (a view costs no copy).
pub(super) fn cols(o: Operand, start: usize, len: usize) -> Operand {
    Operand {
        value: o.root,
        root: o.root,
        offset: o.offset + start,
        stride: o.stride,
        width: len,
        dtype: o.dtype,
    }
}

/// The kernels of one fused op being built from base kernels, and its temporaries.
pub(super) struct Emit<'c, 'a, 't> {
    pub(super) ctx: &'c NodeCtx<'a>,
    pub(super) temp: &'c mut Temp<'t>,
    pub(super) specs: Vec<KernelSpec>,
}

impl Emit<'_, '_, '_> {
    /// The kernels of base op `op` on `inputs` into `out`, with `epilogue`.
    fn base(
        &mut self,
        op: Op,
        inputs: Vec<Operand>,
        out: Operand,
        epilogue: Epilogue,
    ) -> Result<(), String> {
        self.base_with(op, inputs, out, epilogue, false)
    }

    /// [`Emit::base`] for a linear whose input is split beforehand (`presplit`).
    fn base_with(
        &mut self,
        op: Op,
        inputs: Vec<Operand>,
        out: Operand,
        epilogue: Epilogue,
        presplit: bool,
    ) -> Result<(), String> {
        let sub = NodeCtx {
            module: self.ctx.module,
            phase: self.ctx.phase,
            op: &op,
            inputs,
            out,
            label: self.ctx.label,
            epilogue,
            presplit,
            gemm: self.ctx.gemm,
        };
        let specs = families::specs(&sub, 0).map_err(|e| e.to_string())?;
        self.specs.extend(specs);
        Ok(())
    }

    fn act(&self) -> DType {
        self.ctx.out.dtype
    }

    pub(super) fn new_temp(&mut self, width: usize) -> Operand {
        let d = self.act();
        (self.temp)(width, d)
    }

    /// `RMSNorm(x)` into a temporary.
    fn norm(&mut self, x: Operand, n: &Norm) -> Result<Operand, String> {
        let out = self.new_temp(x.width);
        let op = Op::RmsNorm {
            weight: n.weight.clone(),
            eps: n.eps,
        };
        self.base(op, vec![x], out, Epilogue::None)?;
        Ok(out)
    }

    /// Each projection of `x` into its slice of `out` (in order), with its adapter's product
    /// added in the B GEMM's epilogue and `residual` (sliced alike) in the base GEMM's.
    pub(super) fn project(
        &mut self,
        x: Operand,
        projs: &[Proj],
        out: Operand,
        residual: Option<Operand>,
    ) -> Result<(), String> {
        // f32 activations are split into bf16 hi/lo planes once, for every tensor-core GEMM of
        // this input (the projections and their adapters' first GEMMs).
        let eligible = |e: &Self, w: &str| families::presplit_eligible(e.ctx, &x, w);
        let any = projs.iter().any(|p| {
            eligible(self, &p.weight) || p.adapter.as_ref().is_some_and(|a| eligible(self, &a.a))
        });
        let split = if any {
            let planes = (self.temp)(2 * x.width, DType::BF16);
            self.specs.push(families::split_bf16(&x, &planes));
            Some(cols(planes, 0, x.width))
        } else {
            None
        };
        let input = |e: &Self, w: &str| match split {
            Some(s) if eligible(e, w) => (s, true),
            _ => (x, false),
        };
        let mut col = 0;
        for p in projs {
            let n = families::weight_ref(self.ctx, &p.weight)
                .and_then(|w| w.shape.first().copied())
                .ok_or(format!("weight {} is not in the table", p.weight))?;
            let slice = cols(out, col, n);
            let epi = match (residual, &p.adapter) {
                (None, _) => Epilogue::None,
                (Some(r), None) => Epilogue::Residual(cols(r, col, n)),
                (Some(_), Some(_)) => {
                    return Err("a residual after an adapted projection".into());
                }
            };
            let lin = |w: &str| Op::Linear {
                weight: w.to_string(),
            };
            let (xin, pre) = input(self, &p.weight);
            self.base_with(lin(&p.weight), vec![xin], slice, epi, pre)?;
            if let Some(ad) = &p.adapter {
                let r = families::weight_ref(self.ctx, &ad.a)
                    .and_then(|w| w.shape.first().copied())
                    .ok_or(format!("adapter {} is not in the table", ad.a))?;
                let a = self.new_temp(r);
                let (xin, pre) = input(self, &ad.a);
                self.base_with(lin(&ad.a), vec![xin], a, Epilogue::None, pre)?;
                // The adapter's product is split too when its GEMM is on the tensor cores, so
                // that GEMM reads bf16 planes (and can run as a library GEMM).
                if families::presplit_eligible(self.ctx, &a, &ad.b) {
                    let planes = (self.temp)(2 * r, DType::BF16);
                    self.specs.push(families::split_bf16(&a, &planes));
                    let a_split = cols(planes, 0, r);
                    self.base_with(lin(&ad.b), vec![a_split], slice, Epilogue::Accumulate, true)?;
                } else {
                    self.base(lin(&ad.b), vec![a], slice, Epilogue::Accumulate)?;
                }
            }
            col += n;
        }
        if col != out.width {
            return Err(format!(
                "projections give {col} columns, the op {}",
                out.width
            ));
        }
        Ok(())
    }
}

/// The prompt kernels of fused op `op` (`residual`: the `Residual` wrapper's operand).
pub fn prompt_specs(
    ctx: &NodeCtx,
    temp: &mut Temp,
    op: &Op,
    residual: Option<Operand>,
) -> Result<Vec<KernelSpec>, String> {
    let ins = &ctx.inputs;
    let x = |i: usize| ins.get(i).copied().ok_or(format!("operand {i} missing"));
    let out = ctx.out;
    let mut e = Emit {
        ctx,
        temp,
        specs: Vec::new(),
    };
    let plain = |w: &str| Proj {
        weight: w.to_string(),
        adapter: None,
    };
    match op {
        Op::Linear { .. } | Op::LinearLora { .. } => {
            let p = Proj::of(op).ok_or("not a projection")?;
            e.project(x(0)?, &[p], out, residual)?
        }
        Op::NormLinear { norm, projs } => {
            let xn = e.norm(x(0)?, norm)?;
            e.project(xn, projs, out, residual)?
        }
        // The norm and projections of its own decomposition (ir/src/fused.rs: column views of
        // the norm weight and of each projection), written into slices instead of concatenated.
        Op::EmbedHalfProj { .. } => {
            let steps = op.decompose().ok_or("no decomposition")?;
            let norm = steps
                .iter()
                .find(|s| s.op.kind() == zamba2c_ir::OpKind::RmsNorm)
                .ok_or("the decomposition has no norm")?;
            let xin = x(0)?;
            let en = e.new_temp(xin.width);
            e.base(norm.op.clone(), vec![xin], en, Epilogue::None)?;
            let projs: Vec<Proj> = steps.iter().filter_map(|s| Proj::of(&s.op)).collect();
            e.project(en, &projs, out, residual)?
        }
        // The embedding half is the decode path's saving; a prompt normalises the concat.
        Op::SplitNormLinear {
            norm,
            projs,
            hidden,
        } => {
            let cat = e.new_temp(2 * hidden);
            e.base(Op::Concat, vec![x(0)?, x(1)?], cat, Epilogue::None)?;
            let xn = e.norm(cat, norm)?;
            e.project(xn, projs, out, residual)?
        }
        Op::GatedMlp {
            norm,
            gate_up,
            down,
            post,
            inter,
        } => {
            let xin = match norm {
                Some(n) => e.norm(x(0)?, n)?,
                None => x(0)?,
            };
            let gu = e.new_temp(2 * inter);
            e.project(xin, std::slice::from_ref(gate_up), gu, None)?;
            let g = e.new_temp(*inter);
            e.base(Op::Gelu, vec![cols(gu, 0, *inter)], g, Epilogue::None)?;
            let f = e.new_temp(*inter);
            e.base(
                Op::Mul,
                vec![g, cols(gu, *inter, *inter)],
                f,
                Epilogue::None,
            )?;
            match post {
                None => e.project(f, &[plain(down)], out, residual)?,
                Some(pw) => {
                    let d = e.new_temp(out.width);
                    e.project(f, &[plain(down)], d, None)?;
                    e.project(d, &[plain(pw)], out, residual)?
                }
            }
        }
        Op::MambaMixer {
            heads,
            head_dim,
            d_state,
            groups,
            out_proj,
            ..
        } => {
            // The conv, scan and gated norm are the ops of the mixer's own decomposition
            // (ir/src/fused.rs): only their buffers and epilogues differ here.
            let steps = op.decompose().ok_or("a mixer without a decomposition")?;
            let find = |kind: zamba2c_ir::OpKind| {
                steps
                    .iter()
                    .find(|s| s.op.kind() == kind)
                    .map(|s| s.op.clone())
                    .ok_or(format!("the mixer's decomposition has no {kind:?}"))
            };
            let (conv, scan, gated) = (
                find(zamba2c_ir::OpKind::CausalConv1d)?,
                find(zamba2c_ir::OpKind::SsmScan)?,
                find(zamba2c_ir::OpKind::GatedRmsNorm)?,
            );
            let zx = x(0)?;
            let (din, gn) = (heads * head_dim, groups * d_state);
            let cd = din + 2 * gn;
            let xc = e.new_temp(cd);
            e.base(conv, vec![cols(zx, din, cd)], xc, Epilogue::Silu)?;
            let y = e.new_temp(din);
            let scan_in = vec![
                cols(xc, 0, din),
                cols(zx, din + cd, *heads),
                cols(xc, din, gn),
                cols(xc, din + gn, gn),
            ];
            match &scan {
                Op::SsmScan {
                    heads,
                    head_dim,
                    d_state,
                    ..
                } if super::ssd::fits(*head_dim, *d_state) => {
                    let (wdt, wchunks) = super::ssd::workspace_widths(*heads, *head_dim, *d_state);
                    let ws = (e.temp)(wdt, DType::F32);
                    let chunks = (e.temp)(wchunks, DType::F32);
                    let specs = super::ssd::ssd_specs(e.ctx, &scan, &scan_in, y, ws, chunks)?;
                    e.specs.extend(specs);
                }
                _ => e.base(scan, scan_in, y, Epilogue::None)?,
            }
            match out_proj {
                Some(w) => {
                    let yn = e.new_temp(din);
                    e.base(gated, vec![y, cols(zx, 0, din)], yn, Epilogue::None)?;
                    e.project(yn, &[plain(w)], out, residual)?
                }
                None if residual.is_none() => {
                    e.base(gated, vec![y, cols(zx, 0, din)], out, Epilogue::None)?
                }
                None => return Err("a residual after a mixer without out_proj".into()),
            }
        }
        other => return Err(format!("no prompt kernels for {}", other.name())),
    }
    Ok(e.specs)
}
