//! The verifier: run after lowering and after every pass. Checks arities, shapes (by
//! re-inferring each node's output shape), dtypes, state use and weight binding.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::{shape_str, DType, Dim, Graph, Module, Phase, Shape, StateSpec};
use crate::op::Op;

/// A verifier finding, naming the graph and node.
#[derive(Debug, thiserror::Error)]
#[error("IR verifier: {graph} graph, node {node}: {msg}")]
pub struct VerifyError {
    pub graph: String,
    pub node: String,
    pub msg: String,
}

/// Checks both graphs of `m` and the weight table: every node well typed, every state region
/// touched by exactly one node per graph, every referenced weight in the table, every weight
/// in the table referenced (bound exactly once: one entry, at least one user).
pub fn verify_module(m: &Module) -> Result<(), VerifyError> {
    let mut used = BTreeSet::new();
    for g in [&m.prompt, &m.decode] {
        verify_graph(m, g, &mut used)?;
    }
    if let Some(unused) = m.weights.keys().find(|w| !used.contains(w.as_str())) {
        return Err(VerifyError {
            graph: "module".into(),
            node: "-".into(),
            msg: format!("weight {unused} is in the table but no node reads it"),
        });
    }
    Ok(())
}

fn verify_graph<'m>(
    m: &'m Module,
    g: &'m Graph,
    used: &mut BTreeSet<&'m str>,
) -> Result<(), VerifyError> {
    let gname = format!("{:?}", g.phase).to_lowercase();
    let order = g.topo_order();
    if order.len() != g.len() {
        return Err(VerifyError {
            graph: gname,
            node: "-".into(),
            msg: "graph has a cycle".into(),
        });
    }
    let mut state_users: BTreeMap<usize, String> = BTreeMap::new();
    for &n in &order {
        let node = &g.g[n];
        let fail = |msg: String| VerifyError {
            graph: gname.clone(),
            node: node.label.clone(),
            msg,
        };
        let ins = g.inputs(n);
        if let Some(a) = node.op.arity() {
            if ins.len() != a {
                return Err(fail(format!(
                    "{} takes {a} operands, has {}",
                    node.op.name(),
                    ins.len()
                )));
            }
        } else if ins.is_empty() {
            return Err(fail(format!("{} needs operands", node.op.name())));
        }
        for w in node.op.weights() {
            if !m.weights.contains_key(w) {
                return Err(fail(format!(
                    "reads weight {w}, which is not in the weight table"
                )));
            }
            used.insert(w);
        }
        for s in node.op.states() {
            if s >= m.states.len() {
                return Err(fail(format!("state {s} does not exist")));
            }
            if let Some(prev) = state_users.insert(s, node.label.clone()) {
                return Err(fail(format!("state {s} is already used by {prev}")));
            }
        }
        let in_shapes: Vec<&Shape> = ins.iter().map(|&i| &g.g[i].shape).collect();
        let want = infer_shape(m, g.phase, &node.op, &in_shapes).map_err(fail)?;
        if want != node.shape {
            return Err(fail(format!(
                "shape is {} but its operands give {}",
                shape_str(&node.shape),
                shape_str(&want)
            )));
        }
        let want_dtype = if matches!(node.op, Op::Tokens) {
            DType::I32
        } else {
            m.act_dtype
        };
        if node.dtype != want_dtype {
            return Err(fail(format!(
                "dtype {} but the module computes in {want_dtype}",
                node.dtype
            )));
        }
    }
    if g.outputs.is_empty() {
        return Err(VerifyError {
            graph: gname,
            node: "-".into(),
            msg: "graph has no outputs".into(),
        });
    }
    Ok(())
}

fn width(s: &Shape) -> Result<usize, String> {
    match s.last() {
        Some(Dim::Fixed(n)) => Ok(*n),
        _ => Err(format!(
            "operand shape {} has no fixed last axis",
            shape_str(s)
        )),
    }
}

fn with_width(s: &Shape, w: usize) -> Shape {
    let mut o = s.clone();
    if let Some(l) = o.last_mut() {
        *l = Dim::Fixed(w);
    }
    o
}

fn same_prefix(a: &Shape, b: &Shape) -> bool {
    a.len() == b.len() && a[..a.len() - 1] == b[..b.len() - 1]
}

/// The shape of weight `w` (a table entry, or a [`crate::fused::weight_view`] of one); empty
/// when there is no such weight.
fn weight_shape(m: &Module, w: &str) -> Vec<usize> {
    if let Some(spec) = m.weights.get(w) {
        return spec.shape.clone();
    }
    match crate::fused::parse_weight_view(w) {
        Some((base, start, len)) => match m.weights.get(base) {
            Some(spec) if spec.shape.last().is_some_and(|&n| start + len <= n) => {
                let mut s = spec.shape.clone();
                if let Some(l) = s.last_mut() {
                    *l = len;
                }
                s
            }
            _ => vec![],
        },
        None => vec![],
    }
}

/// Shape of a fused op: that of its decomposition's last step, each step checked in turn.
fn infer_decomposed(
    m: &Module,
    phase: Phase,
    steps: &[crate::fused::Step],
    ins: &[&Shape],
) -> Result<Shape, String> {
    let mut outs: Vec<Shape> = Vec::with_capacity(steps.len());
    for (i, st) in steps.iter().enumerate() {
        for w in st.op.weights() {
            if weight_shape(m, w).is_empty() {
                return Err(format!(
                    "decomposition reads weight {w}, which does not exist"
                ));
            }
        }
        let args = st
            .operands
            .iter()
            .map(|o| match *o {
                crate::fused::Operand::Input(j) => ins
                    .get(j)
                    .map(|s| (*s).clone())
                    .ok_or_else(|| format!("decomposition step {i} reads missing operand {j}")),
                crate::fused::Operand::Step(j) if j < i => Ok(outs[j].clone()),
                crate::fused::Operand::Step(j) => {
                    Err(format!("decomposition step {i} reads later step {j}"))
                }
            })
            .collect::<Result<Vec<Shape>, String>>()?;
        let refs: Vec<&Shape> = args.iter().collect();
        let out = infer_shape(m, phase, &st.op, &refs)
            .map_err(|e| format!("decomposition step {i} ({}): {e}", st.op.name()))?;
        outs.push(out);
    }
    outs.pop().ok_or_else(|| "empty decomposition".into())
}

/// The output shape an op produces from operands of the given shapes.
pub fn infer_shape(m: &Module, phase: Phase, op: &Op, ins: &[&Shape]) -> Result<Shape, String> {
    let expect_width = |s: &Shape, w: usize, what: &str| -> Result<(), String> {
        let got = width(s)?;
        if got != w {
            return Err(format!("{what} has width {got}, expected {w}"));
        }
        Ok(())
    };
    for w in op.weights() {
        if weight_shape(m, w).is_empty() {
            return Err(format!("reads weight {w}, which does not exist"));
        }
    }
    if let Some(steps) = op.decompose() {
        if let Op::SplitNormLinear {
            projs,
            hidden,
            norm,
        } = op
        {
            if !(2..=3).contains(&ins.len()) {
                return Err(format!("takes 2 or 3 operands, has {}", ins.len()));
            }
            expect_width(ins[0], *hidden, "h")?;
            expect_width(ins[1], *hidden, "e")?;
            if ins.len() == 3 {
                // The shared embedding half covers every base projection.
                let half = Op::EmbedHalfProj {
                    norm: norm.clone(),
                    weights: projs.iter().map(|p| p.weight.clone()).collect(),
                    hidden: *hidden,
                };
                let want = infer_shape(m, phase, &half, &[ins[1]])?;
                if *ins[2] != want {
                    return Err(format!(
                        "embedding half is {}, the base projections give {}",
                        shape_str(ins[2]),
                        shape_str(&want)
                    ));
                }
            }
        }
        return infer_decomposed(m, phase, &steps, ins);
    }
    match op {
        Op::Tokens => Ok(vec![Dim::Batch, seq_dim(phase)]),
        Op::Embedding { weight } => {
            let w = weight_shape(m, weight);
            if ins[0].len() != 2 {
                return Err("embedding takes [B,T] ids".into());
            }
            let mut s = ins[0].clone();
            s.push(Dim::Fixed(w[1]));
            Ok(s)
        }
        Op::RmsNorm { weight, .. } => {
            let w = weight_shape(m, weight);
            if w.len() != 1 {
                return Err(format!("norm weight {weight} is not 1-D"));
            }
            expect_width(ins[0], w[0], "input")?;
            Ok(ins[0].clone())
        }
        Op::Linear { weight } => {
            let w = weight_shape(m, weight);
            if w.len() != 2 {
                return Err(format!("linear weight {weight} is not 2-D"));
            }
            expect_width(ins[0], w[1], "input")?;
            Ok(with_width(ins[0], w[0]))
        }
        Op::Add | Op::Mul => {
            if ins[0] != ins[1] {
                return Err(format!(
                    "operand shapes differ: {} vs {}",
                    shape_str(ins[0]),
                    shape_str(ins[1])
                ));
            }
            Ok(ins[0].clone())
        }
        Op::Concat => {
            let mut total = 0;
            for s in ins {
                if !same_prefix(s, ins[0]) {
                    return Err("concat operands differ outside the last axis".into());
                }
                total += width(s)?;
            }
            Ok(with_width(ins[0], total))
        }
        Op::Slice { start, len } => {
            let w = width(ins[0])?;
            if start + len > w || *len == 0 {
                return Err(format!("slice {start}..{} out of width {w}", start + len));
            }
            Ok(with_width(ins[0], *len))
        }
        Op::Gelu | Op::Silu => Ok(ins[0].clone()),
        Op::CausalConv1d {
            weight,
            bias,
            state,
        } => {
            let w = weight_shape(m, weight);
            let ch = width(ins[0])?;
            match m.states.get(*state) {
                Some(StateSpec::Conv {
                    channels, kernel, ..
                }) if *channels == ch && w == [ch, *kernel] => {}
                _ => {
                    return Err(format!(
                        "conv weight {:?} / state {state} do not fit {ch} channels",
                        w
                    ))
                }
            }
            if weight_shape(m, bias) != [ch] {
                return Err("conv bias has the wrong shape".into());
            }
            Ok(ins[0].clone())
        }
        Op::SsmScan {
            heads,
            head_dim,
            d_state,
            groups,
            state,
            dt_bias,
            a_log,
            d,
            ..
        } => {
            expect_width(ins[0], heads * head_dim, "x")?;
            expect_width(ins[1], *heads, "dt")?;
            expect_width(ins[2], groups * d_state, "B")?;
            expect_width(ins[3], groups * d_state, "C")?;
            if *groups == 0 || heads % groups != 0 {
                return Err(format!("{groups} groups do not divide {heads} heads"));
            }
            for w in [dt_bias, a_log, d] {
                if weight_shape(m, w) != [*heads] {
                    return Err(format!("{w} is not [{heads}]"));
                }
            }
            match m.states.get(*state) {
                Some(StateSpec::Ssm {
                    heads: h,
                    head_dim: p,
                    d_state: n,
                    ..
                }) if h == heads && p == head_dim && n == d_state => {}
                _ => return Err(format!("state {state} is not an SSM state of this shape")),
            }
            Ok(ins[0].clone())
        }
        Op::GatedRmsNorm { weight, groups, .. } => {
            let w = width(ins[0])?;
            expect_width(ins[1], w, "gate z")?;
            expect_width(ins[0], weight_shape(m, weight)[0], "y")?;
            if *groups == 0 || w % groups != 0 {
                return Err(format!("{groups} groups do not divide width {w}"));
            }
            Ok(ins[0].clone())
        }
        Op::Attention {
            heads,
            kv_heads,
            head_dim,
            cache,
            ..
        } => {
            expect_width(ins[0], heads * head_dim, "q")?;
            expect_width(ins[1], kv_heads * head_dim, "k")?;
            expect_width(ins[2], kv_heads * head_dim, "v")?;
            if *kv_heads == 0 || heads % kv_heads != 0 {
                return Err(format!("{kv_heads} kv heads do not divide {heads} heads"));
            }
            match m.states.get(*cache) {
                Some(StateSpec::Kv {
                    kv_heads: k,
                    head_dim: d,
                    ..
                }) if k == kv_heads && d == head_dim => {}
                _ => return Err(format!("state {cache} is not a KV cache of this shape")),
            }
            Ok(ins[0].clone())
        }
        Op::LinearLora { .. }
        | Op::NormLinear { .. }
        | Op::EmbedHalfProj { .. }
        | Op::SplitNormLinear { .. }
        | Op::GatedMlp { .. }
        | Op::MambaMixer { .. } => unreachable!("fused ops are inferred from their decomposition"),
        // A residual has a decomposition whenever its inner op has a fixed arity.
        Op::Residual { inner } => Err(format!(
            "a residual around {}, which takes a variable number of operands",
            inner.name()
        )),
    }
}

/// The token axis: `T` in the prompt graph, 1 in the decode graph.
pub fn seq_dim(phase: Phase) -> Dim {
    match phase {
        Phase::Prompt => Dim::Seq,
        Phase::Decode => Dim::Fixed(1),
    }
}
