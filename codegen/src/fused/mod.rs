//! Kernel families of the fused ops (docs/KERNELS.md): what the passes fused, codegen emits as
//! the fewest launches the data dependencies allow. A fused op this module cannot serve (a
//! phase or shape it has no kernel for) is emitted through its decomposition, and the reason is
//! recorded in the program ([`zamba2c_ir::kernel::Fallback`]) so `inspect` names it.

use serde_json::json;
use zamba2c_ir::fused::{Norm, Proj};
use zamba2c_ir::{DType, Op, Phase, StateSpec};

use crate::families::{flit, weight_ref, Builder, KernelSpec};

mod prompt;
use crate::program::{Arg, CType, Extent, NodeCtx, Operand};

/// Warps per block and output features per warp of `proj_gemv` (docs/KERNELS.md).
pub const GEMV_WARPS: usize = 8;
pub const GEMV_ROWS_PER_WARP: usize = 2;
/// Warps a `proj_gemv` launch should have at least (about 32 per SM on the H200's 132 SMs) for
/// enough 16-byte loads in flight; narrower outputs split the input across up to 8 warps.
const GEMV_MIN_WARPS: usize = 4096;
/// 16-byte weight loads in flight per lane (unrolled chunk loop × weight rows per warp).
const GEMV_LOADS_IN_FLIGHT: usize = 16;

/// A tuning knob of the decode kernels: `ZAMBA2C_TUNE_<NAME>` from the environment when set
/// (developer sweeps on the GPU, docs/KERNELS.md), else the default. Plans record what they
/// were generated with in their kernel sources, so a plan is still reproducible.
fn tune(name: &str, default: usize) -> usize {
    std::env::var(format!("ZAMBA2C_TUNE_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}
/// Most projections (and adapters) one `proj_gemv` launch reads.
const MAX_PROJS: usize = 4;
/// Rows of an SSM head one `mamba_step` block updates, and its threads.
const STEP_ROWS: usize = 16;
const STEP_THREADS: usize = 256;
/// Splits of the cached positions per head in `attention_decode`, its warps and lanes per key.
pub const ATTN_SPLITS: usize = 16;
const ATTN_WARPS: usize = 4;

/// Allocates a kernel-internal temporary `[rows, width]` of `dtype` (not an IR value).
pub type Temp<'t> = dyn FnMut(usize, DType) -> Operand + 't;

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
            let f = temp(*inter, act);
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
                    let d = temp(ctx.out.width, act);
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
            let gated = temp(din, DType::F32);
            let mut out = vec![mamba_step(ctx, op, x(0)?, gated)?];
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

/// One input segment of `proj_gemv`: `len` values of operand `op` from column `xoff`, against
/// weight columns `wcol..` and norm weights `goff..`, in norm group `grp` (sum of squares slot
/// `ss`); `read_w: false` only adds to the sum of squares (the split norm's embedding half).
#[derive(Clone, Copy)]
struct InSeg {
    param: &'static str,
    op: Operand,
    xoff: usize,
    len: usize,
    wcol: usize,
    goff: usize,
    grp: usize,
    ss: usize,
    read_w: bool,
}

impl InSeg {
    fn new(
        param: &'static str,
        op: Operand,
        xoff: usize,
        len: usize,
        wcol: usize,
        goff: usize,
    ) -> Self {
        InSeg {
            param,
            op,
            xoff,
            len,
            wcol,
            goff,
            grp: 0,
            ss: 0,
            read_w: true,
        }
    }
}

/// The input side of a projection: segments, the size of each norm group, and for the split
/// norm the embedding half `E` and the hidden size.
struct Input {
    segs: Vec<InSeg>,
    groups: Vec<usize>,
    split: Option<(Operand, usize)>,
}

impl Input {
    fn plain(x: Operand) -> Self {
        Input {
            segs: vec![InSeg::new("x", x, 0, x.width, 0, 0)],
            groups: vec![x.width],
            split: None,
        }
    }
}

/// What happens after the dot products.
struct Epilogue {
    residual: Option<Operand>,
    /// `GELU(gate) ⊙ up`, gate = rows `..I`, up = rows `I..2I` of the projection.
    gelu_inter: Option<usize>,
}

impl Epilogue {
    fn residual(r: Option<Operand>) -> Self {
        Epilogue {
            residual: r,
            gelu_inter: None,
        }
    }
}

/// The adapter down-projections `a = A·x̂` of `projs`, one launch into a temporary, when any
/// projection has an adapter.
struct LoraFirst {
    specs: Vec<KernelSpec>,
    /// The temporary holding every adapter's `a`, and each projection's offset in it.
    lora: Option<(Operand, Vec<usize>)>,
}

fn adapters_first(
    ctx: &NodeCtx,
    temp: &mut Temp,
    input: &Input,
    norm: Option<&Norm>,
    projs: &[Proj],
) -> Result<LoraFirst, String> {
    let mut a_projs = Vec::new();
    let mut offsets = Vec::new();
    let mut total = 0;
    for p in projs {
        offsets.push(total);
        if let Some(ad) = &p.adapter {
            let r = weight_ref(ctx, &ad.a)
                .and_then(|w| w.shape.first().copied())
                .ok_or(format!("adapter {} is not in the weight table", ad.a))?;
            a_projs.push(Proj {
                weight: ad.a.clone(),
                adapter: None,
            });
            total += r;
        }
    }
    if a_projs.is_empty() {
        return Ok(LoraFirst {
            specs: vec![],
            lora: None,
        });
    }
    let a = temp(total, DType::F32);
    let spec = gemv(
        ctx,
        input,
        norm,
        &a_projs,
        None,
        Epilogue::residual(None),
        a,
    )?;
    Ok(LoraFirst {
        specs: vec![spec],
        lora: Some((a, offsets)),
    })
}

/// Projections of `input` (with their adapters, whose `a` a previous launch computed).
#[allow(clippy::too_many_arguments)]
fn projection(
    ctx: &NodeCtx,
    temp: &mut Temp,
    input: Input,
    norm: Option<&Norm>,
    projs: &[Proj],
    residual: Option<Operand>,
    out: Operand,
) -> Result<Vec<KernelSpec>, String> {
    let a = adapters_first(ctx, temp, &input, norm, projs)?;
    let mut specs = a.specs;
    specs.push(gemv(
        ctx,
        &input,
        norm,
        projs,
        a.lora,
        Epilogue::residual(residual),
        out,
    )?);
    Ok(specs)
}

const W_PARAMS: [&str; MAX_PROJS] = ["w0", "w1", "w2", "w3"];
const B_PARAMS: [&str; MAX_PROJS] = ["b0", "b1", "b2", "b3"];

/// Elements per 16-byte load shared by the input, the weights and the norm weights, given every
/// offset and stride involved (1 when they do not all allow it).
fn gemv_vec(x: DType, w: DType, offsets: &[usize]) -> usize {
    let v = match (x, w) {
        (DType::F32, DType::BF16) | (DType::BF16, DType::BF16) => 8,
        (DType::F32, DType::F32) => 4,
        _ => 1,
    };
    if offsets.iter().all(|o| o.is_multiple_of(v)) {
        v
    } else {
        1
    }
}

/// One `proj_gemv` launch (templates/proj_gemv.cu).
fn gemv(
    ctx: &NodeCtx,
    input: &Input,
    norm: Option<&Norm>,
    projs: &[Proj],
    lora: Option<(Operand, Vec<usize>)>,
    epi: Epilogue,
    out: Operand,
) -> Result<KernelSpec, String> {
    if projs.is_empty() || projs.len() > MAX_PROJS {
        return Err(format!("{} projections in one launch", projs.len()));
    }
    let x_dtype = input.segs[0].op.dtype;
    if input.segs.iter().any(|s| s.op.dtype != x_dtype) {
        return Err("input segments of different dtypes".into());
    }
    // Weights: every projection reads the same columns of a [rows, in] matrix.
    let k_read: usize = input.segs.iter().filter(|s| s.read_w).map(|s| s.len).sum();
    let mut wrefs = Vec::new();
    let mut start = 0;
    let mut pj = Vec::new();
    let mut offsets: Vec<usize> = Vec::new();
    let mut rank = 0;
    for (i, p) in projs.iter().enumerate() {
        let w =
            weight_ref(ctx, &p.weight).ok_or(format!("weight {} not in the table", p.weight))?;
        let [n, k] = w.shape[..] else {
            return Err(format!("weight {} is not a matrix", p.weight));
        };
        let max_col = input
            .segs
            .iter()
            .filter(|s| s.read_w)
            .map(|s| s.wcol + s.len)
            .max()
            .unwrap_or(0);
        if max_col > k || k_read == 0 {
            return Err(format!(
                "weight {} has {k} columns, the input reads up to {max_col}",
                p.weight
            ));
        }
        offsets.extend([w.row_stride, w.offset]);
        let mut entry = json!({
            "start": start, "end": start + n, "w": W_PARAMS[i], "w_stride": w.row_stride,
        });
        if let (Some(ad), Some((_, aoffs))) = (&p.adapter, &lora) {
            let bw = weight_ref(ctx, &ad.b).ok_or(format!("adapter {} not in the table", ad.b))?;
            let [bn, r] = bw.shape[..] else {
                return Err(format!("adapter {} is not a matrix", ad.b));
            };
            if bn != n || bw.offset != 0 || bw.row_stride != r || (rank != 0 && rank != r) {
                return Err(format!(
                    "adapter {} of shape [{bn}, {r}] for {n} rows",
                    ad.b
                ));
            }
            rank = r;
            entry["b"] = json!(B_PARAMS[i]);
            entry["aoff"] = json!(aoffs[i]);
        }
        pj.push(entry);
        wrefs.push(w);
        start += n;
    }
    let w_dtype = wrefs[0].dtype;
    if wrefs.iter().any(|w| w.dtype != w_dtype) {
        return Err("projections of different weight dtypes".into());
    }
    let wrows = start;
    let nout = match epi.gelu_inter {
        Some(i) if wrows == 2 * i => i,
        Some(i) => return Err(format!("gate_up of {wrows} rows for intermediate size {i}")),
        None => wrows,
    };
    if nout != out.width {
        return Err(format!(
            "{nout} outputs into a value of width {}",
            out.width
        ));
    }
    for s in &input.segs {
        offsets.extend([s.op.stride, s.op.offset + s.xoff, s.len, s.wcol]);
        if norm.is_some() {
            offsets.push(s.goff);
        }
    }
    let vec = gemv_vec(x_dtype, w_dtype, &offsets);
    let rpw = GEMV_ROWS_PER_WARP;
    let wr = if epi.gelu_inter.is_some() {
        2 * rpw
    } else {
        rpw
    };
    let norm_kind = match (norm, input.split) {
        (None, _) => "none",
        (Some(_), None) => "rms",
        (Some(_), Some(_)) => "split",
    };
    let ng = if norm_kind == "rms" {
        input.groups.len()
    } else {
        1
    };
    let nss = input.segs.iter().map(|s| s.ss + 1).max().unwrap_or(1);
    let segs: Vec<serde_json::Value> = input
        .segs
        .iter()
        .map(|s| {
            let trip = (s.len / vec).div_ceil(32);
            let unroll = (tune("GEMV_LOADS", GEMV_LOADS_IN_FLIGHT) / wr).max(1);
            json!({
                "x": s.param, "x_stride": s.op.stride, "xoff": s.xoff, "len": s.len,
                "wcol": s.wcol, "goff": s.goff, "grp": if norm_kind == "rms" { s.grp } else { 0 },
                "ss": s.ss, "read_w": s.read_w, "unroll": trip.clamp(1, unroll),
            })
        })
        .collect();
    let mut b = Builder::new("proj_gemv", out.dtype)
        .set("w_t", CType::elem(w_dtype))
        .set("out_t", CType::elem(out.dtype))
        .set("x_t", CType::elem(x_dtype))
        .set("nout", nout)
        .set("out_stride", out.stride)
        .set("warps", GEMV_WARPS)
        .set("rpw", rpw)
        .set("wr", wr)
        .set("vec", vec)
        .set("segs", segs)
        .set("projs", pj)
        .set("norm", norm_kind)
        .set("ng", ng)
        .set("nss", nss)
        .set("gsize", input.groups.clone())
        .set("gelu_mul", epi.gelu_inter.is_some())
        .set("inter", epi.gelu_inter.unwrap_or(0))
        .set("adapter", lora.is_some())
        .set("rank", rank)
        .set("residual", epi.residual.is_some())
        .set("split_e", input.split.is_some());
    if let Some(n) = norm {
        b = b.set("eps", flit(n.eps));
    }
    if let Some((_, half)) = input.split {
        b = b.set("half", half).set("full", 2 * half);
    }
    // Parameters, in one list: inputs, norm weight, weights, adapters, epilogue operands, out.
    let mut seen: Vec<&str> = Vec::new();
    for s in &input.segs {
        if !seen.contains(&s.param) {
            seen.push(s.param);
            b = b.input(s.param, &s.op);
        }
    }
    if let Some(n) = norm {
        b = b.weight("gamma", ctx, &n.weight);
    }
    for (i, p) in projs.iter().enumerate() {
        b = b.weight(W_PARAMS[i], ctx, &p.weight);
    }
    if let Some((a, _)) = &lora {
        for (i, p) in projs.iter().enumerate() {
            if let Some(ad) = &p.adapter {
                b = b.weight(B_PARAMS[i], ctx, &ad.b);
            }
        }
        b = b.set("a_stride", a.stride).input("lora_a", a);
    }
    if let Some((e, _)) = input.split {
        b = b.set("e_stride", e.stride).input("emb_half", &e);
    }
    if let Some(r) = epi.residual {
        b = b.set("res_stride", r.stride).input("res", &r);
    }
    // K-split: warps per row group, a power of two up to the block, while the launch is short
    // of GEMV_MIN_WARPS and each warp keeps at least one 32-lane pass over its input.
    let chunks = k_read / vec;
    let mut ks = 1;
    let min_warps = tune("GEMV_MIN_WARPS", GEMV_MIN_WARPS);
    while ks < GEMV_WARPS && nout.div_ceil(rpw) * ks < min_warps && chunks >= 64 * ks {
        ks *= 2;
    }
    // Bytes: each weight row's columns read once, the norm weight, the adapters' B; per row the
    // input segments, the output and what the epilogue reads.
    let wsz = w_dtype.size() as u64;
    let xsz = x_dtype.size() as u64;
    let mut weight_bytes = wrows as u64 * k_read as u64 * wsz;
    if norm.is_some() {
        weight_bytes += input.segs.iter().map(|s| s.len as u64).sum::<u64>() * wsz;
    }
    let adapted_rows: u64 = projs
        .iter()
        .zip(&wrefs)
        .filter(|(p, _)| p.adapter.is_some() && lora.is_some())
        .map(|(_, w)| w.shape[0] as u64)
        .sum();
    weight_bytes += adapted_rows * rank as u64 * wsz;
    let mut per_row = input.segs.iter().map(|s| s.len as u64).sum::<u64>() * xsz
        + (nout * out.dtype.size()) as u64;
    if let Some((a, _)) = &lora {
        per_row += (a.width * 4) as u64;
    }
    if let Some((e, _)) = input.split {
        per_row += (nout * e.dtype.size()) as u64;
    }
    if let Some(r) = epi.residual {
        per_row += (nout * r.dtype.size()) as u64;
    }
    let cost = zamba2c_ir::kernel::LaunchCost {
        weight_bytes,
        bytes_per_row: per_row,
        flops_per_row: 2 * wrows as u64 * k_read as u64 + 2 * adapted_rows * rank as u64,
        ..Default::default()
    };
    let b = b.set("ks", ks).cost(cost);
    let per_block = GEMV_WARPS / ks * rpw;
    Ok(b.output(&out).scalar("rows", Arg::Rows).finish(
        [
            Extent::Const(nout.div_ceil(per_block) as u32),
            Extent::Const(1),
            Extent::Const(1),
        ],
        32 * GEMV_WARPS,
    ))
}

/// The decode step of a mixer: conv + SiLU + SSM update + D skip + gate
/// (templates/mamba_step.cu), writing the gated output into `gated` (f32).
fn mamba_step(ctx: &NodeCtx, op: &Op, zx: Operand, gated: Operand) -> Result<KernelSpec, String> {
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
    if cdt != zx.dtype || zx.width != din + channels + heads {
        return Err("conv state dtype or in_proj width does not match".into());
    }
    let pb = (*head_dim).min(STEP_ROWS);
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
    let wsz = |w: &str| {
        weight_ref(ctx, w).map_or(0, |r| {
            (r.shape.iter().product::<usize>() * r.dtype.size()) as u64
        })
    };
    let csz = cdt.size() as u64;
    let cost = zamba2c_ir::kernel::LaunchCost {
        weight_bytes: wsz(conv_weight) + wsz(conv_bias) + wsz(dt_bias) + wsz(a_log) + wsz(d),
        // in_proj's output read, the gated output written (f32).
        bytes_per_row: zx.width as u64 * zx.dtype.size() as u64 + din as u64 * 4,
        // The f32 SSM state read and written; the conv ring: K-1 older inputs read, one written.
        bytes_per_seq: 2 * (din * d_state * 4) as u64 + channels as u64 * k as u64 * csz,
        flops_per_row: (6 * din * d_state + 2 * channels * k) as u64,
        ..Default::default()
    };
    Ok(Builder::new("mamba_step", zx.dtype)
        .cost(cost)
        .set("pb", pb)
        .set("psplit", psplit)
        .set("tpr", tpr)
        .set("npt", d_state.div_ceil(tpr))
        .set("vec4", d_state.is_multiple_of(4 * tpr))
        .set("n", *d_state)
        .set("k", k)
        .set("din", din)
        .set("gn", gn)
        .set("channels", channels)
        .set("heads", *heads)
        .set("head_dim", *head_dim)
        .set("heads_per_group", heads / groups)
        .set("zx_stride", zx.stride)
        .input("zxbcdt", &zx)
        .weight("conv_weight", ctx, conv_weight)
        .weight("conv_bias", ctx, conv_bias)
        .weight("dt_bias", ctx, dt_bias)
        .weight("a_log", ctx, a_log)
        .weight("d_skip", ctx, d)
        .param(
            "conv_state",
            CType::Ptr(cdt),
            Arg::State {
                id: *conv_state,
                part: 0,
            },
        )
        .param(
            "ssm_state",
            CType::Ptr(DType::F32),
            Arg::State {
                id: *ssm_state,
                part: 0,
            },
        )
        .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
        .output(&gated)
        .finish(
            [
                Extent::Const((heads * psplit) as u32),
                Extent::Batch,
                Extent::Const(1),
            ],
            STEP_THREADS,
        ))
}

/// Decode attention split over the cache with the KV append folded in
/// (templates/attention_decode.cu); `None` when the head size does not split into lanes.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    ctx: &NodeCtx,
    (heads, kv_heads, d, scale): (usize, usize, usize, f32),
    rope: Option<String>,
    cache: usize,
    cache_dtype: DType,
    workspace: Operand,
    counters: Operand,
) -> Option<KernelSpec> {
    let lpk = [8usize, 4, 2, 1]
        .into_iter()
        .find(|l| d.is_multiple_of(*l) && d / l <= 32)?;
    let (q, k, v) = (&ctx.inputs[0], &ctx.inputs[1], &ctx.inputs[2]);
    let kv_row = 2 * (kv_heads * d * cache_dtype.size()) as u64;
    let cost = zamba2c_ir::kernel::LaunchCost {
        bytes_per_row: ((q.width + k.width + v.width) * q.dtype.size()) as u64
            + (ctx.out.width * ctx.out.dtype.size()) as u64
            + kv_row
            + (workspace.width * 4 * 2) as u64,
        bytes_per_cached_token: kv_row,
        flops_per_cached_token: 4 * (heads * d) as u64,
        ..Default::default()
    };
    let mut b = Builder::new("attention_decode", ctx.out.dtype)
        .cost(cost)
        .set("d", d)
        .set("half", d / 2)
        .set("heads", heads)
        .set("kv_heads", kv_heads)
        .set("group", heads / kv_heads)
        .set("scale", flit(scale))
        .set("nw", ATTN_WARPS)
        .set("lpk", lpk)
        .set("dpl", d / lpk)
        .set("splits", ATTN_SPLITS)
        .set("cache_t", CType::elem(cache_dtype))
        .set("q_stride", q.stride)
        .set("k_stride", k.stride)
        .set("v_stride", v.stride)
        .set("out_width", ctx.out.stride)
        .set("rope", rope.is_some());
    if let Some(f) = rope {
        b = b.set("inv_freq", f);
    }
    Some(
        b.input("q", q)
            .input("k", k)
            .input("v", v)
            .param(
                "kcache",
                CType::Ptr(cache_dtype),
                Arg::State { id: cache, part: 0 },
            )
            .param(
                "vcache",
                CType::Ptr(cache_dtype),
                Arg::State { id: cache, part: 1 },
            )
            .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
            .param("workspace", CType::Ptr(DType::F32), workspace.arg())
            .param("counters", CType::Ptr(DType::I32), counters.arg())
            .output(&ctx.out)
            .scalar("cap", Arg::Capacity)
            .finish(
                [
                    Extent::Const(heads as u32),
                    Extent::Const(ATTN_SPLITS as u32),
                    Extent::Batch,
                ],
                32 * ATTN_WARPS,
            ),
    )
}
