// Split-K as a strided batch: does cuBLASLt stream decode_rows' narrow GEMMs faster when K is cut
// into S slices run as S batch entries (one launch, S times the CTAs), their f32 products summed
// in a fixed order by the kernel that already sums the planes (pair_sum)? A lab, run on the GPU
// machine (scripts/blas_splitk_lab.sh; docs/PERFORMANCE.md, twenty-second session).
//
// Why: at 64 rows the 2560-wide projections (out_proj, o_proj, down, the hybrid linear) stream
// their weights at 2.0-2.7 TB/s where the wide ones reach 3.8 (blas_search_lab's table): the
// library tiles 2560 outputs into 40-80 CTAs, each walking all of K, fewer than 132 SMs and each
// with one long dependent stream. Its own split-K (searched there) adds a reduction kernel and
// did not win. Here the S partial products land in S f32 slices (D's batch stride n·m) and one
// small kernel sums them, the cost pair_sum would add by reading 2S values instead of 2.
//
// D[m, n] = X[m, :]·W[n, :] (16-bit in, f32 out and accumulation), the layouts of
// runtime/src/cuda/blas.rs; slice s: X[:, s·kc..], W[:, s·kc..] (batch stride kc for both).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "lab_check.cuh"

struct Shape {
  const char* name;
  int m, n, k;
  cudaDataType_t in;
};

static const size_t WS = 32u << 20;  // ir/src/device.rs LIBRARY_WORKSPACE_BYTES

// out[i] = Σ_s part[s·len + i], s in order (the fixed order pair_sum would use).
__global__ void sum_slices(const float* __restrict__ part, float* __restrict__ out, int len, int slices) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= len / 4) return;
  float4 acc = reinterpret_cast<const float4*>(part)[i];
  for (int s = 1; s < slices; ++s) {
    const float4 v = reinterpret_cast<const float4*>(part + (size_t)s * len)[i];
    acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
  }
  reinterpret_cast<float4*>(out)[i] = acc;
}

struct Gemm {
  cublasLtMatmulDesc_t d{};
  cublasLtMatrixLayout_t la{}, lb{}, ld{};
  std::vector<cublasLtMatmulAlgo_t> algos;
};

static void batch(cublasLtMatrixLayout_t l, int count, long long stride) {
  CK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
  CK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
}

static Gemm make(cublasLtHandle_t h, const Shape& sh, int slices) {
  Gemm g;
  const int kc = sh.k / slices;
  CK(cublasLtMatmulDescCreate(&g.d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = CUBLAS_OP_T;
  CK(cublasLtMatmulDescSetAttribute(g.d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  CK(cublasLtMatrixLayoutCreate(&g.la, sh.in, kc, sh.n, sh.k));
  CK(cublasLtMatrixLayoutCreate(&g.lb, sh.in, kc, sh.m, sh.k));
  CK(cublasLtMatrixLayoutCreate(&g.ld, CUDA_R_32F, sh.n, sh.m, sh.n));
  if (slices > 1) {
    batch(g.la, slices, kc);
    batch(g.lb, slices, kc);
    batch(g.ld, slices, (long long)sh.n * sh.m);
  }
  cublasLtMatmulPreference_t pref;
  CK(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t wsb = WS;
  CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
  cublasLtMatmulHeuristicResult_t hr[8];
  int nh = 0;
  if (cublasLtMatmulAlgoGetHeuristic(h, g.d, g.la, g.lb, g.ld, g.ld, pref, 8, hr, &nh) == 0)
    for (int i = 0; i < nh; ++i)
      if (hr[i].state == CUBLAS_STATUS_SUCCESS && hr[i].workspaceSize <= WS) g.algos.push_back(hr[i].algo);
  cublasLtMatmulPreferenceDestroy(pref);
  return g;
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 40;
  // decode_rows at 64 rows (docs/KERNELS.md): the mixers' GEMMs on both bf16 planes stacked
  // (128 rows), the shared blocks' and the hybrid linear on one f16 plane (64 rows).
  const Shape shapes[] = {
      {"out_proj 2x64", 128, 2560, 5120, CUDA_R_16BF},  {"in_proj 2x64", 128, 10448, 2560, CUDA_R_16BF},
      {"o_proj f16 64", 64, 2560, 5120, CUDA_R_16F},    {"down f16 64", 64, 2560, 10240, CUDA_R_16F},
      {"linear f16 64", 64, 2560, 2560, CUDA_R_16F},
  };
  const int slice_counts[] = {1, 2, 4, 5, 8};
  cublasLtHandle_t h;
  CK(cublasLtCreate(&h));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  void* ws;
  CK(cudaMalloc(&ws, WS));
  std::printf("shape, slices: µs of the GEMM (heuristic's first / best of its <=8), of the slice sum, of both in a row; weight TB/s of both; max |diff| / max |D| against 1 slice\n");
  for (const Shape& sh : shapes) {
    const size_t wn = (size_t)sh.n * sh.k, xn = (size_t)sh.m * sh.k, on = (size_t)sh.m * sh.n;
    // Weight copies rotated so that no timed run finds its weight in L2 (50 MB).
    const int copies = std::max(2, (int)(200e6 / (wn * 2)) + 1);
    std::vector<void*> w(copies);
    for (auto& p : w) CK(cudaMalloc(&p, wn * 2));
    void* x;
    float *part, *out, *ref;
    CK(cudaMalloc(&x, xn * 2));
    CK(cudaMalloc(&part, on * 4 * 8));
    CK(cudaMalloc(&out, on * 4));
    CK(cudaMalloc(&ref, on * 4));
    {
      // Random 16-bit patterns of modest magnitude: sign, a narrow exponent range, any mantissa.
      std::vector<unsigned short> hw(std::max(wn, xn));
      unsigned st = 12345;
      for (auto& v : hw) {
        st = st * 1664525u + 1013904223u;
        const bool bf = sh.in == CUDA_R_16BF;
        const unsigned e = bf ? (113 + (st >> 8) % 12) : (5 + (st >> 8) % 10);
        v = bf ? (unsigned short)(((st >> 31) << 15) | (e << 7) | ((st >> 12) & 0x7f))
               : (unsigned short)(((st >> 31) << 15) | (e << 10) | ((st >> 12) & 0x3ff));
      }
      for (auto& p : w) CK(cudaMemcpy(p, hw.data(), wn * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(x, hw.data(), xn * 2, cudaMemcpyHostToDevice));
    }
    const float one = 1.f, zero = 0.f;
    const double bytes = wn * 2.0;
    std::vector<float> refh(on), outh(on);
    for (int slices : slice_counts) {
      if (sh.k % (8 * slices) != 0) continue;
      Gemm g = make(h, sh, slices);
      if (g.algos.empty()) {
        std::printf("%s, %d slices: no algorithm\n", sh.name, slices);
        continue;
      }
      int wi = 0;
      const int sum_len = (int)on;
      auto launch = [&](const cublasLtMatmulAlgo_t& a, void* wp, bool sum) {
        float* d = slices > 1 ? part : out;
        if (cublasLtMatmul(h, g.d, &one, wp, g.la, x, g.lb, &zero, d, g.ld, d, g.ld, &a, ws, WS, s) != 0) return false;
        if (sum && slices > 1) sum_slices<<<(sum_len / 4 + 255) / 256, 256, 0, s>>>(part, out, sum_len, slices);
        return true;
      };
      auto timed = [&](const cublasLtMatmulAlgo_t* a, bool gemm, bool sum) {
        if (a && !launch(*a, w[0], sum)) return -1.f;
        CK(cudaEventRecord(e0, s));
        for (int i = 0; i < reps; ++i) {
          wi = (wi + 1) % copies;
          if (gemm) launch(*a, w[wi], sum);
          else sum_slices<<<(sum_len / 4 + 255) / 256, 256, 0, s>>>(part, out, sum_len, slices);
        }
        CK(cudaEventRecord(e1, s));
        if (cudaEventSynchronize(e1) != cudaSuccess) return -1.f;
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        return ms * 1000.f / reps;
      };
      float first = timed(&g.algos[0], true, false), best = first;
      size_t bi = 0;
      for (size_t i = 1; i < g.algos.size(); ++i) {
        const float us = timed(&g.algos[i], true, false);
        if (us > 0 && (best < 0 || us < best)) best = us, bi = i;
      }
      const float sum_us = slices > 1 ? timed(nullptr, false, true) : 0.f;
      const float both = timed(&g.algos[bi], true, true);
      // Correctness: the best algorithm's summed slices against the one-slice GEMM.
      launch(g.algos[bi], w[0], true);
      CK(cudaStreamSynchronize(s));
      CK(cudaMemcpy(slices == 1 ? refh.data() : outh.data(), out, on * 4, cudaMemcpyDeviceToHost));
      double md = 0, mx = 0;
      if (slices > 1)
        for (size_t i = 0; i < on; ++i) {
          md = std::max(md, (double)std::fabs(outh[i] - refh[i]));
          mx = std::max(mx, (double)std::fabs(refh[i]));
        }
      std::printf("%s m=%d n=%d k=%d, %d slices: gemm %.2f / %.2f us, sum %.2f, both %.2f us (%.2f TB/s), diff %.2e / %.2e\n",
                  sh.name, sh.m, sh.n, sh.k, slices, first, best, sum_us, both, bytes / both / 1e6, md, mx);
      std::fflush(stdout);
      cublasLtMatrixLayoutDestroy(g.la);
      cublasLtMatrixLayoutDestroy(g.lb);
      cublasLtMatrixLayoutDestroy(g.ld);
      cublasLtMatmulDescDestroy(g.d);
    }
    for (auto& p : w) cudaFree(p);
    cudaFree(x);
    cudaFree(part);
    cudaFree(out);
    cudaFree(ref);
  }
  return 0;
}
