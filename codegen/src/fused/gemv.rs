//! `proj_gemv` (templates/proj_gemv.cu): the decode-graph projection family with its norm
//! prologues (RMSNorm, group norm, the shared block's split norm) and epilogues (LoRA,
//! GELU·up, residual); docs/KERNELS.md.

use serde_json::json;
use zamba2c_ir::fused::{Norm, Proj};
use zamba2c_ir::DType;

use super::{Init, Temp};
use crate::families::{flit, weight_ref, Builder, KernelSpec};
use crate::program::{Arg, CType, Extent, NodeCtx, Operand};

/// Warps per block and output features per warp of `proj_gemv` (docs/KERNELS.md).
pub const GEMV_WARPS: usize = 8;
pub const GEMV_ROWS_PER_WARP: usize = 2;
/// Warps a `proj_gemv` launch should have at least (about 32 per SM on the H200's 132 SMs) for
/// enough 16-byte loads in flight; narrower outputs split the input across up to 8 warps.
const GEMV_MIN_WARPS: usize = 4096;
/// 16-byte weight loads in flight per lane (unrolled chunk loop × weight rows per warp).
const GEMV_LOADS_IN_FLIGHT: usize = 16;
/// How a one-row `proj_gemv` reads its operands (`ZAMBA2C_TUNE_GEMV_PLAIN`): 0, the chunk loop
/// with its trip count unknown to the compiler; 1, the trip count known and the loop unrolled
/// whole up to GEMV_FULL_UNROLL loads, every operand read through a plain pointer; 2, the same
/// with the weights kept on read-only-cache loads. 2 was measured fastest (2.50 -> 2.46 ms a
/// token alone, 2.41 with `mamba_step`'s hoisted reads; docs/PERFORMANCE.md fourteenth session).
const GEMV_PLAIN: usize = 2;
/// With `ZAMBA2C_TUNE_GEMV_PLAIN=1` or `2`: most weight loads a lane's whole chunk loop may hold for it
/// to be unrolled whole (passes × weight rows × rows of a group; the 2.7B's in_proj: 10 × 2).
const GEMV_FULL_UNROLL: usize = 48;
/// Rows the batched variant of `proj_gemv` serves per pass over the weights (a decode step of
/// several sequences; `Launch::batched`). Each weight element loaded serves this many rows,
/// with one accumulator per row; a step of more rows makes several passes, the later ones
/// mostly from L2 (docs/KERNELS.md "proj_gemv").
pub const GEMV_ROW_GROUP: usize = 8;

use crate::tune;

/// Most projections (and adapters) one `proj_gemv` launch reads.
const MAX_PROJS: usize = 4;

/// One input segment of `proj_gemv`: `len` values of operand `op` from column `xoff`, against
/// weight columns `wcol..` and norm weights `goff..`, in norm group `grp` (sum of squares slot
/// `ss`); `read_w: false` only adds to the sum of squares (the split norm's embedding half).
#[derive(Clone, Copy)]
pub(super) struct InSeg {
    pub(super) param: &'static str,
    pub(super) op: Operand,
    pub(super) xoff: usize,
    pub(super) len: usize,
    pub(super) wcol: usize,
    pub(super) goff: usize,
    pub(super) grp: usize,
    pub(super) ss: usize,
    pub(super) read_w: bool,
}

impl InSeg {
    pub(super) fn new(
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
pub(super) struct Input {
    pub(super) segs: Vec<InSeg>,
    pub(super) groups: Vec<usize>,
    pub(super) split: Option<(Operand, usize)>,
    /// The input comes from a launch that moves few bytes (the mixer's `mamba_step`): the
    /// weights may be asked into L2 before waiting for it (`ZAMBA2C_TUNE_GEMV_PREFETCH`).
    pub(super) after_light_launch: bool,
}

impl Input {
    pub(super) fn plain(x: Operand) -> Self {
        Input {
            segs: vec![InSeg::new("x", x, 0, x.width, 0, 0)],
            groups: vec![x.width],
            split: None,
            after_light_launch: false,
        }
    }
}

/// What happens after the dot products.
pub(super) struct Epilogue {
    pub(super) residual: Option<Operand>,
    /// `GELU(gate) ⊙ up`, gate = rows `..I`, up = rows `I..2I` of the projection.
    pub(super) gelu_inter: Option<usize>,
}

impl Epilogue {
    pub(super) fn residual(r: Option<Operand>) -> Self {
        Epilogue {
            residual: r,
            gelu_inter: None,
        }
    }
}

/// The adapter down-projections `a = A·x̂` of `projs`, one launch into a temporary, when any
/// projection has an adapter.
pub(super) struct LoraFirst {
    pub(super) specs: Vec<KernelSpec>,
    /// The temporary holding every adapter's `a`, and each projection's offset in it.
    pub(super) lora: Option<(Operand, Vec<usize>)>,
}

pub(super) fn adapters_first(
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
    let a = temp(total, DType::F32, Init::Any);
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
pub(super) fn projection(
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
        (DType::F32 | DType::BF16, DType::BF16) | (DType::F32 | DType::F16, DType::F16) => 8,
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
pub(super) fn gemv(
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
    // The input segments for groups of `rg` rows: the chunk loop is unrolled to keep
    // GEMV_LOADS_IN_FLIGHT weight loads in flight, fewer when each iteration also loads the
    // inputs of several rows.
    //
    // A measurement (`ZAMBA2C_TUNE_GEMV_PLAIN=1` or `=2`, docs/PERFORMANCE.md thirteenth
    // session): each lane's chunk loop with a trip count known at compile time (`trips`;
    // `ragged`: a partial last pass), unrolled whole when its weight loads fit
    // GEMV_FULL_UNROLL, and operands read through pointers the compiler cannot see as
    // `__restrict__` (`Z2C_PLAIN`): all of them (1), or the input and norm weight only (2).
    // Unrolled whole with `__restrict__` operands, the compiler issues every load up front (241
    // registers, one block an SM: 2.95 ms a token against 2.50); with plain inputs the loads
    // stay interleaved at 46–48 registers, as in scripts/gemv_lab.cu's `curfix<16>` (whose
    // weights are `__restrict__` and its input not, like 2), which streamed in_proj at 3.7 TB/s
    // against 3.0 for this loop.
    //
    // K-split: warps per row group, a power of two up to the block, while the launch is short
    // of GEMV_MIN_WARPS and each warp keeps at least one 32-lane pass over its input.
    let chunks = k_read / vec;
    let mut ks = 1;
    let min_warps = tune("GEMV_MIN_WARPS", GEMV_MIN_WARPS);
    while ks < GEMV_WARPS && nout.div_ceil(rpw) * ks < min_warps && chunks >= 64 * ks {
        ks *= 2;
    }
    // 1: every operand plain; 2: the input and norm weight only (the weights keep their
    // read-only-cache loads, as in the lab's `curfix<16>`).
    let plain_mode = crate::tune_mode("GEMV_PLAIN", GEMV_PLAIN);
    let plain = plain_mode == 1 || plain_mode == 2;
    let segs = |rg: usize, plain: bool| -> Vec<serde_json::Value> {
        input
            .segs
            .iter()
            .map(|s| {
                let trip = (s.len / vec).div_ceil(32);
                let unroll = (tune("GEMV_LOADS", GEMV_LOADS_IN_FLIGHT) / wr / rg).max(1);
                let lanes = 32 * ks;
                let trips = (s.len / vec).div_ceil(lanes);
                let unroll = if !plain {
                    trip.clamp(1, unroll)
                } else if trips * wr * rg <= tune("GEMV_FULL_UNROLL", GEMV_FULL_UNROLL) {
                    trips.max(1)
                } else {
                    unroll.clamp(1, trips.max(1))
                };
                json!({
                    "x": s.param, "x_stride": s.op.stride, "xoff": s.xoff, "len": s.len,
                    "wcol": s.wcol, "goff": s.goff,
                    "grp": if norm_kind == "rms" { s.grp } else { 0 },
                    "ss": s.ss, "read_w": s.read_w, "unroll": unroll,
                    "trips": trips, "ragged": !(s.len / vec).is_multiple_of(lanes),
                })
            })
            .collect()
    };
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
        .set("segs", segs(1, plain))
        .set("rg", 1)
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
        .set("split_e", input.split.is_some())
        .set("plain", plain)
        .set("plain_w", plain_mode == 1);
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
    // A measurement (`ZAMBA2C_TUNE_GEMV_PREFETCH`, bytes of each weight row, default 0): before
    // its wait, a projection that follows a launch moving few bytes asks L2 for the first lines
    // of its weight rows, so HBM streams while that launch runs (the same prefetch ahead of every
    // projection was measured slower: it competed with the previous projection's stream;
    // docs/PERFORMANCE.md, 2026-12-01 third session).
    let wcols = input.segs.iter().filter(|s| s.read_w);
    let wcol0 = wcols.clone().map(|s| s.wcol).min().unwrap_or(0);
    let wcol1 = wcols.map(|s| s.wcol + s.len).max().unwrap_or(0);
    let row_lines = (wcol1.saturating_sub(wcol0) * w_dtype.size()) / 128;
    let pf_lines = if input.after_light_launch {
        (tune("GEMV_PREFETCH", 0) / 128).min(row_lines)
    } else {
        0
    };
    let b = b
        .set("ks", ks)
        .set("pdl_inside", true)
        .set("pf_lines", pf_lines)
        .set("pf_col", wcol0)
        .cost(cost);
    let per_block = GEMV_WARPS / ks * rpw;
    let mut spec = b.output(&out).scalar("rows", Arg::Rows).finish(
        [
            Extent::Const(nout.div_ceil(per_block) as u32),
            Extent::Const(1),
            Extent::Const(1),
        ],
        32 * GEMV_WARPS,
    );
    // The variant for several rows: the same context with row groups of GEMV_ROW_GROUP.
    let rg = tune("GEMV_ROW_GROUP", GEMV_ROW_GROUP);
    if rg > 1 {
        let mut ctx: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&spec.context).map_err(|e| e.to_string())?;
        ctx.insert("rg".into(), json!(rg));
        // The several-rows variant keeps the chunk loop with its trip count unknown (the plain
        // loop is measured on one row only: docs/PERFORMANCE.md fourteenth session).
        ctx.insert("segs".into(), json!(segs(rg, false)));
        ctx.insert("plain".into(), json!(false));
        ctx.insert("plain_w".into(), json!(false));
        spec.batched = Some(serde_json::Value::Object(ctx).to_string());
    }
    Ok(spec)
}
