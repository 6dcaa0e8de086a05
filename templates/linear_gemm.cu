{% include "prelude.cu" %}
{
  // out[m, n] = Σ_k x[m, k] · W[n, k]: {{ tile }}×{{ tile }} output tiles, k steps of {{ bk }} through shared
  // memory, 4×4 outputs per thread, f32 accumulation. (Tensor cores come later.)
  // Tile sizes come from codegen (families.rs GEMM_TILE, GEMM_BK, GEMM_THREADS); the thread
  // mapping below (16×16 threads, 4×4 outputs each, 4 loads per thread) is written for them.
  constexpr int T = {{ tile }}, BK = {{ bk }}, NT = {{ block }};
  static_assert(T == 64 && BK == 16 && NT == 256, "linear_gemm's thread mapping");
  __shared__ float As[BK][T + 4];
  __shared__ float Bs[BK][T + 4];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const long m0 = (long)blockIdx.y * T;
  const int n0 = tile * T;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  for (int k0 = 0; k0 < {{ k }}; k0 += BK) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * NT, rr = e >> 4, kk = e & 15, k = k0 + kk;
      const long m = m0 + rr;
      const int n = n0 + rr;
      As[kk][rr] = (m < rows && k < {{ k }}) ? to_f(x[m * {{ x_stride }} + k]) : 0.f;
      Bs[kk][rr] = (n < {{ n }} && k < {{ k }}) ? to_f(weight[(long)n * {{ w_stride }} + k]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
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
