{% include "prelude.cu" %}
{
  // Chunked SSM scan, step 1 of 3, on tensor cores (docs/KERNELS.md "ssd"): what
  // templates/ssd_chunk_state.cu computes per (head, chunk of {{ l }} tokens, sequence), dt and
  // cs into `ws` and the chunk's own state contribution into `chunks` ([n][p]),
  //   Sc[n][p] = Σ_s B_s[n] · w_s x_s[p],  w_s = exp(cs_last − cs_s) · dt_s,
  // here as one {{ d_state }}×L-by-L×{{ head_dim }} product in 3xTF32 mma.sync (about f32 precision,
  // z2c_common.cuh warp_mma_3xtf32). x and B are loaded first (they do not wait for dt) and x is
  // scaled by w_s in shared memory once w is known.
  constexpr int L = {{ l }}, P = {{ head_dim }}, N = {{ d_state }}, H = {{ heads }};
  constexpr int NT = {{ block }};
  static_assert(L % 8 == 0 && NT == 256 && N % 16 == 0 && P % 16 == 0, "8 warps: row tiles × 2 halves");
  constexpr int LDB = N + 8, LDX = P + 8;  // fragment loads hit 32 banks
  constexpr int YJ = P / 16;               // 8-column tiles per warp
  const int h = tile, c = blockIdx.y, b = blockIdx.z;
  const int g = h / {{ heads_per_group }};
  const int t0 = c * L, lc = min(L, seq - t0);
  const long row0 = (long)b * seq + t0;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gq = lane >> 2, tq = lane & 3;
  __shared__ float dv[L], av[L], w[L];
  __shared__ __align__(16) float xmat[L * LDX];
  __shared__ __align__(16) float bmat[L * LDB];
  for (int e = tid; e < L * P; e += NT) {
    const int s = e / P, p = e % P;
    xmat[s * LDX + p] = s < lc ? to_f(x[(row0 + s) * {{ x_stride }} + h * P + p]) : 0.f;
  }
  for (int e = tid; e < L * N; e += NT) {
    const int s = e / N, n = e % N;
    bmat[s * LDB + n] = s < lc ? to_f(bm[(row0 + s) * {{ b_stride }} + g * N + n]) : 0.f;
  }
{% include "ssd_chunk_weights.cu" %}
  for (int e = tid; e < lc * P; e += NT) xmat[(e / P) * LDX + e % P] *= w[e / P];
  __syncthreads();
  // Sc = Bᵀ · (w x): A(n, k = s) is bmat[s][n], B(s, p) is xmat[s][p]; rows past lc are zero.
  float* dst = chunks + (((long)b * gridDim.y + c) * H + h) * (P * N);
  const int p0 = (warp >> 2) * (P / 2), k1 = (lc + 7) & ~7;
  for (int mr = 16 * (warp & 3); mr < N; mr += 64) {
    float acc[YJ][4] = {};
    warp_mma_3xtf32<YJ, true, false>(acc, bmat + mr, LDB, xmat + p0, LDX, 0, k1);
#pragma unroll
    for (int j = 0; j < YJ; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        dst[(mr + gq + 8 * (i >> 1)) * P + p0 + 8 * j + 2 * tq + (i & 1)] = acc[j][i];
  }
}
