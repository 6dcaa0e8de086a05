//! The launch table of a compiled plan (`kernels/program.json`): every kernel with its one
//! parameter list, and per graph the activation values and the launches in order. Codegen
//! writes it; the runtime reads it, so the runtime needs a plan, not the compiler.

use std::collections::BTreeMap;

use petgraph::stable_graph::NodeIndex;
use serde::{Deserialize, Serialize};

use crate::graph::{DType, Phase};
use crate::op::StateId;

/// Path of kernel `name`'s CUDA source inside a plan directory.
pub fn source_path(name: &str) -> String {
    format!("kernels/{name}.cu")
}

/// Path of kernel `name`'s PTX for `arch` inside a plan directory.
pub fn ptx_path(name: &str, arch: &str) -> String {
    format!("kernels/{name}.{arch}.ptx")
}

/// Device-to-device copy bandwidth measured on the H200 (bytes read + written per second):
/// the floor of memory-bound kernels (docs/PERFORMANCE.md).
pub const H200_COPY_BYTES_PER_S: f64 = 4.28e12;
/// bf16 matmul rate measured on the H200 through torch (8192³): the floor of compute-bound ones.
pub const H200_BF16_FLOPS: f64 = 7.98e14;

/// Path of the launch table inside a plan directory.
pub const PROGRAM_PATH: &str = "kernels/program.json";

/// The C type of a kernel parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CType {
    /// `const T* __restrict__`: read-only device memory of this element type.
    ConstPtr(DType),
    /// `T* __restrict__`: device memory the kernel writes.
    Ptr(DType),
    /// `int` (`i32`).
    I32,
}

impl CType {
    /// The C spelling of an element type.
    pub fn elem(d: DType) -> &'static str {
        match d {
            DType::F32 => "float",
            DType::BF16 => "bf16_t",
            DType::F16 => "half_t",
            DType::I32 => "i32",
        }
    }
    /// The declaration of a parameter named `name` of this type.
    pub fn decl(self, name: &str) -> String {
        match self {
            CType::ConstPtr(d) => format!("const {}* __restrict__ {name}", Self::elem(d)),
            CType::Ptr(d) => format!("{}* __restrict__ {name}", Self::elem(d)),
            CType::I32 => format!("i32 {name}"),
        }
    }
    /// True for pointers.
    pub fn is_ptr(self) -> bool {
        !matches!(self, CType::I32)
    }
}

/// One kernel parameter: its name in the C source and its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub ty: CType,
}

/// What the runtime passes for one parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arg {
    /// The storage of value `value` of this graph, `offset` elements in (a column offset for
    /// views).
    Value { value: usize, offset: usize },
    /// Weight `name` (a table name, never a view), `offset` elements in.
    Weight { name: String, offset: usize },
    /// State region `id`; `part` 0 is the region itself (conv, SSM, K cache), 1 the V cache.
    State { id: StateId, part: usize },
    /// `i32` device array of per-call facts, two per row `b` of the call (`b` in `0..B`, the
    /// sequences of the batch; `crate::device::meta_bytes`):
    ///
    /// - `meta[2b]`: tokens already cached by that sequence (`T0`, the position of its first
    ///   new token);
    /// - `meta[2b + 1]`: the state slot holding that sequence (conv window, SSM state, K and V
    ///   caches: slot `s` is the `s`-th sequence-sized part of every state region).
    ///
    /// Activations are addressed by the row `b`, states and caches by the slot, so one decode
    /// launch serves any set of slots, each at its own position, and a prompt call (B = 1)
    /// runs in any slot without touching the others. Kernels read it through the
    /// `META_POS(b)` / `META_SLOT(b)` macros of templates/prelude.cu. A single sequence is
    /// row 0 in slot 0: `[T0, 0]` (docs/KERNELS.md "meta").
    Meta,
    /// `B · T` as `i32`.
    Rows,
    /// `B · T · m` as `i32`: the rows of a GEMM whose input and output hold `m` stacked rows
    /// per row of the call (a split input's hi and lo planes, `LibraryGemm::row_stack`).
    RowsTimes(usize),
    /// `T` as `i32`.
    Seq,
    /// The KV caches' capacity in tokens (`max_context`), as `i32`.
    Capacity,
}

/// A grid extent as a function of the call's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Extent {
    Const(u32),
    /// `ceil(B·T·mul / div)`.
    Rows {
        mul: usize,
        div: usize,
    },
    /// `B`.
    Batch,
    /// `ceil(T / div)`: chunks of `div` tokens per sequence (chunked scans).
    SeqDiv {
        div: usize,
    },
}

impl Extent {
    /// The extent for batch `b` and `t` tokens.
    pub fn resolve(self, b: usize, t: usize) -> u32 {
        match self {
            Extent::Const(n) => n,
            Extent::Rows { mul, div } => (b * t * mul).div_ceil(div.max(1)) as u32,
            Extent::Batch => b as u32,
            Extent::SeqDiv { div } => t.div_ceil(div.max(1)) as u32,
        }
    }
}

/// A generated kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    pub name: String,
    pub family: String,
    pub params: Vec<Param>,
    /// The CUDA source; not in `program.json` (it is `kernels/<name>.cu` beside it).
    #[serde(skip)]
    pub source: String,
}

/// What one launch reads and writes and computes, as codegen accounts for its family (the
/// emitted program's cost report and the profiler's byte floors, docs/KERNELS.md). For `b`
/// sequences of `t` new tokens each after `cached` tokens:
/// bytes = weight_bytes + b·t·(bytes_per_row + cached·bytes_per_cached_token)
///         + b·(bytes_per_seq + cached·seq_bytes_per_cached_token),
/// flops = b·t·(flops_per_row + cached·flops_per_cached_token) + b·t(t+1)/2·flops_per_causal_pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchCost {
    /// Weights read once per launch.
    pub weight_bytes: u64,
    /// Activations read and written per row (token).
    pub bytes_per_row: u64,
    /// Recurrent state read and written per sequence.
    pub bytes_per_seq: u64,
    /// KV cache read per row for each cached token (attention).
    pub bytes_per_cached_token: u64,
    /// KV cache read once per sequence for each cached token (prompt attention reads the
    /// cached prefix once per launch, not once per query).
    #[serde(default)]
    pub seq_bytes_per_cached_token: u64,
    pub flops_per_row: u64,
    pub flops_per_cached_token: u64,
    /// FLOPs per (query, key) pair among the new tokens, key at or before the query (causal
    /// attention within the chunk: t(t+1)/2 pairs per sequence).
    #[serde(default)]
    pub flops_per_causal_pair: u64,
}

impl LaunchCost {
    /// Bytes moved for `b` sequences of `t` tokens after `cached` tokens.
    pub fn bytes(&self, b: usize, t: usize, cached: usize) -> f64 {
        let rows = (b * t) as f64;
        self.weight_bytes as f64
            + rows
                * (self.bytes_per_row as f64 + cached as f64 * self.bytes_per_cached_token as f64)
            + b as f64
                * (self.bytes_per_seq as f64
                    + cached as f64 * self.seq_bytes_per_cached_token as f64)
    }
    /// FLOPs for `b` sequences of `t` tokens after `cached` tokens.
    pub fn flops(&self, b: usize, t: usize, cached: usize) -> f64 {
        let pairs = b as f64 * (t as f64 * (t as f64 + 1.0) / 2.0);
        (b * t) as f64
            * (self.flops_per_row as f64 + cached as f64 * self.flops_per_cached_token as f64)
            + pairs * self.flops_per_causal_pair as f64
    }
}

/// The emitted program's totals: what runs, not what the IR says (inspect's `program`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramCost {
    pub prompt: PromptCost,
    pub decode: DecodeCost,
    /// A step of [`RowsCost::rows`] rows through `decode_rows`, when the program has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_rows: Option<RowsCost>,
}

/// One decode step of `rows` rows (each at empty context) through `decode_rows`, and the
/// same step through `decode` for comparison; what each cached token of each row adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowsCost {
    pub rows: usize,
    pub launches: usize,
    pub bytes_per_step: f64,
    pub flops_per_step: f64,
    /// Bytes each cached token of each row adds to the step.
    pub bytes_per_cached_token: f64,
    /// `decode`'s launch costs summed for the same step (what its accounting claims; the
    /// grouped `proj_gemv` reads the weights once per group of 8 rows and its inputs once per
    /// 2 features, which that accounting leaves out: docs/PERFORMANCE.md).
    pub decode_bytes_per_step: f64,
    pub decomposed: usize,
}

/// One prompt chunk of `tokens` tokens from an empty state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptCost {
    pub launches: usize,
    pub tokens: usize,
    pub bytes: f64,
    pub flops: f64,
    /// Fused ops emitted through their decomposition.
    pub decomposed: usize,
}

/// One decode step of one sequence at empty context, and what each cached token adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodeCost {
    pub launches: usize,
    pub bytes_per_token: f64,
    pub flops_per_token: f64,
    pub bytes_per_cached_token: f64,
    pub decomposed: usize,
}

/// One kernel launch: for graph node `node` (topological position), kernel `kernel` with
/// `args[i]` bound to the kernel's `params[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    pub kernel: String,
    pub node: usize,
    pub args: Vec<Arg>,
    pub grid: [Extent; 3],
    pub block: u32,
    /// Dynamic shared memory per block, bytes (0: static shared memory only).
    #[serde(default)]
    pub smem: u32,
    #[serde(default)]
    pub cost: LaunchCost,
    /// The kernel to launch instead when the call has more than one row (`B·T > 1`, a decode
    /// step of several sequences): a variant of `kernel` with the same parameters, grid and
    /// block that serves rows in groups, reading each weight once per group
    /// (docs/KERNELS.md "proj_gemv"). `None`: `kernel` serves every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batched: Option<String>,
    /// The same projection as a library GEMM (cuBLASLt) the runtime runs instead of `kernel`
    /// when the library is there and not turned off (docs/KERNELS.md "Library GEMMs").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<LibraryGemm>,
}

/// `out[m, n] = Σ_k x[m, k] · w[n, k]` (+ the epilogue) for `m < B·T`, `n < n`, `k < k`, as a
/// library GEMM: what a `linear_mma_pipe` launch computes, described by its operands so the
/// runtime can hand it to cuBLASLt (bf16 or f16 inputs, f32 accumulation, output in `out_dtype`).
/// Every operand is row-major with the given leading dimension (elements between rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryGemm {
    pub n: usize,
    pub k: usize,
    /// bf16 input rows; with `split`, the f32 input as two bf16 planes (templates/split_bf16.cu):
    /// hi at columns `0..k`, lo at `k..2k` of the same row, and the product is `hi·Wᵀ + lo·Wᵀ`.
    pub x: Arg,
    pub x_ld: usize,
    pub split: bool,
    /// Element type of the input planes and the weight: bf16, or f16 in an f16-weight plan
    /// (one f16 plane, never `split`; docs/KERNELS.md "GEMM inputs").
    #[serde(default = "bf16", skip_serializing_if = "is_bf16")]
    pub input: DType,
    /// Weight rows (`[n, k]` at `weight`, rows `w_ld` apart) of the `input` type.
    pub weight: Arg,
    pub w_ld: usize,
    pub out: Arg,
    pub out_ld: usize,
    pub out_dtype: DType,
    pub epilogue: LibraryEpilogue,
    /// GEMM rows per row of the call: with 2, every buffer row of the input holds two input
    /// rows of `x_ld` (a split input's hi and lo planes, read as rows of their own) and every
    /// buffer row of the output two output rows of `out_ld`, so one GEMM of `2·B·T` rows reads
    /// the weight once for both planes (docs/KERNELS.md "decode_rows").
    #[serde(default = "one_row")]
    pub row_stack: usize,
}

fn one_row() -> usize {
    1
}

fn bf16() -> DType {
    DType::BF16
}

fn is_bf16(d: &DType) -> bool {
    *d == DType::BF16
}

/// What a [`LibraryGemm`] adds to the product (its `beta · C` term).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LibraryEpilogue {
    /// `out = x·Wᵀ`.
    None,
    /// `out = res + x·Wᵀ`; `res` has `out`'s dtype and leading dimension.
    Residual(Arg),
    /// `out += x·Wᵀ`.
    Accumulate,
}

/// Most GEMM rows per row of a call (`Arg::RowsTimes`, `LibraryGemm::row_stack`).
pub const MAX_ROW_STACK: usize = 2;

/// Largest dynamic shared memory a block may ask for: the sm_90 opt-in limit (227 KiB).
pub const MAX_DYNAMIC_SMEM: u32 = 227 * 1024;
/// Dynamic shared memory a kernel gets without opting in (CUDA programming guide).
pub const DEFAULT_DYNAMIC_SMEM: u32 = 48 * 1024;

impl Launch {
    /// The kernel that serves a call of `b` sequences of `t` tokens.
    pub fn kernel_for(&self, b: usize, t: usize) -> &str {
        match &self.batched {
            Some(k) if b * t > 1 => k,
            _ => &self.kernel,
        }
    }

    /// Grid dimensions for batch `b` and `t` tokens.
    pub fn grid(&self, b: usize, t: usize) -> (u32, u32, u32) {
        (
            self.grid[0].resolve(b, t),
            self.grid[1].resolve(b, t),
            self.grid[2].resolve(b, t),
        )
    }
}

/// Where a value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Storage {
    /// Its own buffer of `rows × width` elements.
    Own,
    /// Columns `offset ..` of value `of`'s buffer (a slice costs no copy).
    View { of: usize, offset: usize },
}

/// An activation `[B·T, width]` of one graph: a node's output, or a temporary of a fused op's
/// decomposition (`node: None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Value {
    pub node: Option<usize>,
    pub width: usize,
    pub dtype: DType,
    pub storage: Storage,
    /// Elements between consecutive rows of the storage.
    pub row_stride: usize,
}

/// A fused op emitted through its decomposition (one base kernel per step) because no fused
/// kernel family serves it here; `inspect` lists these by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decomposed {
    /// Topological position of the node.
    pub node: usize,
    pub label: String,
    pub op: String,
    pub reason: String,
}

/// The launches of one graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphProgram {
    pub phase: Phase,
    /// Graph node of each topological position (not serialized: position `i` of a graph read
    /// back from `module.json` is node `i`).
    #[serde(skip)]
    pub nodes: Vec<NodeIndex>,
    /// The value of each topological position (`node_values[pos]`).
    pub node_values: Vec<usize>,
    pub values: Vec<Value>,
    /// The value holding the token ids (`i32`, width 1).
    pub tokens: usize,
    pub outputs: Vec<usize>,
    pub launches: Vec<Launch>,
    /// Fused ops of this graph emitted through their decomposition, and why.
    #[serde(default)]
    pub decomposed: Vec<Decomposed>,
    /// Values a kernel expects zero at launch and leaves zero again (attention_decode's split
    /// counters): the runtime gives each a zeroed slot of its own (`crate::device`). Absent in
    /// launch tables written before the list existed (then every temporary is treated so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zeroed: Option<Vec<usize>>,
    /// Buffers hold a whole number of `seq_align`-token blocks per sequence: a call of `T`
    /// tokens may use rows up to `round_up(T, seq_align)` (a chunked scan's per-chunk
    /// workspace). The runtime sizes buffers for `B · round_up(T_max, seq_align)` rows.
    #[serde(default = "one")]
    pub seq_align: usize,
    /// The `i32` value of width 1 holding each row's greedy token (the first index of the
    /// largest logit of `outputs[0]`), written by the table's last launch: a batched step's
    /// caller that only wants greedy tokens downloads it instead of the logits (the
    /// `decode_rows` table; docs/KERNELS.md "decode_rows").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greedy: Option<usize>,
}

fn one() -> usize {
    1
}

impl GraphProgram {
    /// Rows the buffers must hold for `b` sequences of at most `t` tokens.
    pub fn rows_for(&self, b: usize, t: usize) -> usize {
        b * t.div_ceil(self.seq_align.max(1)) * self.seq_align.max(1)
    }
}

/// Rows from which a decode step runs [`Program::decode_rows`] (the tensor-core GEMMs) rather
/// than [`Program::decode`] (`proj_gemv`, rows in groups of 8): below it the GEMV's weight
/// stream costs less than the GEMM's tiles (docs/KERNELS.md "decode_rows"). The runtime lets
/// `ZAMBA2C_TUNE_ROWS_MMA_MIN` override it for measurements. The 2.7B shape, ms a step on
/// `decode` / `decode_rows`: 2 rows 6.46 / 3.90, 3 rows 6.86 / 3.88, 4 rows 7.22 / 4.04, 8
/// rows 8.63 / 4.30; one row 2.38 on `decode` (docs/PERFORMANCE.md, twentieth session).
pub const ROWS_MMA_MIN: usize = 2;

/// Rows from which a step of `module`'s plan runs `decode_rows` when the plan fixes it: 1 for a
/// `compile --batch-invariant` module (every step, so a sequence computes the same sums alone
/// and in a batch), else `None` ([`ROWS_MMA_MIN`] or the engine's option).
pub fn plan_rows_mma_min(module: &crate::Module) -> Option<usize> {
    module.batch_invariant.then_some(1)
}

/// Rows at which a batch-invariant engine's `decode_rows` library GEMMs choose their algorithm,
/// then used at every row count (a `compile --batch-invariant` plan's, or `run
/// --prompts-file`'s; the runtime's cuBLASLt, docs/KERNELS.md "Batch invariance"): a constant, not an engine's slot count, so an engine of one slot and one of 64
/// run the same algorithms. 64: the batch the library's choice is tuned for (issue 12).
pub const INVARIANT_ALGORITHM_ROWS: usize = 64;

/// Which launch table of a [`Program`] a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum GraphId {
    /// A prompt chunk of one sequence (the prompt graph).
    Prompt,
    /// A decode step through `proj_gemv` (one row, or rows in groups).
    Decode,
    /// A decode step of many rows with the projections on the tensor-core GEMM: the decode
    /// graph's nodes, lowered as the prompt path lowers projections.
    DecodeRows,
}

impl GraphId {
    /// The table's name in reports and in `program.json`'s keys: `prompt`, `decode`,
    /// `decode_rows`.
    pub fn name(self) -> &'static str {
        match self {
            GraphId::Prompt => "prompt",
            GraphId::Decode => "decode",
            GraphId::DecodeRows => "decode_rows",
        }
    }

    /// The module graph whose nodes this launch table runs.
    pub fn phase(self) -> Phase {
        match self {
            GraphId::Prompt => Phase::Prompt,
            GraphId::Decode | GraphId::DecodeRows => Phase::Decode,
        }
    }
}

/// Every kernel of a module and the launches of its graphs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub kernels: BTreeMap<String, Kernel>,
    pub prompt: GraphProgram,
    pub decode: GraphProgram,
    /// The decode graph again, its projections on `linear_mma_pipe` (norms as kernels of
    /// their own, f32 inputs presplit, residual and adapter products in GEMM epilogues) and
    /// its state ops as in `decode`: what a step of at least [`ROWS_MMA_MIN`] rows runs.
    /// `None` in launch tables written before it existed (every step then runs `decode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_rows: Option<GraphProgram>,
}

impl Program {
    /// The cost of what runs: a prompt chunk of `prompt_tokens` tokens, a decode step, and a
    /// step of `rows` rows through `decode_rows`.
    pub fn cost(&self, prompt_tokens: usize, rows: usize) -> ProgramCost {
        let sum_b = |gp: &GraphProgram, b: usize, t: usize, cached: usize| -> (f64, f64) {
            gp.launches.iter().fold((0.0, 0.0), |(by, f), l| {
                (
                    by + l.cost.bytes(b, t, cached),
                    f + l.cost.flops(b, t, cached),
                )
            })
        };
        let sum = |gp: &GraphProgram, t: usize, cached: usize| sum_b(gp, 1, t, cached);
        let (pb, pf) = sum(&self.prompt, prompt_tokens, 0);
        let (db, df) = sum(&self.decode, 1, 0);
        let (db1, _) = sum(&self.decode, 1, 1);
        let rows = rows.max(1);
        let decode_rows = self.decode_rows.as_ref().map(|gp| {
            let (rb, rf) = sum_b(gp, rows, 1, 0);
            let (rb1, _) = sum_b(gp, rows, 1, 1);
            RowsCost {
                rows,
                launches: gp.launches.len(),
                bytes_per_step: rb,
                flops_per_step: rf,
                bytes_per_cached_token: (rb1 - rb) / rows as f64,
                decode_bytes_per_step: sum_b(&self.decode, rows, 1, 0).0,
                decomposed: gp.decomposed.len(),
            }
        });
        ProgramCost {
            prompt: PromptCost {
                launches: self.prompt.launches.len(),
                tokens: prompt_tokens,
                bytes: pb,
                flops: pf,
                decomposed: self.prompt.decomposed.len(),
            },
            decode: DecodeCost {
                launches: self.decode.launches.len(),
                bytes_per_token: db,
                flops_per_token: df,
                bytes_per_cached_token: db1 - db,
                decomposed: self.decode.decomposed.len(),
            },
            decode_rows,
        }
    }

    /// The graph program of `phase`.
    pub fn graph(&self, phase: Phase) -> &GraphProgram {
        match phase {
            Phase::Prompt => &self.prompt,
            Phase::Decode => &self.decode,
        }
    }

    /// The launch table `id`, when the program has it (`decode_rows` is optional).
    pub fn table(&self, id: GraphId) -> Option<&GraphProgram> {
        match id {
            GraphId::Prompt => Some(&self.prompt),
            GraphId::Decode => Some(&self.decode),
            GraphId::DecodeRows => self.decode_rows.as_ref(),
        }
    }

    /// Every launch table the program has, with its id.
    pub fn tables(&self) -> Vec<(GraphId, &GraphProgram)> {
        [GraphId::Prompt, GraphId::Decode, GraphId::DecodeRows]
            .into_iter()
            .filter_map(|id| self.table(id).map(|gp| (id, gp)))
            .collect()
    }
}

/// Largest grid extent or per-launch constant a launch table may ask for (CUDA's own limit on
/// grid x is 2³¹−1; this bound keeps `Extent::Rows` arithmetic far from overflow).
const MAX_EXTENT: u64 = 1 << 30;

impl Program {
    /// Checks a launch table read from disk against its module before anything reaches a
    /// kernel: every launch names a kernel, binds one argument per parameter of the matching
    /// kind, reads values that exist (views after their storage, inside its row), weights of
    /// the table with offsets inside them, and state regions that exist; grids and blocks are
    /// in range; each graph's tokens, node values and outputs exist. Returns the first problem.
    pub fn validate(&self, module: &crate::Module) -> Result<(), String> {
        for (id, gp) in self.tables() {
            let phase = id.phase();
            let n_nodes = module.graph(phase).len();
            let ctx = |msg: String| format!("{id:?} graph: {msg}");
            if gp.phase != phase {
                return Err(ctx("the graph is stored under the other phase".into()));
            }
            if gp.node_values.len() != n_nodes {
                return Err(ctx(format!(
                    "{} node values for {n_nodes} nodes",
                    gp.node_values.len()
                )));
            }
            let nv = gp.values.len();
            for (i, v) in gp.values.iter().enumerate() {
                if v.width == 0 || v.row_stride < v.width || v.row_stride as u64 > MAX_EXTENT {
                    return Err(ctx(format!(
                        "value {i}: width {} in rows of {}",
                        v.width, v.row_stride
                    )));
                }
                if let Storage::View { of, offset } = v.storage {
                    let root = gp.values.get(of).filter(|_| of < i);
                    match root {
                        Some(r) if matches!(r.storage, Storage::Own) => {
                            if r.row_stride != v.row_stride
                                || offset + v.width > r.width
                                || r.dtype != v.dtype
                            {
                                return Err(ctx(format!(
                                    "value {i}: view of columns {offset}..{} of value {of} (width {})",
                                    offset + v.width,
                                    r.width
                                )));
                            }
                        }
                        _ => {
                            return Err(ctx(format!(
                                "value {i}: a view of value {of}, which is not an earlier buffer"
                            )))
                        }
                    }
                } else if v.row_stride != v.width {
                    return Err(ctx(format!("value {i}: a buffer with padded rows")));
                }
            }
            if gp.tokens >= nv || gp.values[gp.tokens].dtype != DType::I32 {
                return Err(ctx(format!(
                    "token value {} is not an i32 value",
                    gp.tokens
                )));
            }
            if let Some(&v) = gp.node_values.iter().chain(&gp.outputs).find(|&&v| v >= nv) {
                return Err(ctx(format!("names value {v} of {nv}")));
            }
            if gp.outputs.is_empty() {
                return Err(ctx("no output".into()));
            }
            if let Some(g) = gp.greedy {
                let ok = gp.values.get(g).is_some_and(|v| {
                    v.dtype == DType::I32 && v.width == 1 && matches!(v.storage, Storage::Own)
                });
                if !ok || g == gp.tokens || gp.outputs.contains(&g) {
                    return Err(ctx(format!(
                        "greedy-token value {g} is not an i32 buffer of width 1"
                    )));
                }
            }
            if gp.seq_align == 0 || gp.seq_align > 4096 {
                return Err(ctx(format!(
                    "sequence alignment of {} tokens",
                    gp.seq_align
                )));
            }
            if let Some(&v) = gp.zeroed.iter().flatten().find(|&&v| {
                v >= nv
                    || v == gp.tokens
                    || gp.outputs.contains(&v)
                    || !matches!(gp.values[v].storage, Storage::Own)
            }) {
                return Err(ctx(format!("zeroed value {v} is not a temporary buffer")));
            }
            for (li, l) in gp.launches.iter().enumerate() {
                let lctx = |msg: String| ctx(format!("launch {li} ({}): {msg}", l.kernel));
                let k = self
                    .kernels
                    .get(&l.kernel)
                    .ok_or_else(|| lctx("no such kernel".into()))?;
                if let Some(bk) = &l.batched {
                    let v = self
                        .kernels
                        .get(bk)
                        .ok_or_else(|| lctx(format!("no such batched kernel {bk}")))?;
                    if v.params != k.params {
                        return Err(lctx(format!(
                            "batched kernel {bk} takes other parameters than {}",
                            l.kernel
                        )));
                    }
                }
                if l.node >= n_nodes {
                    return Err(lctx(format!("node {} of {n_nodes}", l.node)));
                }
                if l.args.len() != k.params.len() {
                    return Err(lctx(format!(
                        "{} arguments for {} parameters",
                        l.args.len(),
                        k.params.len()
                    )));
                }
                if l.block == 0 || l.block > 1024 {
                    return Err(lctx(format!("block of {} threads", l.block)));
                }
                if l.smem > MAX_DYNAMIC_SMEM {
                    return Err(lctx(format!("{} bytes of dynamic shared memory", l.smem)));
                }
                for e in l.grid {
                    let bad = match e {
                        Extent::Const(c) => c == 0 || u64::from(c) > MAX_EXTENT,
                        Extent::Rows { mul, div } => {
                            mul == 0 || div == 0 || mul as u64 > MAX_EXTENT
                        }
                        Extent::Batch => false,
                        Extent::SeqDiv { div } => div == 0 || div as u64 > MAX_EXTENT,
                    };
                    if bad {
                        return Err(lctx(format!("grid extent {e:?}")));
                    }
                }
                if let Some(lib) = &l.library {
                    lib.validate(module, gp)
                        .map_err(|m| lctx(format!("library GEMM: {m}")))?;
                }
                for (p, a) in k.params.iter().zip(&l.args) {
                    let pctx = |msg: String| lctx(format!("parameter {}: {msg}", p.name));
                    match (p.ty, a) {
                        (CType::I32, Arg::Rows | Arg::Seq | Arg::Capacity) => {}
                        (CType::I32, Arg::RowsTimes(m)) if (1..=MAX_ROW_STACK).contains(m) => {}
                        (CType::ConstPtr(DType::I32), Arg::Meta) => {}
                        (CType::ConstPtr(d) | CType::Ptr(d), Arg::Value { value, offset }) => {
                            let v = gp
                                .values
                                .get(*value)
                                .ok_or_else(|| pctx(format!("value {value} of {nv}")))?;
                            if !matches!(v.storage, Storage::Own) || v.dtype != d {
                                return Err(pctx(format!("value {value} is not a {d} buffer")));
                            }
                            if *offset >= v.width {
                                return Err(pctx(format!(
                                    "column {offset} of a value of width {}",
                                    v.width
                                )));
                            }
                        }
                        (CType::ConstPtr(d), Arg::Weight { name, offset }) => {
                            let w = module.weights.get(name).ok_or_else(|| {
                                pctx(format!("weight {name} is not in the table"))
                            })?;
                            if w.dtype != d || *offset >= w.numel().max(1) {
                                return Err(pctx(format!(
                                    "weight {name} ({} {:?}) at element {offset}",
                                    w.dtype, w.shape
                                )));
                            }
                        }
                        (CType::ConstPtr(d) | CType::Ptr(d), Arg::State { id, part }) => {
                            let s = module
                                .states
                                .get(*id)
                                .ok_or_else(|| pctx(format!("state region {id} does not exist")))?;
                            let parts = if matches!(s, crate::StateSpec::Kv { .. }) {
                                2
                            } else {
                                1
                            };
                            if *part >= parts || s.dtype() != d {
                                return Err(pctx(format!(
                                    "part {part} of state region {id} as {d}"
                                )));
                            }
                        }
                        (ty, a) => {
                            return Err(pctx(format!("{a:?} does not fit a {ty:?} parameter")))
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl LibraryGemm {
    /// Checks that every operand is a buffer of the right dtype holding the columns and rows
    /// the GEMM touches (for the rows the graph's values hold), so a launch table read from
    /// disk cannot make the library read or write outside them.
    fn validate(&self, module: &crate::Module, gp: &GraphProgram) -> Result<(), String> {
        let (n, k) = (self.n, self.k);
        if n == 0 || k == 0 || n as u64 > MAX_EXTENT || k as u64 > MAX_EXTENT {
            return Err(format!("{n} outputs of {k} inputs"));
        }
        if self.split && self.out_dtype != DType::F32 {
            return Err("a split input needs an f32 output".into());
        }
        if !matches!(self.input, DType::BF16 | DType::F16)
            || (self.split && self.input != DType::BF16)
        {
            return Err(format!("{} inputs (split: {})", self.input, self.split));
        }
        let stack = self.row_stack;
        if !(1..=MAX_ROW_STACK).contains(&stack) || (stack > 1 && self.split) {
            return Err(format!(
                "{stack} stacked rows per row (split: {})",
                self.split
            ));
        }
        // Stacked rows: each buffer row holds `stack` rows of `ld`, and an operand's columns
        // stay inside one of them.
        let value = |a: &Arg, what: &str, dtype: DType, ld: usize, cols: usize| {
            let Arg::Value { value, offset } = a else {
                return Err(format!("{what} is not a value"));
            };
            match gp.values.get(*value) {
                Some(v)
                    if matches!(v.storage, Storage::Own)
                        && v.dtype == dtype
                        && ld.checked_mul(stack) == Some(v.row_stride)
                        && offset.checked_add(cols).is_some_and(|e| {
                            e <= v.width && (stack == 1 || e <= ld)
                        }) =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "{what}: value {value} is not a {dtype} buffer with columns {offset}..{} in rows of {ld}",
                    offset.saturating_add(cols)
                )),
            }
        };
        let planes = if self.split { 2 } else { 1 };
        value(&self.x, "the input", self.input, self.x_ld, planes * k)?;
        if !matches!(self.out_dtype, DType::F32 | DType::BF16) {
            return Err(format!("a {} output", self.out_dtype));
        }
        value(&self.out, "the output", self.out_dtype, self.out_ld, n)?;
        if let LibraryEpilogue::Residual(r) = &self.epilogue {
            value(r, "the residual", self.out_dtype, self.out_ld, n)?;
        }
        let Arg::Weight { name, offset } = &self.weight else {
            return Err("the weight is not a weight".into());
        };
        let w = module
            .weights
            .get(name)
            .ok_or_else(|| format!("weight {name} is not in the table"))?;
        let end = (n - 1)
            .checked_mul(self.w_ld)
            .and_then(|e| e.checked_add(*offset))
            .and_then(|e| e.checked_add(k));
        if w.dtype != self.input || self.w_ld < k || end.is_none_or(|e| e > w.numel()) {
            return Err(format!(
                "weight {name} ({} {:?}) does not hold {n} rows of {k} from element {offset}, {} apart",
                w.dtype, w.shape, self.w_ld
            ));
        }
        Ok(())
    }
}
