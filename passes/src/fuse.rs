//! The fusion passes: adapters into their projections, norms into the projections they feed,
//! the gated MLP, and the Mamba2 mixer chain. Each finds the lowering's pattern (spec §2, §3),
//! adds one fused node standing for it (its `decompose()` is exactly the matched ops), and
//! sweeps the replaced nodes away.

use petgraph::stable_graph::NodeIndex;
use zamba2c_ir::fused::{Adapter, Norm, Proj};
use zamba2c_ir::{Graph, Module, Op, OpKind};

use crate::rewrite::{each_graph, input0, nodes_of, only_user, replace, slice_of, sweep, width};

/// fuse-lora: `Add(Linear_W(x), Linear_B(Linear_A(x)))` -> `LinearLora(x)` (spec §2.4, §2.5).
pub fn fuse_lora(m: &mut Module) {
    each_graph(m, |g| {
        let adds = nodes_of(g, OpKind::Add);
        for n in adds {
            let ins = g.inputs(n);
            let (y, b) = (ins[0], ins[1]);
            let (Op::Linear { weight }, Op::Linear { weight: bw }) = (&g.g[y].op, &g.g[b].op)
            else {
                continue;
            };
            let a = input0(g, b);
            let Op::Linear { weight: aw } = &g.g[a].op else {
                continue;
            };
            let x = input0(g, y);
            if input0(g, a) != x
                || !only_user(g, y, n)
                || !only_user(g, b, n)
                || !only_user(g, a, b)
            {
                continue;
            }
            let op = Op::LinearLora {
                weight: weight.clone(),
                adapter: Adapter {
                    a: aw.clone(),
                    b: bw.clone(),
                },
            };
            let (shape, label) = (g.g[n].shape.clone(), g.g[y].label.clone());
            replace(g, n, op, &[x], shape, label);
        }
        sweep(g);
    });
}

/// The projection a `Linear` or `LinearLora` node applies, if it is one.
pub fn proj_of(op: &Op) -> Option<Proj> {
    Proj::of(op)
}

/// The readers of `x` when every one is a projection of `x` (and there is at least one), in
/// node order, with their projections.
pub fn projection_users(g: &Graph, x: NodeIndex) -> Option<Vec<(NodeIndex, Proj)>> {
    let users = g.users(x);
    if users.is_empty() || g.outputs.contains(&x) {
        return None;
    }
    users
        .into_iter()
        .map(|u| proj_of(&g.g[u].op).map(|p| (u, p)))
        .collect()
}

/// Makes the fused node `fused` (whose output is the consumers' outputs concatenated) stand
/// for each consumer: directly when there is one, through a `Slice` each otherwise.
pub fn split_output(g: &mut Graph, fused: NodeIndex, consumers: &[NodeIndex]) {
    if let [only] = consumers {
        g.replace_uses(*only, fused);
        return;
    }
    let mut start = 0;
    for &c in consumers {
        let len = width(g, c);
        let (shape, label) = (g.g[c].shape.clone(), g.g[c].label.clone());
        replace(g, c, Op::Slice { start, len }, &[fused], shape, label);
        start += len;
    }
}

/// fuse-norm-linear: an RMSNorm whose readers are all projections -> one `NormLinear` with a
/// split output (the mixer's `in_proj`, the MLP's `gate_up_proj`, the final norm + lm_head).
pub fn fuse_norm_linear(m: &mut Module) {
    each_graph(m, |g| {
        let norms = nodes_of(g, OpKind::RmsNorm);
        for n in norms {
            let Op::RmsNorm { weight, eps } = g.g[n].op.clone() else {
                continue;
            };
            let Some(users) = projection_users(g, n) else {
                continue;
            };
            let total: usize = users.iter().map(|&(u, _)| width(g, u)).sum();
            let (consumers, projs): (Vec<NodeIndex>, Vec<Proj>) = users.into_iter().unzip();
            let op = Op::NormLinear {
                norm: Norm { weight, eps },
                projs,
            };
            let shape = crate::rewrite::with_width(&g.g[consumers[0]].shape, total);
            let label = if consumers.len() == 1 {
                g.g[consumers[0]].label.clone()
            } else {
                format!("{}+proj", g.g[n].label)
            };
            let x = input0(g, n);
            let f = g.add(op, &[x], shape, g.g[n].dtype, label);
            split_output(g, f, &consumers);
        }
        sweep(g);
    });
}

/// fuse-mlp: `gu = proj(x)`, `GELU(gu[..I]) ⊙ gu[I..]`, `down`, and the hybrid layer's
/// `linear` when it is the only reader -> one `GatedMlp` (spec §2.3, §2.5).
pub fn fuse_mlp(m: &mut Module) {
    each_graph(m, |g| {
        let gelus = nodes_of(g, OpKind::Gelu);
        for act in gelus {
            let Some(found) = match_mlp(g, act) else {
                continue;
            };
            let (x, norm, gate_up, inter, down, post, last) = found;
            let op = Op::GatedMlp {
                norm,
                gate_up,
                down,
                post,
                inter,
            };
            let (shape, label) = (g.g[last].shape.clone(), mlp_label(&g.g[last].label));
            replace(g, last, op, &[x], shape, label);
        }
        sweep(g);
    });
}

/// `….feed_forward.down_proj` -> `….feed_forward`; a per-layer linear keeps its own name.
fn mlp_label(last: &str) -> String {
    last.strip_suffix(".down_proj").unwrap_or(last).to_string()
}

type MlpMatch = (
    NodeIndex,
    Option<Norm>,
    Proj,
    usize,
    String,
    Option<String>,
    NodeIndex,
);

fn match_mlp(g: &Graph, act: NodeIndex) -> Option<MlpMatch> {
    let gate = input0(g, act);
    let (0, inter) = slice_of(g, gate)? else {
        return None;
    };
    let gu = input0(g, gate);
    let [mul] = g.users(act)[..] else {
        return None;
    };
    let mins = g.inputs(mul);
    if !matches!(g.g[mul].op, Op::Mul) || mins[0] != act || !only_user(g, act, mul) {
        return None;
    }
    let up = mins[1];
    if slice_of(g, up)? != (inter, inter) || input0(g, up) != gu || !only_user(g, up, mul) {
        return None;
    }
    if g.users(gu) != [gate.min(up), gate.max(up)] || g.outputs.contains(&gu) {
        return None;
    }
    if !only_user(g, gate, act) || width(g, gu) != 2 * inter {
        return None;
    }
    let (norm, proj) = match &g.g[gu].op {
        Op::NormLinear { norm, projs } if projs.len() == 1 => {
            (Some(norm.clone()), projs[0].clone())
        }
        op => (None, proj_of(op)?),
    };
    let [down] = g.users(mul)[..] else {
        return None;
    };
    let Op::Linear { weight: down_w } = &g.g[down].op else {
        return None;
    };
    if !only_user(g, mul, down) {
        return None;
    }
    let post = match g.users(down)[..] {
        [p] if !g.outputs.contains(&down) => match &g.g[p].op {
            Op::Linear { weight } => Some((weight.clone(), p)),
            _ => None,
        },
        _ => None,
    };
    let last = post.as_ref().map_or(down, |&(_, p)| p);
    Some((
        input0(g, gu),
        norm,
        proj,
        inter,
        down_w.clone(),
        post.map(|(w, _)| w),
        last,
    ))
}

/// fuse-mixer: split, conv + SiLU, split, SSM scan/step (softplus dt, D skip) and the gated
/// RMSNorm of one Mamba2 mixer -> one `MambaMixer` reading `in_proj`'s output (spec §3.2).
pub fn fuse_mixer(m: &mut Module) {
    each_graph(m, |g| {
        let scans = nodes_of(g, OpKind::SsmScan);
        for s in scans {
            let Some((zx, gn, mut op)) = match_mixer(g, s) else {
                continue;
            };
            // The out_proj reading the normalised output joins the mixer: its kernel applies
            // the gated norm in the projection's prologue (codegen/src/fused.rs).
            let mut last = gn;
            if let [user] = g.users(gn)[..] {
                if let (Op::Linear { weight }, false) = (&g.g[user].op, g.outputs.contains(&gn)) {
                    if let Op::MambaMixer { out_proj, .. } = &mut op {
                        *out_proj = Some(weight.clone());
                    }
                    last = user;
                }
            }
            let gn = last;
            let shape = g.g[gn].shape.clone();
            let label = g.g[s]
                .label
                .strip_suffix(".ssm")
                .unwrap_or(&g.g[s].label)
                .to_string();
            replace(g, gn, op, &[zx], shape, label);
        }
        sweep(g);
    });
}

fn match_mixer(g: &Graph, s: NodeIndex) -> Option<(NodeIndex, NodeIndex, Op)> {
    let Op::SsmScan {
        dt_bias,
        a_log,
        d,
        heads,
        head_dim,
        d_state,
        groups,
        dt_min,
        state: ssm_state,
    } = g.g[s].op.clone()
    else {
        return None;
    };
    let (din, gn) = (heads * head_dim, groups * d_state);
    let cd = din + 2 * gn;
    let [x, dt, b, c] = g.inputs(s)[..] else {
        return None;
    };
    let xc = input0(g, x);
    let parts = [(x, 0, din), (b, din, gn), (c, din + gn, gn)];
    for (n, start, len) in parts {
        if slice_of(g, n)? != (start, len) || input0(g, n) != xc || !only_user(g, n, s) {
            return None;
        }
    }
    if !matches!(g.g[xc].op, Op::Silu) || g.users(xc).len() != 3 || g.outputs.contains(&xc) {
        return None;
    }
    let conv = input0(g, xc);
    let Op::CausalConv1d {
        weight: conv_weight,
        bias: conv_bias,
        state: conv_state,
    } = g.g[conv].op.clone()
    else {
        return None;
    };
    let xbc = input0(g, conv);
    let zx = input0(g, xbc);
    let [gnorm] = g.users(s)[..] else {
        return None;
    };
    let Op::GatedRmsNorm {
        weight: nw,
        groups: ng,
        eps,
    } = g.g[gnorm].op.clone()
    else {
        return None;
    };
    let z = g.inputs(gnorm)[1];
    let split = [
        (z, 0, din, gnorm),
        (xbc, din, cd, conv),
        (dt, din + cd, heads, s),
    ];
    for (n, start, len, user) in split {
        if slice_of(g, n)? != (start, len) || input0(g, n) != zx || !only_user(g, n, user) {
            return None;
        }
    }
    if !only_user(g, conv, xc) || g.inputs(gnorm)[0] != s || ng != groups || !only_user(g, s, gnorm)
    {
        return None;
    }
    if width(g, zx) != din + cd + heads {
        return None;
    }
    let op = Op::MambaMixer {
        conv_weight,
        conv_bias,
        conv_state,
        dt_bias,
        a_log,
        d,
        heads,
        head_dim,
        d_state,
        groups,
        dt_min,
        ssm_state,
        norm: Norm { weight: nw, eps },
        out_proj: None,
    };
    Some((zx, gnorm, op))
}

/// fuse-residual: `Add(r, y)` where `y` is a projection, gated MLP or mixer read by nothing
/// else -> `Residual { y's op }` on `y`'s operands and `r`: the add happens in the epilogue of
/// the kernel that writes `y` (spec §2.2: every layer ends in a residual add).
pub fn fuse_residual(m: &mut Module) {
    each_graph(m, |g| {
        let adds = nodes_of(g, OpKind::Add);
        for n in adds {
            let [r, y] = g.inputs(n)[..] else {
                continue;
            };
            let takes = matches!(
                g.g[y].op,
                Op::Linear { .. } | Op::GatedMlp { .. } | Op::MambaMixer { .. }
            );
            if !takes || r == y || !only_user(g, y, n) || g.outputs.contains(&y) {
                continue;
            }
            let mut ins = g.inputs(y);
            ins.push(r);
            let op = Op::Residual {
                inner: Box::new(g.g[y].op.clone()),
            };
            let (shape, label) = (g.g[n].shape.clone(), g.g[y].label.clone());
            replace(g, n, op, &ins, shape, label);
        }
        sweep(g);
    });
}

/// eliminate-dead-nodes: removes every node no output depends on.
pub fn eliminate_dead_nodes(m: &mut Module) {
    each_graph(m, |g| {
        sweep(g);
    });
}
