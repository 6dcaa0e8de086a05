//! The prompt path of the fused ops, built from the base families' kernels (tensor-core GEMMs,
//! norms, the conv, the scan) with what fusing buys there today: projections write straight
//! into their slice of the fused output (no concat), an adapter's product is added in its GEMM's
//! epilogue, the residual add happens in the last GEMM's epilogue, the conv applies its SiLU.
//! The scan runs as Mamba2's chunked algorithm (fused/ssd.rs).

use zamba2c_ir::fused::{Norm, Proj};
use zamba2c_ir::{DType, Op};

use super::{Init, Temp};
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

/// How a base op's kernel reads its input and writes its output (`NodeCtx::presplit`,
/// `row_stack`, `split_out`); the default is plain operands.
#[derive(Debug, Clone, Copy, Default)]
struct Form {
    presplit: bool,
    row_stack: usize,
    split_out: bool,
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
        self.base_as(op, inputs, out, epilogue, Form::default())
    }

    /// [`Emit::base`] with the operands in `form` (`NodeCtx`'s presplit input, stacked rows,
    /// split output).
    fn base_as(
        &mut self,
        op: Op,
        inputs: Vec<Operand>,
        out: Operand,
        epilogue: Epilogue,
        form: Form,
    ) -> Result<(), String> {
        let sub = NodeCtx {
            module: self.ctx.module,
            phase: self.ctx.phase,
            op: &op,
            inputs,
            out,
            label: self.ctx.label,
            epilogue,
            presplit: form.presplit,
            gemm: self.ctx.gemm,
            row_stack: form.row_stack.max(1),
            split_out: form.split_out,
            pair_out: false,
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
        (self.temp)(width, d, Init::Any)
    }

    /// The shape a new temporary of `width` activations has (offset 0, rows `width` apart):
    /// what GEMM eligibility reads, for a value that may never be materialised.
    fn temp_shape(&self, width: usize) -> Operand {
        Operand {
            value: 0,
            root: 0,
            offset: 0,
            stride: width,
            width,
            dtype: self.act(),
        }
    }

    /// A temporary for the GEMM input planes of `width` f32 activations read by the GEMMs of
    /// `weights` (`families::weights_planes`: two bf16 planes side by side, or one f16 plane).
    pub(super) fn planes_temp<'w>(
        &mut self,
        width: usize,
        weights: impl IntoIterator<Item = &'w str>,
    ) -> Result<Operand, String> {
        let (dtype, count) = families::weights_planes(self.ctx, weights)?;
        Ok((self.temp)(count * width, dtype, Init::Any))
    }

    /// The linear of weight `w` on split planes (`planes`: the hi columns, lo `k` columns
    /// later in the same rows) into `out` with `epilogue`: one GEMM on the presplit input, or,
    /// where the planes are stacked ([`stacked_planes`]), one GEMM over the hi and lo planes as
    /// rows of their own (`2·B·T` rows of `k`, the weight read once for both) into an f32
    /// temporary, and `pair_sum` adding the two products and the epilogue.
    fn split_linear(
        &mut self,
        w: &str,
        planes: Operand,
        out: Operand,
        epilogue: Epilogue,
    ) -> Result<(), String> {
        let n = out.width;
        if self.ctx.pair_out {
            // The node's value is the product pair itself (`NodeCtx::pair_out`): the stacked
            // GEMM writes it, the consumer sums the halves.
            if !stacked_planes(self.ctx, planes.dtype)
                || epilogue != Epilogue::None
                || out.stride != 2 * n
            {
                return Err("a product pair needs stacked planes and no epilogue".into());
            }
            let pair = Operand {
                width: 2 * n,
                ..out
            };
            return self.stacked_gemm(w, planes, pair, 0, n);
        }
        if !stacked_planes(self.ctx, planes.dtype) {
            let form = Form {
                presplit: true,
                ..Form::default()
            };
            let lin = Op::Linear {
                weight: w.to_string(),
            };
            return self.base_as(lin, vec![planes], out, epilogue, form);
        }
        self.summed_stacked_gemm(w, planes, out, epilogue, None)
    }

    /// One GEMM of weight `w` over the two bf16 planes stacked as rows (`planes`: the hi
    /// columns, lo `k` later) into an f32 product pair, which `pair_sum` adds (times `scale`
    /// where given) into `out` with `epilogue`.
    fn summed_stacked_gemm(
        &mut self,
        w: &str,
        planes: Operand,
        out: Operand,
        epilogue: Epilogue,
        scale: Option<&families::RowScale>,
    ) -> Result<(), String> {
        let n = out.width;
        let prod = (self.temp)(2 * n, DType::F32, Init::Any);
        self.stacked_gemm(w, planes, prod, 0, n)?;
        self.specs
            .push(families::pair_sum(&prod, &out, epilogue, scale)?);
        Ok(())
    }

    /// Whether the linear of weight `w` on `width` f32 activations ([`Emit::split_linear`])
    /// runs as one GEMM over two bf16 planes stacked as rows ([`stacked_planes`]), the form
    /// [`Emit::scaled_linear`] takes.
    pub(super) fn stacked_planes_for(&self, w: &str, width: usize) -> Result<bool, String> {
        let (dtype, _) = families::weights_planes(self.ctx, [w])?;
        let shape = self.temp_shape(width);
        Ok(dtype == DType::BF16
            && stacked_planes(self.ctx, dtype)
            && families::presplit_eligible(self.ctx, &shape, w))
    }

    /// The linear of weight `w` on the two bf16 `planes` (hi columns, lo `k` later; a value of
    /// width 2k) stacked as rows of one GEMM into an f32 product pair, summed by `pair_sum`
    /// with `scale` applied before `epilogue` ([`families::RowScale`]).
    pub(super) fn scaled_linear(
        &mut self,
        w: &str,
        planes: Operand,
        out: Operand,
        epilogue: Epilogue,
        scale: &families::RowScale,
    ) -> Result<(), String> {
        let hi = cols(planes, 0, planes.width / 2);
        self.summed_stacked_gemm(w, hi, out, epilogue, Some(scale))
    }

    /// The output features of projection weight `w` (its first dimension).
    fn out_features(&self, w: &str) -> Result<usize, String> {
        families::weight_ref(self.ctx, w)
            .and_then(|r| r.shape.first().copied())
            .ok_or(format!("weight {w} is not in the table"))
    }

    /// The GEMM of weight `w` (`n` output features) over the hi and lo `planes` stacked as
    /// rows of their own, into columns `col..col + n` of both halves of `prod` (f32 rows of
    /// `[hi·Wᵀ | lo·Wᵀ]`, each half as wide as `prod.width / 2`): output row `2r` lands in the
    /// first half of `prod`'s row `r`, row `2r + 1` in the second, as `pair_sum` reads them.
    fn stacked_gemm(
        &mut self,
        w: &str,
        planes: Operand,
        prod: Operand,
        col: usize,
        n: usize,
    ) -> Result<(), String> {
        let k = planes.width;
        if planes.offset != 0 || planes.stride != 2 * k {
            return Err(format!(
                "split planes of width {k} in rows of {}",
                planes.stride
            ));
        }
        let rows_in = Operand {
            stride: k,
            ..planes
        };
        let half = prod.width / 2;
        let rows_out = Operand {
            stride: half,
            width: n,
            offset: prod.offset + col,
            ..prod
        };
        let form = Form {
            row_stack: 2,
            ..Form::default()
        };
        let lin = Op::Linear {
            weight: w.to_string(),
        };
        self.base_as(lin, vec![rows_in], rows_out, Epilogue::None, form)
    }

    /// [`Emit::project_from`]'s projections as stacked GEMMs into one product buffer and one
    /// `pair_sum` for all of them (`ZAMBA2C_TUNE_SHARED_PAIR_SUM=1`, a measurement: the same
    /// sums, one launch instead of one a projection), where every projection reads the split
    /// planes and none has an adapter. Whether it applied (nothing emitted otherwise).
    fn shared_pair_sum(
        &mut self,
        split: Option<Operand>,
        shape: Operand,
        projs: &[Proj],
        out: Operand,
        residual: Option<Operand>,
    ) -> Result<bool, String> {
        let applies = crate::tune("SHARED_PAIR_SUM", 0) == 1
            && projs.len() > 1
            && split.is_some_and(|s| stacked_planes(self.ctx, s.dtype))
            && projs.iter().all(|p| {
                p.adapter.is_none() && families::presplit_eligible(self.ctx, &shape, &p.weight)
            });
        let Some(planes) = split.filter(|_| applies) else {
            return Ok(false);
        };
        let total = out.width;
        let prod = (self.temp)(2 * total, DType::F32, Init::Any);
        let mut col = 0;
        for p in projs {
            let n = self.out_features(&p.weight)?;
            if col + n > total {
                return Err(format!("projections wider than the op's {total} columns"));
            }
            self.stacked_gemm(&p.weight, planes, prod, col, n)?;
            col += n;
        }
        if col != total {
            return Err(format!("projections give {col} columns, the op {total}"));
        }
        let epilogue = match residual {
            Some(r) => Epilogue::Residual(cols(r, 0, total)),
            None => Epilogue::None,
        };
        self.specs
            .push(families::pair_sum(&prod, &out, epilogue, None)?);
        Ok(true)
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
        // f32 activations are made into GEMM input planes once (bf16 hi/lo, or one f16 plane:
        // `families::gemm_planes`), for every tensor-core GEMM of this input (the projections
        // and their adapters' first GEMMs).
        let split = if splits(self.ctx, &x, projs, false) {
            let planes = self.planes_temp(x.width, gemm_weights(projs))?;
            self.specs.push(families::gemm_input_planes(&x, &planes));
            Some(cols(planes, 0, x.width))
        } else {
            None
        };
        self.project_from(Some(x), split, x, projs, out, residual)
    }

    /// `norm` (an `RmsNorm` or `GatedRmsNorm` on `inputs`, `width` channels) feeding `projs`
    /// as [`Emit::project`] does: when every GEMM of the group reads split planes, the norm
    /// writes the planes itself (no f32 copy, no `split_bf16` launch; the same values).
    pub(super) fn norm_project(
        &mut self,
        norm: Op,
        inputs: Vec<Operand>,
        width: usize,
        projs: &[Proj],
        out: Operand,
        residual: Option<Operand>,
    ) -> Result<(), String> {
        let emit_norm = |e: &mut Self, dst: Operand, split_out: bool| {
            let form = Form {
                split_out,
                ..Form::default()
            };
            e.base_as(norm, inputs, dst, Epilogue::None, form)
        };
        self.norm_project_with(width, emit_norm, projs, out, residual)
    }

    /// [`Emit::norm_project`] for a norm of `width` channels whose kernels `emit_norm` emits
    /// into `dst`: the bf16 split planes (`true`: twice the width) or an f32 temporary.
    pub(super) fn norm_project_with(
        &mut self,
        width: usize,
        emit_norm: impl FnOnce(&mut Self, Operand, bool) -> Result<(), String>,
        projs: &[Proj],
        out: Operand,
        residual: Option<Operand>,
    ) -> Result<(), String> {
        let shape = self.temp_shape(width);
        if !splits(self.ctx, &shape, projs, true) {
            let xn = self.new_temp(width);
            emit_norm(self, xn, false)?;
            return self.project(xn, projs, out, residual);
        }
        let planes = self.planes_temp(width, gemm_weights(projs))?;
        emit_norm(self, planes, true)?;
        let hi = cols(planes, 0, width);
        self.project_from(None, Some(hi), shape, projs, out, residual)
    }

    /// The projections of [`Emit::project`] from the f32 input `x` and/or its split planes
    /// `split` (hi columns; `shape` is the f32 input's, for eligibility): every GEMM that
    /// takes planes reads `split`, the others `x`.
    fn project_from(
        &mut self,
        x: Option<Operand>,
        split: Option<Operand>,
        shape: Operand,
        projs: &[Proj],
        out: Operand,
        residual: Option<Operand>,
    ) -> Result<(), String> {
        // A product pair (`NodeCtx::pair_out`) is one projection's two stacked products.
        let width = if self.ctx.pair_out {
            let single = projs.len() == 1 && projs[0].adapter.is_none() && residual.is_none();
            if !single || split.is_none() {
                return Err("a product pair is one projection of split planes".into());
            }
            out.width / 2
        } else {
            out.width
        };
        if !self.ctx.pair_out && self.shared_pair_sum(split, shape, projs, out, residual)? {
            return Ok(());
        }
        let eligible = |e: &Self, w: &str| families::presplit_eligible(e.ctx, &shape, w);
        let input = |e: &Self, w: &str| match split {
            Some(s) if eligible(e, w) => Ok((s, true)),
            _ => x
                .map(|x| (x, false))
                .ok_or(format!("weight {w}: no f32 input beside the split planes")),
        };
        let mut col = 0;
        for p in projs {
            let n = self.out_features(&p.weight)?;
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
            match input(self, &p.weight)? {
                (xin, true) => self.split_linear(&p.weight, xin, slice, epi)?,
                (_, false) if self.ctx.pair_out => {
                    return Err(format!("weight {}: no split planes for a pair", p.weight));
                }
                (xin, false) => self.base(lin(&p.weight), vec![xin], slice, epi)?,
            }
            if let Some(ad) = &p.adapter {
                let r = families::weight_ref(self.ctx, &ad.a)
                    .and_then(|w| w.shape.first().copied())
                    .ok_or(format!("adapter {} is not in the table", ad.a))?;
                let a = self.new_temp(r);
                match input(self, &ad.a)? {
                    (xin, true) => self.split_linear(&ad.a, xin, a, Epilogue::None)?,
                    (xin, false) => self.base(lin(&ad.a), vec![xin], a, Epilogue::None)?,
                }
                // The adapter's product is split too when its GEMM is on the tensor cores, so
                // that GEMM reads bf16 planes (and can run as a library GEMM).
                if families::presplit_eligible(self.ctx, &a, &ad.b) {
                    let planes = self.planes_temp(r, [ad.b.as_str()])?;
                    self.specs.push(families::gemm_input_planes(&a, &planes));
                    let a_split = cols(planes, 0, r);
                    self.split_linear(&ad.b, a_split, slice, Epilogue::Accumulate)?;
                } else {
                    self.base(lin(&ad.b), vec![a], slice, Epilogue::Accumulate)?;
                }
            }
            col += n;
        }
        if col != width {
            return Err(format!("projections give {col} columns, the op {width}"));
        }
        Ok(())
    }
}

/// The `RmsNorm` base op of a fused op's norm.
fn rms_norm(n: &Norm) -> Op {
    Op::RmsNorm {
        weight: n.weight.clone(),
        eps: n.eps,
    }
}

/// Whether the projections of the f32 input `x` read split planes: some of them (`all`: false),
/// or every projection and every adapter's first GEMM (`all`: true).
fn splits(ctx: &NodeCtx, x: &Operand, projs: &[Proj], all: bool) -> bool {
    let mut gemms = gemm_weights(projs);
    let eligible = |w: &str| families::presplit_eligible(ctx, x, w);
    if all {
        !projs.is_empty() && gemms.all(eligible)
    } else {
        gemms.any(eligible)
    }
}

/// The weights of the GEMMs that read a projection group's input: each projection's and its
/// adapter's first (A).
fn gemm_weights(projs: &[Proj]) -> impl Iterator<Item = &str> {
    projs.iter().flat_map(|p| {
        std::iter::once(p.weight.as_str()).chain(p.adapter.as_ref().map(|a| a.a.as_str()))
    })
}

/// Whether split planes (of `plane_dtype`) run as stacked rows of one GEMM
/// ([`Emit::split_linear`]): in the `decode_rows` table when its linears are library GEMMs
/// (`ZAMBA2C_TUNE_ROWS_GEMM=2`), where the two presplit GEMMs of a few rows each read the whole weight (docs/PERFORMANCE.md,
/// 2026-12-02: cuBLASLt 6.9 ms of a 17 ms 64-row step); the split-K GEMM of `decode_rows`
/// (`families::rows_gemm`) reads both planes per weight tile itself. Prompts keep the presplit
/// GEMM: their products are large beside the weight. `ZAMBA2C_TUNE_STACK_SPLIT=2` turns
/// stacking off, `=3` stacks prompts too (measurements). One f16 plane (f16 weights) is one
/// GEMM input: nothing to stack.
fn stacked_planes(ctx: &NodeCtx, plane_dtype: DType) -> bool {
    if families::planes_of(plane_dtype) == 1 {
        return false;
    }
    match crate::tune("STACK_SPLIT", 1) {
        2 => false,
        3 => true,
        _ => ctx.gemm && !families::rows_gemm(ctx),
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
            let xin = x(0)?;
            e.norm_project(rms_norm(norm), vec![xin], xin.width, projs, out, residual)?
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
            let projs: Vec<Proj> = steps.iter().filter_map(|s| Proj::of(&s.op)).collect();
            e.norm_project(norm.op.clone(), vec![xin], xin.width, &projs, out, residual)?
        }
        // The embedding half is the decode path's saving; a prompt's norm reads both halves
        // itself: one launch and a 2H-wide temporary fewer, the same values in the same order
        // (TTFT 59.56 -> 59.01 ms at 2048 tokens, docs/PERFORMANCE.md "nineteenth session").
        // `ZAMBA2C_TUNE_SPLIT_NORM_TWO_INPUTS=0` normalises a concat instead.
        Op::SplitNormLinear {
            norm,
            projs,
            hidden,
        } if crate::tune_mode("SPLIT_NORM_TWO_INPUTS", 1) == 1 => {
            let inputs = vec![x(0)?, x(1)?];
            e.norm_project(rms_norm(norm), inputs, 2 * hidden, projs, out, residual)?
        }
        Op::SplitNormLinear {
            norm,
            projs,
            hidden,
        } => {
            let cat = e.new_temp(2 * hidden);
            e.base(Op::Concat, vec![x(0)?, x(1)?], cat, Epilogue::None)?;
            e.norm_project(rms_norm(norm), vec![cat], cat.width, projs, out, residual)?
        }
        Op::GatedMlp {
            norm,
            gate_up,
            down,
            post,
            inter,
        } => {
            let xin = x(0)?;
            let gu = e.new_temp(2 * inter);
            let gate_up = std::slice::from_ref(gate_up);
            match norm {
                Some(n) => e.norm_project(rms_norm(n), vec![xin], xin.width, gate_up, gu, None)?,
                None => e.project(xin, gate_up, gu, None)?,
            }
            // GELU·up in one launch that writes the down projection's input planes itself:
            // the same values as the elementwise kernels and the split they feed, two launches
            // and about half the bytes less (TTFT -2.2 ms at 2048 tokens, docs/PERFORMANCE.md
            // "sixteenth session"); `ZAMBA2C_TUNE_PROMPT_GELU_MUL=0`: `gelu` and `mul` as
            // elementwise kernels.
            let act = e.act();
            let (mlp_in, down_in): (Operand, Option<_>) = if crate::tune_mode("PROMPT_GELU_MUL", 1)
                == 1
                && families::gelu_mul_fits(act, &gu, *inter)
            {
                let emit = move |e: &mut Emit, dst: Operand, planes: bool| {
                    let spec = families::gelu_mul(act, &gu, &dst, *inter, planes)
                        .ok_or("gelu_mul: operands not in 4-value pieces")?;
                    e.specs.push(spec);
                    Ok(())
                };
                (gu, Some(emit))
            } else {
                let g = e.new_temp(*inter);
                e.base(Op::Gelu, vec![cols(gu, 0, *inter)], g, Epilogue::None)?;
                let f = e.new_temp(*inter);
                e.base(
                    Op::Mul,
                    vec![g, cols(gu, *inter, *inter)],
                    f,
                    Epilogue::None,
                )?;
                (f, None)
            };
            // The down projection (and the post-norm's projection) from f, or from what the
            // fused launch writes.
            let down_from = |e: &mut Emit, dst: Operand, res: Option<Operand>| match down_in {
                Some(emit) => e.norm_project_with(*inter, emit, &[plain(down)], dst, res),
                None => e.project(mlp_in, &[plain(down)], dst, res),
            };
            match post {
                None => down_from(&mut e, out, residual)?,
                Some(pw) => {
                    let d = e.new_temp(out.width);
                    down_from(&mut e, d, None)?;
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
                    let ws = (e.temp)(wdt, DType::F32, Init::Any);
                    let chunks = (e.temp)(wchunks, DType::F32, Init::Any);
                    let specs = super::ssd::ssd_specs(e.ctx, &scan, &scan_in, y, ws, chunks)?;
                    e.specs.extend(specs);
                }
                _ => e.base(scan, scan_in, y, Epilogue::None)?,
            }
            match out_proj {
                Some(w) => {
                    let yz = vec![y, cols(zx, 0, din)];
                    e.norm_project(gated, yz, din, &[plain(w)], out, residual)?
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
