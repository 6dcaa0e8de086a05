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
  float* st = state + ((long)META_SLOT(b) * H + h) * (P * N) + p * N + n;  // slot of row b
  const int nch = (seq + L - 1) / L;
  float* cp = chunks + ((long)b * nch * H + h) * (P * N) + e;
  float S = *st;
  for (int c = 0; c < nch; ++c) {
    const int tl = min(seq, (c + 1) * L) - 1;
    const float decay = expf(ws[((long)b * seq + tl) * (2 * H) + H + h]);
    float* q = cp + (long)c * H * (P * N);
    const float local = *q;
    *q = S;
    S = fmaf(decay, S, local);
  }
  *st = S;
}
