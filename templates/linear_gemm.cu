{% include "prelude.cu" %}
{
  // out[m, n] = Σ_k x[m, k] · W[n, k]: 64×64 output tiles, k steps of 16 through shared
  // memory, 4×4 outputs per thread, f32 accumulation. (Tensor cores come later.)
  __shared__ float As[16][64 + 4];
  __shared__ float Bs[16][64 + 4];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const long m0 = (long)blockIdx.y * 64;
  const int n0 = tile * 64;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  for (int k0 = 0; k0 < {{ k }}; k0 += 16) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * 256, rr = e >> 4, kk = e & 15, k = k0 + kk;
      const long m = m0 + rr;
      const int n = n0 + rr;
      As[kk][rr] = (m < rows && k < {{ k }}) ? to_f(x[m * {{ x_stride }} + k]) : 0.f;
      Bs[kk][rr] = (n < {{ n }} && k < {{ k }}) ? to_f(weight[(long)n * {{ w_stride }} + k]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 16; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) { a[i] = As[kk][ty * 4 + i]; b[i] = Bs[kk][tx * 4 + i]; }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const long m = m0 + ty * 4 + i;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx * 4 + j;
      if (m < rows && n < {{ n }}) {
        const long row = m, o = row * {{ out_stride }} + n;
        float v = acc[i][j];
{% include "linear_epilogue.cu" %}        out[o] = from_f<act_t>(v);
      }
    }
  }
}
