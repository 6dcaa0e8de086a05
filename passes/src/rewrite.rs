//! Small graph-rewriting helpers shared by the passes: matching a node's op and users, adding
//! a replacement, and sweeping away what no output needs any more.

use std::collections::BTreeSet;

use petgraph::stable_graph::NodeIndex;
use zamba2c_ir::{Graph, Module, Op, OpKind, Phase, Shape};

/// Runs `f` on both graphs of the module.
pub fn each_graph(m: &mut Module, mut f: impl FnMut(&mut Graph)) {
    for phase in [Phase::Prompt, Phase::Decode] {
        f(m.graph_mut(phase));
    }
}

/// The nodes of op kind `kind`, in index order (collected, so the caller may rewrite).
pub fn nodes_of(g: &Graph, kind: OpKind) -> Vec<NodeIndex> {
    g.g.node_indices()
        .filter(|&n| g.g[n].op.kind() == kind)
        .collect()
}

/// The node's only operand.
pub fn input0(g: &Graph, n: NodeIndex) -> NodeIndex {
    g.inputs(n)[0]
}

/// True when `n`'s only reader is `user`.
pub fn only_user(g: &Graph, n: NodeIndex, user: NodeIndex) -> bool {
    g.users(n) == [user] && !g.outputs.contains(&n)
}

/// `(start, len)` when `n` is a `Slice`.
pub fn slice_of(g: &Graph, n: NodeIndex) -> Option<(usize, usize)> {
    match g.g[n].op {
        Op::Slice { start, len } => Some((start, len)),
        _ => None,
    }
}

/// Width (last axis) of `n`'s output.
pub fn width(g: &Graph, n: NodeIndex) -> usize {
    match g.g[n].shape.last() {
        Some(zamba2c_ir::Dim::Fixed(w)) => *w,
        _ => 0,
    }
}

/// `shape` with its last axis set to `w`.
pub fn with_width(shape: &Shape, w: usize) -> Shape {
    let mut s = shape.clone();
    if let Some(l) = s.last_mut() {
        *l = zamba2c_ir::Dim::Fixed(w);
    }
    s
}

/// Adds a node like `like` (same dtype) with `op`, operands, shape and label, and makes it
/// replace `old` everywhere.
pub fn replace(
    g: &mut Graph,
    old: NodeIndex,
    op: Op,
    inputs: &[NodeIndex],
    shape: Shape,
    label: String,
) -> NodeIndex {
    let dtype = g.g[old].dtype;
    let n = g.add(op, inputs, shape, dtype, label);
    g.replace_uses(old, n);
    n
}

/// Removes every node no graph output depends on (the nodes a rewrite replaced, including
/// their state accesses, which the replacement now performs). Returns how many went.
pub fn sweep(g: &mut Graph) -> usize {
    let mut live: BTreeSet<NodeIndex> = BTreeSet::new();
    let mut stack: Vec<NodeIndex> = g.outputs.clone();
    while let Some(n) = stack.pop() {
        if live.insert(n) {
            stack.extend(g.inputs(n));
        }
    }
    let dead: Vec<NodeIndex> = g.g.node_indices().filter(|n| !live.contains(n)).collect();
    for &n in &dead {
        g.g.remove_node(n);
    }
    dead.len()
}
