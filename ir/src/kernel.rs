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
    /// `i32` device array of per-call facts: `[0]` = tokens already cached (`T0`).
    Meta,
    /// `B · T` as `i32`.
    Rows,
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
}

impl Extent {
    /// The extent for batch `b` and `t` tokens.
    pub fn resolve(self, b: usize, t: usize) -> u32 {
        match self {
            Extent::Const(n) => n,
            Extent::Rows { mul, div } => (b * t * mul).div_ceil(div.max(1)) as u32,
            Extent::Batch => b as u32,
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
/// bytes = weight_bytes + b·t·(bytes_per_row + cached·bytes_per_cached_token) + b·bytes_per_seq.
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
    pub flops_per_row: u64,
    pub flops_per_cached_token: u64,
}

impl LaunchCost {
    /// Bytes moved for `b` sequences of `t` tokens after `cached` tokens.
    pub fn bytes(&self, b: usize, t: usize, cached: usize) -> f64 {
        let rows = (b * t) as f64;
        self.weight_bytes as f64
            + rows * (self.bytes_per_row as f64 + cached as f64 * self.bytes_per_cached_token as f64)
            + b as f64 * self.bytes_per_seq as f64
    }
    /// FLOPs for `b` sequences of `t` tokens after `cached` tokens.
    pub fn flops(&self, b: usize, t: usize, cached: usize) -> f64 {
        (b * t) as f64
            * (self.flops_per_row as f64 + cached as f64 * self.flops_per_cached_token as f64)
    }
}

/// The emitted program's totals: what runs, not what the IR says (inspect's `program`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgramCost {
    pub prompt: PromptCost,
    pub decode: DecodeCost,
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
    #[serde(default)]
    pub cost: LaunchCost,
}

impl Launch {
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
}

/// Every kernel of a module and the launches of both graphs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub kernels: BTreeMap<String, Kernel>,
    pub prompt: GraphProgram,
    pub decode: GraphProgram,
}

impl Program {
    /// The cost of what runs: a prompt chunk of `prompt_tokens` tokens and a decode step.
    pub fn cost(&self, prompt_tokens: usize) -> ProgramCost {
        let sum = |gp: &GraphProgram, t: usize, cached: usize| -> (f64, f64) {
            gp.launches.iter().fold((0.0, 0.0), |(b, f), l| {
                (b + l.cost.bytes(1, t, cached), f + l.cost.flops(1, t, cached))
            })
        };
        let (pb, pf) = sum(&self.prompt, prompt_tokens, 0);
        let (db, df) = sum(&self.decode, 1, 0);
        let (db1, _) = sum(&self.decode, 1, 1);
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
        }
    }

    /// The graph program of `phase`.
    pub fn graph(&self, phase: Phase) -> &GraphProgram {
        match phase {
            Phase::Prompt => &self.prompt,
            Phase::Decode => &self.decode,
        }
    }
}
