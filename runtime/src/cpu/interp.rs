//! The graph interpreter: evaluates one node ([`eval_node`]), a decomposition into base ops
//! ([`eval_steps`]), or a whole phase graph ([`run_graph`]) in topological order.

use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;
use zamba2c_ir::fused::{Operand, Step};
use zamba2c_ir::{Graph, Op};

use crate::cpu::attention::{self, AttentionParams};
use crate::cpu::mamba::{self, ScanParams};
use crate::cpu::ops;
use crate::cpu::state::InferenceState;
use crate::cpu::CpuWeights;
use crate::{RuntimeError, Tensor};

fn arity(op: &Op, inputs: &[&Tensor]) -> Result<(), RuntimeError> {
    match op.arity() {
        Some(n) if n != inputs.len() => Err(ops::bad(
            op.name(),
            format!("takes {n} operands, got {}", inputs.len()),
        )),
        None if inputs.is_empty() => Err(ops::bad(op.name(), "takes at least one operand")),
        _ => Ok(()),
    }
}

/// Evaluates `op` on its operands, reading weights from `weights` and reading/writing the op's
/// state region in `state`. This is the reference meaning of every op.
///
/// `Op::Tokens` has no meaning here: [`run_graph`] supplies the token ids.
pub fn eval_node(
    op: &Op,
    inputs: &[&Tensor],
    weights: &CpuWeights,
    state: &mut InferenceState,
) -> Result<Tensor, RuntimeError> {
    arity(op, inputs)?;
    let w = |name: &str| weights.get(name);
    match op {
        Op::Tokens => Err(ops::bad(
            "tokens",
            "the graph input has no value of its own; run_graph supplies the token ids",
        )),
        Op::Embedding { weight } => ops::embedding(inputs[0], &*w(weight)?),
        Op::RmsNorm { weight, eps } => ops::rms_norm(inputs[0], &*w(weight)?, *eps),
        Op::Linear { weight } => ops::linear(inputs[0], &*w(weight)?),
        Op::Add => ops::add(inputs[0], inputs[1]),
        Op::Mul => ops::mul(inputs[0], inputs[1]),
        Op::Concat => ops::concat(inputs),
        Op::Slice { start, len } => ops::slice(inputs[0], *start, *len),
        Op::Gelu => Ok(ops::gelu(inputs[0])),
        Op::Silu => Ok(ops::silu(inputs[0])),
        Op::CausalConv1d {
            weight,
            bias,
            state: id,
        } => mamba::causal_conv1d(inputs[0], &*w(weight)?, &*w(bias)?, state.conv_mut(*id)?),
        Op::SsmScan {
            dt_bias,
            a_log,
            d,
            heads,
            head_dim,
            d_state,
            groups,
            dt_min,
            state: id,
        } => {
            let p = ScanParams {
                heads: *heads,
                head_dim: *head_dim,
                d_state: *d_state,
                groups: *groups,
                dt_min: *dt_min,
            };
            let [x, dt, b, c] = inputs else {
                unreachable!("arity checked above")
            };
            let (dt_bias, a_log, d) = (w(dt_bias)?, w(a_log)?, w(d)?);
            mamba::ssm_scan(x, dt, b, c, &dt_bias, &a_log, &d, &p, state.ssm_mut(*id)?)
        }
        Op::GatedRmsNorm {
            weight,
            groups,
            eps,
        } => mamba::gated_rms_norm(inputs[0], inputs[1], &*w(weight)?, *groups, *eps),
        Op::Attention {
            heads,
            kv_heads,
            head_dim,
            scale,
            rope_theta,
            cache,
        } => {
            let p = AttentionParams {
                heads: *heads,
                kv_heads: *kv_heads,
                head_dim: *head_dim,
                scale: *scale,
                rope_theta: *rope_theta,
            };
            attention::attention(inputs[0], inputs[1], inputs[2], &p, state.kv_mut(*cache)?)
        }
        // Fused ops (made by passes) mean exactly their decomposition into base ops. Weight
        // views in a decomposition (`zamba2c_ir::fused::weight_view`) resolve in `CpuWeights::get`.
        fused => match fused.decompose() {
            Some(steps) => eval_steps(&steps, inputs, weights, state),
            None => Err(ops::bad(
                fused.name(),
                "has no CPU meaning (not a base op, no decomposition)",
            )),
        },
    }
}

/// Evaluates a straight-line decomposition `steps` (each step only uses the fused op's inputs
/// and earlier steps) and returns the last step's output. This is how the interpreter gives a
/// fused op its meaning: exactly that of the base ops it stands for.
pub fn eval_steps(
    steps: &[Step],
    inputs: &[&Tensor],
    weights: &CpuWeights,
    state: &mut InferenceState,
) -> Result<Tensor, RuntimeError> {
    let mut outs: Vec<Tensor> = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        let args = s
            .operands
            .iter()
            .map(|o| match *o {
                Operand::Input(j) => inputs.get(j).copied().ok_or_else(|| {
                    ops::bad(
                        s.op.name(),
                        format!("decomposition step {i} reads missing input {j}"),
                    )
                }),
                Operand::Step(j) if j < i => Ok(&outs[j]),
                Operand::Step(j) => Err(ops::bad(
                    s.op.name(),
                    format!("decomposition step {i} reads step {j}, which is not earlier"),
                )),
            })
            .collect::<Result<Vec<&Tensor>, _>>()?;
        let out = eval_node(&s.op, &args, weights, state)?;
        outs.push(out);
    }
    outs.pop()
        .ok_or_else(|| RuntimeError::Input("empty decomposition".into()))
}

/// Vocabulary size of the graph's embedding (rows of the first `Embedding` weight).
fn graph_vocab(graph: &Graph, weights: &CpuWeights) -> Result<Option<usize>, RuntimeError> {
    for n in graph.g.node_indices() {
        if let Op::Embedding { weight } = &graph.g[n].op {
            return Ok(weights.get(weight)?.shape.first().copied());
        }
    }
    Ok(None)
}

/// Checks a batch of token rows: at least one row, all of the same nonzero length `T`, every id
/// below the vocabulary size, and room for `T` more tokens in every row's context.
fn check_tokens(
    graph: &Graph,
    tokens: &[Vec<u32>],
    weights: &CpuWeights,
    state: &InferenceState,
) -> Result<usize, RuntimeError> {
    let t = tokens.first().map_or(0, Vec::len);
    if tokens.is_empty() || t == 0 {
        return Err(RuntimeError::Input("no tokens to process".into()));
    }
    if let Some(r) = tokens.iter().position(|r| r.len() != t) {
        return Err(RuntimeError::Input(format!(
            "batch row {r} has {} tokens, row 0 has {t}; rows must be equally long",
            tokens[r].len()
        )));
    }
    if tokens.len() != state.batch {
        return Err(RuntimeError::Input(format!(
            "{} token rows for a state of batch size {}",
            tokens.len(),
            state.batch
        )));
    }
    if graph.phase == zamba2c_ir::Phase::Decode && t != 1 {
        return Err(RuntimeError::Input(format!(
            "the decode graph takes one token per row, got {t}"
        )));
    }
    if let Some(v) = graph_vocab(graph, weights)? {
        if let Some(&id) = tokens.iter().flatten().find(|&&id| id as usize >= v) {
            return Err(RuntimeError::Input(format!(
                "token id {id} is out of range: the vocabulary has {v} tokens (ids 0..{})",
                v.saturating_sub(1)
            )));
        }
    }
    if state.positions.len() != state.batch {
        return Err(RuntimeError::Input(format!(
            "the state has {} row positions for a batch of {}",
            state.positions.len(),
            state.batch
        )));
    }
    if let Some((r, &pos)) = state
        .positions
        .iter()
        .enumerate()
        .find(|(_, &p)| p + t > state.max_context)
    {
        let row = if state.batch > 1 {
            format!(" (batch row {r})")
        } else {
            String::new()
        };
        return Err(RuntimeError::Input(format!(
            "{t} more tokens after {pos}{row} would exceed the maximum context of {} tokens",
            state.max_context
        )));
    }
    Ok(t)
}

/// Runs `graph` over `tokens` (B rows of T ids) from the current `state`: evaluates the nodes in
/// `graph.topo_order()`, calls `observer` on every node's output (the `Tokens` node's output is
/// the ids as f32, `[B,T]`), frees each intermediate once its last user has run, advances
/// every row's position by T, and returns the graph outputs (the logits `[B,T,V]`).
///
/// Inputs are checked before any state is touched; an error afterwards means the graph and
/// the weights are inconsistent, and leaves the state partly updated.
pub fn run_graph(
    graph: &Graph,
    tokens: &[Vec<u32>],
    weights: &CpuWeights,
    state: &mut InferenceState,
    observer: &mut dyn FnMut(NodeIndex, &Tensor),
) -> Result<Vec<Tensor>, RuntimeError> {
    let t = check_tokens(graph, tokens, weights, state)?;
    let b = tokens.len();
    let order = graph.topo_order();
    // Uses still pending per node (each user node counts once); outputs are never freed.
    let mut pending: HashMap<NodeIndex, usize> =
        order.iter().map(|&n| (n, graph.users(n).len())).collect();
    let mut values: HashMap<NodeIndex, Tensor> = HashMap::new();
    for &n in &order {
        let node = &graph.g[n];
        let operands = graph.inputs(n);
        let out = if let Op::Tokens = node.op {
            let ids = tokens.iter().flatten().map(|&id| id as f32).collect();
            Tensor::new(vec![b, t], ids)
        } else {
            let args: Vec<&Tensor> = operands.iter().map(|i| &values[i]).collect();
            eval_node(&node.op, &args, weights, state).map_err(|e| match e {
                RuntimeError::Input(m) => RuntimeError::Input(format!("node {}: {m}", node.label)),
                e => e,
            })?
        };
        let want: Vec<usize> = node.shape.iter().map(|d| d.resolve(b, t)).collect();
        if out.shape != want {
            return Err(RuntimeError::Input(format!(
                "node {} ({}): produced shape {:?}, the graph says {:?}",
                node.label,
                node.op.name(),
                out.shape,
                want
            )));
        }
        observer(n, &out);
        let mut seen = operands.clone();
        seen.sort();
        seen.dedup();
        for i in seen {
            let p = pending.get_mut(&i).expect("operand is a node");
            *p -= 1;
            if *p == 0 && !graph.outputs.contains(&i) {
                values.remove(&i);
            }
        }
        if pending[&n] > 0 || graph.outputs.contains(&n) {
            values.insert(n, out);
        }
    }
    state.positions.iter_mut().for_each(|p| *p += t);
    graph
        .outputs
        .iter()
        .map(|o| {
            values
                .get(o)
                .cloned()
                .ok_or_else(|| RuntimeError::Input("a graph output was never computed".into()))
        })
        .collect()
}
