//! What each emitted launch moves and computes ([`LaunchCost`]): codegen's own accounting of
//! the kernels it chose, summed by `inspect` (the program's cost) and read by the profiler
//! (each kernel against its byte floor). Bytes count each tensor once per launch: weights
//! read, activations read and written, recurrent state read and written, KV cache read.

use zamba2c_ir::kernel::LaunchCost;
use zamba2c_ir::{DType, Op, StateSpec};

use crate::families::weight_ref;
use crate::program::NodeCtx;

fn wbytes(ctx: &NodeCtx, w: &str) -> u64 {
    weight_ref(ctx, w).map_or(0, |r| {
        (r.shape.iter().product::<usize>() * r.dtype.size()) as u64
    })
}

/// The costs of a base op's kernels, in launch order (attention: append, then attend).
pub fn base_costs(ctx: &NodeCtx) -> Vec<LaunchCost> {
    let ins = &ctx.inputs;
    let out = &ctx.out;
    let osz = (out.width * out.dtype.size()) as u64;
    let in_sz = |i: usize| ins.get(i).map_or(0, |o| (o.width * o.dtype.size()) as u64);
    let all_in: u64 = (0..ins.len()).map(in_sz).sum();
    let w = out.width as u64;
    match ctx.op {
        Op::Embedding { .. } => vec![LaunchCost {
            bytes_per_row: 4 + osz + out.width as u64 * ctx.module.dtype.size() as u64,
            ..Default::default()
        }],
        Op::RmsNorm { weight, .. } => vec![LaunchCost {
            weight_bytes: wbytes(ctx, weight),
            bytes_per_row: all_in + osz,
            flops_per_row: 4 * w,
            ..Default::default()
        }],
        Op::Linear { weight } => {
            let k = ins.first().map_or(0, |x| x.width) as u64;
            // A presplit input is read as its GEMM input planes (two bf16, or one f16); stacked
            // rows are each a whole row of input and output (the weight is still read once).
            let x_bytes = match ins.first() {
                Some(x) if ctx.presplit => crate::families::planes_of(x.dtype) as u64 * all_in,
                _ => all_in,
            };
            let stack = ctx.row_stack as u64;
            vec![LaunchCost {
                weight_bytes: wbytes(ctx, weight),
                bytes_per_row: stack * (x_bytes + osz),
                flops_per_row: stack * 2 * w * k,
                ..Default::default()
            }]
        }
        Op::Add | Op::Mul | Op::Gelu | Op::Silu | Op::Concat => vec![LaunchCost {
            bytes_per_row: all_in + osz,
            flops_per_row: w,
            ..Default::default()
        }],
        Op::CausalConv1d {
            weight,
            bias,
            state,
        } => {
            let st = ctx.module.states.get(*state);
            let sb = st.map_or(0, |s| (s.numel_per_seq() * s.dtype().size()) as u64);
            let k = match st {
                Some(StateSpec::Conv { kernel, .. }) => *kernel as u64,
                _ => 0,
            };
            vec![
                LaunchCost {
                    weight_bytes: wbytes(ctx, weight) + wbytes(ctx, bias),
                    bytes_per_row: all_in + osz,
                    bytes_per_seq: sb,
                    flops_per_row: 2 * k * w,
                    ..Default::default()
                },
                // The ring update: the last K inputs read, the state written.
                LaunchCost {
                    bytes_per_seq: 2 * sb,
                    ..Default::default()
                },
            ]
        }
        Op::SsmScan {
            dt_bias,
            a_log,
            d,
            d_state,
            state,
            ..
        } => {
            let sb = ctx
                .module
                .states
                .get(*state)
                .map_or(0, |s| (s.numel_per_seq() * 4) as u64);
            vec![LaunchCost {
                weight_bytes: wbytes(ctx, dt_bias) + wbytes(ctx, a_log) + wbytes(ctx, d),
                bytes_per_row: all_in + osz,
                bytes_per_seq: 2 * sb,
                flops_per_row: 6 * w * *d_state as u64,
                ..Default::default()
            }]
        }
        Op::GatedRmsNorm { weight, .. } => vec![LaunchCost {
            weight_bytes: wbytes(ctx, weight),
            bytes_per_row: all_in + osz,
            flops_per_row: 9 * w,
            ..Default::default()
        }],
        Op::Attention {
            kv_heads,
            head_dim,
            heads,
            cache,
            ..
        } => {
            let csz = match ctx.module.states.get(*cache) {
                Some(s) => s.dtype().size(),
                None => DType::F32.size(),
            } as u64;
            let kv_row = 2 * (*kv_heads * *head_dim) as u64 * csz;
            // Q·Kᵀ and P·V: 4·d FLOPs per head for each (query, key) pair; keys are the cached
            // prefix (every query) and the chunk's own tokens up to the query (causal pairs).
            let pair = 4 * (*heads * *head_dim) as u64;
            vec![
                LaunchCost {
                    bytes_per_row: in_sz(1) + in_sz(2) + kv_row,
                    ..Default::default()
                },
                // The attend kernel reads each key and value of the cache once per launch: the
                // chunk's own (just appended) and the prefix (once per sequence).
                LaunchCost {
                    bytes_per_row: in_sz(0) + osz + kv_row,
                    seq_bytes_per_cached_token: kv_row,
                    flops_per_cached_token: pair,
                    flops_per_causal_pair: pair,
                    ..Default::default()
                },
            ]
        }
        _ => vec![],
    }
}
