// The device side of scripts/wgmma_lab.cu (a lab, docs/PERFORMANCE.md twentieth session): a
// Hopper warpgroup-MMA GEMM for decode_rows' stacked-plane shapes, D[m, n] = Σ_k X[m, k]·W[n, k]
// (bf16 in, f32 out). Why: a 64-row step's mixers run their in_proj and out_proj on 128 stacked
// rows (the hi and lo planes) through cuBLASLt at 2.6–2.7 TB/s whatever configuration it is
// given (19.5 µs for in_proj at best), where one-plane 64-row GEMMs stream at 3.6–3.8 TB/s.
// The question is whether a kernel shaped for M = 128 and a weight slab a CTA (one wave of
// 128–132 CTAs, W streamed once through a cp.async ring, one m64 wgmma a plane sharing each W
// tile) gets closer to the 14.5 µs the weight bytes allow.
// No CUDA headers: NVRTC compiles it as it is (scripts/wgmma_lab.sh checks here first).
#pragma once
#include "lab_device.cuh"
#include "wgmma_lab_ops.cuh"

// 16 bytes global -> shared; zero-filled where `ok` is false.
__device__ __forceinline__ void cp16(unsigned dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
}

// The shared-memory image of a 64-wide K tile (128 bytes a row, rows of the M or N side), in
// the layout the descriptor of `SWZ` names:
//  1: 128-byte swizzle (the 16-byte chunk c of row r at chunk c ^ (r mod 8) of its 128 bytes;
//     8-row groups 1024 bytes apart; a k16 step is +32 bytes of the start address);
//  0: no swizzle, core matrices of 8 rows × 16 bytes, K-adjacent ones 128 bytes apart (the
//     leading byte offset), 8-row groups 1024 bytes apart (the stride byte offset);
//  2: the same image with the two offsets the other way round (which one PTX calls leading
//     for a K-major operand is what this variant tests).
template <int SWZ> __device__ __forceinline__ unsigned tile_off(int r, int c) {
  if (SWZ == 1) return r * 128 + ((c ^ (r & 7)) << 4);
  return (r >> 3) * 1024 + c * 128 + (r & 7) * 16;
}
template <int SWZ> __device__ __forceinline__ unsigned long long smem_desc(unsigned addr) {
  unsigned long long d = (addr & 0x3FFFF) >> 4;
  if (SWZ == 1) {
    d |= 1ull << 16;
    d |= (unsigned long long)(1024 >> 4) << 32;
    d |= 1ull << 62;
  } else if (SWZ == 0) {
    d |= (unsigned long long)(128 >> 4) << 16;
    d |= (unsigned long long)(1024 >> 4) << 32;
  } else {
    d |= (unsigned long long)(1024 >> 4) << 16;
    d |= (unsigned long long)(128 >> 4) << 32;
  }
  return d;
}
template <int SWZ> __device__ __forceinline__ unsigned kstep_bytes() { return SWZ == 1 ? 32 : 256; }

// WGS warpgroups (M = 64·WGS rows of X, one warpgroup a 64-row plane; m ≤ M of them real), BN
// output features a CTA
// (blockIdx.x), K split SK ways (blockIdx.y; SK > 1: D zeroed before, partial sums added
// atomically), S cp.async stages of one 64-wide K tile of X and of W each. One CTA an SM.
// DEPTH k-tiles' wgmma groups in flight (1: each tile's products finish before the next
// tile's loads are issued; 2: a tile's wgmma runs while the next one is issued and the loads
// of tile it + S − 2 go into the slot of tile it − 2, which every warpgroup finished before
// this iteration's barrier — the twenty-second session's question: does the wait bound it?).
template <int WGS, int BN, int S, int SK, int SWZ, int DEPTH = 1>
__global__ void __launch_bounds__(WGS * 128, 1)
    gemm_wgmma(const unsigned short* __restrict__ X, const unsigned short* __restrict__ W,
               float* __restrict__ D, int N, int K, int m) {
  extern __shared__ unsigned char smem_raw[];
  constexpr int M = WGS * 64, A_BYTES = M * 128, B_BYTES = BN * 128, STAGE = A_BYTES + B_BYTES;
  constexpr int THREADS = WGS * 128;
  static_assert(BN % 8 == 0 && STAGE % 1024 == 0, "tiles of whole 8-row groups");
  static_assert(DEPTH == 1 || (DEPTH == 2 && S >= 3), "one or two groups in flight, ring of >= 3");
  // Tiles the ring runs ahead of the one being multiplied.
  constexpr int AHEAD = S - DEPTH;
  const unsigned base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const int n0 = blockIdx.x * BN;
  const int kper = K / SK, kbeg = blockIdx.y * kper, nk = kper / 64;
  const int t = threadIdx.x;
  auto load = [&](int it) {
    if (it < nk) {
      const unsigned sa = base + (it % S) * STAGE, sb = sa + A_BYTES;
      const int k0 = kbeg + it * 64;
      for (int q = t; q < M * 8; q += THREADS) {
        const int r = q >> 3, c = q & 7;
        // Rows past the m of X (a step of fewer rows than the tile) re-read row 0, never stored.
        cp16(sa + tile_off<SWZ>(r, c), X + (long)(r < m ? r : 0) * K + k0 + c * 8, true);
      }
      for (int q = t; q < BN * 8; q += THREADS) {
        const int r = q >> 3, c = q & 7;
        const bool ok = n0 + r < N;
        cp16(sb + tile_off<SWZ>(r, c), W + (long)(ok ? n0 + r : 0) * K + k0 + c * 8, ok);
      }
    }
    cp_commit();  // empty groups too: the wait counts one group a tile
  };
  float d[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) d[i] = 0.f;
#pragma unroll
  for (int s = 0; s < AHEAD; ++s) load(s);
  const int wg = t >> 7;
  for (int it = 0; it < nk; ++it) {
    cp_wait<AHEAD - 1>();
    // This thread's cp.async writes, made visible to the tensor cores' (async) proxy, then
    // every thread's.
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    const unsigned sa = base + (it % S) * STAGE + wg * 64 * 128, sb = base + (it % S) * STAGE + A_BYTES;
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      Wgmma<BN>::run(d, smem_desc<SWZ>(sa + kk * kstep_bytes<SWZ>()), smem_desc<SWZ>(sb + kk * kstep_bytes<SWZ>()));
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    if (DEPTH == 1)
      asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    else
      asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    // The slot of tile it − DEPTH (every warpgroup's wgmma on it finished before the barrier
    // above) takes tile it + S − DEPTH.
    load(it + AHEAD);
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  cp_wait<0>();
  // The accumulator of an m64nN wgmma: thread (warp w, lane l) holds, for each 8-column block
  // nb, rows 16w + l/4 and +8 at columns 8nb + 2(l mod 4) and +1.
  const int warp = (t >> 5) & 3, lane = t & 31;
  const int row = wg * 64 + warp * 16 + (lane >> 2);
#pragma unroll
  for (int nb = 0; nb < BN / 8; ++nb) {
    const int col = n0 + nb * 8 + 2 * (lane & 3);
    if (col >= N || row >= m) continue;
    float* p0 = D + (long)row * N + col;
    float* p1 = p0 + 8L * N;
    const bool second = row + 8 < m;
    if (SK == 1) {
      *reinterpret_cast<float2*>(p0) = make_float2(d[nb * 4], d[nb * 4 + 1]);
      if (second) *reinterpret_cast<float2*>(p1) = make_float2(d[nb * 4 + 2], d[nb * 4 + 3]);
    } else {
      atomicAdd(p0, d[nb * 4]);
      atomicAdd(p0 + 1, d[nb * 4 + 1]);
      if (second) {
        atomicAdd(p1, d[nb * 4 + 2]);
        atomicAdd(p1 + 1, d[nb * 4 + 3]);
      }
    }
  }
}
