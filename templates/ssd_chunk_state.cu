{% include "prelude.cu" %}
{
  // Chunked SSM scan (state-space duality, ZAMBA2.md §3.3; docs/KERNELS.md "ssd"), step 1 of 3:
  // per (head, chunk of {{ l }} tokens, sequence) the chunk's own state contribution
  //   Sc[n][p] = Σ_s exp(cs_last − cs_s) · dt_s · x_s[p] · B_s[n]
  // where cs is the inclusive cumulative sum of dt·A inside the chunk (what the token loop's
  // running product of exp(dt·A) is, in log space). dt (softplus, + clamp on the prompt path,
  // §3.5) and cs go to `ws` for the next two steps; Sc to `chunks`, layout [n][p].
  constexpr int L = {{ l }}, P = {{ head_dim }}, N = {{ d_state }}, H = {{ heads }};
  constexpr int MT = {{ mt }}, NT = {{ block }};
  const int h = tile, c = blockIdx.y, b = blockIdx.z;
  const int g = h / {{ heads_per_group }};
  const int t0 = c * L, lc = min(L, seq - t0);
  const long row0 = (long)b * seq + t0;
  const int tid = threadIdx.x;
  __shared__ float dv[L], av[L], w[L];
  __shared__ __align__(16) float xs[L * P];
  __shared__ __align__(16) float bs[L * N];
{% include "ssd_chunk_weights.cu" %}
  for (int e = tid; e < L * P; e += NT) {
    const int s = e / P, p = e % P;
    xs[e] = s < lc ? to_f(x[(row0 + s) * {{ x_stride }} + h * P + p]) * w[s] : 0.f;
  }
  for (int e = tid; e < L * N; e += NT) {
    const int s = e / N, n = e % N;
    bs[e] = s < lc ? to_f(bm[(row0 + s) * {{ b_stride }} + g * N + n]) : 0.f;
  }
  __syncthreads();
  float* dst = chunks + (((long)b * gridDim.y + c) * H + h) * (P * N);
  for (int tl = tid; tl < (N / MT) * (P / MT); tl += NT) {
    const int n0 = (tl / (P / MT)) * MT, p0 = (tl % (P / MT)) * MT;
    float acc[MT][MT];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < MT; ++j) acc[i][j] = 0.f;
    for (int s = 0; s < lc; ++s) {
      float bv[MT], xv[MT];
      lds_row<MT>(bs + s * N + n0, bv);
      lds_row<MT>(xs + s * P + p0, xv);
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < MT; ++j) acc[i][j] = fmaf(bv[i], xv[j], acc[i][j]);
    }
#pragma unroll
    for (int i = 0; i < MT; ++i) sts_row<MT>(dst + (n0 + i) * P + p0, acc[i]);
  }
}
