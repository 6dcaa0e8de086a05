//! `attention_decode` (templates/attention_decode.cu): decode attention split over the cache
//! with the KV append folded in; docs/KERNELS.md.

use zamba2c_ir::DType;

use crate::families::{flit, Builder, KernelSpec};
use crate::program::{Arg, CType, Extent, NodeCtx, Operand};

/// Splits of the cached positions per head in `attention_decode`, its warps and lanes per key.
pub const ATTN_SPLITS: usize = 16;
const ATTN_WARPS: usize = 4;

/// Decode attention split over the cache with the KV append folded in
/// (templates/attention_decode.cu); `None` when the head size does not split into lanes.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    ctx: &NodeCtx,
    (heads, kv_heads, d, scale): (usize, usize, usize, f32),
    rope: Option<String>,
    cache: usize,
    cache_dtype: DType,
    workspace: Operand,
    counters: Operand,
) -> Option<KernelSpec> {
    let lpk = [8usize, 4, 2, 1]
        .into_iter()
        .find(|l| d.is_multiple_of(*l) && d / l <= 32)?;
    let (q, k, v) = (&ctx.inputs[0], &ctx.inputs[1], &ctx.inputs[2]);
    let kv_row = 2 * (kv_heads * d * cache_dtype.size()) as u64;
    let cost = zamba2c_ir::kernel::LaunchCost {
        bytes_per_row: ((q.width + k.width + v.width) * q.dtype.size()) as u64
            + (ctx.out.width * ctx.out.dtype.size()) as u64
            + kv_row
            + (workspace.width * 4 * 2) as u64,
        bytes_per_cached_token: kv_row,
        flops_per_cached_token: 4 * (heads * d) as u64,
        ..Default::default()
    };
    let mut b = Builder::new("attention_decode", ctx.out.dtype)
        .cost(cost)
        .set("d", d)
        .set("half", d / 2)
        .set("heads", heads)
        .set("kv_heads", kv_heads)
        .set("group", heads / kv_heads)
        .set("scale", flit(scale))
        .set("nw", ATTN_WARPS)
        .set("lpk", lpk)
        .set("dpl", d / lpk)
        .set("splits", ATTN_SPLITS)
        .set("cache_t", CType::elem(cache_dtype))
        .set("q_stride", q.stride)
        .set("k_stride", k.stride)
        .set("v_stride", v.stride)
        .set("out_width", ctx.out.stride)
        .set("rope", rope.is_some());
    if let Some(f) = rope {
        b = b.set("inv_freq", f);
    }
    Some(
        b.input("q", q)
            .input("k", k)
            .input("v", v)
            .param(
                "kcache",
                CType::Ptr(cache_dtype),
                Arg::State { id: cache, part: 0 },
            )
            .param(
                "vcache",
                CType::Ptr(cache_dtype),
                Arg::State { id: cache, part: 1 },
            )
            .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
            .param("workspace", CType::Ptr(DType::F32), workspace.arg())
            .param("counters", CType::Ptr(DType::I32), counters.arg())
            .output(&ctx.out)
            .scalar("cap", Arg::Capacity)
            .finish(
                [
                    Extent::Const(heads as u32),
                    Extent::Const(ATTN_SPLITS as u32),
                    Extent::Batch,
                ],
                32 * ATTN_WARPS,
            ),
    )
}
