//! The compiler's cost model (its own roofline estimate): per op of the decode graph, the
//! weight bytes it reads, the state bytes it reads and writes, and its FLOPs per decoded and
//! per prompt token; totals per decoded token at empty context (GPU.md, "The floor for decode").
//!
//! A shared weight is counted at every invocation that reads it (the L2 cannot hold a shared
//! block between invocations). Attention is counted at a context of one token; its cost per
//! further cached token is reported apart.

use std::fmt::Write as _;

use serde::Serialize;
use zamba2c_ir::fused::{parse_weight_view, Step};
use zamba2c_ir::units::{duration_ms, si};
use zamba2c_ir::{Graph, Module, Op, StateSpec};

/// Device-to-device copy bandwidth measured on the H200 (GPU.md), for the decode floor.
pub const H200_BYTES_PER_S: f64 = 4.28e12;

/// One op of the decode graph.
#[derive(Debug, Clone, Serialize)]
pub struct OpCost {
    pub label: String,
    pub op: String,
    /// Weight bytes read per decoded token.
    pub weight_bytes: u64,
    /// Recurrent-state and cache bytes read and written per decoded token (empty context).
    pub state_bytes: u64,
    pub decode_flops: f64,
    pub prefill_flops_per_token: f64,
}

/// Totals of the compiler's roofline estimate.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Bytes read and written per decoded token at empty context: weights + state.
    pub decode_bytes_per_token: f64,
    pub decode_weight_bytes_per_token: f64,
    pub decode_state_bytes_per_token: f64,
    pub decode_flops_per_token: f64,
    /// FLOPs per prompt token (attention at a context of one token).
    pub prefill_flops_per_token: f64,
    /// Attention FLOPs added per token for each token already cached.
    pub attention_flops_per_cached_token: f64,
    /// Bytes of the weight table (each weight once).
    pub unique_weight_bytes: f64,
    /// `decode_bytes_per_token` at [`H200_BYTES_PER_S`], in milliseconds.
    pub decode_floor_ms_h200: f64,
}

fn weight_shape(m: &Module, name: &str) -> Vec<usize> {
    if let Some(s) = m.weights.get(name) {
        return s.shape.clone();
    }
    match parse_weight_view(name) {
        Some((base, _, len)) => {
            let mut s = m
                .weights
                .get(base)
                .map(|s| s.shape.clone())
                .unwrap_or_default();
            if let Some(l) = s.last_mut() {
                *l = len;
            }
            s
        }
        None => vec![],
    }
}

fn weight_bytes_of(m: &Module, name: &str) -> u64 {
    let base = parse_weight_view(name).map_or(name, |(b, _, _)| b);
    let size = m.weights.get(base).map_or(0, |s| s.dtype.size());
    (weight_shape(m, name).iter().product::<usize>() * size) as u64
}

/// FLOPs per token of one base op, given its operands' widths; and its output width.
fn base_flops(m: &Module, op: &Op, ins: &[usize]) -> (f64, usize) {
    let w0 = ins.first().copied().unwrap_or(0);
    match op {
        Op::Tokens | Op::Embedding { .. } => {
            let h = m.config.hidden_size;
            (0.0, h)
        }
        Op::RmsNorm { .. } => (4.0 * w0 as f64, w0),
        Op::Linear { weight } => {
            let s = weight_shape(m, weight);
            let (o, i) = (
                s.first().copied().unwrap_or(0),
                s.get(1).copied().unwrap_or(0),
            );
            (2.0 * (o * i) as f64, o)
        }
        Op::Add | Op::Mul => (w0 as f64, w0),
        Op::Concat => (0.0, ins.iter().sum()),
        Op::Slice { len, .. } => (0.0, *len),
        Op::Gelu => (8.0 * w0 as f64, w0),
        Op::Silu => (4.0 * w0 as f64, w0),
        Op::CausalConv1d { state, .. } => {
            let k = match m.states.get(*state) {
                Some(StateSpec::Conv { kernel, .. }) => *kernel,
                _ => 0,
            };
            (2.0 * (w0 * k) as f64, w0)
        }
        Op::SsmScan {
            heads,
            head_dim,
            d_state,
            ..
        } => {
            let din = heads * head_dim;
            // decay, dt·x⊗B and the sum per state element; S·C readout; D skip; dt per head.
            let f = 6 * din * d_state + 2 * din + 10 * heads;
            (f as f64, din)
        }
        Op::GatedRmsNorm { .. } => (9.0 * w0 as f64, w0),
        Op::Attention {
            heads, head_dim, ..
        } => (attention_flops(*heads, *head_dim, 1), heads * head_dim),
        fused => match fused.decompose() {
            Some(steps) => steps_flops(m, &steps, ins),
            None => (0.0, w0),
        },
    }
}

/// Attention at a context of `ctx` tokens: scores, softmax, weighted sum.
fn attention_flops(heads: usize, head_dim: usize, ctx: usize) -> f64 {
    (4 * heads * head_dim * ctx + 5 * heads * ctx) as f64
}

fn steps_flops(m: &Module, steps: &[Step], ins: &[usize]) -> (f64, usize) {
    let mut widths: Vec<usize> = Vec::with_capacity(steps.len());
    let mut total = 0.0;
    for st in steps {
        let args: Vec<usize> = st
            .operands
            .iter()
            .map(|o| match *o {
                zamba2c_ir::fused::Operand::Input(i) => ins.get(i).copied().unwrap_or(0),
                zamba2c_ir::fused::Operand::Step(i) => widths.get(i).copied().unwrap_or(0),
            })
            .collect();
        let (f, w) = base_flops(m, &st.op, &args);
        total += f;
        widths.push(w);
    }
    (total, widths.last().copied().unwrap_or(0))
}

/// Weight bytes and FLOPs of one node, with the split-input specialisation taken into
/// account: a `SplitNormLinear` fed the block's embedding half reads, and multiplies, only the
/// h-half columns of its base projections.
fn node_cost(m: &Module, op: &Op, ins: &[usize]) -> (u64, f64) {
    let (flops, _) = base_flops(m, op, ins);
    let mut bytes: u64 = match op {
        // One row per token.
        Op::Embedding { weight } => {
            let s = weight_shape(m, weight);
            weight_bytes_of(m, weight) / s.first().copied().unwrap_or(1).max(1) as u64
        }
        _ => op.weights().iter().map(|w| weight_bytes_of(m, w)).sum(),
    };
    let mut flops = flops;
    if let Op::EmbedHalfProj { .. } = op {
        // Only the e-half columns of the norm and of each base weight.
        bytes /= 2;
    }
    if let Op::SplitNormLinear { projs, hidden, .. } = op {
        if ins.len() == 3 {
            for p in projs {
                let half = weight_bytes_of(m, &p.weight) / 2;
                bytes -= half;
                let rows = weight_shape(m, &p.weight).first().copied().unwrap_or(0);
                flops -= 2.0 * (rows * hidden) as f64;
            }
        }
    }
    (bytes, flops)
}

fn state_bytes(m: &Module, op: &Op) -> u64 {
    op.states()
        .iter()
        .filter_map(|&s| m.states.get(s))
        .map(|s| {
            let bytes = (s.numel_per_seq() * s.dtype().size()) as u64;
            match s {
                // The new token's K and V written, then read back by the attention.
                StateSpec::Kv { .. } => 2 * bytes,
                // The whole state read and written.
                _ => 2 * bytes,
            }
        })
        .sum()
}

fn graph_costs(m: &Module, g: &Graph) -> Vec<OpCost> {
    let order = g.topo_order();
    let width = |n: petgraph::stable_graph::NodeIndex| match g.g[n].shape.last() {
        Some(zamba2c_ir::Dim::Fixed(w)) if g.g[n].shape.len() > 2 => *w,
        _ => 1,
    };
    order
        .iter()
        .filter(|&&n| !matches!(g.g[n].op, Op::Tokens))
        .map(|&n| {
            let node = &g.g[n];
            let ins: Vec<usize> = g.inputs(n).into_iter().map(width).collect();
            let (weight_bytes, flops) = node_cost(m, &node.op, &ins);
            OpCost {
                label: node.label.clone(),
                op: node.op.name().to_string(),
                weight_bytes,
                state_bytes: state_bytes(m, &node.op),
                decode_flops: flops,
                prefill_flops_per_token: flops,
            }
        })
        .collect()
}

/// The decode graph's ops in topological order with their costs. The prompt column is taken
/// from the prompt graph (same ops per token; attention at a context of one token).
pub fn op_costs(module: &Module) -> Vec<OpCost> {
    let mut decode = graph_costs(module, &module.decode);
    let prompt = graph_costs(module, &module.prompt);
    if prompt.len() == decode.len() {
        for (d, p) in decode.iter_mut().zip(&prompt) {
            d.prefill_flops_per_token = p.prefill_flops_per_token;
        }
    }
    decode
}

/// The module's totals.
pub fn module_cost(module: &Module) -> Cost {
    let ops = op_costs(module);
    let weights: f64 = ops.iter().map(|o| o.weight_bytes as f64).sum();
    let states: f64 = ops.iter().map(|o| o.state_bytes as f64).sum();
    let attention: f64 = module
        .decode
        .g
        .node_weights()
        .map(|n| match n.op {
            Op::Attention {
                heads, head_dim, ..
            } => attention_flops(heads, head_dim, 1),
            _ => 0.0,
        })
        .sum();
    let decode_bytes = weights + states;
    Cost {
        decode_bytes_per_token: decode_bytes,
        decode_weight_bytes_per_token: weights,
        decode_state_bytes_per_token: states,
        decode_flops_per_token: ops.iter().map(|o| o.decode_flops).sum(),
        prefill_flops_per_token: graph_costs(module, &module.prompt)
            .iter()
            .map(|o| o.prefill_flops_per_token)
            .sum(),
        attention_flops_per_cached_token: attention,
        unique_weight_bytes: module.weights.values().map(|w| w.bytes() as f64).sum(),
        decode_floor_ms_h200: decode_bytes / H200_BYTES_PER_S * 1e3,
    }
}

/// The cost table and totals as text, for `zamba2c inspect`.
pub fn render_text(module: &Module) -> String {
    let ops = op_costs(module);
    let c = module_cost(module);
    let lw = ops.iter().map(|o| o.label.len()).max().unwrap_or(5).max(5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<lw$}  {:<18} {:>14} {:>12} {:>14} {:>15}",
        "op", "kind", "weight /tok", "state /tok", "decode", "prompt /tok"
    );
    for o in &ops {
        let _ = writeln!(
            s,
            "{:<lw$}  {:<18} {:>14} {:>12} {:>14} {:>15}",
            o.label,
            o.op,
            si(o.weight_bytes as f64, "B"),
            si(o.state_bytes as f64, "B"),
            si(o.decode_flops, "FLOP"),
            si(o.prefill_flops_per_token, "FLOP")
        );
    }
    let _ = writeln!(s, "totals ({} ops):", ops.len());
    let lines = [
        ("decode bytes per token", c.decode_bytes_per_token, "B"),
        ("  of which weights", c.decode_weight_bytes_per_token, "B"),
        ("  of which state", c.decode_state_bytes_per_token, "B"),
        ("decode FLOPs per token", c.decode_flops_per_token, "FLOP"),
        ("prompt FLOPs per token", c.prefill_flops_per_token, "FLOP"),
        (
            "attention FLOPs per cached token",
            c.attention_flops_per_cached_token,
            "FLOP",
        ),
        ("unique weight bytes", c.unique_weight_bytes, "B"),
    ];
    for (k, v, unit) in lines {
        let _ = writeln!(s, "  {k:<34} {}", si(v, unit));
    }
    let _ = writeln!(
        s,
        "  {:<34} {}/token (at {})",
        "decode floor",
        duration_ms(c.decode_floor_ms_h200),
        si(H200_BYTES_PER_S, "B/s")
    );
    s
}
