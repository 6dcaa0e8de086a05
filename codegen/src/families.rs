//! Kernel families: for each base op, the template, its context (every size and stride computed
//! here, in Rust), the parameter list with the argument bound to each parameter, and the grid.

use serde_json::{json, Map, Value as Json};
use zamba2c_ir::{DType, Op, Phase, StateSpec};

use crate::program::{Arg, CType, Epilogue, Extent, NodeCtx, Operand, Param};
use crate::CodegenError;
use zamba2c_ir::kernel::{LaunchCost, LibraryEpilogue, LibraryGemm};

/// Warps per block of the GEMV kernel (one output feature per warp).
const GEMV_WARPS: usize = 4;
/// Rows the GEMV kernel accumulates per pass over the weight.
const GEMV_ROWS: usize = 4;
/// Output tile of the GEMM kernel (square).
const GEMM_TILE: usize = 64;
/// k step of the GEMM kernel and its threads.
const GEMM_BK: usize = 16;
const GEMM_THREADS: usize = 256;
/// Output tile of the tensor-core GEMM (square; templates/linear_mma.cu is written for it) and its warps.
const MMA_TILE: usize = 128;
const MMA_WARPS: usize = 8;
/// k step of the tensor-core GEMM.
const MMA_BK: usize = 32;
/// cp.async stages of the pipelined tensor-core GEMM (templates/linear_mma_pipe.cu).
const PIPE_STAGES: usize = 3;
/// Widest output the pipelined GEMM covers with 64-row tiles.
const PIPE_NARROW_N: usize = 4096;
/// Threads per block of elementwise-style kernels.
const EW_BLOCK: usize = 256;
/// Warps of the SSM scan and attention blocks.
const SCAN_WARPS: usize = 4;
const ATTN_WARPS: usize = 4;

/// One kernel to render and launch.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// Template (and family) name: `templates/<family>.cu`.
    pub family: &'static str,
    /// The template context, serialized: also the deduplication key.
    pub context: String,
    pub params: Vec<Param>,
    pub args: Vec<Arg>,
    pub grid: [Extent; 3],
    pub block: u32,
    /// Dynamic shared memory per block, bytes.
    pub smem: u32,
    /// Token alignment the launch needs of its buffers (GraphProgram::seq_align).
    pub seq_align: usize,
    pub cost: LaunchCost,
    /// The template context of a variant for calls of several rows (same parameters and
    /// grid; `Launch::batched`), when the family has one.
    pub batched: Option<String>,
    /// The same projection as a library GEMM the runtime may run instead (`Launch::library`).
    pub library: Option<LibraryGemm>,
}

/// Builds a [`KernelSpec`]: parameters and their arguments are added together, so the list
/// that renders the signature is the list the runtime launches with.
pub(crate) struct Builder {
    family: &'static str,
    ctx: Map<String, Json>,
    params: Vec<Param>,
    args: Vec<Arg>,
    cost: LaunchCost,
}

impl Builder {
    pub(crate) fn new(family: &'static str, act: DType) -> Self {
        let mut ctx = Map::new();
        ctx.insert("family".into(), json!(family));
        ctx.insert("act".into(), json!(CType::elem(act)));
        Builder {
            family,
            ctx,
            params: Vec::new(),
            args: Vec::new(),
            cost: LaunchCost::default(),
        }
    }
    /// What the launch moves and computes (zamba2c_ir::kernel::LaunchCost).
    pub(crate) fn cost(mut self, cost: LaunchCost) -> Self {
        self.cost = cost;
        self
    }
    pub(crate) fn set(mut self, k: &str, v: impl Into<Json>) -> Self {
        self.ctx.insert(k.into(), v.into());
        self
    }
    pub(crate) fn param(mut self, name: &'static str, ty: CType, arg: Arg) -> Self {
        self.params.push(Param {
            name: name.to_string(),
            ty,
        });
        self.args.push(arg);
        self
    }
    pub(crate) fn input(self, name: &'static str, o: &Operand) -> Self {
        self.param(name, CType::ConstPtr(o.dtype), o.arg())
    }
    pub(crate) fn output(self, o: &Operand) -> Self {
        self.param("out", CType::Ptr(o.dtype), o.arg())
    }
    /// A weight parameter; `w` may be a column view (`zamba2c_ir::fused::weight_view`),
    /// passed as its table weight plus an offset. [`specs`] has checked that it resolves.
    pub(crate) fn weight(self, name: &'static str, ctx: &NodeCtx, w: &str) -> Self {
        let (d, arg) = match weight_ref(ctx, w) {
            Some(r) => (r.dtype, r.arg()),
            None => (
                ctx.module.dtype,
                Arg::Weight {
                    name: w.to_string(),
                    offset: 0,
                },
            ),
        };
        self.param(name, CType::ConstPtr(d), arg)
    }
    /// A parameter pointing at part `part` of state `id` (its elements of `dtype`): the SSM
    /// state, a conv ring, a KV cache's keys (0) or values (1).
    pub(crate) fn state(self, name: &'static str, dtype: DType, id: usize, part: usize) -> Self {
        self.param(name, CType::Ptr(dtype), Arg::State { id, part })
    }
    pub(crate) fn scalar(self, name: &'static str, arg: Arg) -> Self {
        self.param(name, CType::I32, arg)
    }
    pub(crate) fn finish(mut self, grid: [Extent; 3], block: usize) -> KernelSpec {
        self.ctx.insert("block".into(), json!(block));
        let decls: Vec<Json> = self
            .params
            .iter()
            .map(|p| json!({ "decl": p.ty.decl(&p.name), "name": p.name }))
            .collect();
        self.ctx.insert("params".into(), Json::Array(decls));
        KernelSpec {
            family: self.family,
            context: Json::Object(self.ctx).to_string(),
            params: self.params,
            args: self.args,
            grid,
            block: block as u32,
            smem: 0,
            seq_align: 1,
            cost: self.cost,
            batched: None,
            library: None,
        }
    }
}

/// A weight as kernels read it: table weight `base`, from element `offset` of each row.
pub struct WeightRef {
    pub base: String,
    pub offset: usize,
    pub dtype: DType,
    /// The view's shape: the table shape with the last axis cut to the view.
    pub shape: Vec<usize>,
    /// Elements between rows of the table weight (its last axis).
    pub row_stride: usize,
}

impl WeightRef {
    /// The argument that passes this weight: its table weight, `offset` elements in.
    pub fn arg(&self) -> Arg {
        Arg::Weight {
            name: self.base.clone(),
            offset: self.offset,
        }
    }
}

/// Resolves weight name `w` (a table name or a column view of one).
pub fn weight_ref(ctx: &NodeCtx, w: &str) -> Option<WeightRef> {
    let (base, start, len) = match zamba2c_ir::fused::parse_weight_view(w) {
        Some((b, s, l)) => (b, s, Some(l)),
        None => (w, 0, None),
    };
    let spec = ctx.module.weights.get(base)?;
    let last = *spec.shape.last()?;
    let len = len.unwrap_or(last);
    if start + len > last {
        return None;
    }
    let mut shape = spec.shape.clone();
    *shape.last_mut()? = len;
    Some(WeightRef {
        base: base.to_string(),
        offset: start,
        dtype: spec.dtype,
        shape,
        row_stride: last,
    })
}

/// [`weight_ref`], or the one-line reason a kernel builder gives when `w` is missing.
pub(crate) fn required_weight(ctx: &NodeCtx, w: &str) -> Result<WeightRef, String> {
    weight_ref(ctx, w).ok_or(format!("weight {w} is not in the table"))
}

/// A C float literal that reads back as exactly `x`.
pub fn flit(x: f32) -> String {
    if x.is_finite() {
        format!("{x:e}f")
    } else if x.is_nan() {
        "__int_as_float(0x7fc00000)".into()
    } else if x > 0.0 {
        "INFINITY".into()
    } else {
        "(-INFINITY)".into()
    }
}

/// RoPE inverse frequencies as HF computes them in f32: `1 / theta^(2j/d)` (spec §2.4).
pub fn rope_inv_freq(theta: f32, d: usize) -> Vec<f32> {
    (0..d / 2)
        .map(|j| 1.0 / theta.powf((2 * j) as f32 / d as f32))
        .collect()
}

fn rows_grid(per_row: usize, block: usize) -> [Extent; 3] {
    [
        Extent::Rows {
            mul: per_row,
            div: block,
        },
        Extent::Const(1),
        Extent::Const(1),
    ]
}

fn one_per_row() -> Extent {
    Extent::Rows { mul: 1, div: 1 }
}

/// Elements a 16-byte load holds for `d`, when every access of width `k` starting at the
/// given offsets and strides stays 16-byte aligned; 1 otherwise.
fn vec_width(d: DType, k: usize, offsets: &[usize]) -> usize {
    let v = match d {
        DType::F32 => 4,
        DType::BF16 | DType::F16 => 8,
        _ => 1,
    };
    if k.is_multiple_of(v) && offsets.iter().all(|o| o.is_multiple_of(v)) {
        v
    } else {
        1
    }
}

/// The kernels of one node, in launch order.
pub fn specs(ctx: &NodeCtx, pos: usize) -> Result<Vec<KernelSpec>, CodegenError> {
    let act = ctx.out.dtype;
    let ins = &ctx.inputs;
    let arity = ctx.op.arity();
    // A norm may read its channels from two inputs, side by side: the norm of their
    // concatenation without the concatenation (codegen/src/fused/prompt.rs, a shared block's
    // split norm under `ZAMBA2C_TUNE_SPLIT_NORM_TWO_INPUTS=1`).
    let two_part_norm = matches!(ctx.op, Op::RmsNorm { .. }) && ins.len() == 2;
    if let Some(a) = arity {
        if ins.len() != a && !two_part_norm {
            return Err(ctx.err(pos, format!("{} operands, the op takes {a}", ins.len())));
        }
    }
    for name in ctx.op.weights() {
        if weight_ref(ctx, name).is_none() {
            return Err(ctx.err(pos, format!("weight {name} is not in the weight table")));
        }
    }
    let out = ctx.out;
    // A norm written as GEMM input planes computes in f32 (the planes' source dtype) over the
    // planes' width divided by their count.
    let (act, w) = match ctx.op {
        Op::RmsNorm { .. } | Op::GatedRmsNorm { .. } if ctx.split_out => {
            let (dtype, count) = gemm_planes(out.dtype);
            if out.dtype != dtype || !out.width.is_multiple_of(count) {
                return Err(ctx.err(
                    pos,
                    format!("GEMM input planes are {dtype} of {count}× the width"),
                ));
            }
            (DType::F32, out.width / count)
        }
        _ if ctx.split_out => return Err(ctx.err(pos, "only a norm writes split planes")),
        _ => (act, out.width),
    };
    let mut specs = base_specs(ctx, pos, act, out, w)?;
    for (s, c) in specs.iter_mut().zip(crate::cost::base_costs(ctx)) {
        s.cost = c;
    }
    Ok(specs)
}

fn base_specs(
    ctx: &NodeCtx,
    pos: usize,
    act: DType,
    out: Operand,
    w: usize,
) -> Result<Vec<KernelSpec>, CodegenError> {
    let ins = &ctx.inputs;
    Ok(match ctx.op {
        Op::Embedding { weight } => {
            let emb = weight_ref(ctx, weight)
                .ok_or_else(|| ctx.err(pos, format!("weight {weight} is not in the table")))?;
            if emb.offset != 0 || emb.row_stride != w {
                return Err(ctx.err(pos, "an embedding must read whole rows of its table"));
            }
            let vocab = emb.shape[0];
            vec![Builder::new("embedding", act)
                .set("width", w)
                .set("vocab", vocab)
                .input("ids", &ins[0])
                .weight("weight", ctx, weight)
                .output(&out)
                .finish([one_per_row(), Extent::Const(1), Extent::Const(1)], 256)]
        }
        Op::RmsNorm { weight, eps } => {
            let mut b = Builder::new("rms_norm", act)
                .set("width", w)
                .set("split", ctx.split_out)
                .set("planes", out_planes(ctx))
                .set("x_stride", ins[0].stride)
                .set("eps", flit(*eps))
                .set("two", ins.len() == 2)
                .input("x", &ins[0]);
            if let Some(x2) = ins.get(1) {
                if ins[0].width + x2.width != w {
                    return Err(ctx.err(
                        pos,
                        format!(
                            "a norm of two inputs of {} and {} channels writes {w}",
                            ins[0].width, x2.width
                        ),
                    ));
                }
                b = b
                    .set("half", ins[0].width)
                    .set("x2_stride", x2.stride)
                    .input("x2", x2);
            }
            vec![b
                .weight("weight", ctx, weight)
                .output(&out)
                .finish([one_per_row(), Extent::Const(1), Extent::Const(1)], 256)]
        }
        Op::Linear { weight } => vec![linear(ctx, pos, weight)?],
        Op::Add | Op::Mul | Op::Gelu | Op::Silu => {
            let (op, expr) = match ctx.op {
                Op::Add => ("add", "a + b"),
                Op::Mul => ("mul", "a * b"),
                Op::Gelu => ("gelu", "gelu_f(a)"),
                _ => ("silu", "silu_f(a)"),
            };
            let mut b = Builder::new("elementwise", act)
                .set("op", op)
                .set("expr", expr)
                .set("width", w)
                .set("nin", ins.len())
                .set("stride0", ins[0].stride)
                .input("in0", &ins[0]);
            if let Some(i1) = ins.get(1) {
                b = b.set("stride1", i1.stride).input("in1", i1);
            }
            vec![b
                .output(&out)
                .scalar("rows", Arg::Rows)
                .finish(rows_grid(w, EW_BLOCK), EW_BLOCK)]
        }
        Op::Concat => {
            const NAMES: [&str; 8] = ["in0", "in1", "in2", "in3", "in4", "in5", "in6", "in7"];
            if ins.is_empty() || ins.len() > NAMES.len() {
                return Err(ctx.err(pos, format!("concat of {} operands", ins.len())));
            }
            let mut parts = Vec::new();
            let mut start = 0;
            for i in ins {
                parts.push(json!({ "start": start, "end": start + i.width, "stride": i.stride }));
                start += i.width;
            }
            if start != w {
                return Err(ctx.err(pos, format!("operands sum to width {start}, not {w}")));
            }
            let mut b = Builder::new("concat", act)
                .set("width", w)
                .set("parts", parts);
            for (i, o) in ins.iter().enumerate() {
                b = b.input(NAMES[i], o);
            }
            vec![b
                .output(&out)
                .scalar("rows", Arg::Rows)
                .finish(rows_grid(w, EW_BLOCK), EW_BLOCK)]
        }
        Op::CausalConv1d {
            weight,
            bias,
            state,
        } => {
            let (channels, k, sd) = match ctx.module.states.get(*state) {
                Some(StateSpec::Conv {
                    channels,
                    kernel,
                    dtype,
                    ..
                }) => (*channels, *kernel, *dtype),
                _ => return Err(ctx.err(pos, format!("state {state} is not a conv state"))),
            };
            if channels != w || ins[0].width != w {
                return Err(ctx.err(pos, format!("conv of {channels} channels on width {w}")));
            }
            const BLOCK: usize = 128;
            // Tokens per thread of the conv: enough chunks to fill the GPU on a prompt.
            const CONV_CHUNK: usize = 32;
            let state_arg = |ty| {
                (
                    "state",
                    ty,
                    Arg::State {
                        id: *state,
                        part: 0,
                    },
                )
            };
            let (sn, st, sa) = state_arg(CType::ConstPtr(sd));
            let conv = Builder::new("causal_conv1d", act)
                .set("silu", ctx.epilogue == Epilogue::Silu)
                .set("channels", channels)
                .set("k", k)
                .set("tch", CONV_CHUNK)
                .set("x_stride", ins[0].stride)
                .input("x", &ins[0])
                .weight("weight", ctx, weight)
                .weight("bias", ctx, bias)
                .param(sn, st, sa)
                .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
                .output(&out)
                .scalar("seq", Arg::Seq)
                .finish(
                    [
                        Extent::Const(channels.div_ceil(BLOCK) as u32),
                        Extent::Rows {
                            mul: 1,
                            div: CONV_CHUNK,
                        },
                        Extent::Batch,
                    ],
                    BLOCK,
                );
            let (sn, st, sa) = state_arg(CType::Ptr(sd));
            let update = Builder::new("conv_state_update", act)
                .set("channels", channels)
                .set("k", k)
                .set("x_stride", ins[0].stride)
                .set("state_t", CType::elem(sd))
                .input("x", &ins[0])
                .param(sn, st, sa)
                .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
                .scalar("seq", Arg::Seq)
                .finish(
                    [
                        Extent::Const(channels.div_ceil(BLOCK) as u32),
                        Extent::Batch,
                        Extent::Const(1),
                    ],
                    BLOCK,
                );
            vec![conv, update]
        }
        Op::SsmScan {
            dt_bias,
            a_log,
            d,
            heads,
            head_dim,
            d_state,
            groups,
            dt_min,
            state,
        } => {
            if *groups == 0 || !heads.is_multiple_of(*groups) {
                return Err(ctx.err(pos, format!("{heads} heads in {groups} groups")));
            }
            let sdt = ssm_state_dtype(ctx, *state).map_err(|e| ctx.err(pos, e))?;
            let mut b = Builder::new("ssm_scan", act)
                .set("ssm_t", CType::elem(sdt))
                .set("heads", *heads)
                .set("head_dim", *head_dim)
                .set("d_state", *d_state)
                .set("pn", head_dim * d_state)
                .set("out_width", heads * head_dim)
                .set("heads_per_group", heads / groups)
                .set("nw", SCAN_WARPS)
                .set("pp", head_dim.div_ceil(SCAN_WARPS))
                .set("nn", d_state.div_ceil(32))
                .set("x_stride", ins[0].stride)
                .set("dt_stride", ins[1].stride)
                .set("b_stride", ins[2].stride)
                .set("c_stride", ins[3].stride)
                .set("clamp", dt_min.is_some());
            if let Some(m) = dt_min {
                b = b.set("dt_min", flit(*m));
            }
            vec![b
                .input("x", &ins[0])
                .input("dt", &ins[1])
                .input("bm", &ins[2])
                .input("cm", &ins[3])
                .weight("dt_bias", ctx, dt_bias)
                .weight("a_log", ctx, a_log)
                .weight("d_skip", ctx, d)
                .state("state", sdt, *state, 0)
                .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
                .output(&out)
                .scalar("seq", Arg::Seq)
                .finish(
                    [
                        Extent::Const(*heads as u32),
                        Extent::Batch,
                        Extent::Const(1),
                    ],
                    32 * SCAN_WARPS,
                )]
        }
        Op::GatedRmsNorm {
            weight,
            groups,
            eps,
        } => {
            if *groups == 0 || !w.is_multiple_of(*groups) {
                return Err(ctx.err(pos, format!("width {w} in {groups} groups")));
            }
            vec![Builder::new("gated_rms_norm", act)
                .set("width", w)
                .set("split", ctx.split_out)
                .set("planes", out_planes(ctx))
                .set("group", w / groups)
                .set("eps", flit(*eps))
                .set("y_stride", ins[0].stride)
                .set("z_stride", ins[1].stride)
                .input("y", &ins[0])
                .input("z", &ins[1])
                .weight("weight", ctx, weight)
                .output(&out)
                .finish(
                    [
                        one_per_row(),
                        Extent::Const(*groups as u32),
                        Extent::Const(1),
                    ],
                    256,
                )]
        }
        Op::Attention {
            heads,
            kv_heads,
            head_dim,
            scale,
            rope_theta,
            cache,
        } => attention(
            ctx,
            pos,
            (*heads, *kv_heads, *head_dim, *scale),
            *rope_theta,
            *cache,
        )?,
        Op::Tokens | Op::Slice { .. } => Vec::new(),
        #[allow(unreachable_patterns)]
        other => {
            return Err(ctx.err(
                pos,
                format!(
                    "no CUDA kernel for op {}: emit it through its decomposition",
                    other.name()
                ),
            ))
        }
    })
}

/// `x · Wᵀ`: a GEMV for the decode graph (weights streamed once), a tiled GEMM for prompts and
/// for the decode graph's `decode_rows` table.
fn linear(ctx: &NodeCtx, pos: usize, weight: &str) -> Result<KernelSpec, CodegenError> {
    let x = &ctx.inputs[0];
    let out = &ctx.out;
    let spec = weight_ref(ctx, weight)
        .ok_or_else(|| ctx.err(pos, format!("weight {weight} is not in the table")))?;
    let (n, k) = match spec.shape[..] {
        [n, k] => (n, k),
        _ => return Err(ctx.err(pos, format!("weight {weight} is not a matrix"))),
    };
    if n != out.width || k != x.width {
        return Err(ctx.err(
            pos,
            format!(
                "weight [{n}, {k}] for input width {} and output width {}",
                x.width, out.width
            ),
        ));
    }
    let b = Builder::new("", out.dtype)
        .set("n", n)
        .set("k", k)
        .set("x_stride", x.stride)
        .set("out_stride", out.stride)
        .set("w_stride", spec.row_stride);
    let (b, res) = linear_epilogue(b, ctx.epilogue).map_err(|m| ctx.err(pos, m))?;
    // The three GEMM/GEMV families share one parameter list (x, weight, out, rows); they differ
    // in template, grid and block.
    let kernel = |mut b: Builder, family: &'static str, grid: [Extent; 3], block: usize| {
        b.family = family;
        b.ctx.insert("family".into(), json!(family));
        b = b.input("x", x).weight("weight", ctx, weight);
        if let Some(r) = &res {
            b = b.input("res", r);
        }
        let rows = match ctx.row_stack {
            1 => Arg::Rows,
            m => Arg::RowsTimes(m),
        };
        b.output(out).scalar("rows", rows).finish(grid, block)
    };
    let row_tiles = |tile: usize| Extent::Rows {
        mul: ctx.row_stack,
        div: tile,
    };
    // The decode graph streams weights through the GEMV, except in its `decode_rows` table
    // (`NodeCtx::gemm`), whose projections take the prompt path's GEMMs.
    let gemv = ctx.phase == Phase::Decode && !ctx.gemm;
    if gemv && ctx.row_stack != 1 {
        return Err(ctx.err(pos, "stacked rows on the decode GEMV"));
    }
    Ok(match ctx.phase {
        _ if gemv => {
            let vec = match (x.dtype, spec.dtype) {
                (a, w) if a == w => vec_width(
                    spec.dtype,
                    k,
                    &[x.stride, x.offset, spec.row_stride, spec.offset],
                ),
                // f32 activations beside bf16 or f16 weights: 8 weights (16 B) and two float4
                // loads.
                (DType::F32, w @ (DType::BF16 | DType::F16))
                    if vec_width(DType::F32, k, &[x.stride, x.offset]) == 4
                        && vec_width(w, k, &[spec.row_stride, spec.offset]) == 8 =>
                {
                    8
                }
                _ => 1,
            };
            let b = b
                .set("vec", vec)
                .set("warps", GEMV_WARPS)
                .set("mr", GEMV_ROWS);
            let grid = [
                Extent::Const(n.div_ceil(GEMV_WARPS) as u32),
                Extent::Const(1),
                Extent::Const(1),
            ];
            kernel(b, "linear_gemv", grid, 32 * GEMV_WARPS)
        }
        _ if mma_eligible(x, &spec, k) => {
            // f32 activations: split into two bf16 parts (~16 mantissa bits kept) unless the
            // knob MMA_SPLIT=2 asks for one bf16 rounding (measured in docs/PERFORMANCE.md).
            let split = x.dtype == DType::F32 && spec.dtype == DType::BF16 && mma_split();
            // The tensor-core instruction (`mma_<wt>_16816`) and the conversion of f32
            // activations (`cvt_<wt>x2`) follow the weight's dtype (docs/KERNELS.md "GEMM
            // inputs").
            let wt = if spec.dtype == DType::F16 {
                "f16"
            } else {
                "bf16"
            };
            let b = b
                .set("split", split)
                .set("f32x", x.dtype == DType::F32)
                .set("wt", wt);
            if !pipelined_gemm() {
                // The first tensor-core GEMM (register-staged, one shared stage), kept as the
                // baseline the pipelined one is measured against.
                let grid = [
                    Extent::Const(n.div_ceil(MMA_TILE) as u32),
                    row_tiles(MMA_TILE),
                    Extent::Const(1),
                ];
                let b = b.set("tile", MMA_TILE).set("bk", MMA_BK);
                return Ok(kernel(b, "linear_mma", grid, 32 * MMA_WARPS));
            }
            if rows_gemm(ctx) {
                if let Some(shape) = rows_direct_shape(ctx, (n, k)) {
                    return Ok(rows_direct(b, k, (x.dtype, spec.dtype), shape, kernel));
                }
                return Ok(skinny_gemm(ctx, b, (n, k), kernel));
            }
            // Narrow outputs take 64-row tiles so a 512-token chunk still fills the GPU
            // (2560 features: 20 × 8 blocks rather than 20 × 4).
            let bm = if n <= crate::tune("MMA_NARROW_N", PIPE_NARROW_N) {
                // MMA_NARROW_BM=32: more, thinner blocks for narrow outputs (a measurement).
                match crate::tune("MMA_NARROW_BM", 64) {
                    32 => 32,
                    _ => 64,
                }
            } else {
                128
            };
            let stages = crate::tune("MMA_STAGES", PIPE_STAGES).clamp(2, 6);
            let (x_bytes, xmode) = pipe_x_mode(ctx);
            let b = b.set("xmode", xmode);
            let smem = pipe_smem(stages, bm, MMA_BK, x_bytes);
            let grid = [
                Extent::Const(n.div_ceil(MMA_TILE) as u32),
                row_tiles(bm),
                Extent::Const(1),
            ];
            let b = b
                .set("bm", bm)
                .set("bn", MMA_TILE)
                .set("bk", MMA_BK)
                .set("stages", stages);
            let mut mma = kernel(b, "linear_mma_pipe", grid, 32 * MMA_WARPS);
            mma.smem = smem as u32;
            mma.library = library_gemm(ctx, &spec, (n, k), xmode);
            mma
        }
        _ => {
            let grid = [
                Extent::Const(n.div_ceil(GEMM_TILE) as u32),
                row_tiles(GEMM_TILE),
                Extent::Const(1),
            ];
            let b = b.set("tile", GEMM_TILE).set("bk", GEMM_BK);
            kernel(b, "linear_gemm", grid, GEMM_THREADS)
        }
    })
}

/// How `linear_mma_pipe` stages its input (`xmode`) and the bytes of one x element in shared
/// memory: one f16 plane, two bf16 planes of a presplit input, an f32 value, or one bf16 value.
fn pipe_x_mode(ctx: &NodeCtx) -> (usize, &'static str) {
    match (ctx.presplit, ctx.inputs[0].dtype) {
        (_, DType::F16) => (2, "f16"),
        (true, _) => (4, "presplit"),
        (false, DType::F32) => (4, "f32"),
        _ => (2, "bf16"),
    }
}

/// How a projection GEMM reads f32 activations (docs/KERNELS.md "GEMM inputs"), as the dtype of
/// its input planes and their count, decided by the dtype of its weight: with bf16 (or f32)
/// weights two bf16 planes, `x = hi + lo` (~16 mantissa bits: one bf16 rounding misses the
/// fidelity bar); with f16 weights one f16 plane, x rounded once (11 significant bits, half the
/// tensor-core work and no second product). The planes of a row lie side by side: plane `p` in
/// columns `p·K .. (p+1)·K`. A plan may hold both (`compile --shared-dtype f16`: the shared
/// blocks' projections in f16, the mixers' in bf16); the GEMMs that share one input share its
/// weights' dtype ([`weights_planes`]).
pub(crate) fn gemm_planes(weight_dtype: DType) -> (DType, usize) {
    let dtype = if weight_dtype == DType::F16 {
        DType::F16
    } else {
        DType::BF16
    };
    (dtype, planes_of(dtype))
}

/// The GEMM input planes ([`gemm_planes`]) of the projections by `weights` (table names or
/// views) of one input: their common weight dtype's, or why they have none.
pub(crate) fn weights_planes<'w>(
    ctx: &NodeCtx,
    weights: impl IntoIterator<Item = &'w str>,
) -> Result<(DType, usize), String> {
    let mut dtype = None;
    for w in weights {
        let d = required_weight(ctx, w)?.dtype;
        match dtype {
            None => dtype = Some(d),
            Some(first) if first != d => {
                return Err(format!(
                    "weight {w} is {d} where the other projections of its input are {first}: \
                     one input's GEMMs read one kind of planes"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(gemm_planes(dtype.unwrap_or(ctx.module.dtype)))
}

/// The element type of SSM state `id` (`compile --state-dtype`: f32, or 16-bit rounded when
/// stored), or why `id` is not an SSM state.
pub(crate) fn ssm_state_dtype(ctx: &NodeCtx, id: usize) -> Result<DType, String> {
    match ctx.module.states.get(id) {
        Some(s @ StateSpec::Ssm { .. }) => Ok(s.dtype()),
        _ => Err(format!("state {id} is not an SSM state")),
    }
}

/// Planes in a GEMM input value of `dtype` (f16: one, bf16: hi and lo).
pub(crate) fn planes_of(dtype: DType) -> usize {
    if dtype == DType::F16 {
        1
    } else {
        2
    }
}

/// Planes a norm kernel writes: its GEMM input planes with `split_out`, else one plain value.
fn out_planes(ctx: &NodeCtx) -> usize {
    if ctx.split_out {
        planes_of(ctx.out.dtype)
    } else {
        1
    }
}

/// Dynamic shared memory of `linear_mma_pipe`: `stages` x tiles of `bm` rows and W tiles of
/// `MMA_TILE` features, `bk` columns each plus the 8-element row padding of the template.
fn pipe_smem(stages: usize, bm: usize, bk: usize, x_bytes: usize) -> usize {
    stages * (bm * (bk + 8) * x_bytes + MMA_TILE * (bk + 8) * 2)
}

/// Rows of the split-K GEMM's block tile (`skinny_gemm`): a whole step of up to 64 rows.
const SKINNY_BM: usize = 64;

/// Whether the linears of this table run as the split-K GEMM of a few rows ([`skinny_gemm`]):
/// in `decode_rows` with `ZAMBA2C_TUNE_ROWS_GEMM=2`. Not the default: on a 64-row step of the
/// 2.7B shape its 196 launches took 9.06 ms against 5.14 ms for the library's stacked GEMMs and
/// their `pair_sum` (docs/PERFORMANCE.md, 2026-12-02 sixth session).
pub(crate) fn rows_gemm(ctx: &NodeCtx) -> bool {
    ctx.phase == Phase::Decode && ctx.gemm && matches!(crate::tune("ROWS_GEMM", 1), 2 | 3)
}

/// Warps of a `linear_rows` block, and 8-feature n-tiles per warp.
const ROWS_WARPS: usize = 8;
const ROWS_NTW: usize = 4;
/// The shared memory one `linear_rows` block may have on sm_90 (227 KB).
const ROWS_SMEM_MAX: usize = 227 * 1024;

/// `linear_rows` (templates/linear_rows.cu, docs/KERNELS.md "linear_rows") for this projection
/// of `decode_rows`, with `ZAMBA2C_TUNE_ROWS_GEMM=3`: weights straight from global memory into
/// tensor-core fragments, x staged in shared memory, split-K over the block's warps and a
/// cluster, partials summed in a fixed order (the same bits for a row whatever the step's other
/// rows). Needs 16-bit input planes (bf16 hi/lo or one f16/bf16 plane) and k in whole 16-byte
/// chunks.
///
/// The block's shape trades x traffic against parallelism: `wn` warps side by side along the
/// features share each staged x chunk (at 64 rows of two bf16 planes x is 8 KB a chunk
/// beside the block's `wn`·2 KB of weights), the other `8/wn` split k; a cluster of `splits`
/// blocks splits k further. The widest `wn` whose grid, with clusters of up to 8 (doubled while
/// the grid stays within `ZAMBA2C_TUNE_ROWS_BLOCKS`), still gives every SM a block is taken.
/// (A shape chosen by a waves × block-bytes model, clusters of any size, lost 5% at 64 rows:
/// docs/PERFORMANCE.md, eleventh session.)
fn rows_direct_shape(ctx: &NodeCtx, (n, k): (usize, usize)) -> Option<RowsShape> {
    let direct = crate::tune("ROWS_GEMM", 1) == 3;
    if !direct || ctx.row_stack != 1 {
        return None;
    }
    let (x, out) = (&ctx.inputs[0], &ctx.out);
    let (_, xmode) = pipe_x_mode(ctx);
    let (planes, wt) = match xmode {
        "presplit" => (2, "bf16"),
        "bf16" => (1, "bf16"),
        "f16" => (1, "f16"),
        _ => return None,
    };
    if !k.is_multiple_of(8) || x.stride < planes * k || out.width != n {
        return None;
    }
    let (wn, splits, blocks) = linear_rows_grid(n, k);
    Some(RowsShape {
        wt,
        planes,
        wn,
        splits,
        blocks,
    })
}

/// Blocks of `linear_rows` an SM holds: 1 (142-154 registers), or 2 with
/// `ZAMBA2C_TUNE_ROWS_OCC=2` (a measurement: registers capped at 128, ptxas spills 8 bytes).
fn rows_occupancy() -> usize {
    crate::tune("ROWS_OCC", 1).clamp(1, 2)
}

/// (`wn`, cluster splits, blocks) of a `linear_rows` launch for an `n` × `k` weight
/// ([`rows_direct_shape`] says why).
fn linear_rows_grid(n: usize, k: usize) -> (usize, usize, usize) {
    let kc = k.div_ceil(32);
    let target = crate::tune("ROWS_BLOCKS", 264);
    let min_blocks = crate::tune("ROWS_MIN_BLOCKS", 132);
    // A test may force the cluster's size (`ZAMBA2C_TUNE_ROWS_CLUSTER`, any size up to 8, at
    // most one block a k chunk) to reach sizes a small model would not get.
    let forced = crate::tune("ROWS_CLUSTER", 0);
    // (wn, splits, blocks) for each block shape; the first with enough blocks, else the most.
    let shapes = [8, 4, 2, 1].map(|wn: usize| {
        let wk = ROWS_WARPS / wn;
        let tiles = n.div_ceil(wn * ROWS_NTW * 8);
        let mut s = 1;
        if forced > 0 {
            s = forced.min(kc).clamp(1, 8);
        } else {
            while s < 8 && 2 * tiles * s <= target && kc / (2 * s * wk) >= 2 {
                s *= 2;
            }
        }
        (wn, s, tiles * s)
    });
    shapes
        .iter()
        .copied()
        .find(|&(_, _, b)| b >= min_blocks)
        .unwrap_or_else(|| {
            *shapes
                .iter()
                .max_by_key(|&&(_, _, b)| b)
                .unwrap_or(&shapes[3])
        })
}

/// The block shape of a `linear_rows` launch ([`rows_direct_shape`]).
#[derive(Clone, Copy)]
struct RowsShape {
    wt: &'static str,
    planes: usize,
    wn: usize,
    splits: usize,
    blocks: usize,
}

/// The `linear_rows` launch of shape `sh` on the shared linear parameter list (`kernel`).
fn rows_direct(
    b: Builder,
    k: usize,
    (x, w): (DType, DType),
    sh: RowsShape,
    kernel: impl FnOnce(Builder, &'static str, [Extent; 3], usize) -> KernelSpec,
) -> KernelSpec {
    let wk = ROWS_WARPS / sh.wn;
    let bnb = sh.wn * ROWS_NTW * 8;
    // The parked partial tiles (one 64-row f32 tile per k warp) reuse the x stages' memory
    // (templates/linear_rows.cu): a stage is x for 64 rows of the block's `wk` chunks, 32 k of
    // 16-bit values per plane. As many stages as fit the 227 KB an sm_90 block may have
    // (`ZAMBA2C_TUNE_ROWS_XSTAGES`, default 3, at least 2).
    let red = wk * 64 * (bnb + 4) * 4;
    let stage = wk * sh.planes * 64 * 32 * 2;
    // With two blocks an SM the stages are cut to fit half its shared memory where they can.
    let occ = rows_occupancy();
    let budget = ROWS_SMEM_MAX / occ;
    let fit = if red <= budget { budget / stage } else { 0 };
    let xstages = crate::tune("ROWS_XSTAGES", 3).clamp(2, fit.min(ROWS_SMEM_MAX / stage).max(2));
    let smem = red.max(xstages * stage);
    let mut b = b
        .set("wt", sh.wt)
        .set("w_t", CType::elem(w))
        .set("x_t", CType::elem(x))
        .set("planes", sh.planes)
        .set("ntw", ROWS_NTW)
        .set("xstages", xstages)
        .set("wn", sh.wn)
        .set("wk", wk)
        .set("splits", sh.splits)
        .set("k_tail", !k.is_multiple_of(32))
        // Chunks of weights in flight ahead of the one multiplied (a measurement knob: 2 costs
        // 16 registers a thread).
        .set("ahead", crate::tune("ROWS_AHEAD", 1).clamp(1, 3))
        .set("pdl_inside", true);
    if sh.splits > 1 {
        b = b.set("cluster", sh.splits);
    }
    if occ > 1 {
        b = b.set("min_blocks", occ);
    }
    let grid = [
        Extent::Const(sh.blocks as u32),
        Extent::Rows { mul: 1, div: 64 },
        Extent::Const(1),
    ];
    let mut spec = kernel(b, "linear_rows", grid, 32 * ROWS_WARPS);
    spec.smem = smem as u32;
    spec
}

/// `linear_mma_pipe` for a step of a few rows (docs/KERNELS.md "decode_rows"): one 64-row tile
/// covers the step, and each 128-feature tile is split along k over a thread-block cluster of
/// `splits` blocks, so the weight streams once from enough blocks to fill the GPU (a 2560-wide
/// projection is 20 tiles: 160 blocks with 8 splits); the partial tiles are added in shared
/// memory across the cluster, in rank order. A split input's two planes are multiplied into
/// the same output fragments, so there is no product to add afterwards.
fn skinny_gemm(
    ctx: &NodeCtx,
    b: Builder,
    (n, k): (usize, usize),
    kernel: impl FnOnce(Builder, &'static str, [Extent; 3], usize) -> KernelSpec,
) -> KernelSpec {
    let (x_bytes, xmode) = pipe_x_mode(ctx);
    // Measurement knobs: k-tiles of 64 (half the waits and barriers per weight byte; bf16 tiles
    // only; 3 stages by default so two blocks still fit an SM) and the lo plane's products in
    // accumulators of their own (`ROWS_DUAL=2`, presplit inputs).
    let bk = match crate::tune("ROWS_BK", MMA_BK) {
        64 if xmode != "f32" => 64,
        _ => MMA_BK,
    };
    let stages = crate::tune("ROWS_STAGES", if bk == 64 { 3 } else { 4 }).clamp(2, 6);
    let tiles = n.div_ceil(MMA_TILE);
    let kt = k.div_ceil(bk);
    // Double the splits (up to 8, the portable cluster size) while the grid has fewer than
    // ROWS_BLOCKS blocks (two per SM of an H200) and each split keeps >= 4 k-tiles.
    let target = crate::tune("ROWS_BLOCKS", 264);
    let max_splits = crate::tune("ROWS_SPLITS", 8).clamp(1, 8);
    let mut splits = 1;
    while splits < max_splits && tiles * splits < target && kt / (2 * splits) >= 4 {
        splits *= 2;
    }
    let kts = kt.div_ceil(splits);
    let smem = pipe_smem(stages, SKINNY_BM, bk, x_bytes);
    let mut b = b
        .set("xmode", xmode)
        .set("bm", SKINNY_BM)
        .set("bn", MMA_TILE)
        .set("bk", bk)
        .set("stages", stages)
        .set("skinny", true)
        .set("splits", splits)
        .set("kts", kts)
        .set("pdl_inside", true);
    if splits > 1 {
        b = b.set("cluster", splits);
    }
    if xmode == "presplit" && crate::tune("ROWS_DUAL", 1) == 2 {
        b = b.set("dual", true);
    }
    let grid = [
        Extent::Const((tiles * splits) as u32),
        Extent::Rows {
            mul: ctx.row_stack,
            div: SKINNY_BM,
        },
        Extent::Const(1),
    ];
    let mut mma = kernel(b, "linear_mma_pipe", grid, 32 * MMA_WARPS);
    mma.smem = smem as u32;
    mma
}

/// The projection of a `linear_mma_pipe` launch as a library GEMM, when the library can compute
/// exactly it: bf16 inputs (presplit planes or bf16 activations) or f16 ones (one f16 plane), an f32 output when the input
/// is split (the lo product accumulates into it), and an epilogue that is the GEMM's
/// `beta · C` (a residual in the output's layout, or the output itself). Anything else stays
/// on the kernel alone. `ZAMBA2C_TUNE_LIBRARY_GEMM=0` emits none (a measurement).
fn library_gemm(
    ctx: &NodeCtx,
    weight: &WeightRef,
    (n, k): (usize, usize),
    xmode: &str,
) -> Option<LibraryGemm> {
    let (x, out) = (&ctx.inputs[0], &ctx.out);
    let (split, input) = match xmode {
        "presplit" => (true, DType::BF16),
        "bf16" => (false, DType::BF16),
        "f16" => (false, DType::F16),
        _ => return None,
    };
    if crate::tune("LIBRARY_GEMM", 1) != 1
        || x.dtype != input
        || weight.dtype != input
        || !matches!(out.dtype, DType::F32 | DType::BF16)
        || (split && out.dtype != DType::F32)
    {
        return None;
    }
    let epilogue = match &ctx.epilogue {
        Epilogue::None => LibraryEpilogue::None,
        Epilogue::Accumulate => LibraryEpilogue::Accumulate,
        Epilogue::Residual(r) if r.stride == out.stride && r.dtype == out.dtype => {
            LibraryEpilogue::Residual(r.arg())
        }
        _ => return None,
    };
    Some(LibraryGemm {
        n,
        k,
        x: x.arg(),
        x_ld: x.stride,
        split,
        input,
        weight: weight.arg(),
        w_ld: weight.row_stride,
        out: out.arg(),
        out_ld: out.stride,
        out_dtype: out.dtype,
        epilogue,
        row_stack: ctx.row_stack,
    })
}

/// Whether prompt GEMMs keep ~16 bits of f32 activations (hi + lo bf16 parts): the default,
/// because one bf16 rounding misses the fidelity bar (docs/PERFORMANCE.md, 2026-12-01: 4.0e-2,
/// top-1 93% on the 2.7B shape). `ZAMBA2C_TUNE_MMA_SPLIT=2` rounds once, for measurements.
pub(crate) fn mma_split() -> bool {
    crate::tune("MMA_SPLIT", 1) == 1
}

/// Whether prompt GEMMs use the pipelined kernel (`linear_mma_pipe`); `ZAMBA2C_TUNE_MMA_KERNEL=1`
/// keeps the first, register-staged one as a baseline for measurements.
fn pipelined_gemm() -> bool {
    crate::tune("MMA_KERNEL", 2) != 1
}

/// Whether a prompt linear of `x` by weight `w` (a table name or view) runs on the pipelined
/// tensor-core GEMM, so its f32 input can be made into GEMM input planes once beforehand
/// ([`gemm_input_planes`]).
pub(crate) fn presplit_eligible(ctx: &NodeCtx, x: &Operand, w: &str) -> bool {
    x.dtype == DType::F32
        && pipelined_gemm()
        && weight_ref(ctx, w).is_some_and(|r| {
            (mma_split() || gemm_planes(r.dtype).1 == 1)
                && r.shape.len() == 2
                && r.shape[1] == x.width
                && mma_eligible(x, &r, x.width)
        })
}

/// f32 activations made once into the GEMM input planes ([`gemm_planes`]) the GEMMs that read them
/// take: with a bf16 `out` of width 2K, `out[:, 0..K] = bf16(x)`, `out[:, K..2K] = bf16(x −
/// bf16(x))` (templates/split_bf16.cu); with an f16 `out` of width K, `f16(x)`
/// (templates/round_f16.cu).
pub(crate) fn gemm_input_planes(x: &Operand, out: &Operand) -> KernelSpec {
    const BLOCK: usize = 256;
    let k = x.width;
    let family = match out.dtype {
        DType::F16 => "round_f16",
        _ => "split_bf16",
    };
    Builder::new(family, DType::F32)
        .set("k", k)
        .set("x_stride", x.stride)
        .set("out_stride", out.stride)
        .input("x", x)
        .output(out)
        .scalar("rows", Arg::Rows)
        .cost(LaunchCost {
            bytes_per_row: (k * 4 + planes_of(out.dtype) * k * 2) as u64,
            ..Default::default()
        })
        .finish(rows_grid(k, 4 * BLOCK), BLOCK)
}

/// Whether [`gelu_mul`] reads `gu` (gate and up of `inter` columns each, act values) four values
/// at a time: its rows and both halves start on whole 4-value pieces.
pub(crate) fn gelu_mul_fits(act: DType, gu: &Operand, inter: usize) -> bool {
    (inter | gu.offset | gu.stride).is_multiple_of(4) && gu.width == 2 * inter && gu.dtype == act
}

/// GELU(gate)·up of a gated MLP's prompt rows in one launch (templates/gelu_mul.cu): `gu` holds
/// gate in columns 0..inter and up in inter..2·inter (act dtype); `out` is the down
/// projection's input as it reads it: GEMM input planes (`planes`: bf16 hi/lo of width
/// 2·inter, or one f16 plane) or act values. The same values as the `gelu` and `mul`
/// elementwise kernels followed by `split_bf16`/`round_f16`. `None` where `gu` does not fit
/// ([`gelu_mul_fits`]) or `out` is not in whole 4-value pieces of that form (then those kernels
/// run).
pub(crate) fn gelu_mul(
    act: DType,
    gu: &Operand,
    out: &Operand,
    inter: usize,
    planes: bool,
) -> Option<KernelSpec> {
    const BLOCK: usize = 256;
    if !gelu_mul_fits(act, gu, inter) || !(out.offset | out.stride).is_multiple_of(4) {
        return None;
    }
    let mode = match (planes, out.dtype) {
        (true, DType::BF16) if out.width == 2 * inter => "bf16",
        (true, DType::F16) if out.width == inter => "f16",
        (false, d) if d == act && out.width == inter => "plain",
        _ => return None,
    };
    Some(
        Builder::new("gelu_mul", act)
            .set("width", inter)
            .set("mode", mode)
            .set("gu_stride", gu.stride)
            .set("out_stride", out.stride)
            .input("gu", gu)
            .output(out)
            .scalar("rows", Arg::Rows)
            .cost(LaunchCost {
                bytes_per_row: (2 * inter * act.size() + out.width * out.dtype.size()) as u64,
                flops_per_row: (20 * inter) as u64,
                ..Default::default()
            })
            .finish(rows_grid(inter, 4 * BLOCK), BLOCK),
    )
}

/// The greedy token of each row of `logits` into the i32 value `ids` (templates/argmax_rows.cu):
/// the first index of the largest logit, as the host's `argmax` picks it, so a batched step can
/// download one id a row instead of the logits (`GraphProgram::greedy`).
pub(crate) fn argmax_rows(logits: &Operand, ids: &Operand) -> KernelSpec {
    const BLOCK: usize = 512;
    let w = logits.width;
    Builder::new("argmax_rows", logits.dtype)
        .set("width", w)
        .set("x_stride", logits.stride)
        .input("logits", logits)
        .output(ids)
        .cost(LaunchCost {
            bytes_per_row: (w * logits.dtype.size() + 4) as u64,
            flops_per_row: w as u64,
            ..Default::default()
        })
        .finish([one_per_row(), Extent::Const(1), Extent::Const(1)], BLOCK)
}

/// A row scale [`pair_sum`] applies to the summed products before the epilogue: `1 /
/// sqrt(Σ ws[row][0..parts] / count + eps)`, a norm's statistics from partial sums
/// (`decode_rows`: the mixer's gated norm after out_proj, mixer::NormAfter).
pub(crate) struct RowScale {
    pub ws: Operand,
    pub parts: usize,
    pub count: usize,
    pub eps: f32,
}

impl RowScale {
    /// The template values and the workspace parameter `pair_sum` takes to apply this scale
    /// (templates/pair_sum.cu: `parts`, `count`, `eps`, `ws_stride`, `norm_ws`), or why the
    /// workspace does not hold the partial sums.
    fn params(&self, b: Builder) -> Result<Builder, String> {
        if self.ws.dtype != DType::F32
            || self.ws.width < self.parts
            || self.parts == 0
            || self.count == 0
        {
            return Err(format!(
                "a row scale of {} partial sums from {} values of width {}",
                self.parts, self.ws.dtype, self.ws.width
            ));
        }
        Ok(b.set("parts", self.parts)
            .set("count", self.count)
            .set("eps", flit(self.eps))
            .set("ws_stride", self.ws.stride)
            .input("norm_ws", &self.ws))
    }
}

/// `out = prod[:, 0..n] + prod[:, n..2n]` with `epilogue` (templates/pair_sum.cu): the hi and lo
/// products of a split input, computed by one GEMM over stacked rows, added into a linear's
/// output as `linear_mma_pipe` would have written it; the sum times `scale` where given. `prod`
/// is f32 of width 2n.
pub(crate) fn pair_sum(
    prod: &Operand,
    out: &Operand,
    epilogue: Epilogue,
    scale: Option<&RowScale>,
) -> Result<KernelSpec, String> {
    let n = out.width;
    if prod.dtype != DType::F32 || prod.width != 2 * n {
        return Err(format!(
            "{} products of width {} for an output of width {n}",
            prod.dtype, prod.width
        ));
    }
    let mut b = Builder::new("pair_sum", out.dtype)
        .set("width", n)
        .set("prod_stride", prod.stride)
        .set("out_stride", out.stride)
        .set("scaled", scale.is_some())
        .input("prod", prod);
    let mut scale_bytes = 0;
    if let Some(s) = scale {
        b = s.params(b)?;
        scale_bytes = 4 * s.parts;
    }
    let (mut b, res) = linear_epilogue(b, epilogue)?;
    let res_bytes = scale_bytes
        + match (epilogue, res) {
            (_, Some(r)) => {
                b = b.input("res", &r);
                n * r.dtype.size()
            }
            (Epilogue::Accumulate, _) => n * out.dtype.size(),
            _ => 0,
        };
    Ok(b.output(out)
        .scalar("rows", Arg::Rows)
        .cost(LaunchCost {
            bytes_per_row: (2 * n * 4 + res_bytes + n * out.dtype.size()) as u64,
            flops_per_row: 2 * n as u64,
            ..Default::default()
        })
        .finish(rows_grid(n, EW_BLOCK), EW_BLOCK))
}

/// A linear's `epilogue` as templates/linear_epilogue.cu reads it (`epi`, `res_stride`), for
/// every kernel that ends a projection (the GEMV/GEMM families, `pair_sum`); the residual
/// operand, which the caller passes as parameter `res` where its parameter list has it.
fn linear_epilogue(
    b: Builder,
    epilogue: Epilogue,
) -> Result<(Builder, Option<Operand>), &'static str> {
    Ok(match epilogue {
        Epilogue::None => (b.set("epi", "none"), None),
        Epilogue::Residual(r) => (
            b.set("epi", "residual").set("res_stride", r.stride),
            Some(r),
        ),
        Epilogue::Accumulate => (b.set("epi", "accumulate"), None),
        Epilogue::Silu => return Err("a linear has no SiLU epilogue"),
    })
}

/// Whether the prompt-path linear can use the tensor-core kernel (`templates/linear_mma.cu`):
/// bf16 weights, f32 or bf16 activations, and K, both row strides and both column offsets
/// multiples of 8 elements, so every global load is a whole, 16-byte aligned 8-element k chunk
/// (buffers themselves are allocated aligned). Anything else takes the FMA GEMM.
fn mma_eligible(x: &Operand, w: &WeightRef, k: usize) -> bool {
    let types = match w.dtype {
        DType::BF16 => matches!(x.dtype, DType::F32 | DType::BF16),
        // f16 weights: f32 activations rounded once to f16, or f16 planes; on the pipelined
        // kernel only (docs/KERNELS.md "GEMM inputs").
        DType::F16 => matches!(x.dtype, DType::F32 | DType::F16) && pipelined_gemm(),
        _ => false,
    };
    types
        && k > 0
        && [k, x.stride, x.offset, w.row_stride, w.offset]
            .iter()
            .all(|v| v.is_multiple_of(8))
}

/// KV-cache append (with RoPE on k) and causal attention over the cache: two kernels.
fn attention(
    ctx: &NodeCtx,
    pos: usize,
    (heads, kv_heads, d, scale): (usize, usize, usize, f32),
    rope_theta: Option<f32>,
    cache: usize,
) -> Result<Vec<KernelSpec>, CodegenError> {
    let act = ctx.out.dtype;
    let (q, k, v) = (&ctx.inputs[0], &ctx.inputs[1], &ctx.inputs[2]);
    let cd = match ctx.module.states.get(cache) {
        Some(StateSpec::Kv {
            kv_heads: kh,
            head_dim,
            dtype,
            ..
        }) if *kh == kv_heads && *head_dim == d => *dtype,
        _ => return Err(ctx.err(pos, format!("state {cache} is not a matching KV cache"))),
    };
    if kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
        || (rope_theta.is_some() && !d.is_multiple_of(2))
    {
        return Err(ctx.err(pos, format!("{heads} heads, {kv_heads} kv heads, d = {d}")));
    }
    let inv_freq = rope_theta
        .map(|t| {
            rope_inv_freq(t, d)
                .into_iter()
                .map(flit)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let common = |family: &'static str| {
        Builder::new(family, act)
            .set("d", d)
            .set("half", d / 2)
            .set("kv_heads", kv_heads)
            .set("rope", rope_theta.is_some())
            .set("inv_freq", inv_freq.clone())
    };
    let kcache = |ty| ("kcache", ty, Arg::State { id: cache, part: 0 });
    let vcache = |ty| ("vcache", ty, Arg::State { id: cache, part: 1 });
    let (kn, kt, ka) = kcache(CType::Ptr(cd));
    let (vn, vt, va) = vcache(CType::Ptr(cd));
    let append = common("kv_append")
        .set("cache_t", CType::elem(cd))
        .set("k_stride", k.stride)
        .set("v_stride", v.stride)
        .input("k", k)
        .input("v", v)
        .param(kn, kt, ka)
        .param(vn, vt, va)
        .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
        .scalar("seq", Arg::Seq)
        .scalar("cap", Arg::Capacity)
        .finish(
            [
                one_per_row(),
                Extent::Const(kv_heads as u32),
                Extent::Const(1),
            ],
            128,
        );
    // Both attention kernels take one parameter list: q, the caches, meta, out, seq, cap.
    let attend_params = |b: Builder| {
        let (kn, kt, ka) = kcache(CType::ConstPtr(cd));
        let (vn, vt, va) = vcache(CType::ConstPtr(cd));
        b.input("q", q)
            .param(kn, kt, ka)
            .param(vn, vt, va)
            .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
            .output(&ctx.out)
            .scalar("seq", Arg::Seq)
            .scalar("cap", Arg::Capacity)
    };
    // Prompts: the tensor-core kernel where it serves the head size (crate::flash); decode
    // (when attention_decode does not serve it) and other head sizes (not a multiple of 16,
    // or above 256) keep the one-block-per-query kernel below.
    let split = crate::tune("ATTN_SPLIT", 1) == 1;
    let flash = (ctx.phase == Phase::Prompt)
        .then(|| crate::flash::flash_plan(d, act, cd, split))
        .flatten();
    if let Some(plan) = flash {
        let mut b = common("attention_flash")
            .set("heads", heads)
            .set("group", heads / kv_heads)
            .set("scale", flit(scale))
            .set("cache_t", CType::elem(cd))
            .set("q_stride", q.stride)
            .set("out_stride", ctx.out.stride);
        for (k, v) in plan.context() {
            b = b.set(k, v);
        }
        let mut attend = attend_params(b).finish(
            [
                Extent::Const(heads as u32),
                Extent::SeqDiv {
                    div: crate::flash::FLASH_QT,
                },
                Extent::Batch,
            ],
            crate::flash::FLASH_THREADS,
        );
        attend.smem = plan.smem as u32;
        return Ok(vec![append, attend]);
    }
    let attend = common("attention")
        .set("heads", heads)
        .set("group", heads / kv_heads)
        .set("scale", flit(scale))
        .set("nw", ATTN_WARPS)
        .set("dd", d.div_ceil(32))
        .set("q_stride", q.stride)
        .set("out_width", heads * d);
    let attend = attend_params(attend).finish(
        [Extent::Const(heads as u32), one_per_row(), Extent::Const(1)],
        32 * ATTN_WARPS,
    );
    Ok(vec![append, attend])
}
