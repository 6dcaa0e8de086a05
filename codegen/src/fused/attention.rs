//! `attention_decode` (templates/attention_decode.cu): decode attention split over the cache
//! with the KV append folded in; docs/KERNELS.md.

use zamba2c_ir::DType;

use crate::families::{flit, Builder, KernelSpec};
use crate::program::{Arg, CType, Extent, NodeCtx, Operand};

/// Splits of the cached positions per head in the one-row `decode` table's `attention_decode`
/// (32 heads × 16 splits fill the GPU for one sequence).
const ATTN_SPLITS: usize = 16;
/// Splits in the `decode_rows` table (steps of ≥ 16 rows): its rows already give enough blocks
/// (64 rows × 32 heads × 2 on the 2.7B), and each split costs fixed work (RoPE, the shared
/// merge, the workspace round trip, the counter); `ZAMBA2C_TUNE_ATTN_ROWS_SPLITS` overrides it
/// (4 until the eighteenth session: 2 measured −0.2 ms of a 64-row step, docs/PERFORMANCE.md).
const ATTN_ROWS_SPLITS: usize = 2;
/// Stages of each warp's cp.async ring in the `decode_rows` table (`ZAMBA2C_TUNE_ATTN_RING`, 0:
/// the register-pipelined loop, the one-row table's default). At 64 rows the register form's 116
/// registers held four blocks an SM and the cache streamed at 60% of DRAM peak; 4 stages
/// measured −0.4 ms of a 64-row step, and +0.05 ms a token on the one-row table, whose splits
/// run too few passes to fill a ring (docs/PERFORMANCE.md, eighteenth session).
const ATTN_ROWS_RING: usize = 4;
/// Warps of an `attention_decode` block.
const ATTN_WARPS: usize = 4;

/// Splits of the cached positions per head for a table: `gemm` is `NodeCtx::gemm` (the
/// `decode_rows` table). Its workspace needs `heads × attn_splits(gemm) × (d + 2)` floats a row.
pub fn attn_splits(gemm: bool) -> usize {
    if gemm {
        crate::tune("ATTN_ROWS_SPLITS", ATTN_ROWS_SPLITS)
    } else {
        ATTN_SPLITS
    }
}

/// Elements of one KV-cache load of a lane (`kv_vec`): the widest 16-, 8- or 4-byte vector of
/// cache elements that divides the lane's span of `dpl` dims, else 1 (scalar loads). A span
/// starts at element `kvo + j·d + sub·dpl`: `kvo` and `j·d` are multiples of `d = lpk·dpl`, so
/// `dpl % vec == 0` aligns every start; the K part of the cache region is 256-byte aligned and
/// the V part starts `batch·kv_heads·cap·d` elements after it (ir/src/device.rs).
fn kv_vec(dpl: usize, cache: DType) -> usize {
    let es = cache.size();
    [16usize, 8, 4]
        .into_iter()
        .map(|bytes| bytes / es)
        .find(|&v| v > 1 && dpl.is_multiple_of(v))
        .unwrap_or(1)
}

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
    let dpl = d / lpk;
    // The caller sizes the workspace (codegen/src/program.rs); a split count it has no room for
    // is capped to what fits, so the kernel never writes past it.
    let part = heads * (d + 2);
    let splits = attn_splits(ctx.gemm).min(workspace.width / part);
    if splits == 0 {
        return None;
    }
    let (q, k, v) = (&ctx.inputs[0], &ctx.inputs[1], &ctx.inputs[2]);
    let kv_row = 2 * (kv_heads * d * cache_dtype.size()) as u64;
    let cost = zamba2c_ir::kernel::LaunchCost {
        bytes_per_row: ((q.width + k.width + v.width) * q.dtype.size()) as u64
            + (ctx.out.width * ctx.out.dtype.size()) as u64
            + kv_row
            + (splits * part * 4 * 2) as u64,
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
        .set("dpl", dpl)
        .set("kv_vec", kv_vec(dpl, cache_dtype))
        .set("splits", splits)
        .set("ws_stride", workspace.stride)
        .set("cache_t", CType::elem(cache_dtype))
        .set("q_stride", q.stride)
        .set("k_stride", k.stride)
        .set("v_stride", v.stride)
        .set("out_width", ctx.out.stride)
        .set("rope", rope.is_some());
    if let Some(f) = rope {
        b = b.set("inv_freq", f);
    }
    // Each warp streams the cache through a cp.async ring of `ring` stages in shared memory
    // (≥ 2; 0: one pass ahead in registers). A key row must be whole 16-byte chunks and the
    // rings fit in 40 KiB of static shared memory (48 KiB a block, the rest for the block's
    // other arrays): a large stage (an f32 cache) gets fewer stages, fewer than 2 none.
    let ring = crate::tune_mode("ATTN_RING", if ctx.gemm { ATTN_ROWS_RING } else { 0 });
    let stage_bytes = ATTN_WARPS * 2 * (32 / lpk) * d * cache_dtype.size();
    let ring = match ring.min(8).min(40 * 1024 / stage_bytes) {
        s if s >= 2 && (d * cache_dtype.size()).is_multiple_of(16) => s,
        _ => 0,
    };
    b = b.set("ring", ring);
    // Blocks an SM must hold (`ZAMBA2C_TUNE_ATTN_MIN_BLOCKS`, 0: the compiler's choice; 6 on
    // the ring spilled and lost 0.3 ms of a 64-row step to the ring alone).
    let min_blocks = crate::tune_mode("ATTN_MIN_BLOCKS", 0);
    if min_blocks > 0 {
        b = b.set("min_blocks", min_blocks.min(16));
    }
    Some(
        b.input("q", q)
            .input("k", k)
            .input("v", v)
            .state("kcache", cache_dtype, cache, 0)
            .state("vcache", cache_dtype, cache, 1)
            .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
            .param("workspace", CType::Ptr(DType::F32), workspace.arg())
            .param("counters", CType::Ptr(DType::I32), counters.arg())
            .output(&ctx.out)
            .scalar("cap", Arg::Capacity)
            .finish(
                [
                    Extent::Const(heads as u32),
                    Extent::Const(splits as u32),
                    Extent::Batch,
                ],
                32 * ATTN_WARPS,
            ),
    )
}
