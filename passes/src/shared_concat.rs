//! specialise-shared-concat (spec §2.3): the shared block's input is `RMSNorm_2H([h, e])`.
//! The concat is never materialised: each invocation becomes one `SplitNormLinear` over
//! `h` and `e`, and when a block runs more than once, the embedding half of its base q/k/v
//! projections, `W[:, H..2H]·RMSNorm_H(e)`, becomes one `EmbedHalfProj` per block and forward
//! (2 instead of 9 for 2.7B: ~0.55 GB less weight traffic per decoded token). Attention
//! adapters are per invocation and read all `2H` columns inside `SplitNormLinear`.

use std::collections::BTreeMap;

use petgraph::stable_graph::NodeIndex;
use zamba2c_ir::fused::{Norm, Proj};
use zamba2c_ir::{Graph, Module, Op};

use crate::fuse::{projection_users, split_output};
use crate::rewrite::{each_graph, only_user, sweep, width, with_width};

/// One invocation of a shared block's input: `concat([h, e])` -> norm -> projections.
struct Invocation {
    concat: NodeIndex,
    h: NodeIndex,
    e: NodeIndex,
    norm: Norm,
    consumers: Vec<NodeIndex>,
    projs: Vec<Proj>,
}

fn match_invocation(g: &Graph, concat: NodeIndex) -> Option<Invocation> {
    if !matches!(g.g[concat].op, Op::Concat) {
        return None;
    }
    let [h, e] = g.inputs(concat)[..] else {
        return None;
    };
    if !matches!(g.g[e].op, Op::Embedding { .. }) || width(g, h) != width(g, e) {
        return None;
    }
    let [xn] = g.users(concat)[..] else {
        return None;
    };
    let Op::RmsNorm { weight, eps } = &g.g[xn].op else {
        return None;
    };
    if !only_user(g, concat, xn) {
        return None;
    }
    let (consumers, projs) = projection_users(g, xn)?.into_iter().unzip();
    Some(Invocation {
        concat,
        h,
        e,
        norm: Norm {
            weight: weight.clone(),
            eps: *eps,
        },
        consumers,
        projs,
    })
}

/// The pass.
pub fn specialise_shared_concat(m: &mut Module) {
    each_graph(m, |g| {
        let concats: Vec<NodeIndex> = g.g.node_indices().collect();
        let invs: Vec<Invocation> = concats
            .into_iter()
            .filter_map(|n| match_invocation(g, n))
            .collect();
        // Invocations of the same block: same norm, same base weights, same embedding.
        let mut blocks: BTreeMap<(String, Vec<String>, NodeIndex), Vec<usize>> = BTreeMap::new();
        for (i, inv) in invs.iter().enumerate() {
            let bases = inv.projs.iter().map(|p| p.weight.clone()).collect();
            blocks
                .entry((inv.norm.weight.clone(), bases, inv.e))
                .or_default()
                .push(i);
        }
        let mut half_of: BTreeMap<usize, NodeIndex> = BTreeMap::new();
        for ((_, bases, e), members) in &blocks {
            if members.len() < 2 {
                continue;
            }
            let first = &invs[members[0]];
            let hidden = width(g, first.h);
            let out: usize = first.consumers.iter().map(|&c| width(g, c)).sum();
            let op = Op::EmbedHalfProj {
                norm: first.norm.clone(),
                weights: bases.clone(),
                hidden,
            };
            let label = block_label(&g.g[first.concat].label, "embed_half");
            let shape = with_width(&g.g[*e].shape, out);
            let half = g.add(op, &[*e], shape, g.g[*e].dtype, label);
            for &i in members {
                half_of.insert(i, half);
            }
        }
        for (i, inv) in invs.iter().enumerate() {
            let out: usize = inv.consumers.iter().map(|&c| width(g, c)).sum();
            let mut operands = vec![inv.h, inv.e];
            operands.extend(half_of.get(&i));
            let op = Op::SplitNormLinear {
                norm: inv.norm.clone(),
                projs: inv.projs.clone(),
                hidden: width(g, inv.h),
            };
            let label = block_label(&g.g[inv.concat].label, "input_proj");
            let shape = with_width(&g.g[inv.h].shape, out);
            let f = g.add(op, &operands, shape, g.g[inv.h].dtype, label);
            split_output(g, f, &inv.consumers);
        }
        sweep(g);
    });
}

/// `model.layers.6.shared[0].concat` -> `model.layers.6.shared[0].{what}`.
fn block_label(concat: &str, what: &str) -> String {
    let base = concat.strip_suffix(".concat").unwrap_or(concat);
    format!("{base}.{what}")
}
