// gemv12_lab: can a decode GEMV read bf16 weights stored in 12 bits, losslessly, faster than it
// reads them in 16? (issue 9's change of approach; docs/PERFORMANCE.md, eighteenth and
// nineteenth sessions). A standalone CUDA program, built and run on the GPU machine by
// scripts/gemv12_lab.sh. The form: a matrix's bf16 exponents, all within the 15 binades below
// its largest (E, E−1, .., E−14) but for ~0.015% of a normal init's weights, are stored as a
// 4-bit code c = E − e; sign and 7 mantissa bits as one byte. A weight outside those binades
// (and zero) takes code 15 and a zero byte, which decodes to the power of two 2^(E−15−127); its
// exact value is added afterwards from a per-row list, minus that power of two. The packed
// matrix: a byte plane [N][K] and a code plane [N][K/2] (two codes a byte, low nibble first).
// Designs, each y = W·x over one decode projection's shape, timed with CUDA events over launches
// that cycle through enough weight copies that every launch reads HBM:
//   bf16   2 rows a warp, 8 weights (16 bytes) a lane an iteration, x (f32) from global memory:
//          the shape of proj_gemv's one-row loop (templates/proj_gemv.cu) without the norm
//   p12    the same walk over the packed form: 16 weights a lane an iteration (16 bytes of the
//          byte plane, 8 of the code plane), decoded two at a time into bf16 pairs
//          (prmt, masks, one subtraction a pair for the exponents), then the escapes
//   read16 / read12  every byte of the bf16 / packed matrix read once: the ceilings
// and checked: p12 against bf16 (the same weights: only the summation order differs).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "lab_check.cuh"
#include "lab_device.cuh"

__device__ __forceinline__ uint2 ldg_stream8(const void* p) {
  uint2 v;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ unsigned prmt(unsigned a, unsigned b, unsigned sel) {
  unsigned r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

// ---- bf16: 2 rows a warp, 8 weights a lane an iteration.
template <int K>
__global__ void __launch_bounds__(256) gemv_bf16(const unsigned short* __restrict__ W, const float* __restrict__ x,
                                                 float* __restrict__ y, int N) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int o0 = (blockIdx.x * 8 + warp) * 2;
  if (o0 >= N) return;
  const unsigned short* w0 = W + (long)o0 * K;
  const unsigned short* w1 = W + (long)(o0 + 1 < N ? o0 + 1 : o0) * K;
  float a0 = 0.f, a1 = 0.f;
#pragma unroll 8
  for (int it = 0; it < K / 256; ++it) {
    const int k = (it * 32 + lane) * 8;
    const float4 xa = *reinterpret_cast<const float4*>(x + k), xb = *reinterpret_cast<const float4*>(x + k + 4);
    const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
    const uint4 v0 = ldg_stream(w0 + k), v1 = ldg_stream(w1 + k);
    const unsigned u0[4] = {v0.x, v0.y, v0.z, v0.w}, u1[4] = {v1.x, v1.y, v1.z, v1.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      a0 += __uint_as_float(u0[i] << 16) * xv[2 * i] + __uint_as_float(u0[i] & 0xffff0000u) * xv[2 * i + 1];
      a1 += __uint_as_float(u1[i] << 16) * xv[2 * i] + __uint_as_float(u1[i] & 0xffff0000u) * xv[2 * i + 1];
    }
  }
  a0 = warp_sum(a0);
  a1 = warp_sum(a1);
  if (lane == 0) {
    y[o0] = a0;
    if (o0 + 1 < N) y[o0 + 1] = a1;
  }
}

// Four weights' bf16 pairs from one 32-bit word of the byte plane (bytes b0..b3, weights k..k+3)
// and its 16 bits of codes (c0..c3, low nibble first): p[0] = (w1 << 16 | w0), p[1] = (w3 | w2).
// ebias = E << 7 | E << 23: each half's exponent field E − c by one subtraction a pair (no
// borrow crosses the halves: c ≤ 15 ≤ E).
__device__ __forceinline__ void decode4(unsigned bytes, unsigned codes, unsigned ebias, unsigned (&p)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    // [b(2h), 0, b(2h+1), 0]: sign at bits 7 and 23, mantissas at 0..6 and 16..22.
    const unsigned s = prmt(bytes, 0u, h ? 0x4342u : 0x4140u);
    // Codes c(2h) and c(2h+1) at bits 7..10 and 23..26.
    const unsigned cb = (codes >> (8 * h)) & 0xffu;
    const unsigned c = ((cb & 0x0fu) << 7) | ((cb & 0xf0u) << 19);
    p[h] = ((s & 0x00800080u) << 8) | (s & 0x007f007fu) | (ebias - c);
  }
}

// ---- p12: the packed form, 16 weights a lane an iteration; then each row's escapes.
template <int K>
__global__ void __launch_bounds__(256) gemv_p12(const unsigned char* __restrict__ M, const unsigned char* __restrict__ C,
                                                const int* __restrict__ esc_ptr, const int* __restrict__ esc_col,
                                                const float* __restrict__ esc_val, float p2, unsigned ebias,
                                                const float* __restrict__ x, float* __restrict__ y, int N) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int o0 = (blockIdx.x * 8 + warp) * 2;
  if (o0 >= N) return;
  const int o1 = o0 + 1 < N ? o0 + 1 : o0;
  const unsigned char* m0 = M + (long)o0 * K;
  const unsigned char* m1 = M + (long)o1 * K;
  const unsigned char* c0 = C + (long)o0 * (K / 2);
  const unsigned char* c1 = C + (long)o1 * (K / 2);
  float a0 = 0.f, a1 = 0.f;
#pragma unroll 4
  for (int it = 0; it < K / 512; ++it) {
    const int k = (it * 32 + lane) * 16;
    const uint4 mb0 = ldg_stream(m0 + k), mb1 = ldg_stream(m1 + k);
    const uint2 cb0 = ldg_stream8(c0 + k / 2), cb1 = ldg_stream8(c1 + k / 2);
    const unsigned mw0[4] = {mb0.x, mb0.y, mb0.z, mb0.w}, mw1[4] = {mb1.x, mb1.y, mb1.z, mb1.w};
    const unsigned cw0[2] = {cb0.x, cb0.y}, cw1[2] = {cb1.x, cb1.y};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const float4 xq = *reinterpret_cast<const float4*>(x + k + 4 * q);
      unsigned p0[2], p1[2];
      decode4(mw0[q], cw0[q / 2] >> (16 * (q % 2)), ebias, p0);
      decode4(mw1[q], cw1[q / 2] >> (16 * (q % 2)), ebias, p1);
      a0 += __uint_as_float(p0[0] << 16) * xq.x + __uint_as_float(p0[0] & 0xffff0000u) * xq.y +
            __uint_as_float(p0[1] << 16) * xq.z + __uint_as_float(p0[1] & 0xffff0000u) * xq.w;
      a1 += __uint_as_float(p1[0] << 16) * xq.x + __uint_as_float(p1[0] & 0xffff0000u) * xq.y +
            __uint_as_float(p1[1] << 16) * xq.z + __uint_as_float(p1[1] & 0xffff0000u) * xq.w;
    }
  }
  // The escapes: each decoded as p2; the list holds the true value.
  for (int r = 0; r < 2; ++r) {
    const int row = r ? o1 : o0;
    for (int e = esc_ptr[row] + lane; e < esc_ptr[row + 1]; e += 32) {
      const float xv = x[esc_col[e]];
      (r ? a1 : a0) += esc_val[e] * xv - p2 * xv;
    }
  }
  a0 = warp_sum(a0);
  a1 = warp_sum(a1);
  if (lane == 0) {
    y[o0] = a0;
    if (o0 + 1 < N) y[o0 + 1] = a1;
  }
}

// ---- read: every 16-byte word once (summed, so the loads are kept).
__global__ void __launch_bounds__(256) read_all(const uint4* __restrict__ p, long n, unsigned* out) {
  unsigned s = 0;
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
    const uint4 v = ldg_stream(p + i);
    s ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (s == 0x12345678u) out[0] = s;
}

static unsigned short to_bf16(float f) {  // round to nearest even
  unsigned u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}
static float from_bf16(unsigned short h) {
  unsigned u = (unsigned)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

struct Packed {
  std::vector<unsigned char> m, c;
  std::vector<int> ptr, col;
  std::vector<float> val;
  int E;
};

// The packed form of a bf16 matrix (see the top of this file).
static Packed pack(const std::vector<unsigned short>& w, int N, int K) {
  Packed p;
  p.E = 0;
  for (unsigned short h : w) p.E = std::max(p.E, (int)((h >> 7) & 0xff));
  p.m.assign((size_t)N * K, 0);
  p.c.assign((size_t)N * K / 2, 0);
  p.ptr.assign(N + 1, 0);
  for (int n = 0; n < N; ++n) {
    for (int k = 0; k < K; ++k) {
      const unsigned short h = w[(size_t)n * K + k];
      const int e = (h >> 7) & 0xff;
      int code = p.E - e;
      unsigned char byte = (unsigned char)(((h >> 8) & 0x80) | (h & 0x7f));
      if (code > 14 || e == 0) {
        code = 15;
        byte = 0;
        p.col.push_back(k);
        p.val.push_back(from_bf16(h));
      }
      p.m[(size_t)n * K + k] = byte;
      p.c[((size_t)n * K + k) / 2] |= (unsigned char)(code << (4 * (k & 1)));
    }
    p.ptr[n + 1] = (int)p.col.size();
  }
  return p;
}

template <int K>
static void run_shape(const char* name, int N, int iters, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<unsigned short> w((size_t)N * K);
  for (auto& h : w) h = to_bf16(nd(rng));
  std::vector<float> x(K);
  for (auto& v : x) v = nd(rng) * 50.f;
  const Packed p = pack(w, N, K);
  const unsigned ebias = ((unsigned)p.E << 7) | ((unsigned)p.E << 23);
  const float p2 = ldexpf(1.f, p.E - 15 - 127);
  const double b16 = 2.0 * N * K, b12 = 1.5 * N * K + 4.0 * (N + 1) + 8.0 * p.col.size();
  // Weight copies so that every timed launch reads HBM (> 3 × the 50 MB L2 in all).
  const int copies = std::max(2, (int)(300e6 / b16) + 1);
  std::vector<unsigned short*> dw(copies);
  std::vector<unsigned char*> dm(copies), dc(copies);
  for (int i = 0; i < copies; ++i) {
    CK(cudaMalloc(&dw[i], (size_t)b16));
    CK(cudaMemcpy(dw[i], w.data(), (size_t)b16, cudaMemcpyHostToDevice));
    CK(cudaMalloc(&dm[i], p.m.size()));
    CK(cudaMemcpy(dm[i], p.m.data(), p.m.size(), cudaMemcpyHostToDevice));
    CK(cudaMalloc(&dc[i], p.c.size()));
    CK(cudaMemcpy(dc[i], p.c.data(), p.c.size(), cudaMemcpyHostToDevice));
  }
  int *dptr, *dcol;
  float *dval, *dx, *dy16, *dy12;
  unsigned* dsink;
  CK(cudaMalloc(&dptr, p.ptr.size() * 4));
  CK(cudaMemcpy(dptr, p.ptr.data(), p.ptr.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&dcol, std::max<size_t>(1, p.col.size()) * 4));
  CK(cudaMalloc(&dval, std::max<size_t>(1, p.val.size()) * 4));
  if (!p.col.empty()) {
    CK(cudaMemcpy(dcol, p.col.data(), p.col.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dval, p.val.data(), p.val.size() * 4, cudaMemcpyHostToDevice));
  }
  CK(cudaMalloc(&dx, K * 4));
  CK(cudaMemcpy(dx, x.data(), K * 4, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&dy16, N * 4));
  CK(cudaMalloc(&dy12, N * 4));
  CK(cudaMalloc(&dsink, 4));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const int blocks = (N + 15) / 16;
  auto time = [&](auto launch) {
    launch(0);
    CK(cudaDeviceSynchronize());
    cudaEventRecord(e0);
    for (int i = 0; i < iters; ++i) launch((i + 1) % copies);
    cudaEventRecord(e1);
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    return ms * 1000.f / iters;
  };
  const float t16 = time([&](int i) { gemv_bf16<K><<<blocks, 256>>>(dw[i], dx, dy16, N); });
  const float t12 = time([&](int i) {
    gemv_p12<K><<<blocks, 256>>>(dm[i], dc[i], dptr, dcol, dval, p2, ebias, dx, dy12, N);
  });
  const float r16 = time([&](int i) { read_all<<<132 * 8, 256>>>((const uint4*)dw[i], (long)(b16 / 16), dsink); });
  const float r12 = time([&](int i) {
    read_all<<<132 * 8, 256>>>((const uint4*)dm[i], (long)(p.m.size() / 16), dsink);
    read_all<<<132 * 4, 256>>>((const uint4*)dc[i], (long)(p.c.size() / 16), dsink);
  });
  std::vector<float> y16(N), y12(N);
  CK(cudaMemcpy(y16.data(), dy16, N * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(y12.data(), dy12, N * 4, cudaMemcpyDeviceToHost));
  double dmax = 0, smax = 0;
  for (int n = 0; n < N; ++n) {
    dmax = std::max(dmax, (double)fabsf(y16[n] - y12[n]));
    smax = std::max(smax, (double)fabsf(y16[n]));
  }
  printf("%-9s %5d x %5d  E %d escapes %zu (%.4f%%)  bf16 %7.2f us (%.2f TB/s)  p12 %7.2f us (%.2f TB/s of packed, %.2fx)"
         "  read16 %6.2f  read12 %6.2f us  rel %.2e\n",
         name, N, K, p.E, p.col.size(), 100.0 * p.col.size() / ((double)N * K), t16, b16 / t16 / 1e6, t12,
         b12 / t12 / 1e6, t16 / t12, r16, r12, dmax / (smax > 0 ? smax : 1));
  fflush(stdout);
  for (int i = 0; i < copies; ++i) {
    cudaFree(dw[i]);
    cudaFree(dm[i]);
    cudaFree(dc[i]);
  }
  cudaFree(dptr);
  cudaFree(dcol);
  cudaFree(dval);
  cudaFree(dx);
  cudaFree(dy16);
  cudaFree(dy12);
  cudaFree(dsink);
}

int main(int argc, char** argv) {
  const int iters = argc > 1 ? atoi(argv[1]) : 60;
  std::mt19937 rng(7);
  // The 2.7B's decode projections (docs/KERNELS.md): a mixer's in_proj and out_proj, the shared
  // blocks' q/k/v (one input of 5120), gate_up and down, lm_head.
  run_shape<2560>("in_proj", 10448, iters, rng);
  run_shape<5120>("out_proj", 2560, iters, rng);
  run_shape<5120>("qkv", 15360, iters, rng);
  run_shape<5120>("gate_up", 20480, iters, rng);
  run_shape<10240>("down", 2560, iters, rng);
  run_shape<2560>("lm_head", 32000, iters, rng);
  return 0;
}
