//! The IR graph: a petgraph `StableDiGraph` of typed nodes, plus the module that holds the
//! prompt and decode graphs with their weight and state tables.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};

use crate::config::Zamba2Config;
use crate::op::{Op, StateId};

/// Element type of weights, activations and states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    BF16,
    F16,
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }
    /// Parses `f32`, `bf16`, `f16` (as on the command line).
    pub fn parse_float(s: &str) -> Option<DType> {
        match s {
            "f32" | "float32" => Some(DType::F32),
            "bf16" | "bfloat16" => Some(DType::BF16),
            "f16" | "float16" => Some(DType::F16),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::I32 => "i32",
        })
    }
}

/// One dimension of an activation shape: the batch, the new tokens of this call, or a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dim {
    /// `B`, sequences in the batch.
    Batch,
    /// `T`, tokens processed by this call (1 in the decode graph).
    Seq,
    /// A size fixed at compile time.
    Fixed(usize),
}

impl Dim {
    /// The size once `B` and `T` are known.
    pub fn resolve(self, batch: usize, seq: usize) -> usize {
        match self {
            Dim::Batch => batch,
            Dim::Seq => seq,
            Dim::Fixed(n) => n,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => f.write_str("B"),
            Dim::Seq => f.write_str("T"),
            Dim::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// A symbolic shape.
pub type Shape = Vec<Dim>;

/// Formats a shape as `[B,T,64]`.
pub fn shape_str(s: &[Dim]) -> String {
    let parts: Vec<String> = s.iter().map(Dim::to_string).collect();
    format!("[{}]", parts.join(","))
}

/// Which call a graph serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `T` tokens from an empty or cached state (HF's chunked path, spec §3.4).
    Prompt,
    /// One token from a cached state (HF's recurrent path).
    Decode,
}

/// A node: an op, its output type, and a readable label naming the model module it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub shape: Shape,
    pub dtype: DType,
    pub label: String,
}

/// A dataflow graph. Edge weights are operand positions, so a node's inputs are ordered.
#[derive(Debug, Clone)]
pub struct Graph {
    pub phase: Phase,
    pub g: StableDiGraph<Node, usize>,
    /// The graph's results: the logits `[B,T,V]`.
    pub outputs: Vec<NodeIndex>,
}

impl Graph {
    pub fn new(phase: Phase) -> Self {
        Graph {
            phase,
            g: StableDiGraph::new(),
            outputs: Vec::new(),
        }
    }

    /// Adds a node fed by `inputs` in operand order.
    pub fn add(
        &mut self,
        op: Op,
        inputs: &[NodeIndex],
        shape: Shape,
        dtype: DType,
        label: impl Into<String>,
    ) -> NodeIndex {
        let n = self.g.add_node(Node {
            op,
            shape,
            dtype,
            label: label.into(),
        });
        for (slot, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i, n, slot);
        }
        n
    }

    /// The node's operands, in order.
    pub fn inputs(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut e: Vec<(usize, NodeIndex)> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        e.sort();
        e.into_iter().map(|(_, s)| s).collect()
    }

    /// Nodes that read `n`'s output (each once, in index order).
    pub fn users(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut u: Vec<NodeIndex> = self.g.neighbors_directed(n, Direction::Outgoing).collect();
        u.sort();
        u.dedup();
        u
    }

    /// Redirects every use of `old` (edges and outputs) to `new`.
    pub fn replace_uses(&mut self, old: NodeIndex, new: NodeIndex) {
        let edges: Vec<(NodeIndex, usize)> = self
            .g
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        for e in self
            .g
            .edges_directed(old, Direction::Outgoing)
            .map(|e| e.id())
            .collect::<Vec<_>>()
        {
            self.g.remove_edge(e);
        }
        for (t, slot) in edges {
            self.g.add_edge(new, t, slot);
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Nodes in a deterministic topological order: operands before users, ties broken by
    /// node index (Kahn's algorithm with a min-heap), so dumps and plans are stable.
    pub fn topo_order(&self) -> Vec<NodeIndex> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut indeg: BTreeMap<NodeIndex, usize> = BTreeMap::new();
        for n in self.g.node_indices() {
            indeg.insert(n, self.g.edges_directed(n, Direction::Incoming).count());
        }
        let mut ready: BinaryHeap<Reverse<NodeIndex>> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| Reverse(n))
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        order
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    /// True when the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// Readable text: one line per node in topological order.
    pub fn to_text(&self) -> String {
        let order = self.topo_order();
        let id: BTreeMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut s = String::new();
        for &n in &order {
            let node = &self.g[n];
            let args: Vec<String> = self
                .inputs(n)
                .iter()
                .map(|i| format!("%{}", id[i]))
                .collect();
            let _ = writeln!(
                s,
                "%{} = {}{}({}) : {} {}   # {}",
                id[&n],
                node.op.name(),
                op_attrs(&node.op),
                args.join(", "),
                shape_str(&node.shape),
                node.dtype,
                node.label
            );
        }
        let outs: Vec<String> = self.outputs.iter().map(|o| format!("%{}", id[o])).collect();
        let _ = writeln!(s, "return {}", outs.join(", "));
        s
    }

    /// Graphviz DOT, nodes labelled with op, attributes and shape.
    pub fn to_dot(&self, name: &str) -> String {
        let order = self.topo_order();
        let id: BTreeMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut s = format!("digraph \"{name}\" {{\n  node [shape=box, fontname=monospace];\n");
        for &n in &order {
            let node = &self.g[n];
            let label = format!(
                "{}{}\\n{} {}\\n{}",
                node.op.name(),
                op_attrs(&node.op),
                shape_str(&node.shape),
                node.dtype,
                node.label
            )
            .replace('"', "'");
            let _ = writeln!(s, "  n{} [label=\"{}\"];", id[&n], label);
        }
        for &n in &order {
            for (slot, i) in self.inputs(n).iter().enumerate() {
                let _ = writeln!(s, "  n{} -> n{} [label=\"{slot}\"];", id[i], id[&n]);
            }
        }
        s.push_str("}\n");
        s
    }
}

/// The op's fields other than weights, compactly, for dumps.
fn op_attrs(op: &Op) -> String {
    let w = op.weights();
    let mut parts: Vec<String> = Vec::new();
    match op {
        Op::RmsNorm { eps, .. } => parts.push(format!("eps={eps:e}")),
        Op::Slice { start, len } => parts.push(format!("{start}..{}", start + len)),
        Op::SsmScan {
            heads,
            head_dim,
            d_state,
            groups,
            dt_min,
            state,
            ..
        } => {
            parts.push(format!(
                "heads={heads},p={head_dim},n={d_state},g={groups},state={state}"
            ));
            if let Some(m) = dt_min {
                parts.push(format!("dt_min={m:e}"));
            }
        }
        Op::GatedRmsNorm { groups, eps, .. } => parts.push(format!("groups={groups},eps={eps:e}")),
        Op::CausalConv1d { state, .. } => parts.push(format!("state={state}")),
        Op::NormLinear { norm, projs } | Op::SplitNormLinear { norm, projs, .. } => {
            parts.push(format!("eps={:e}", norm.eps));
            parts.push(format!("projs={}", projs.len()));
        }
        Op::EmbedHalfProj { hidden, .. } => parts.push(format!("cols={hidden}..{}", 2 * hidden)),
        Op::GatedMlp { inter, post, .. } => {
            parts.push(format!("inter={inter}"));
            if post.is_some() {
                parts.push("post".into());
            }
        }
        Op::MambaMixer {
            heads,
            head_dim,
            d_state,
            groups,
            dt_min,
            conv_state,
            ssm_state,
            out_proj,
            ..
        } => {
            parts.push(format!(
                "heads={heads},p={head_dim},n={d_state},g={groups},conv={conv_state},ssm={ssm_state}"
            ));
            if let Some(m) = dt_min {
                parts.push(format!("dt_min={m:e}"));
            }
            if out_proj.is_some() {
                parts.push("out_proj".into());
            }
        }
        Op::Residual { inner } => parts.push(format!("inner={}", inner.name())),
        Op::Attention {
            heads,
            kv_heads,
            head_dim,
            scale,
            rope_theta,
            cache,
        } => {
            parts.push(format!(
                "heads={heads},kv={kv_heads},d={head_dim},scale={scale:e},cache={cache}"
            ));
            if let Some(t) = rope_theta {
                parts.push(format!("rope={t}"));
            }
        }
        _ => {}
    }
    parts.extend(w.iter().map(|w| w.to_string()));
    if parts.is_empty() {
        String::new()
    } else {
        format!("[{}]", parts.join(" "))
    }
}

/// A weight the module reads: its shape and the dtype the plan stores it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightSpec {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl WeightSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

/// A region of per-sequence inference state (spec §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StateSpec {
    /// The last `kernel` pre-conv `xBC` vectors of layer `layer`: `[B, channels, kernel]`.
    Conv {
        layer: usize,
        channels: usize,
        kernel: usize,
        dtype: DType,
    },
    /// The SSM state of layer `layer`: `[B, heads, head_dim, d_state]`, stored in `dtype`
    /// (`compile --state-dtype`; f32 unless set, and in plans written before the option). The
    /// recurrence runs in f32; the state is rounded to `dtype` whenever it is stored.
    Ssm {
        layer: usize,
        heads: usize,
        head_dim: usize,
        d_state: usize,
        #[serde(default = "f32_dtype", skip_serializing_if = "is_f32")]
        dtype: DType,
    },
    /// The K and V caches of hybrid layer `layer`: each `[B, kv_heads, max_context, head_dim]`.
    Kv {
        layer: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
    },
}

impl StateSpec {
    /// Elements per sequence (for KV: per cached token).
    pub fn numel_per_seq(&self) -> usize {
        match self {
            StateSpec::Conv {
                channels, kernel, ..
            } => channels * kernel,
            StateSpec::Ssm {
                heads,
                head_dim,
                d_state,
                ..
            } => heads * head_dim * d_state,
            StateSpec::Kv {
                kv_heads, head_dim, ..
            } => 2 * kv_heads * head_dim,
        }
    }
    /// Element dtype.
    pub fn dtype(&self) -> DType {
        match self {
            StateSpec::Conv { dtype, .. }
            | StateSpec::Ssm { dtype, .. }
            | StateSpec::Kv { dtype, .. } => *dtype,
        }
    }
}

impl StateSpec {
    /// The element dtype of the first SSM state in `states` (f32 when there is none): what
    /// `compile --state-dtype` set for all of them.
    pub fn ssm_dtype(states: &[StateSpec]) -> DType {
        states
            .iter()
            .find_map(|s| match s {
                StateSpec::Ssm { dtype, .. } => Some(*dtype),
                _ => None,
            })
            .unwrap_or(DType::F32)
    }
}

fn f32_dtype() -> DType {
    DType::F32
}

fn is_f32(d: &DType) -> bool {
    *d == DType::F32
}

/// A lowered model: both graphs with the weight and state tables they share.
#[derive(Debug, Clone)]
pub struct Module {
    pub config: Zamba2Config,
    /// Weight dtype of the plan (SSM parameters are always f32).
    pub dtype: DType,
    /// Activation dtype: every node's output, the residual stream, the conv state.
    pub act_dtype: DType,
    /// Element dtype of the KV caches (`compile --kv-dtype`; the activation dtype unless set).
    pub kv_dtype: DType,
    /// `compile --batch-invariant`: a decode step gives each sequence the same bits whatever
    /// the step's other rows (every step, of one row too, on `decode_rows`, whose projections
    /// sum in an order fixed at compile time; docs/KERNELS.md "linear_rows").
    pub batch_invariant: bool,
    pub weights: BTreeMap<String, WeightSpec>,
    pub states: Vec<StateSpec>,
    pub prompt: Graph,
    pub decode: Graph,
}

impl Module {
    /// Stores every layer's SSM state in `dtype` (`compile --state-dtype`): a 16-bit state
    /// halves the bytes each decode step reads and writes per sequence.
    pub fn set_ssm_state_dtype(&mut self, dtype: DType) {
        for s in &mut self.states {
            if let StateSpec::Ssm { dtype: d, .. } = s {
                *d = dtype;
            }
        }
    }

    /// Stores the shared blocks' projection weights (attention q/k/v/o and their adapters, the
    /// MLP's gate_up, its adapters and down) and each hybrid layer's `linear` in `dtype`
    /// (`compile --shared-dtype`), the rest of the weights as they are: with f16 there and bf16
    /// elsewhere, those GEMMs read one f16 plane of their f32 input and the mixers' GEMMs two
    /// bf16 planes (docs/KERNELS.md "GEMM inputs"). Norm weights (one dimension) keep theirs.
    /// Returns how many weights changed.
    pub fn set_shared_projection_dtype(&mut self, dtype: DType) -> usize {
        let mut changed = 0;
        for (name, spec) in &mut self.weights {
            if spec.shape.len() == 2 && is_shared_projection(name) && spec.dtype != dtype {
                spec.dtype = dtype;
                changed += 1;
            }
        }
        changed
    }

    /// The shared blocks' projection dtype where `compile --shared-dtype` made it differ from
    /// the plan's weight dtype.
    pub fn shared_projection_dtype(&self) -> Option<DType> {
        shared_projections_dtype(&self.weights).filter(|d| *d != self.dtype)
    }

    /// The SSM states' element dtype (f32 for a model without Mamba layers).
    pub fn ssm_state_dtype(&self) -> DType {
        StateSpec::ssm_dtype(&self.states)
    }

    /// The graph of the given phase.
    pub fn graph(&self, phase: Phase) -> &Graph {
        match phase {
            Phase::Prompt => &self.prompt,
            Phase::Decode => &self.decode,
        }
    }
    /// Mutable access to the graph of the given phase.
    pub fn graph_mut(&mut self, phase: Phase) -> &mut Graph {
        match phase {
            Phase::Prompt => &mut self.prompt,
            Phase::Decode => &mut self.decode,
        }
    }
    /// The ids of a state region, for convenience.
    pub fn state(&self, id: StateId) -> &StateSpec {
        &self.states[id]
    }
}

/// The dtype of the first shared-block projection matrix in `weights` (by name order), if the
/// table has one: what `compile --shared-dtype` set ([`Module::set_shared_projection_dtype`]).
pub(crate) fn shared_projections_dtype(weights: &BTreeMap<String, WeightSpec>) -> Option<DType> {
    weights
        .iter()
        .find(|(n, s)| s.shape.len() == 2 && is_shared_projection(n))
        .map(|(_, s)| s.dtype)
}

/// Whether checkpoint weight `name` is a projection of the shared blocks (its name holds
/// `.shared_transformer.`, docs/ZAMBA2.md §5.1) or a hybrid layer's `linear`
/// (`model.layers.N.linear.weight`).
fn is_shared_projection(name: &str) -> bool {
    if name.contains(".shared_transformer.") {
        return true;
    }
    name.strip_prefix("model.layers.")
        .and_then(|rest| rest.strip_suffix(".linear.weight"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::is_shared_projection;

    #[test]
    fn shared_projections_by_name() {
        for name in [
            "model.layers.5.shared_transformer.self_attn.q_proj.weight",
            "model.layers.5.shared_transformer.feed_forward.gate_up_proj_adapter_list.1.0.weight",
            "model.layers.11.linear.weight",
        ] {
            assert!(is_shared_projection(name), "{name}");
        }
        for name in [
            "model.layers.5.mamba.in_proj.weight",
            "model.layers.5.mamba_decoder.mamba.out_proj.weight",
            "model.layers..linear.weight",
            "model.layers.x1.linear.weight",
            "model.embed_tokens.weight",
            "lm_head.weight",
        ] {
            assert!(!is_shared_projection(name), "{name}");
        }
    }
}
