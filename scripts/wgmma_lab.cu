// A warpgroup-MMA GEMM against cuBLASLt on decode_rows' stacked-plane shapes (a lab, run on the
// GPU machine by scripts/wgmma_lab.sh; docs/PERFORMANCE.md, twentieth session). For each shape:
// cuBLASLt's heuristic first algorithm (the runtime's choice, runtime/src/cuda/blas.rs), then
// each configuration of scripts/wgmma_lab_kernel.cuh, checked against the library's result
// (largest difference over the largest value) and timed over weight copies rotated so that no
// launch finds its weight in L2. µs a launch and the weight's TB/s.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "wgmma_lab_kernel.cuh"

#include "lab_check.cuh"

static const size_t WS = 32u << 20;

struct Operands {
  int m, n, k, copies;
  std::vector<unsigned short*> w;
  unsigned short* x;
  float *ref, *out;
};

static Operands make(int m, int n, int k) {
  Operands o{m, n, k, 0, {}, nullptr, nullptr, nullptr};
  const size_t wn = (size_t)n * k, xn = (size_t)m * k;
  o.copies = std::max(2, (int)(300e6 / (wn * 2)) + 1);
  std::vector<unsigned short> h(std::max(wn, xn));
  unsigned st = 12345;
  for (auto& v : h) {  // bf16 of modest magnitude: sign, exponent 113..124, any mantissa
    st = st * 1664525u + 1013904223u;
    v = (unsigned short)(((st >> 31) << 15) | ((113 + (st >> 8) % 12) << 7) | ((st >> 12) & 0x7f));
  }
  o.w.resize(o.copies);
  for (auto& p : o.w) {
    CK(cudaMalloc(&p, wn * 2));
    CK(cudaMemcpy(p, h.data(), wn * 2, cudaMemcpyHostToDevice));
  }
  CK(cudaMalloc(&o.x, xn * 2));
  CK(cudaMemcpy(o.x, h.data() + 7, xn * 2, cudaMemcpyHostToDevice));  // not the weight's values
  CK(cudaMalloc(&o.ref, (size_t)m * n * 4));
  CK(cudaMalloc(&o.out, (size_t)m * n * 4));
  return o;
}

static void release(Operands& o) {
  for (auto p : o.w) cudaFree(p);
  cudaFree(o.x);
  cudaFree(o.ref);
  cudaFree(o.out);
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    cudaEventCreate(&a);
    cudaEventCreate(&b);
  }
  template <typename F> float us(cudaStream_t s, int reps, F&& launch) {
    launch(0);
    cudaEventRecord(a, s);
    for (int i = 0; i < reps; ++i) launch(i + 1);
    cudaEventRecord(b, s);
    if (cudaEventSynchronize(b) != cudaSuccess) return -1.f;
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    return ms * 1000.f / reps;
  }
};

// cuBLASLt's heuristic first algorithm for D = X·Wᵀ (the layouts blas.rs describes), into o.ref.
static float library(cublasLtHandle_t h, cudaStream_t s, void* ws, Operands& o, Timer& tm, int reps) {
  cublasLtMatmulDesc_t d;
  CK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = CUBLAS_OP_T;
  CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  cublasLtMatrixLayout_t la, lb, ld;
  CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, o.k, o.n, o.k));
  CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, o.k, o.m, o.k));
  CK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, o.n, o.m, o.n));
  cublasLtMatmulPreference_t pref;
  CK(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t wsb = WS;
  CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
  cublasLtMatmulHeuristicResult_t hr;
  int nh = 0;
  CK(cublasLtMatmulAlgoGetHeuristic(h, d, la, lb, ld, ld, pref, 1, &hr, &nh));
  const float one = 1.f, zero = 0.f;
  const float us = tm.us(s, reps, [&](int i) {
    cublasLtMatmul(h, d, &one, o.w[i % o.copies], la, o.x, lb, &zero, o.ref, ld, o.ref, ld, &hr.algo, ws, WS, s);
  });
  // The reference from copy 0 (all copies hold the same values).
  cublasLtMatmul(h, d, &one, o.w[0], la, o.x, lb, &zero, o.ref, ld, o.ref, ld, &hr.algo, ws, WS, s);
  CK(cudaStreamSynchronize(s));
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatmulDescDestroy(d);
  return us;
}

// One configuration: its error against the library and its µs (kernel alone; with SK > 1 also
// with the output's memset, which a split product needs).
template <int WGS, int BN, int S, int SK, int SWZ, int DEPTH = 1>
static void config(cudaStream_t s, Operands& o, Timer& tm, int reps, float lib_us) {
  auto kern = gemm_wgmma<WGS, BN, S, SK, SWZ, DEPTH>;
  const int smem = S * (WGS * 64 * 128 + BN * 128) + 1024;
  CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid((o.n + BN - 1) / BN, SK);
  const size_t on = (size_t)o.m * o.n;
  if (o.m > WGS * 64 || o.k % (64 * SK) != 0) {
    std::printf("  WGS %d BN %d S %d SK %d SWZ %d: shape does not fit\n", WGS, BN, S, SK, SWZ);
    return;
  }
  CK(cudaMemsetAsync(o.out, 0, on * 4, s));
  kern<<<grid, WGS * 128, smem, s>>>(o.x, o.w[0], o.out, o.n, o.k, o.m);
  const cudaError_t e = cudaStreamSynchronize(s);
  if (e != cudaSuccess) {
    std::printf("  WGS %d BN %d S %d SK %d SWZ %d: %s\n", WGS, BN, S, SK, SWZ, cudaGetErrorString(e));
    std::exit(1);
  }
  std::vector<float> a(on), b(on);
  CK(cudaMemcpy(a.data(), o.ref, on * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(b.data(), o.out, on * 4, cudaMemcpyDeviceToHost));
  double worst = 0, scale = 0;
  for (size_t i = 0; i < on; ++i) {
    worst = std::max(worst, (double)std::fabs(a[i] - b[i]));
    scale = std::max(scale, (double)std::fabs(a[i]));
  }
  const float us = tm.us(s, reps, [&](int i) {
    kern<<<grid, WGS * 128, smem, s>>>(o.x, o.w[i % o.copies], o.out, o.n, o.k, o.m);
  });
  float with_memset = us;
  if (SK > 1)
    with_memset = tm.us(s, reps, [&](int i) {
      cudaMemsetAsync(o.out, 0, on * 4, s);
      kern<<<grid, WGS * 128, smem, s>>>(o.x, o.w[i % o.copies], o.out, o.n, o.k, o.m);
    });
  const double bytes = (double)o.n * o.k * 2;
  std::printf("  WGS %d BN %3d S %d SK %d SWZ %d DEPTH %d: %4u CTAs, %6.2f us (%.2f TB/s, %.2fx the library)%s, rel err %.2e%s\n",
              WGS, BN, S, SK, SWZ, DEPTH, grid.x * grid.y, us, bytes / us / 1e6, lib_us / us,
              "", worst / scale, worst / scale < 1e-4 ? "" : "  WRONG");
  if (SK > 1) std::printf("      with the output's memset: %.2f us\n", with_memset);
  std::fflush(stdout);
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 60;
  cublasLtHandle_t h;
  CK(cublasLtCreate(&h));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  void* ws;
  CK(cudaMalloc(&ws, WS));
  Timer tm;
  struct Shape {
    const char* name;
    int m, n, k;
  };
  // The 2.7B's 64-row step (docs/KERNELS.md "decode_rows"): the mixers' GEMMs on both bf16
  // planes stacked (128 rows); and one plane of a shared block's q/k/v (64 rows), as bf16.
  // And one row's two planes (m = 2 of a 64-row tile): whether one GEMM could serve every row
  // count, a step of one row too (the one-row GEMV: in_proj 15.9 µs, out_proj 9.3, eighteenth
  // session), so that a row's sums never depend on the rows beside it.
  for (const Shape sh : {Shape{"in_proj 2x64", 128, 10448, 2560}, Shape{"out_proj 2x64", 128, 2560, 5120},
                         Shape{"qkv 64 (bf16)", 64, 15360, 5120}, Shape{"in_proj 2x1", 2, 10448, 2560},
                         Shape{"out_proj 2x1", 2, 2560, 5120}}) {
    Operands o = make(sh.m, sh.n, sh.k);
    const float lib = library(h, s, ws, o, tm, reps);
    std::printf("%s m=%d n=%d k=%d: cuBLASLt heuristic %.2f us (%.2f TB/s)\n", sh.name, sh.m, sh.n, sh.k, lib,
                (double)sh.n * sh.k * 2 / lib / 1e6);
    std::fflush(stdout);
    if (sh.m == 128 && sh.n == 10448) {
      // The three smem images on one configuration first: which descriptor reads right.
      config<2, 80, 6, 1, 1>(s, o, tm, reps, lib);
      config<2, 80, 6, 1, 0>(s, o, tm, reps, lib);
      config<2, 80, 6, 1, 2>(s, o, tm, reps, lib);
      config<2, 80, 4, 1, 1>(s, o, tm, reps, lib);
      config<2, 96, 6, 1, 1>(s, o, tm, reps, lib);
      config<2, 128, 5, 1, 1>(s, o, tm, reps, lib);
      config<2, 160, 5, 2, 1>(s, o, tm, reps, lib);
      // Two k-tiles' wgmma in flight (twenty-second session).
      config<2, 80, 6, 1, 1, 2>(s, o, tm, reps, lib);
      config<2, 80, 8, 1, 1, 2>(s, o, tm, reps, lib);
    } else if (sh.m == 128) {
      config<2, 80, 6, 4, 1>(s, o, tm, reps, lib);
      config<2, 80, 6, 4, 1, 2>(s, o, tm, reps, lib);
      config<2, 160, 5, 8, 1, 2>(s, o, tm, reps, lib);
      config<2, 40, 6, 2, 1>(s, o, tm, reps, lib);
      config<2, 160, 5, 8, 1>(s, o, tm, reps, lib);
      config<2, 80, 6, 4, 0>(s, o, tm, reps, lib);
    } else if (sh.m == 64) {
      config<1, 120, 8, 1, 1>(s, o, tm, reps, lib);
      config<1, 240, 5, 2, 1>(s, o, tm, reps, lib);
    } else if (sh.n == 10448) {
      config<1, 80, 8, 1, 1>(s, o, tm, reps, lib);
      config<1, 160, 6, 2, 1>(s, o, tm, reps, lib);
    } else {
      config<1, 80, 8, 4, 1>(s, o, tm, reps, lib);
      config<1, 40, 8, 2, 1>(s, o, tm, reps, lib);
    }
    release(o);
  }
  return 0;
}
