//! `attention_flash` (templates/attention_flash.cu): the prompt path's causal attention on
//! tensor cores, one launch per prompt chunk (docs/KERNELS.md "attention_flash"). Which shapes
//! it serves, its tiles and shared memory, and whether its operands are split into bf16 hi + lo
//! parts; the KV append stays its own launch before it (families.rs `attention`).

use zamba2c_ir::kernel::MAX_DYNAMIC_SMEM;
use zamba2c_ir::DType;

/// Query rows per block: 4 warps of 16 rows (the m of mma.m16n8k16).
pub const FLASH_QT: usize = 64;
/// Threads per block (one warp per 16 query rows; the template asserts it).
pub const FLASH_THREADS: usize = 2 * FLASH_QT;
/// Largest head size: the f32 output accumulator is `d / 2` registers per thread.
const FLASH_MAX_D: usize = 256;
/// Shared memory above which a 64-key tile is halved to 32 keys, so that two blocks of the
/// H200's 228 KiB per SM stay resident.
const TWO_BLOCKS_SMEM: usize = 113 * 1024;

/// The kernel's shape choices for one attention op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashPlan {
    /// Keys per shared-memory tile.
    pub kt: usize,
    /// Dynamic shared memory per block, bytes.
    pub smem: usize,
    /// q (f32 or f16 values, not exact in bf16) is split hi + lo.
    pub split_q: bool,
    /// The cached k and v are split hi + lo.
    pub split_kv: bool,
    /// The unnormalised probabilities P are split hi + lo (every non-bf16 plan).
    pub split_p: bool,
    /// A 16-bit cache of the tiles' type is copied into two stages of shared memory with
    /// cp.async (the next key tile in flight while one is used) and values are read with
    /// ldmatrix.trans; otherwise each tile is loaded, converted (and split) by the threads,
    /// then used.
    pub kv_async: bool,
    /// The 16-bit type of the tiles and of the mma: f16 with an f16 cache (its values as they
    /// are cached), else bf16.
    pub tiles: DType,
    /// `Q·Kᵀ`'s fragments come by `ldmatrix` (q's four registers in one instruction, two key
    /// columns' B fragments in another) instead of 32-bit shared loads: the same values into
    /// the same products, fewer instructions (the default; `ZAMBA2C_TUNE_ATTN_LDSM=0`: 32-bit
    /// shared loads).
    pub score_ldsm: bool,
}

impl FlashPlan {
    /// The template context of this plan.
    pub fn context(&self) -> [(&'static str, serde_json::Value); 8] {
        [
            ("qt", FLASH_QT.into()),
            ("kt", self.kt.into()),
            ("split_q", self.split_q.into()),
            ("split_kv", self.split_kv.into()),
            ("split_p", self.split_p.into()),
            ("kv_async", self.kv_async.into()),
            ("tiles", self.tiles.to_string().into()),
            ("score_ldsm", self.score_ldsm.into()),
        ]
    }
}

/// Bytes of shared memory for head size `d`, `kt` keys a tile and the given splits: bf16 q, k
/// and transposed v tiles with 8 elements of row padding, doubled where split; with
/// `kv_async`, two stages of k and v tiles (values by key) instead.
fn smem_bytes(d: usize, kt: usize, split_q: bool, split_kv: bool, kv_async: bool) -> usize {
    let parts = |split: bool| if split { 2 } else { 1 };
    let q = FLASH_QT * (d + 8) * parts(split_q);
    let kv = if kv_async {
        2 * 2 * kt * (d + 8)
    } else {
        (kt * (d + 8) + d * (kt + 8)) * parts(split_kv)
    };
    2 * (q + kv)
}

/// Whether a 16-bit cache is staged with cp.async (`FlashPlan::kv_async`): the default since the
/// H200 measured it (docs/PERFORMANCE.md, 2026-12-02: TTFT 24.3 -> 22.7 ms at 512 tokens,
/// 109 -> 93 ms at 2048); `ZAMBA2C_TUNE_ATTN_KERNEL=1` keeps the register-staged kernel.
fn kv_async_knob() -> bool {
    crate::tune("ATTN_KERNEL", 2) == 2
}

/// The plan for head size `d` with `act` activations and a `cache` KV cache, or `None` when the
/// kernel does not serve the shape (then the one-block-per-query `attention` kernel runs):
/// `d` must be a multiple of 16 (the k of the mma) and at most [`FLASH_MAX_D`]. The tiles are
/// f16 with an f16 cache (`compile --kv-dtype f16`: keys and values used as cached, q split
/// into f16 parts), else bf16. `split` off (the tuning knob `ATTN_SPLIT=2`) rounds every
/// operand once to the tiles' type instead.
pub fn flash_plan(d: usize, act: DType, cache: DType, split: bool) -> Option<FlashPlan> {
    let float = |t: DType| matches!(t, DType::F32 | DType::BF16 | DType::F16);
    if d == 0 || !d.is_multiple_of(16) || d > FLASH_MAX_D || !float(act) || !float(cache) {
        return None;
    }
    let tiles = if cache == DType::F16 {
        DType::F16
    } else {
        DType::BF16
    };
    let split_q = split && act != tiles;
    let split_kv = split && cache != tiles;
    let split_p = split && act != DType::BF16;
    let kv_async = cache == tiles && !split_kv && kv_async_knob();
    let kt = if smem_bytes(d, 64, split_q, split_kv, kv_async) <= TWO_BLOCKS_SMEM {
        64
    } else {
        32
    };
    let smem = smem_bytes(d, kt, split_q, split_kv, kv_async);
    (smem <= MAX_DYNAMIC_SMEM as usize).then_some(FlashPlan {
        kt,
        smem,
        split_q,
        split_kv,
        split_p,
        kv_async,
        tiles,
        score_ldsm: crate::tune_mode("ATTN_LDSM", 1) == 1,
    })
}
