{% include "prelude.cu" %}
{
  // out[m, n] = Σ_k x[m, k] · W[n, k] for few rows (decode): one warp per output feature,
  // the weight row streamed once with {{ vec }}-element loads, f32 accumulation.
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = tile * {{ warps }} + warp;
  if (n >= {{ n }}) return;
  const long wo = (long)n * {{ w_stride }};
  for (int m0 = 0; m0 < rows; m0 += {{ mr }}) {
    float acc[{{ mr }}];
#pragma unroll
    for (int m = 0; m < {{ mr }}; ++m) acc[m] = 0.f;
    for (int k = lane * {{ vec }}; k < {{ k }}; k += 32 * {{ vec }}) {
      float wv[{{ vec }}];
      loadv(weight + wo + k, wv);
#pragma unroll
      for (int m = 0; m < {{ mr }}; ++m) {
        if (m0 + m < rows) {
          float xv[{{ vec }}];
          loadv(x + (long)(m0 + m) * {{ x_stride }} + k, xv);
#pragma unroll
          for (int j = 0; j < {{ vec }}; ++j) acc[m] += wv[j] * xv[j];
        }
      }
    }
#pragma unroll
    for (int m = 0; m < {{ mr }}; ++m) {
      const float s = warp_sum(acc[m]);
      if (lane == 0 && m0 + m < rows) {
        const long row = m0 + m, o = row * {{ out_stride }} + n;
        float v = s;
{% include "linear_epilogue.cu" %}        out[o] = from_f<act_t>(v);
      }
    }
  }
}
