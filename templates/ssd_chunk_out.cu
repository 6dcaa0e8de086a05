{% include "prelude.cu" %}
{
  // Chunked SSM scan, step 3 of 3 (docs/KERNELS.md "ssd"): per (head, chunk, sequence)
  //   y_t[p] = Σ_{s≤t} (C_t·B_s) exp(cs_t − cs_s) dt_s x_s[p] + exp(cs_t) Σ_n C_t[n] S[p][n] + D x_t[p]
  // with S the state entering the chunk (step 2). Everything staged in dynamic shared memory;
  // each thread computes {{ mt }}×{{ mt }} tiles of G = (C Bᵀ ∘ decay ∘ dt) and then of y.
  constexpr int L = {{ l }}, P = {{ head_dim }}, N = {{ d_state }}, H = {{ heads }};
  constexpr int MT = {{ mt }}, NT = {{ block }}, LP = L + 4;  // +4: transposed stores, 16 B rows
  const int h = tile, c = blockIdx.y, b = blockIdx.z;
  const int g = h / {{ heads_per_group }};
  const int t0 = c * L, lc = min(L, seq - t0);
  const long row0 = (long)b * seq + t0;
  const int tid = threadIdx.x;
  extern __shared__ __align__(16) float smem[];
  float* cmat = smem;            // [N][LP]: C transposed
  float* bmat = cmat + N * LP;   // [N][LP]: B transposed
  float* gm = bmat + N * LP;     // [L][L]: G, row t, column s
  float* xmat = gm + L * L;      // [L][P]
  float* smat = xmat + L * P;    // [N][P]: the state entering the chunk
  float* cs = smat + N * P;      // [L]
  float* dv = cs + L;            // [L]
  constexpr int CR = 1, CC = LP, XR = P, SR = P;
{% include "ssd_chunk_out_load.cu" %}

  // G[t][s] = (C_t · B_s) exp(cs_t − cs_s) dt_s for s ≤ t, else 0.
  for (int tl = tid; tl < (L / MT) * (L / MT); tl += NT) {
    const int ta = (tl / (L / MT)) * MT, sa = (tl % (L / MT)) * MT;
    float acc[MT][MT];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < MT; ++j) acc[i][j] = 0.f;
    if (sa <= ta + MT - 1) {
      for (int n = 0; n < N; ++n) {
        float cv[MT], bv[MT];
        lds_row<MT>(cmat + n * LP + ta, cv);
        lds_row<MT>(bmat + n * LP + sa, bv);
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
          for (int j = 0; j < MT; ++j) acc[i][j] = fmaf(cv[i], bv[j], acc[i][j]);
      }
    }
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      const int t = ta + i;
#pragma unroll
      for (int j = 0; j < MT; ++j) {
        const int s = sa + j;
        acc[i][j] = (s <= t && t < lc) ? acc[i][j] * expf(cs[t] - cs[s]) * dv[s] : 0.f;
      }
      sts_row<MT>(gm + t * L + sa, acc[i]);
    }
  }
  __syncthreads();

  const float Dh = to_f(d_skip[h]);
  for (int tl = tid; tl < (L / MT) * (P / MT); tl += NT) {
    const int ta = (tl / (P / MT)) * MT, pa = (tl % (P / MT)) * MT;
    if (ta >= lc) continue;
    float acc[MT][MT];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < MT; ++j) acc[i][j] = 0.f;
    // From the state entering the chunk: exp(cs_t) C_t · S[p].
    for (int n = 0; n < N; ++n) {
      float cv[MT], sv[MT];
      lds_row<MT>(cmat + n * LP + ta, cv);
      lds_row<MT>(smat + n * P + pa, sv);
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < MT; ++j) acc[i][j] = fmaf(cv[i], sv[j], acc[i][j]);
    }
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      const float d = expf(cs[ta + i]);
#pragma unroll
      for (int j = 0; j < MT; ++j) acc[i][j] *= d;
    }
    // Inside the chunk: Σ_{s≤t} G[t][s] x_s.
    const int send = min(lc, ta + MT);
    for (int s = 0; s < send; ++s) {
      float gv[MT], xv[MT];
#pragma unroll
      for (int i = 0; i < MT; ++i) gv[i] = gm[(ta + i) * L + s];
      lds_row<MT>(xmat + s * P + pa, xv);
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < MT; ++j) acc[i][j] = fmaf(gv[i], xv[j], acc[i][j]);
    }
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      const int t = ta + i;
      if (t >= lc) break;
#pragma unroll
      for (int j = 0; j < MT; ++j) {
        const int p = pa + j;
        out[(row0 + t) * {{ out_stride }} + h * P + p] = from_f<act_t>(acc[i][j] + Dh * xmat[t * P + p]);
      }
    }
  }
}
