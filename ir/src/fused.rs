//! Fused ops' parts and their decompositions: every fused op (made only by `zamba2c-passes`)
//! stands for a straight-line list of base ops, [`Op::decompose`], which is its meaning: the
//! CPU interpreter evaluates a fused op through it, and the verifier infers its shape from it.

use serde::{Deserialize, Serialize};

use crate::op::Op;

/// A per-invocation LoRA adapter `(x·Aᵀ)·Bᵀ` (spec §2.4, §2.5): HF names of A (`….0.weight`,
/// `[r, in]`) and B (`….1.weight`, `[out, r]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adapter {
    pub a: String,
    pub b: String,
}

/// One projection of a fused op: `x·Wᵀ`, plus `(x·Aᵀ)·Bᵀ` when it has an adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proj {
    pub weight: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<Adapter>,
}

impl Proj {
    /// The projection a `Linear` or `LinearLora` op applies, if it is one.
    pub fn of(op: &Op) -> Option<Proj> {
        match op {
            Op::Linear { weight } => Some(Proj {
                weight: weight.clone(),
                adapter: None,
            }),
            Op::LinearLora { weight, adapter } => Some(Proj {
                weight: weight.clone(),
                adapter: Some(adapter.clone()),
            }),
            _ => None,
        }
    }
}

/// An RMSNorm's weight and epsilon (spec §2.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    pub weight: String,
    pub eps: f32,
}

/// Where a decomposition step's operand comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// The i-th operand of the fused op.
    Input(usize),
    /// The output of an earlier step.
    Step(usize),
}

/// One base op of a decomposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub op: Op,
    pub operands: Vec<Operand>,
}

/// Names a slice `[start, start+len)` of the last axis of weight `base` (columns of a matrix,
/// elements of a vector). Only decompositions use such names; the weight table holds `base`.
pub fn weight_view(base: &str, start: usize, len: usize) -> String {
    format!("{base}@[{start}..{}]", start + len)
}

/// Parses a name made by [`weight_view`]: `(base, start, len)`.
pub fn parse_weight_view(name: &str) -> Option<(&str, usize, usize)> {
    let (base, rest) = name.rsplit_once("@[")?;
    let (a, b) = rest.strip_suffix(']')?.split_once("..")?;
    let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
    (b > a).then_some((base, a, b - a))
}

/// Builds a decomposition step by step.
#[derive(Default)]
struct Steps(Vec<Step>);

impl Steps {
    fn push(&mut self, op: Op, operands: &[Operand]) -> Operand {
        self.0.push(Step {
            op,
            operands: operands.to_vec(),
        });
        Operand::Step(self.0.len() - 1)
    }

    fn linear(&mut self, weight: &str, x: Operand) -> Operand {
        let weight = weight.to_string();
        self.push(Op::Linear { weight }, &[x])
    }

    /// `x·Wᵀ (+ (x·Aᵀ)·Bᵀ)`, in the order the lowering builds it.
    fn proj(&mut self, p: &Proj, x: Operand) -> Operand {
        let y = self.linear(&p.weight, x);
        match &p.adapter {
            None => y,
            Some(ad) => {
                let a = self.linear(&ad.a, x);
                let b = self.linear(&ad.b, a);
                self.push(Op::Add, &[y, b])
            }
        }
    }

    fn norm(&mut self, n: &Norm, x: Operand) -> Operand {
        let op = Op::RmsNorm {
            weight: n.weight.clone(),
            eps: n.eps,
        };
        self.push(op, &[x])
    }

    /// The projections of `x`, concatenated when there are several.
    fn projs(&mut self, projs: &[Proj], x: Operand) -> Operand {
        let outs: Vec<Operand> = projs.iter().map(|p| self.proj(p, x)).collect();
        if outs.len() == 1 {
            outs[0]
        } else {
            self.push(Op::Concat, &outs)
        }
    }
}

impl Op {
    /// True for ops that only passes make; they have a [`Op::decompose`].
    pub fn is_fused(&self) -> bool {
        self.decompose().is_some()
    }

    /// The base ops a fused op stands for, in order; the last step's output is the op's output.
    /// `None` for base ops. Weight names may be [`weight_view`]s.
    pub fn decompose(&self) -> Option<Vec<Step>> {
        use Operand::Input;
        let mut s = Steps::default();
        match self {
            Op::LinearLora { weight, adapter } => {
                let p = Proj {
                    weight: weight.clone(),
                    adapter: Some(adapter.clone()),
                };
                s.proj(&p, Input(0));
            }
            Op::NormLinear { norm, projs } => {
                let xn = s.norm(norm, Input(0));
                s.projs(projs, xn);
            }
            // The embedding half is normalised by its own RMS; the consumer rescales it by
            // rms(e)/rms([h,e]) (see `SplitNormLinear`).
            Op::EmbedHalfProj {
                norm,
                weights,
                hidden,
            } => {
                let half = Norm {
                    weight: weight_view(&norm.weight, *hidden, *hidden),
                    eps: norm.eps,
                };
                let en = s.norm(&half, Input(0));
                let projs: Vec<Proj> = weights
                    .iter()
                    .map(|w| Proj {
                        weight: weight_view(w, *hidden, *hidden),
                        adapter: None,
                    })
                    .collect();
                s.projs(&projs, en);
            }
            // The meaning is the concat-norm-project it replaced; the third operand (the shared
            // embedding half) is only a precomputed part of the same value, for kernels.
            Op::SplitNormLinear { norm, projs, .. } => {
                let x = s.push(Op::Concat, &[Input(0), Input(1)]);
                let xn = s.norm(norm, x);
                s.projs(projs, xn);
            }
            Op::GatedMlp {
                norm,
                gate_up,
                down,
                post,
                inter,
            } => {
                let x = match norm {
                    Some(n) => s.norm(n, Input(0)),
                    None => Input(0),
                };
                let gu = s.proj(gate_up, x);
                let gate = s.push(
                    Op::Slice {
                        start: 0,
                        len: *inter,
                    },
                    &[gu],
                );
                let up = s.push(
                    Op::Slice {
                        start: *inter,
                        len: *inter,
                    },
                    &[gu],
                );
                let act = s.push(Op::Gelu, &[gate]);
                let f = s.push(Op::Mul, &[act, up]);
                let f = s.linear(down, f);
                if let Some(p) = post {
                    s.linear(p, f);
                }
            }
            Op::MambaMixer {
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
                norm,
                out_proj,
            } => {
                let din = heads * head_dim;
                let gn = groups * d_state;
                let cd = din + 2 * gn;
                let sl = |start, len| Op::Slice { start, len };
                let z = s.push(sl(0, din), &[Input(0)]);
                let xbc = s.push(sl(din, cd), &[Input(0)]);
                let dt = s.push(sl(din + cd, *heads), &[Input(0)]);
                let conv = Op::CausalConv1d {
                    weight: conv_weight.clone(),
                    bias: conv_bias.clone(),
                    state: *conv_state,
                };
                let c = s.push(conv, &[xbc]);
                let xc = s.push(Op::Silu, &[c]);
                let x = s.push(sl(0, din), &[xc]);
                let b = s.push(sl(din, gn), &[xc]);
                let cc = s.push(sl(din + gn, gn), &[xc]);
                let scan = Op::SsmScan {
                    dt_bias: dt_bias.clone(),
                    a_log: a_log.clone(),
                    d: d.clone(),
                    heads: *heads,
                    head_dim: *head_dim,
                    d_state: *d_state,
                    groups: *groups,
                    dt_min: *dt_min,
                    state: *ssm_state,
                };
                let y = s.push(scan, &[x, dt, b, cc]);
                let gated = Op::GatedRmsNorm {
                    weight: norm.weight.clone(),
                    groups: *groups,
                    eps: norm.eps,
                };
                let yn = s.push(gated, &[y, z]);
                if let Some(w) = out_proj {
                    s.linear(w, yn);
                }
            }
            // The inner op (through its own decomposition when fused), then `r + y`.
            Op::Residual { inner } => {
                let n = inner.arity()?;
                let ins: Vec<Operand> = (0..n).map(Input).collect();
                let y = match inner.decompose() {
                    Some(steps) => {
                        let base = s.0.len();
                        for st in steps {
                            let operands: Vec<Operand> = st
                                .operands
                                .iter()
                                .map(|o| match *o {
                                    Operand::Step(j) => Operand::Step(base + j),
                                    i => i,
                                })
                                .collect();
                            s.push(st.op, &operands);
                        }
                        Operand::Step(s.0.len() - 1)
                    }
                    None => s.push((**inner).clone(), &ins),
                };
                s.push(Op::Add, &[Input(n), y]);
            }
            _ => return None,
        }
        Some(s.0)
    }
}

/// The weights a list of projections reads, in order.
pub(crate) fn proj_weights(projs: &[Proj]) -> Vec<&str> {
    let mut w = Vec::new();
    for p in projs {
        w.push(p.weight.as_str());
        if let Some(a) = &p.adapter {
            w.push(a.a.as_str());
            w.push(a.b.as_str());
        }
    }
    w
}
