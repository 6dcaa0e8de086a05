//! The prompt path's SSM scan as Mamba2's chunked algorithm (state-space duality, ZAMBA2.md
//! §3.3; docs/KERNELS.md "ssd"): three launches instead of a token loop. Per chunk of
//! [`SSD_CHUNK`] tokens, its own state contribution (in parallel over chunks and heads); the
//! states handed along the chunks (sequential, one thread per state element); the outputs from
//! the entering state plus the chunk's causal mixing matrix (in parallel again).

use zamba2c_ir::kernel::{LaunchCost, DEFAULT_DYNAMIC_SMEM, MAX_DYNAMIC_SMEM};
use zamba2c_ir::{DType, Op};

use crate::families::{flit, Builder, KernelSpec};
use crate::program::{Arg, CType, Extent, NodeCtx, Operand};

/// Tokens per chunk. Mamba2's own kernels use the config's `chunk_size` (256) for tensor-core
/// tiles; the chunk is a free parameter of the algorithm (the result is the same up to float
/// rounding), and 64 keeps a chunk's C, B, x, state and mixing matrix in shared memory.
pub const SSD_CHUNK: usize = 64;
const SSD_THREADS: usize = 256;

/// Widths of the two workspaces the chunked scan needs per row: dt and the chunk-local
/// cumulative sum of dt·A (`2·heads`), and one state per chunk (`heads·P·N / chunk` per row,
/// with rows aligned to whole chunks, GraphProgram::seq_align).
pub fn workspace_widths(heads: usize, head_dim: usize, d_state: usize) -> (usize, usize) {
    (2 * heads, (heads * head_dim * d_state).div_ceil(SSD_CHUNK))
}

/// Bytes of shared memory of the output step (dynamic) and of the state step (static).
fn smem_bytes(head_dim: usize, d_state: usize) -> (usize, usize) {
    let (l, p, n) = (SSD_CHUNK, head_dim, d_state);
    let out = 4 * (2 * n * (l + 4) + l * l + l * p + n * p + 2 * l);
    let state = 4 * (3 * l + l * p + l * n);
    (out, state)
}

/// Bytes of shared memory of the tensor-core output step (dynamic) and state step (static):
/// each f32 operand as bf16 hi and lo planes, rows padded so ldmatrix hits 32 banks
/// (templates/ssd_chunk_out_mma.cu). The output step's mixing matrix G takes B's place once G is
/// made (B is read only to make it): 72.5 KiB on the 2.7B shape, three blocks an SM.
fn mma_smem_bytes(head_dim: usize, d_state: usize) -> (usize, usize) {
    let (l, p, n) = (SSD_CHUNK, head_dim, d_state);
    let b_then_g = (l * (n + 8)).max(l * (l + 8));
    let out = 4 * 2 * l + 2 * 2 * (l * (n + 8) + b_then_g + l * (p + 8) + n * (p + 8));
    let state = 4 * 3 * l + 2 * 2 * (l * (n + 8) + l * (p + 8));
    (out, state)
}

/// Whether the scan's first and last steps run on tensor cores (3xBF16 mma.sync: each f32
/// operand as bf16 hi and lo parts, ~16 significant bits; docs/KERNELS.md "ssd"): head_dim a
/// multiple of 32 and d_state of 16, x, B and C rows that start on whole 4-value pieces (their
/// tiles are loaded 4 values at a time), and shared memory to fit. The default of 16-bit-weight
/// plans where it fits (docs/PERFORMANCE.md fifteenth session: time to first token 21.0 ->
/// 19.2 ms at 512 tokens, 86.1 -> 80.1 at 2048; fidelity unchanged); `ZAMBA2C_TUNE_SSD_MMA=0`
/// keeps the CUDA-core steps. An f32 plan is the precision reference (within 1e-4 of
/// transformers f32): it keeps f32 arithmetic unless `ZAMBA2C_TUNE_SSD_MMA=1` asks.
fn use_mma(ctx: &NodeCtx, head_dim: usize, d_state: usize, ins: &[&Operand]) -> bool {
    let (out, state) = mma_smem_bytes(head_dim, d_state);
    let default = usize::from(ctx.module.dtype != DType::F32);
    crate::tune_mode("SSD_MMA", default) == 1
        && head_dim.is_multiple_of(32)
        && d_state.is_multiple_of(16)
        && ins
            .iter()
            .all(|o| o.offset.is_multiple_of(4) && o.stride.is_multiple_of(4))
        && out <= MAX_DYNAMIC_SMEM as usize
        && state <= DEFAULT_DYNAMIC_SMEM as usize
}

/// Whether the chunked scan serves this shape (its shared memory fits the GPU).
pub fn fits(head_dim: usize, d_state: usize) -> bool {
    let (out, state) = smem_bytes(head_dim, d_state);
    out <= MAX_DYNAMIC_SMEM as usize && state <= DEFAULT_DYNAMIC_SMEM as usize
}

/// The three launches of scan `op` (an `Op::SsmScan`) on `[x, dt, B, C]` into `out`, with the
/// workspaces `ws` and `chunks` (widths from [`workspace_widths`]).
pub fn ssd_specs(
    ctx: &NodeCtx,
    op: &Op,
    ins: &[Operand],
    out: Operand,
    ws: Operand,
    chunks: Operand,
) -> Result<Vec<KernelSpec>, String> {
    let Op::SsmScan {
        dt_bias,
        a_log,
        d,
        heads,
        head_dim,
        d_state,
        groups,
        dt_min,
        state,
    } = op
    else {
        return Err("not a scan".into());
    };
    let (h, p, n) = (*heads, *head_dim, *d_state);
    if *groups == 0 || !h.is_multiple_of(*groups) || ins.len() != 4 {
        return Err(format!("{h} heads in {groups} groups"));
    }
    if !fits(p, n) {
        return Err(format!("head_dim {p} × d_state {n} exceeds shared memory"));
    }
    let act = out.dtype;
    let l = SSD_CHUNK;
    // The recurrent state's element type: the pass reads and writes it.
    let sdt = crate::families::ssm_state_dtype(ctx, *state)?;
    let mt = if p.is_multiple_of(4) && n.is_multiple_of(4) {
        4
    } else {
        1
    };
    let (x, dt, bm, cm) = (&ins[0], &ins[1], &ins[2], &ins[3]);
    let es = |o: &Operand| (o.width * o.dtype.size()) as u64;
    let state_arg = Arg::State {
        id: *state,
        part: 0,
    };
    let pn = (h * p * n) as u64;
    let mma = use_mma(ctx, p, n, &[x, bm, cm]);
    let chunk_row = 4 * pn.div_ceil(l as u64);
    let common = |family: &'static str| {
        let mut b = Builder::new(family, act)
            .set("heads", h)
            .set("head_dim", p)
            .set("d_state", n)
            .set("heads_per_group", h / groups)
            .set("l", l)
            .set("mt", mt)
            .set("x_stride", x.stride)
            .set("dt_stride", dt.stride)
            .set("b_stride", bm.stride)
            .set("c_stride", cm.stride)
            .set("out_stride", out.stride)
            .set("clamp", dt_min.is_some());
        if let Some(m) = dt_min {
            b = b.set("dt_min", flit(*m));
        }
        b
    };
    let grid_chunks = [
        Extent::Const(h as u32),
        Extent::SeqDiv { div: l },
        Extent::Batch,
    ];
    // The first and last steps' family: on CUDA cores, or on tensor cores (`use_mma`).
    let step = |cuda_cores: &'static str, tensor_cores: &'static str| {
        if mma {
            tensor_cores
        } else {
            cuda_cores
        }
    };
    let mut chunk_state = common(step("ssd_chunk_state", "ssd_chunk_state_mma"))
        .input("x", x)
        .input("dt", dt)
        .input("bm", bm)
        .weight("dt_bias", ctx, dt_bias)
        .weight("a_log", ctx, a_log)
        .param("ws", CType::Ptr(DType::F32), ws.arg())
        .param("chunks", CType::Ptr(DType::F32), chunks.arg())
        .scalar("seq", Arg::Seq)
        .cost(LaunchCost {
            bytes_per_row: es(x) + (h * dt.dtype.size()) as u64 + es(bm) + 8 * h as u64 + chunk_row,
            flops_per_row: 2 * pn,
            ..Default::default()
        })
        .finish(grid_chunks, SSD_THREADS);
    chunk_state.seq_align = l;
    // Chunks whose loads `ssd_state_pass` issues before it stores their slots: a group is one
    // round trip to memory on each thread's chain (`ZAMBA2C_TUNE_SSD_PASS_GROUP`, a measurement:
    // 8 is the default, a 2048-token chunk has 32 chunks).
    let pass_group = crate::tune("SSD_PASS_GROUP", 8).clamp(1, 64);
    let mut pass = common("ssd_state_pass")
        .set("pass_group", pass_group)
        .param("ws", CType::ConstPtr(DType::F32), ws.arg())
        .param("chunks", CType::Ptr(DType::F32), chunks.arg())
        .set("ssm_t", CType::elem(sdt))
        .param("state", CType::Ptr(sdt), state_arg)
        .param("meta", CType::ConstPtr(DType::I32), Arg::Meta)
        .scalar("seq", Arg::Seq)
        .cost(LaunchCost {
            bytes_per_row: 2 * chunk_row,
            bytes_per_seq: 2 * pn * sdt.size() as u64,
            flops_per_row: 2 * pn / l as u64,
            ..Default::default()
        })
        .finish(
            [
                Extent::Const((p * n).div_ceil(SSD_THREADS) as u32),
                Extent::Const(h as u32),
                Extent::Batch,
            ],
            SSD_THREADS,
        );
    pass.seq_align = l;
    let (smem, _) = if mma {
        mma_smem_bytes(p, n)
    } else {
        smem_bytes(p, n)
    };
    let mut out_builder = common(step("ssd_chunk_out", "ssd_chunk_out_mma"));
    // Three blocks an SM fit the tensor-core step's shared memory (2.7B shape); registers for
    // three too (`ZAMBA2C_TUNE_SSD_OUT_MIN_BLOCKS`, 0: the compiler's choice, 90 registers, two).
    let min_blocks = crate::tune_mode("SSD_OUT_MIN_BLOCKS", 3);
    if mma && min_blocks > 0 {
        out_builder = out_builder.set("min_blocks", min_blocks.min(8));
    }
    // x read and y written two adjacent columns an access (`ZAMBA2C_TUNE_SSD_OUT_PAIRS=1`, a
    // measurement): both must start and stride on even elements, which `use_mma` already asks
    // of x (whole 4-value pieces).
    let pair_io = mma
        && crate::tune("SSD_OUT_PAIRS", 0) == 1
        && out.offset.is_multiple_of(2)
        && out.stride.is_multiple_of(2);
    out_builder = out_builder.set("pair_io", pair_io);
    let mut chunk_out = out_builder
        .input("x", x)
        .input("bm", bm)
        .input("cm", cm)
        .weight("d_skip", ctx, d)
        .param("ws", CType::ConstPtr(DType::F32), ws.arg())
        .param("chunks", CType::ConstPtr(DType::F32), chunks.arg())
        .output(&out)
        .scalar("seq", Arg::Seq)
        .cost(LaunchCost {
            bytes_per_row: es(x) + es(bm) + es(cm) + 8 * h as u64 + chunk_row + es(&out),
            // The causal mixing matrix (half of L·L·N), its product with x (half of L·L·P),
            // and the entering state's contribution (N·P), per token and head.
            flops_per_row: (h * (l * n + l * p + 2 * n * p)) as u64,
            ..Default::default()
        })
        .finish(grid_chunks, SSD_THREADS);
    chunk_out.smem = smem as u32;
    chunk_out.seq_align = l;
    Ok(vec![chunk_state, pass, chunk_out])
}
