{% include "prelude.cu" %}
{
  // Chunked SSM scan, step 3 of 3, on tensor cores (docs/KERNELS.md "ssd"): the sums of
  // templates/ssd_chunk_out.cu per (head, chunk, sequence),
  //   y_t[p] = Σ_{s≤t} G[t][s] x_s[p] + exp(cs_t) Σ_n C_t[n] S[n][p] + D x_t[p],
  //   G[t][s] = (C_t·B_s) exp(cs_t − cs_s) dt_s  (s ≤ t),
  // as three products of L×{{ d_state }}-by-{{ d_state }}×L shape in 3xTF32 mma.sync (about f32
  // precision, z2c_common.cuh warp_mma_3xtf32). Warp w owns rows 16·(w % 4).. and the column
  // half w / 4 of G and of y. Shared rows are padded so fragment loads hit 32 banks.
  constexpr int L = {{ l }}, P = {{ head_dim }}, N = {{ d_state }}, H = {{ heads }};
  constexpr int NT = {{ block }};
  static_assert(L == 64 && NT == 256 && P % 16 == 0 && N % 8 == 0, "8 warps: 4 row tiles × 2 halves");
  constexpr int LDC = N + 4, LDG = L + 4, LDX = P + 8;
  constexpr int GJ = L / 16, YJ = P / 16;  // 8-column tiles per warp of G and of y
  const int h = tile, c = blockIdx.y, b = blockIdx.z;
  const int g = h / {{ heads_per_group }};
  const int t0 = c * L, lc = min(L, seq - t0);
  const long row0 = (long)b * seq + t0;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gq = lane >> 2, tq = lane & 3;
  extern __shared__ __align__(16) float smem[];
  float* cmat = smem;              // [L][LDC]: C_t
  float* bmat = cmat + L * LDC;    // [L][LDC]: B_s
  float* gmat = bmat + L * LDC;    // [L][LDG]: G, row t, column s
  float* xmat = gmat + L * LDG;    // [L][LDX]: x_s
  float* smat = xmat + L * LDX;    // [N][LDX]: the state entering the chunk
  float* cs = smat + N * LDX;      // [L]
  float* dv = cs + L;              // [L]
  constexpr int CR = LDC, CC = 1, XR = LDX, SR = LDX;
{% include "ssd_chunk_out_load.cu" %}

  const int mr = 16 * (warp & 3), half = warp >> 2;
  {
    // G = C·Bᵀ (B(k = n, column s) is bmat[s][n]); a half wholly above the diagonal is zero.
    const int s0 = half * (L / 2);
    float acc[GJ][4] = {};
    if (s0 <= mr + 15)
      warp_mma_3xtf32<GJ, false, true>(acc, cmat + mr * LDC, LDC, bmat + s0 * LDC, LDC, 0, N);
#pragma unroll
    for (int j = 0; j < GJ; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int t = mr + gq + 8 * (i >> 1), s = s0 + 8 * j + 2 * tq + (i & 1);
        gmat[t * LDG + s] = (s <= t && t < lc) ? acc[j][i] * expf(cs[t] - cs[s]) * dv[s] : 0.f;
      }
  }
  __syncthreads();

  const int p0 = half * (P / 2);
  float acc[YJ][4] = {};
  // From the state entering the chunk: exp(cs_t) C_t · S[·][p].
  warp_mma_3xtf32<YJ, false, false>(acc, cmat + mr * LDC, LDC, smat + p0, LDX, 0, N);
  const float e0 = expf(cs[mr + gq]), e1 = expf(cs[mr + gq + 8]);
#pragma unroll
  for (int j = 0; j < YJ; ++j) {
    acc[j][0] *= e0; acc[j][1] *= e0;
    acc[j][2] *= e1; acc[j][3] *= e1;
  }
  // Inside the chunk: Σ_{s≤t} G[t][s] x_s (G is zero past the warp's last row).
  warp_mma_3xtf32<YJ, false, false>(acc, gmat + mr * LDG, LDG, xmat + p0, LDX, 0, mr + 16);
  const float Dh = to_f(d_skip[h]);
#pragma unroll
  for (int j = 0; j < YJ; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int t = mr + gq + 8 * (i >> 1), p = p0 + 8 * j + 2 * tq + (i & 1);
      if (t < lc) out[(row0 + t) * {{ out_stride }} + h * P + p] = from_f<act_t>(acc[j][i] + Dh * xmat[t * LDX + p]);
    }
}
