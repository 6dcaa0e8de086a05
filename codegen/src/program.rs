//! The kernel program of a module: kernels (deduplicated, by name), and per graph the values
//! (activation buffers and views) and the launches in execution order.

use std::collections::BTreeMap;

use petgraph::stable_graph::NodeIndex;
use zamba2c_ir::fused::Operand as FusedOperand;
pub use zamba2c_ir::kernel::{
    Arg, CType, Decomposed, Extent, GraphId, GraphProgram, Kernel, Launch, Param, Program, Storage,
    Value,
};
use zamba2c_ir::{DType, Dim, Graph, Module, Op, Phase};

use crate::families::{self, KernelSpec};
use crate::render::Renderer;
use crate::CodegenError;

/// A value as a kernel operand: its root storage, column offset and row stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operand {
    pub value: usize,
    pub root: usize,
    pub offset: usize,
    pub stride: usize,
    pub width: usize,
    pub dtype: DType,
}

impl Operand {
    /// The argument that passes this operand.
    pub fn arg(&self) -> Arg {
        Arg::Value {
            value: self.root,
            offset: self.offset,
        }
    }
}

/// Builds the program of `module`: the prompt graph, the decode graph, and the decode graph
/// again with its projections on the tensor-core GEMM (`decode_rows`, docs/KERNELS.md),
/// kernels deduplicated across them. The prompt and decode tables are built first, so their
/// kernels and names are what they are without the third.
pub fn build_program(module: &Module) -> Result<Program, CodegenError> {
    let renderer = Renderer::new()?;
    let mut kernels = Kernels {
        by_key: BTreeMap::new(),
        kernels: BTreeMap::new(),
        renderer,
    };
    let prompt = build_graph(module, &module.prompt, GraphId::Prompt, &mut kernels)?;
    let decode = build_graph(module, &module.decode, GraphId::Decode, &mut kernels)?;
    let decode_rows = build_graph(module, &module.decode, GraphId::DecodeRows, &mut kernels)?;
    Ok(Program {
        kernels: kernels.kernels,
        prompt,
        decode,
        decode_rows: Some(decode_rows),
    })
}

/// Kernels generated so far, deduplicated by family and context.
struct Kernels {
    by_key: BTreeMap<String, String>,
    kernels: BTreeMap<String, Kernel>,
    renderer: Renderer,
}

impl Kernels {
    /// The name of the kernel for `spec`, rendering it if it is new.
    fn get(&mut self, spec: &KernelSpec, tag: &str) -> Result<String, CodegenError> {
        self.get_context(spec.family, &spec.context, &spec.params, tag)
    }

    /// The name of the kernel of `family` with template context `context` and parameters
    /// `params`, rendering it if it is new.
    fn get_context(
        &mut self,
        family: &'static str,
        context: &str,
        params: &[Param],
        tag: &str,
    ) -> Result<String, CodegenError> {
        let key = format!("{family}:{context}");
        if let Some(name) = self.by_key.get(&key) {
            return Ok(name.clone());
        }
        let mut name = format!("z2c_{family}_{tag}");
        let mut n = 1;
        while self.kernels.contains_key(&name) {
            name = format!("z2c_{family}_{tag}_{n}");
            n += 1;
        }
        let source = self.renderer.render_context(family, context, &name)?;
        self.by_key.insert(key, name.clone());
        self.kernels.insert(
            name.clone(),
            Kernel {
                name: name.clone(),
                family: family.to_string(),
                params: params.to_vec(),
                source,
            },
        );
        Ok(name)
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Prompt => "prompt",
        Phase::Decode => "decode",
    }
}

fn width_of(shape: &[zamba2c_ir::Dim]) -> usize {
    match shape.last() {
        Some(zamba2c_ir::Dim::Fixed(n)) => *n,
        _ => 1,
    }
}

/// Everything a family needs to build the kernel of one node.
pub struct NodeCtx<'a> {
    pub module: &'a Module,
    pub phase: Phase,
    pub op: &'a Op,
    pub inputs: Vec<Operand>,
    pub out: Operand,
    pub label: &'a str,
    /// What a fused op's kernel adds after the base op (crate::fused's prompt path).
    pub epilogue: Epilogue,
    /// A linear's input is bf16 `hi` columns with the `lo` part K columns later in the same
    /// rows (split beforehand by `split_bf16`, crate::fused's prompt path).
    pub presplit: bool,
    /// Projections lower as the prompt path lowers them (norm kernels, presplit inputs, the
    /// tensor-core GEMM with epilogues) while state ops keep their decode kernels: the decode
    /// graph's `decode_rows` launch table (docs/KERNELS.md "decode_rows").
    pub gemm: bool,
    /// A linear's input and output hold this many GEMM rows per row of the call (1; 2 for the
    /// hi and lo planes of a split input stacked as rows, `LibraryGemm::row_stack`).
    pub row_stack: usize,
    /// A norm's f32 result is written as the split bf16 planes its GEMMs read (hi, then lo
    /// `width` columns later in the same row; templates/split_bf16.cu's rule), not as f32.
    pub split_out: bool,
    /// The node's value is its projection's two products side by side, `[hi·Wᵀ | lo·Wᵀ]` (f32,
    /// twice the width), which its one consumer sums as it reads them instead of a `pair_sum`
    /// launch (`decode_rows`; [`pair_foldable`]).
    pub pair_out: bool,
}

/// Work a base kernel does after its op, for fused ops built from base kernels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Epilogue {
    #[default]
    None,
    /// `out = r + y` (a linear's residual add, rounded as the Add it replaces).
    Residual(Operand),
    /// `out = out + y` (a LoRA adapter's product added to the base projection already in `out`).
    Accumulate,
    /// `out = silu(y)` (the conv's SiLU).
    Silu,
}

impl NodeCtx<'_> {
    /// An error about this node.
    pub fn err(&self, pos: usize, msg: impl Into<String>) -> CodegenError {
        CodegenError::Node {
            phase: phase_name(self.phase),
            node: pos,
            label: self.label.to_string(),
            msg: msg.into(),
        }
    }
}

fn build_graph(
    module: &Module,
    graph: &Graph,
    id: GraphId,
    kernels: &mut Kernels,
) -> Result<GraphProgram, CodegenError> {
    let order = graph.topo_order();
    let pos_of: BTreeMap<NodeIndex, usize> =
        order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut b = GraphBuilder {
        module,
        phase: graph.phase,
        gemm: id == GraphId::DecodeRows,
        tag: match id {
            GraphId::Prompt => 'p',
            GraphId::Decode => 'd',
            GraphId::DecodeRows => 'r',
        },
        values: Vec::with_capacity(order.len()),
        launches: Vec::new(),
        decomposed: Vec::new(),
        seq_align: 1,
        zeroed: Vec::new(),
        kernels,
        pair_out: false,
    };
    let mut node_values = Vec::with_capacity(order.len());
    let mut tokens = None;
    for (pos, &n) in order.iter().enumerate() {
        let node = &graph.g[n];
        let v = if let Op::Tokens = node.op {
            tokens = Some(b.values.len());
            b.push_value(Some(pos), 1, DType::I32)
        } else {
            let ins: Vec<Operand> = graph
                .inputs(n)
                .iter()
                .map(|i| b.operand(node_values[pos_of[i]]))
                .collect();
            let at = At {
                pos,
                label: &node.label,
                step: None,
            };
            b.pair_out = b.gemm && pair_foldable(graph, n);
            let v = b.emit(&node.op, ins, width_of(&node.shape), node.dtype, &at);
            b.pair_out = false;
            v?
        };
        if b.values[v].node.is_none() {
            b.values[v].node = Some(pos);
        }
        node_values.push(v);
    }
    let outputs: Vec<usize> = graph
        .outputs
        .iter()
        .map(|o| node_values[pos_of[o]])
        .collect();
    // A batched step's greedy tokens on the device (`GraphProgram::greedy`): one id a row to
    // download instead of the logits (64 × 32000 f32 a 64-row step on the 2.7B shape).
    let greedy = match (id, outputs.first()) {
        (GraphId::DecodeRows, Some(&logits)) if order.len() > 1 => {
            let ids = b.push_value(None, 1, DType::I32);
            let spec = families::argmax_rows(&b.operand(logits), &b.operand(ids));
            let at = At {
                pos: order.len() - 1,
                label: "greedy tokens",
                step: None,
            };
            b.push_launches(vec![spec], &at)?;
            Some(ids)
        }
        _ => None,
    };
    let tokens = tokens.ok_or_else(|| CodegenError::Node {
        phase: phase_name(graph.phase),
        node: 0,
        label: String::new(),
        msg: "the graph has no Tokens input".into(),
    })?;
    Ok(GraphProgram {
        phase: graph.phase,
        nodes: order,
        node_values,
        values: b.values,
        tokens,
        outputs,
        launches: b.launches,
        decomposed: b.decomposed,
        seq_align: b.seq_align,
        zeroed: Some(b.zeroed),
        greedy,
    })
}

/// Where an op being emitted sits: its graph node, and its step when it is part of a fused
/// op's decomposition.
struct At<'a> {
    pos: usize,
    label: &'a str,
    step: Option<usize>,
}

struct GraphBuilder<'a> {
    module: &'a Module,
    phase: Phase,
    /// `NodeCtx::gemm` for every node (the `decode_rows` table).
    gemm: bool,
    tag: char,
    values: Vec<Value>,
    launches: Vec<Launch>,
    decomposed: Vec<Decomposed>,
    /// Largest `seq_align` of any launch (GraphProgram::seq_align).
    seq_align: usize,
    /// Temporaries a kernel expects zero at launch and leaves zero (`GraphProgram::zeroed`).
    zeroed: Vec<usize>,
    kernels: &'a mut Kernels,
    /// The node being emitted may leave its projection's product pair ([`pair_foldable`]).
    pair_out: bool,
}

impl GraphBuilder<'_> {
    fn push_value(&mut self, node: Option<usize>, width: usize, dtype: DType) -> usize {
        self.values.push(Value {
            node,
            width,
            dtype,
            storage: Storage::Own,
            row_stride: width,
        });
        self.values.len() - 1
    }

    fn operand(&self, v: usize) -> Operand {
        let val = &self.values[v];
        let (root, offset) = match val.storage {
            Storage::Own => (v, 0),
            Storage::View { of, offset } => (of, offset),
        };
        Operand {
            value: v,
            root,
            offset,
            stride: val.row_stride,
            width: val.width,
            dtype: val.dtype,
        }
    }

    fn err(&self, at: &At, msg: impl Into<String>) -> CodegenError {
        let msg = msg.into();
        CodegenError::Node {
            phase: phase_name(self.phase),
            node: at.pos,
            label: at.label.to_string(),
            msg: match at.step {
                Some(s) => format!("step {s} of its decomposition: {msg}"),
                None => msg,
            },
        }
    }

    /// Emits `op` on `ins` and returns the value holding its output: a view for a slice, the
    /// last step's value for a fused op (emitted through `op.decompose()`, one base kernel
    /// per step), else a new buffer written by the op's kernels.
    fn emit(
        &mut self,
        op: &Op,
        ins: Vec<Operand>,
        width: usize,
        dtype: DType,
        at: &At,
    ) -> Result<usize, CodegenError> {
        if let Op::Slice { start, len } = op {
            let src = *ins
                .first()
                .ok_or_else(|| self.err(at, "slice without an operand"))?;
            if start + len > src.width {
                return Err(self.err(
                    at,
                    format!("slice {start}..{} of width {}", start + len, src.width),
                ));
            }
            self.values.push(Value {
                node: None,
                width: *len,
                dtype: src.dtype,
                storage: Storage::View {
                    of: src.root,
                    offset: src.offset + start,
                },
                row_stride: src.stride,
            });
            return Ok(self.values.len() - 1);
        }
        // A plain Linear takes the fused projections' path too: the decode graph's streaming
        // kernel, and in prompts the input split once into bf16 planes (so the GEMM can run as
        // a library GEMM).
        let plain_linear = matches!(op, Op::Linear { .. });
        if (op.is_fused() || plain_linear) && at.step.is_none() {
            match self.emit_fused(op, &ins, width, dtype, at)? {
                Ok(v) => return Ok(v),
                Err(_) if plain_linear => {}
                Err(reason) => self.decomposed.push(Decomposed {
                    node: at.pos,
                    label: at.label.to_string(),
                    op: op.name().to_string(),
                    reason,
                }),
            }
        }
        if let Some(steps) = op.decompose() {
            let seq = zamba2c_ir::verify::seq_dim(self.phase);
            let mut outs: Vec<usize> = Vec::with_capacity(steps.len());
            for (i, s) in steps.iter().enumerate() {
                let step_at = At {
                    pos: at.pos,
                    label: at.label,
                    step: Some(i),
                };
                let mut sins = Vec::with_capacity(s.operands.len());
                for o in &s.operands {
                    let v = match *o {
                        FusedOperand::Input(j) => ins.get(j).map(|x| x.value).ok_or_else(|| {
                            self.err(&step_at, format!("reads missing input {j}"))
                        })?,
                        FusedOperand::Step(j) if j < i => outs[j],
                        FusedOperand::Step(j) => {
                            return Err(self.err(&step_at, format!("reads step {j}, not earlier")))
                        }
                    };
                    sins.push(self.operand(v));
                }
                let shapes: Vec<zamba2c_ir::Shape> = sins
                    .iter()
                    .map(|x| vec![Dim::Batch, seq, Dim::Fixed(x.width)])
                    .collect();
                let refs: Vec<&zamba2c_ir::Shape> = shapes.iter().collect();
                let shape = zamba2c_ir::verify::infer_shape(self.module, self.phase, &s.op, &refs)
                    .map_err(|e| self.err(&step_at, e))?;
                let v = self.emit(&s.op, sins, width_of(&shape), dtype, &step_at)?;
                outs.push(v);
            }
            return outs
                .last()
                .copied()
                .ok_or_else(|| self.err(at, "empty decomposition"));
        }
        let v = self.push_value(None, width, dtype);
        let out = self.operand(v);
        if let (Op::Attention { .. }, Phase::Decode) = (op, self.phase) {
            if let Some(spec) = self.attention_decode(op, &ins, out)? {
                self.push_launches(vec![spec], at)?;
                return Ok(v);
            }
        }
        let ctx = NodeCtx {
            module: self.module,
            phase: self.phase,
            op,
            inputs: ins,
            out,
            label: at.label,
            epilogue: Epilogue::None,
            presplit: false,
            gemm: self.gemm,
            row_stack: 1,
            split_out: false,
            pair_out: false,
        };
        let specs = families::specs(&ctx, at.pos).map_err(|e| match e {
            CodegenError::Node { msg, .. } => self.err(at, msg),
            e => e,
        })?;
        self.push_launches(specs, at)?;
        Ok(v)
    }

    /// Renders (or reuses) each spec's kernel and appends its launch for the node at `at`.
    fn push_launches(&mut self, specs: Vec<KernelSpec>, at: &At) -> Result<(), CodegenError> {
        let tag = match at.step {
            None => format!("{}{}", self.tag, at.pos),
            Some(s) => format!("{}{}_{s}", self.tag, at.pos),
        };
        for spec in specs {
            let name = self.kernels.get(&spec, &tag)?;
            let batched = match &spec.batched {
                Some(c) => Some(self.kernels.get_context(
                    spec.family,
                    c,
                    &spec.params,
                    &format!("{tag}_rows"),
                )?),
                None => None,
            };
            self.seq_align = self.seq_align.max(spec.seq_align);
            self.launches.push(Launch {
                kernel: name,
                node: at.pos,
                args: spec.args,
                grid: spec.grid,
                block: spec.block,
                smem: spec.smem,
                cost: spec.cost,
                batched,
                library: spec.library,
            });
        }
        Ok(())
    }

    /// A kernel-internal temporary `[rows, width]` (not an IR value).
    /// Drops the values from `mark` on (temporaries of an attempt that did not emit).
    fn drop_values_from(&mut self, mark: usize) {
        self.values.truncate(mark);
        self.zeroed.retain(|&v| v < mark);
    }

    fn temp(&mut self, width: usize, dtype: DType) -> Operand {
        let v = self.push_value(None, width, dtype);
        self.operand(v)
    }

    /// A fused op through its kernel family (crate::fused): the output value, or why the family
    /// cannot serve it (then the caller decomposes it). Temporaries a failed attempt allocated
    /// are dropped again.
    fn emit_fused(
        &mut self,
        op: &Op,
        ins: &[Operand],
        width: usize,
        dtype: DType,
        at: &At,
    ) -> Result<Result<usize, String>, CodegenError> {
        // The product pair where the node may leave it; where its kernels cannot, the plain
        // value (the consumer tells the two apart by the width).
        if self.pair_out && at.step.is_none() {
            if let Ok(v) = self.try_fused(op, ins, 2 * width, dtype, at, true)? {
                return Ok(Ok(v));
            }
        }
        self.try_fused(op, ins, width, dtype, at, false)
    }

    /// One attempt of [`GraphBuilder::emit_fused`] into a new value of `width`, as the product
    /// pair with `pair_out`.
    fn try_fused(
        &mut self,
        op: &Op,
        ins: &[Operand],
        width: usize,
        dtype: DType,
        at: &At,
        pair_out: bool,
    ) -> Result<Result<usize, String>, CodegenError> {
        let mark = self.values.len();
        let v = self.push_value(None, width, dtype);
        let out = self.operand(v);
        let ctx = NodeCtx {
            module: self.module,
            phase: self.phase,
            op,
            inputs: ins.to_vec(),
            out,
            label: at.label,
            epilogue: Epilogue::None,
            presplit: false,
            gemm: self.gemm,
            row_stack: 1,
            split_out: false,
            pair_out,
        };
        let mut temp = |w, d, init| {
            let t = self.temp(w, d);
            if init == crate::fused::Init::Zero {
                self.zeroed.push(t.value);
            }
            t
        };
        match crate::fused::fused_specs(&ctx, &mut temp) {
            Ok(specs) => {
                self.push_launches(specs, at)?;
                Ok(Ok(v))
            }
            Err(reason) => {
                self.drop_values_from(mark);
                Ok(Err(reason))
            }
        }
    }

    /// Decode attention through `attention_decode` (split over the cache, append folded in),
    /// with its workspace and counters; `None` when that family does not fit the shape.
    fn attention_decode(
        &mut self,
        op: &Op,
        ins: &[Operand],
        out: Operand,
    ) -> Result<Option<KernelSpec>, CodegenError> {
        let Op::Attention {
            heads,
            kv_heads,
            head_dim,
            scale,
            rope_theta,
            cache,
        } = *op
        else {
            return Ok(None);
        };
        let cache_dtype = match self.module.states.get(cache) {
            Some(zamba2c_ir::StateSpec::Kv {
                kv_heads: k,
                head_dim: d,
                dtype,
                ..
            }) if *k == kv_heads && *d == head_dim => *dtype,
            _ => return Ok(None),
        };
        if ins.len() != 3
            || kv_heads == 0
            || !heads.is_multiple_of(kv_heads)
            || (rope_theta.is_some() && !head_dim.is_multiple_of(2))
        {
            return Ok(None);
        }
        let rope = rope_theta.map(|t| {
            families::rope_inv_freq(t, head_dim)
                .into_iter()
                .map(families::flit)
                .collect::<Vec<_>>()
                .join(", ")
        });
        let mark = self.values.len();
        let ws = self.temp(
            heads * crate::fused::attn_splits(self.gemm) * (head_dim + 2),
            DType::F32,
        );
        // Each split bumps its head's counter and the last one resets it to zero: the
        // counters must start at zero and nothing else may use their memory.
        let counters = self.temp(heads, DType::I32);
        self.zeroed.push(counters.value);
        let ctx = NodeCtx {
            module: self.module,
            phase: self.phase,
            op,
            inputs: ins.to_vec(),
            out,
            label: "",
            epilogue: Epilogue::None,
            presplit: false,
            gemm: self.gemm,
            row_stack: 1,
            split_out: false,
            pair_out: false,
        };
        let spec = crate::fused::attention_decode(
            &ctx,
            (heads, kv_heads, head_dim, scale),
            rope,
            cache,
            cache_dtype,
            ws,
            counters,
        );
        if spec.is_none() {
            self.drop_values_from(mark);
        }
        Ok(spec)
    }
}

/// Whether node `n` of a `decode_rows` graph may leave its projection's two products side by
/// side for its consumer to sum (`NodeCtx::pair_out`; `ZAMBA2C_TUNE_ROWS_PAIR_FOLD=0` turns it
/// off: 54 `pair_sum` launches fewer in a 2.7B step, whose 64 rows took 7.434 ms against 7.623
/// with `mamba_step_pipe`, docs/PERFORMANCE.md twentieth session): a mixer's in_proj (a `NormLinear` of one projection) read by nothing but the mixer
/// itself, as its first operand. Whether the kernels can is decided when they are built
/// (two bf16 planes on stacked rows; the mixer's `mamba_step` reads either form).
fn pair_foldable(graph: &Graph, n: NodeIndex) -> bool {
    if crate::tune_mode("ROWS_PAIR_FOLD", 1) != 1 || graph.outputs.contains(&n) {
        return false;
    }
    let Op::NormLinear { projs, .. } = &graph.g[n].op else {
        return false;
    };
    if projs.len() != 1 || projs[0].adapter.is_some() {
        return false;
    }
    let consumers: std::collections::BTreeSet<NodeIndex> = graph
        .g
        .neighbors_directed(n, petgraph::Direction::Outgoing)
        .collect();
    let [c] = consumers.into_iter().collect::<Vec<_>>()[..] else {
        return false;
    };
    let mixer = match &graph.g[c].op {
        Op::Residual { inner } => matches!(**inner, Op::MambaMixer { .. }),
        op => matches!(op, Op::MambaMixer { .. }),
    };
    let ins = graph.inputs(c);
    mixer && ins.first() == Some(&n) && ins.iter().filter(|&&i| i == n).count() == 1
}
