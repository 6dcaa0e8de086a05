//! `inspect --format dot --graph prompt|decode`: one graph as Graphviz DOT for people (issue
//! 17): nodes grouped per decoder layer (`subgraph cluster_layer_N`), filled with a colour per
//! op kind, labelled with the op and its output shape and dtype, not the weight names (the
//! full dump with every weight is `compile --dump-ir`). Deterministic: nodes in the graph's
//! topological order, layers in numeric order.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use zamba2c_ir::graph::shape_str;
use zamba2c_ir::{Graph, Op, OpKind};

/// Fill colours by op family (Graphviz X11 names), so a layer's kind shows at a glance: the
/// Mamba mixer green, attention blue, MLPs orange, projections and norms grey, glue white.
fn colour(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Tokens | OpKind::Embedding | OpKind::EmbedHalfProj => "lightgoldenrod1",
        OpKind::MambaMixer | OpKind::SsmScan | OpKind::CausalConv1d | OpKind::GatedRmsNorm => {
            "palegreen"
        }
        OpKind::Attention => "lightskyblue",
        OpKind::GatedMlp | OpKind::Gelu | OpKind::Silu => "sandybrown",
        OpKind::Linear | OpKind::LinearLora | OpKind::NormLinear | OpKind::SplitNormLinear => {
            "gray85"
        }
        OpKind::RmsNorm => "thistle",
        OpKind::Add | OpKind::Mul | OpKind::Concat | OpKind::Slice | OpKind::Residual => "white",
    }
}

/// The op as the picture names it: its kind, with what a residual wraps (`residual(mamba_mixer)`)
/// and the range of a slice; never weight names.
fn op_label(op: &Op) -> (String, OpKind) {
    match op {
        Op::Residual { inner } => (format!("residual({})", inner.name()), inner.kind()),
        Op::Slice { start, len } => (format!("slice {start}..{}", start + len), op.kind()),
        _ => (op.name().to_string(), op.kind()),
    }
}

/// The decoder layer a node belongs to, from its label (`model.layers.N.…`).
fn layer_of(label: &str) -> Option<usize> {
    let rest = label.strip_prefix("model.layers.")?;
    rest.split('.').next()?.parse().ok()
}

/// `graph` as one DOT digraph named `name`.
pub fn graph_dot(graph: &Graph, name: &str) -> String {
    let order = graph.topo_order();
    let id: BTreeMap<_, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut layers: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
    let mut lines: Vec<String> = Vec::with_capacity(order.len());
    let mut has_attention: BTreeMap<usize, bool> = BTreeMap::new();
    for (i, &n) in order.iter().enumerate() {
        let node = &graph.g[n];
        let (op, kind) = op_label(&node.op);
        let layer = layer_of(&node.label);
        if let Some(l) = layer {
            *has_attention.entry(l).or_default() |= kind == OpKind::Attention;
        }
        layers.entry(layer).or_default().push(i);
        lines.push(format!(
            "n{i} [label=\"{op}\\n{} {}\", fillcolor={}];",
            shape_str(&node.shape),
            node.dtype,
            colour(kind)
        ));
    }
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{name}\" {{");
    let _ = writeln!(s, "  label=\"zamba2c {name} graph\";");
    let _ = writeln!(s, "  labelloc=t;");
    let _ = writeln!(
        s,
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];"
    );
    let _ = writeln!(s, "  edge [color=gray40];");
    for (layer, nodes) in &layers {
        match layer {
            Some(l) => {
                let what = if has_attention.get(l).copied().unwrap_or(false) {
                    "hybrid: shared attention + Mamba"
                } else {
                    "Mamba"
                };
                let _ = writeln!(s, "  subgraph cluster_layer_{l} {{");
                let _ = writeln!(s, "    label=\"layer {l} ({what})\";");
                let _ = writeln!(s, "    style=\"rounded\"; color=gray60;");
                for &i in nodes {
                    let _ = writeln!(s, "    {}", lines[i]);
                }
                let _ = writeln!(s, "  }}");
            }
            None => {
                for &i in nodes {
                    let _ = writeln!(s, "  {}", lines[i]);
                }
            }
        }
    }
    for &n in &order {
        for i in graph.inputs(n) {
            let _ = writeln!(s, "  n{} -> n{};", id[&i], id[&n]);
        }
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_from_labels() {
        assert_eq!(layer_of("model.layers.12.mamba.in_proj"), Some(12));
        assert_eq!(layer_of("model.layers.3.shared[1].self_attn"), Some(3));
        assert_eq!(layer_of("model.embed_tokens"), None);
        assert_eq!(layer_of("lm_head"), None);
        assert_eq!(layer_of("model.layers.x"), None);
    }
}
