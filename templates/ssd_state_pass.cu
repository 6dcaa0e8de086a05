{% include "prelude.cu" %}
{
  // Chunked SSM scan, step 2 of 3 (docs/KERNELS.md "ssd"): the states handed from chunk to
  // chunk, sequential over a sequence's chunks, one thread per state element. Each chunk's
  // slot in `chunks` is replaced by the state entering it; the state after the last chunk is
  // the recurrent state decode continues from (exactly what the token loop leaves, §3.3).
  constexpr int L = {{ l }}, P = {{ head_dim }}, N = {{ d_state }}, H = {{ heads }};
  const int e = tile * {{ block }} + threadIdx.x;
  if (e >= P * N) return;
  const int h = blockIdx.y, b = blockIdx.z;
  const int n = e / P, p = e % P;  // chunk slots are [n][p]; the state is [p][n]
  // The recurrent state is stored as ssm_t (`compile --state-dtype`); the chunk slots are f32.
  ssm_t* st = state + ((long)META_SLOT(b) * H + h) * (P * N) + p * N + n;  // slot of row b
  const int nch = (seq + L - 1) / L;
  float* cp = chunks + ((long)b * nch * H + h) * (P * N) + e;
  float S = to_f(*st);
  // Chunks in groups of G (codegen's `pass_group`): the group's loads are all issued before its
  // stores (a store could alias the next chunk's loads for the compiler, which then waited for
  // each load in turn); the same updates in the same order, so the same bits for any G.
  constexpr int G = {{ pass_group }};
  for (int c0 = 0; c0 < nch; c0 += G) {
    float decay[G], local[G];
#pragma unroll
    for (int j = 0; j < G; ++j) {
      const int c = c0 + j;
      if (c < nch) {
        const int tl = min(seq, (c + 1) * L) - 1;
        decay[j] = expf(ws[((long)b * seq + tl) * (2 * H) + H + h]);
        local[j] = cp[(long)c * H * (P * N)];
      }
    }
#pragma unroll
    for (int j = 0; j < G; ++j) {
      const int c = c0 + j;
      if (c < nch) {
        cp[(long)c * H * (P * N)] = S;
        S = fmaf(decay[j], S, local[j]);
      }
    }
  }
  *st = from_f<ssm_t>(S);
}
