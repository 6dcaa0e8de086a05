{% include "prelude.cu" %}
{
  // Chunked SSM scan, step 3 of 3, for {{ hpb }} heads of one group a block (docs/KERNELS.md
  // "ssd", ZAMBA2C_TUNE_SSD_OUT_HEADS): the heads of a group share B and C, so C·Bᵀ is made
  // once for the block and each head only applies its own decay and dt to it:
  //   y_t[p] = Σ_{s≤t} (C_t·B_s) exp(cs_t − cs_s) dt_s x_s[p] + exp(cs_t) Σ_n C_t[n] S[p][n] + D x_t[p]
  // (the same sums as ssd_chunk_out.cu, in the same order for each output).
  constexpr int L = {{ l }}, P = {{ head_dim }}, N = {{ d_state }}, H = {{ heads }}, HPB = {{ hpb }};
  constexpr int MT = {{ mt }}, NT = {{ block }}, LP = L + 4;  // +4: transposed stores, 16 B rows
  const int h0 = tile * HPB, c = blockIdx.y, b = blockIdx.z;
  const int g = h0 / {{ heads_per_group }};
  const int t0 = c * L, lc = min(L, seq - t0);
  const long row0 = (long)b * seq + t0;
  const int tid = threadIdx.x;
  extern __shared__ __align__(16) float smem[];
  float* cmat = smem;            // [N][LP]: C transposed
  float* bmat = cmat + N * LP;   // [N][LP]: B transposed
  float* cbm = bmat + N * LP;    // [L][L]: C_t·B_s (the group's)
  float* gm = cbm + L * L;       // [L][L]: G of the head being run
  float* xmat = gm + L * L;      // [L][P]
  float* smat = xmat + L * P;    // [N][P]: the state entering the chunk
  float* cs = smat + N * P;      // [L]
  float* dv = cs + L;            // [L]
  for (int e = tid; e < L * N; e += NT) {
    const int t = e / N, n = e % N;
    const bool in = t < lc;
    cmat[t + n * LP] = in ? to_f(cm[(row0 + t) * {{ c_stride }} + g * N + n]) : 0.f;
    bmat[t + n * LP] = in ? to_f(bm[(row0 + t) * {{ b_stride }} + g * N + n]) : 0.f;
  }
  __syncthreads();
  // C_t·B_s for the tiles on or below the diagonal (the others are never read).
  for (int tl = tid; tl < (L / MT) * (L / MT); tl += NT) {
    const int ta = (tl / (L / MT)) * MT, sa = (tl % (L / MT)) * MT;
    if (sa > ta + MT - 1) continue;
    float acc[MT][MT];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < MT; ++j) acc[i][j] = 0.f;
    for (int n = 0; n < N; ++n) {
      float cv[MT], bv[MT];
      lds_row<MT>(cmat + n * LP + ta, cv);
      lds_row<MT>(bmat + n * LP + sa, bv);
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < MT; ++j) acc[i][j] = fmaf(cv[i], bv[j], acc[i][j]);
    }
#pragma unroll
    for (int i = 0; i < MT; ++i) sts_row<MT>(cbm + (ta + i) * L + sa, acc[i]);
  }
  const int nch = gridDim.y;
  for (int hh = 0; hh < HPB; ++hh) {
    const int h = h0 + hh;
    // This head's dt and cs (step 1's `ws`), x (zero past lc) and entering state (step 2).
    for (int s = tid; s < L; s += NT) {
      const bool in = s < lc;
      dv[s] = in ? ws[(row0 + s) * (2 * H) + h] : 0.f;
      cs[s] = in ? ws[(row0 + s) * (2 * H) + H + h] : 0.f;
    }
    for (int e = tid; e < L * P; e += NT) {
      const int t = e / P, p = e % P;
      xmat[e] = t < lc ? to_f(x[(row0 + t) * {{ x_stride }} + h * P + p]) : 0.f;
    }
    const float* src = chunks + (((long)b * nch + c) * H + h) * (P * N);
    for (int e = tid; e < N * P; e += NT) smat[e] = src[e];
    __syncthreads();  // also orders C·Bᵀ (first head) before its reads
    // G[t][s] = (C_t · B_s) exp(cs_t − cs_s) dt_s for s ≤ t < lc, else 0.
    for (int e = tid; e < L * L; e += NT) {
      const int t = e / L, s = e % L;
      gm[e] = (s <= t && t < lc) ? cbm[e] * expf(cs[t] - cs[s]) * dv[s] : 0.f;
    }
    __syncthreads();
{# y from G, C, x, the state and cs in shared memory: ssd_chunk_out_y.cu, shared by both output steps #}{% include "ssd_chunk_out_y.cu" %}
    __syncthreads();  // x, the state, cs, dt and G are the next head's
  }
}
