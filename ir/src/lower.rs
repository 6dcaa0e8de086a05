//! Lowering: a validated config becomes a [`Module`] with a prompt graph and a decode graph,
//! op for op as transformers' `modeling_zamba2.py` computes (spec §2, §3), nothing fused yet.

use std::collections::BTreeMap;

use petgraph::stable_graph::NodeIndex;

use crate::config::{LayerType, Zamba2Config};
use crate::graph::{DType, Dim, Graph, Module, Phase, Shape, StateSpec, WeightSpec};
use crate::op::Op;

/// Builds the module for `config` with weights and activations in `dtype`.
pub fn lower(config: &Zamba2Config, dtype: DType) -> Module {
    lower_mixed(config, dtype, dtype)
}

/// Builds the module with weights in `dtype` and activations, including the residual stream,
/// the conv state and the KV cache, in `act_dtype`. bf16 weights with f32 activations read
/// the same weight bytes per decoded token as an all-bf16 plan but keep the residual stream
/// exact, which random-weight 2.7B models need to agree with an f32 reference (GPU.md log).
pub fn lower_mixed(config: &Zamba2Config, dtype: DType, act_dtype: DType) -> Module {
    lower_with_kv(config, dtype, act_dtype, act_dtype)
}

/// [`lower_mixed`] with the KV caches stored in `kv_dtype` (`compile --kv-dtype`): a bf16
/// cache halves the bytes attention reads per cached token; K and V are rounded to it when
/// appended (ZAMBA2.md §4), on the CPU as on the GPU.
pub fn lower_with_kv(
    config: &Zamba2Config,
    dtype: DType,
    act_dtype: DType,
    kv_dtype: DType,
) -> Module {
    let mut weights = BTreeMap::new();
    let states = state_table(config, act_dtype, kv_dtype);
    let prompt = Lowering::new(config, dtype, act_dtype, Phase::Prompt, &mut weights).run();
    let decode = Lowering::new(config, dtype, act_dtype, Phase::Decode, &mut weights).run();
    Module {
        config: config.clone(),
        dtype,
        act_dtype,
        kv_dtype,
        batch_invariant: false,
        weights,
        states,
        prompt,
        decode,
    }
}

/// State ids are assigned layer by layer: conv, ssm, then (hybrid layers) the KV cache.
fn state_table(c: &Zamba2Config, act_dtype: DType, kv_dtype: DType) -> Vec<StateSpec> {
    let mut s = Vec::new();
    for (layer, t) in c.layers_block_type.iter().enumerate() {
        s.push(StateSpec::Conv {
            layer,
            channels: c.conv_dim(),
            kernel: c.mamba_d_conv,
            dtype: act_dtype,
        });
        s.push(StateSpec::Ssm {
            layer,
            heads: c.n_mamba_heads,
            head_dim: c.mamba_headdim,
            d_state: c.mamba_d_state,
            dtype: DType::F32,
        });
        if *t == LayerType::Hybrid {
            s.push(StateSpec::Kv {
                layer,
                kv_heads: c.num_key_value_heads,
                head_dim: c.attention_head_dim,
                dtype: kv_dtype,
            });
        }
    }
    s
}

/// The layer under which hybrid ordinal `k` finds its shared block's weights.
///
/// transformers ties the shared blocks (and the lm_head) only when `tie_word_embeddings` is
/// true: `get_expanded_tied_weights_keys` returns no tying at all otherwise, so an untied model
/// runs every hybrid layer with its own copy of `shared_transformer.*` (transformers wins over
/// spec §2.3 here). Tied: the block is stored under the first hybrid layer that uses it (§5.1).
pub fn shared_block_store(c: &Zamba2Config, k: usize) -> usize {
    let hybrid = c.hybrid_layer_ids();
    if c.tie_word_embeddings {
        hybrid[k % c.num_mem_blocks]
    } else {
        hybrid[k]
    }
}

/// Position of each layer's states in the state table (see [`state_table`]).
struct StateIds {
    conv: usize,
    ssm: usize,
    kv: Option<usize>,
}

struct Lowering<'a> {
    c: &'a Zamba2Config,
    /// Weight dtype.
    dtype: DType,
    /// Activation dtype.
    act_dtype: DType,
    g: Graph,
    weights: &'a mut BTreeMap<String, WeightSpec>,
    seq: Dim,
}

impl<'a> Lowering<'a> {
    fn new(
        c: &'a Zamba2Config,
        dtype: DType,
        act_dtype: DType,
        phase: Phase,
        weights: &'a mut BTreeMap<String, WeightSpec>,
    ) -> Self {
        let seq = match phase {
            Phase::Prompt => Dim::Seq,
            Phase::Decode => Dim::Fixed(1),
        };
        Lowering {
            c,
            dtype,
            act_dtype,
            g: Graph::new(phase),
            weights,
            seq,
        }
    }

    fn act(&self, width: usize) -> Shape {
        vec![Dim::Batch, self.seq, Dim::Fixed(width)]
    }

    /// Registers a weight (same name, same spec in both graphs) and returns its name.
    fn weight(&mut self, name: String, shape: Vec<usize>, dtype: DType) -> String {
        self.weights
            .entry(name.clone())
            .or_insert(WeightSpec { shape, dtype });
        name
    }

    fn node(&mut self, op: Op, inputs: &[NodeIndex], width: usize, label: &str) -> NodeIndex {
        let shape = self.act(width);
        self.g.add(op, inputs, shape, self.act_dtype, label)
    }

    fn rms_norm(&mut self, x: NodeIndex, weight: String, width: usize, label: &str) -> NodeIndex {
        let w = self.weight(weight, vec![width], self.dtype);
        let eps = self.c.rms_norm_eps as f32;
        self.node(Op::RmsNorm { weight: w, eps }, &[x], width, label)
    }

    fn linear(
        &mut self,
        x: NodeIndex,
        weight: String,
        out: usize,
        inp: usize,
        label: &str,
    ) -> NodeIndex {
        let w = self.weight(weight, vec![out, inp], self.dtype);
        self.node(Op::Linear { weight: w }, &[x], out, label)
    }

    fn slice(&mut self, x: NodeIndex, start: usize, len: usize, label: &str) -> NodeIndex {
        self.node(Op::Slice { start, len }, &[x], len, label)
    }

    /// `x·Wᵀ + (x·Aᵀ)·Bᵀ`: a base projection plus a per-invocation LoRA adapter (spec §2.4, §2.5).
    fn linear_with_adapter(
        &mut self,
        x: NodeIndex,
        base: String,
        adapter: String,
        out: usize,
        inp: usize,
        label: &str,
    ) -> NodeIndex {
        let r = self.c.adapter_rank;
        let y = self.linear(x, base, out, inp, label);
        let a = self.linear(
            x,
            format!("{adapter}.0.weight"),
            r,
            inp,
            &format!("{label}.adapter.A"),
        );
        let b = self.linear(
            a,
            format!("{adapter}.1.weight"),
            out,
            r,
            &format!("{label}.adapter.B"),
        );
        self.node(Op::Add, &[y, b], out, &format!("{label}.adapter.add"))
    }

    fn run(mut self) -> Graph {
        let c = self.c;
        let h = c.hidden_size;
        let shape = vec![Dim::Batch, self.seq];
        let tokens = self.g.add(Op::Tokens, &[], shape, DType::I32, "input_ids");
        let emb_w = self.weight(
            "model.embed_tokens.weight".into(),
            vec![c.vocab_size, h],
            self.dtype,
        );
        let e = self.node(
            Op::Embedding {
                weight: emb_w.clone(),
            },
            &[tokens],
            h,
            "model.embed_tokens",
        );
        let hybrid = c.hybrid_layer_ids();
        let mut state = 0usize;
        let mut x = e;
        for i in 0..c.num_hidden_layers {
            let ids = StateIds {
                conv: state,
                ssm: state + 1,
                kv: (c.layers_block_type[i] == LayerType::Hybrid).then_some(state + 2),
            };
            state += if ids.kv.is_some() { 3 } else { 2 };
            x = match ids.kv {
                None => {
                    let p = format!("model.layers.{i}");
                    let u = self.rms_norm(
                        x,
                        format!("{p}.input_layernorm.weight"),
                        h,
                        &format!("{p}.input_layernorm"),
                    );
                    let m = self.mixer(u, &format!("{p}.mamba"), &ids);
                    self.node(Op::Add, &[x, m], h, &format!("{p}.residual"))
                }
                Some(kv) => {
                    let k = hybrid
                        .iter()
                        .position(|&l| l == i)
                        .expect("hybrid layer is in the list");
                    self.hybrid_layer(x, e, i, k, shared_block_store(c, k), kv, &ids)
                }
            };
        }
        let hn = self.rms_norm(
            x,
            "model.final_layernorm.weight".into(),
            h,
            "model.final_layernorm",
        );
        let head = if c.tie_word_embeddings {
            emb_w
        } else {
            self.weight("lm_head.weight".into(), vec![c.vocab_size, h], self.dtype)
        };
        let logits = self.node(Op::Linear { weight: head }, &[hn], c.vocab_size, "lm_head");
        self.g.outputs = vec![logits];
        self.g
    }

    /// Hybrid layer `i` with hybrid ordinal `k`, whose shared block is stored under layer
    /// `store` (spec §2.3, loader rule §5.1.1).
    #[allow(clippy::too_many_arguments)]
    fn hybrid_layer(
        &mut self,
        h_in: NodeIndex,
        e: NodeIndex,
        i: usize,
        k: usize,
        store: usize,
        kv: usize,
        ids: &StateIds,
    ) -> NodeIndex {
        let c = self.c;
        let h = c.hidden_size;
        let (ha, hkv, d) = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.attention_head_dim,
        );
        let sp = format!("model.layers.{store}.shared_transformer");
        let lp = format!("model.layers.{i}");
        let blk = format!("{lp}.shared[{}]", k % c.num_mem_blocks);
        let cat = self.node(Op::Concat, &[h_in, e], 2 * h, &format!("{blk}.concat"));
        let xn = self.rms_norm(
            cat,
            format!("{sp}.input_layernorm.weight"),
            2 * h,
            &format!("{blk}.input_layernorm"),
        );
        let mut qkv = Vec::new();
        for (name, out) in [("q", ha * d), ("k", hkv * d), ("v", hkv * d)] {
            let base = format!("{sp}.self_attn.{name}_proj.weight");
            let label = format!("{blk}.self_attn.{name}_proj");
            qkv.push(if c.use_shared_attention_adapter {
                let adapter = format!("{sp}.self_attn.linear_{name}_adapter_list.{k}");
                self.linear_with_adapter(xn, base, adapter, out, 2 * h, &label)
            } else {
                self.linear(xn, base, out, 2 * h, &label)
            });
        }
        let attn = Op::Attention {
            heads: ha,
            kv_heads: hkv,
            head_dim: d,
            scale: c.attention_scale() as f32,
            rope_theta: c.use_mem_rope.then_some(c.rope_theta as f32),
            cache: kv,
        };
        let o = self.node(attn, &qkv, ha * d, &format!("{blk}.self_attn"));
        let a = self.linear(
            o,
            format!("{sp}.self_attn.o_proj.weight"),
            h,
            ha * d,
            &format!("{blk}.self_attn.o_proj"),
        );
        let a = self.rms_norm(
            a,
            format!("{sp}.pre_ff_layernorm.weight"),
            h,
            &format!("{blk}.pre_ff_layernorm"),
        );
        let inter = c.intermediate_size;
        let gu = self.linear_with_adapter(
            a,
            format!("{sp}.feed_forward.gate_up_proj.weight"),
            format!("{sp}.feed_forward.gate_up_proj_adapter_list.{k}"),
            2 * inter,
            h,
            &format!("{blk}.feed_forward.gate_up_proj"),
        );
        let gate = self.slice(gu, 0, inter, &format!("{blk}.feed_forward.gate"));
        let up = self.slice(gu, inter, inter, &format!("{blk}.feed_forward.up"));
        let act = self.node(
            Op::Gelu,
            &[gate],
            inter,
            &format!("{blk}.feed_forward.gelu"),
        );
        let f = self.node(
            Op::Mul,
            &[act, up],
            inter,
            &format!("{blk}.feed_forward.gelu_mul"),
        );
        let f = self.linear(
            f,
            format!("{sp}.feed_forward.down_proj.weight"),
            h,
            inter,
            &format!("{blk}.feed_forward.down_proj"),
        );
        let t = self.linear(
            f,
            format!("{lp}.linear.weight"),
            h,
            h,
            &format!("{lp}.linear"),
        );
        // MambaLayer_i(h, t): the norm sees h + t, the residual is h alone (spec §2.2, §6.5).
        let md = format!("{lp}.mamba_decoder");
        let ht = self.node(Op::Add, &[h_in, t], h, &format!("{md}.inject"));
        let u = self.rms_norm(
            ht,
            format!("{md}.input_layernorm.weight"),
            h,
            &format!("{md}.input_layernorm"),
        );
        let m = self.mixer(u, &format!("{md}.mamba"), ids);
        self.node(Op::Add, &[h_in, m], h, &format!("{lp}.residual"))
    }

    /// The Mamba2 mixer under weight prefix `p` (spec §3.2).
    fn mixer(&mut self, u: NodeIndex, p: &str, ids: &StateIds) -> NodeIndex {
        let c = self.c;
        let (h, din, cd, nh) = (c.hidden_size, c.d_inner(), c.conv_dim(), c.n_mamba_heads);
        let gn = c.mamba_ngroups * c.mamba_d_state;
        let zx = self.linear(
            u,
            format!("{p}.in_proj.weight"),
            c.in_proj_dim(),
            h,
            &format!("{p}.in_proj"),
        );
        let z = self.slice(zx, 0, din, &format!("{p}.z"));
        let xbc = self.slice(zx, din, cd, &format!("{p}.xBC"));
        let dtr = self.slice(zx, din + cd, nh, &format!("{p}.dt"));
        let cw = self.weight(
            format!("{p}.conv1d.weight"),
            vec![cd, c.mamba_d_conv],
            self.dtype,
        );
        let cb = self.weight(format!("{p}.conv1d.bias"), vec![cd], self.dtype);
        let conv = self.node(
            Op::CausalConv1d {
                weight: cw,
                bias: cb,
                state: ids.conv,
            },
            &[xbc],
            cd,
            &format!("{p}.conv1d"),
        );
        let xc = self.node(Op::Silu, &[conv], cd, &format!("{p}.conv1d.silu"));
        let x = self.slice(xc, 0, din, &format!("{p}.x"));
        let b = self.slice(xc, din, gn, &format!("{p}.B"));
        let cc = self.slice(xc, din + gn, gn, &format!("{p}.C"));
        let dt_min = match self.g.phase {
            // HF 5.24 clamps dt on the chunked (prompt) path only (spec §3.5, option c); the
            // original code never clamps (§5.2), which the config says (`prompt_dt_clamp`).
            Phase::Prompt if c.prompt_dt_clamp => Some(c.time_step_min as f32),
            Phase::Prompt | Phase::Decode => None,
        };
        let scan = Op::SsmScan {
            dt_bias: self.weight(format!("{p}.dt_bias"), vec![nh], DType::F32),
            a_log: self.weight(format!("{p}.A_log"), vec![nh], DType::F32),
            d: self.weight(format!("{p}.D"), vec![nh], DType::F32),
            heads: nh,
            head_dim: c.mamba_headdim,
            d_state: c.mamba_d_state,
            groups: c.mamba_ngroups,
            dt_min,
            state: ids.ssm,
        };
        let y = self.node(scan, &[x, dtr, b, cc], din, &format!("{p}.ssm"));
        let nw = self.weight(format!("{p}.norm.weight"), vec![din], self.dtype);
        let yn = self.node(
            Op::GatedRmsNorm {
                weight: nw,
                groups: c.mamba_ngroups,
                eps: 1e-5,
            },
            &[y, z],
            din,
            &format!("{p}.norm"),
        );
        self.linear(
            yn,
            format!("{p}.out_proj.weight"),
            h,
            din,
            &format!("{p}.out_proj"),
        )
    }
}
