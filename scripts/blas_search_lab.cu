// cuBLASLt configuration search for decode_rows' GEMM shapes (a lab, run on the GPU machine:
//   nvcc -O2 -std=c++17 -o /tmp/blas_lab scripts/blas_search_lab.cu -lcublasLt && /tmp/blas_lab
// docs/PERFORMANCE.md, nineteenth session). The runtime's GEMMs (runtime/src/cuda/blas.rs) take
// the heuristic's first algorithm; timing the heuristic's first 24 gained 0.9% on a 64-row step
// (ninth session). This asks whether any configuration the library can run — every algorithm
// id, tile, stage count, split-K count with a deterministic (out-of-place) reduction, swizzle,
// custom option and cluster shape — does better on the same operands: D[m, n] = X[m, :]·W[n, :]
// (bf16 or f16 in, f32 out, f32 accumulation), the layouts blas.rs describes.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "lab_check.cuh"

struct Shape {
  const char* name;
  int m, n, k;
  cudaDataType_t in;
};

struct Cand {
  cublasLtMatmulAlgo_t algo;
  float us;
  int id, tile, stages, splitk, red, swz, opt, cluster;
};

static const size_t WS = 32u << 20;  // ir/src/device.rs LIBRARY_WORKSPACE_BYTES

template <typename T>
static std::vector<T> cap_list(const cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoCapAttributes_t at) {
  size_t bytes = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(&a, at, nullptr, 0, &bytes) != 0 || bytes == 0) return {};
  std::vector<T> v(bytes / sizeof(T));
  cublasLtMatmulAlgoCapGetAttribute(&a, at, v.data(), bytes, &bytes);
  return v;
}

template <typename T>
static T cap(const cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoCapAttributes_t at) {
  T v{};
  size_t bytes = 0;
  cublasLtMatmulAlgoCapGetAttribute(&a, at, &v, sizeof(v), &bytes);
  return v;
}

template <typename T>
static void cfg(cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoConfigAttributes_t at, T v) {
  cublasLtMatmulAlgoConfigSetAttribute(&a, at, &v, sizeof(v));
}

int main(int argc, char** argv) {
  const double budget_s = argc > 1 ? std::atof(argv[1]) : 25.0;  // per shape
  // The 2.7B shape at 64 rows (docs/KERNELS.md "decode_rows"): the mixers' GEMMs take both
  // bf16 planes stacked (128 rows), the shared blocks' one f16 plane (64 rows).
  const Shape shapes[] = {
      {"in_proj 2x64", 128, 10448, 2560, CUDA_R_16BF},
      {"out_proj 2x64", 128, 2560, 5120, CUDA_R_16BF},
      {"qkv f16 64", 64, 15360, 5120, CUDA_R_16F},
      {"gate_up f16 64", 64, 20480, 5120, CUDA_R_16F},
      {"down f16 64", 64, 2560, 10240, CUDA_R_16F},
      {"o_proj f16 64", 64, 2560, 5120, CUDA_R_16F},
  };
  cublasLtHandle_t h;
  CK(cublasLtCreate(&h));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  void* ws;
  CK(cudaMalloc(&ws, WS));
  for (const Shape& sh : shapes) {
    const size_t wn = (size_t)sh.n * sh.k, xn = (size_t)sh.m * sh.k, on = (size_t)sh.m * sh.n;
    // Several weight copies, rotated, so no timed run finds its weight in L2 (50 MB).
    const int copies = std::max(2, (int)(200e6 / (wn * 2)) + 1);
    std::vector<void*> w(copies);
    for (auto& p : w) CK(cudaMalloc(&p, wn * 2));
    void *x;
    float *out, *out2;
    CK(cudaMalloc(&x, xn * 2));
    CK(cudaMalloc(&out, on * 4));
    CK(cudaMalloc(&out2, on * 4));
    {
      // Random 16-bit patterns of modest magnitude: sign, exponent 113..124, any mantissa.
      std::vector<unsigned short> hw(std::max(wn, xn));
      unsigned st = 12345;
      for (auto& v : hw) {
        st = st * 1664525u + 1013904223u;
        unsigned e = (sh.in == CUDA_R_16BF) ? (113 + (st >> 8) % 12) : (5 + (st >> 8) % 10);
        v = (sh.in == CUDA_R_16BF) ? (unsigned short)(((st >> 31) << 15) | (e << 7) | ((st >> 12) & 0x7f))
                                   : (unsigned short)(((st >> 31) << 15) | (e << 10) | ((st >> 12) & 0x3ff));
      }
      for (auto& p : w) CK(cudaMemcpy(p, hw.data(), wn * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(x, hw.data(), xn * 2, cudaMemcpyHostToDevice));
    }
    cublasLtMatmulDesc_t d;
    CK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T;
    CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    cublasLtMatrixLayout_t la, lb, ld;
    CK(cublasLtMatrixLayoutCreate(&la, sh.in, sh.k, sh.n, sh.k));
    CK(cublasLtMatrixLayoutCreate(&lb, sh.in, sh.k, sh.m, sh.k));
    CK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, sh.n, sh.m, sh.n));
    cublasLtMatmulPreference_t pref;
    CK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t wsb = WS;
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
    const double bytes = wn * 2.0;
    int wi = 0;
    auto timed = [&](const cublasLtMatmulAlgo_t& a, int reps) {
      // Rotate the weight copy between launches: time `reps` launches over the copies.
      const float one = 1.f, zero = 0.f;
      if (cublasLtMatmul(h, d, &one, w[0], la, x, lb, &zero, out, ld, out, ld, &a, ws, WS, s) != 0) return -1.f;
      cudaEventRecord(e0, s);
      for (int i = 0; i < reps; ++i) {
        wi = (wi + 1) % copies;
        cublasLtMatmul(h, d, &one, w[wi], la, x, lb, &zero, out, ld, out, ld, &a, ws, WS, s);
      }
      cudaEventRecord(e1, s);
      if (cudaEventSynchronize(e1) != cudaSuccess) return -1.f;
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      return ms * 1000.f / reps;
    };
    // The heuristic's list.
    cublasLtMatmulHeuristicResult_t hr[32];
    int nh = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(h, d, la, lb, ld, ld, pref, 32, hr, &nh));
    float heur0 = -1, heur_best = 1e30f;
    for (int i = 0; i < nh; ++i) {
      float us = timed(hr[i].algo, 20);
      if (i == 0) heur0 = us;
      if (us > 0) heur_best = std::min(heur_best, us);
    }
    std::printf("%s m=%d n=%d k=%d: heuristic first %.2f us (%.2f TB/s), best of its %d %.2f us\n", sh.name,
                sh.m, sh.n, sh.k, heur0, bytes / heur0 / 1e6, nh, heur_best);
    std::fflush(stdout);
    // Every configuration.
    int ids[128], nids = 0;
    CK(cublasLtMatmulAlgoGetIds(h, CUBLAS_COMPUTE_32F, CUDA_R_32F, sh.in, sh.in, CUDA_R_32F, CUDA_R_32F, 128, ids, &nids));
    std::vector<Cand> all;
    auto t0 = std::chrono::steady_clock::now();
    long tried = 0, ran = 0;
    bool out_of_time = false;
    for (int ai = 0; ai < nids && !out_of_time; ++ai) {
      cublasLtMatmulAlgo_t base;
      if (cublasLtMatmulAlgoInit(h, CUBLAS_COMPUTE_32F, CUDA_R_32F, sh.in, sh.in, CUDA_R_32F, CUDA_R_32F, ids[ai], &base) != 0)
        continue;
      auto tiles = cap_list<uint32_t>(base, CUBLASLT_ALGO_CAP_TILE_IDS);
      auto stages = cap_list<uint32_t>(base, CUBLASLT_ALGO_CAP_STAGES_IDS);
      if (tiles.empty()) tiles.push_back(CUBLASLT_MATMUL_TILE_UNDEFINED);
      if (stages.empty()) stages.push_back(CUBLASLT_MATMUL_STAGES_UNDEFINED);
      const int splitk_ok = cap<int32_t>(base, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT);
      const uint32_t red_mask = cap<uint32_t>(base, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK);
      const uint32_t swz_ok = cap<uint32_t>(base, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT);
      const int32_t opt_max = cap<int32_t>(base, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX);
      // No capability lists the cluster shapes: try the small ones, AlgoCheck refuses the rest.
      const uint16_t clusters[] = {CUBLASLT_CLUSTER_SHAPE_AUTO, CUBLASLT_CLUSTER_SHAPE_1x1x1,
                                   CUBLASLT_CLUSTER_SHAPE_2x1x1, CUBLASLT_CLUSTER_SHAPE_1x2x1,
                                   CUBLASLT_CLUSTER_SHAPE_4x1x1};
      const int splits[] = {1, 2, 3, 4, 5, 6, 8, 10, 12, 16};
      for (uint32_t tile : tiles)
        for (uint32_t stg : stages)
          for (uint16_t cl : clusters)
            for (int sk : splits) {
              if (sk > 1 && !splitk_ok) continue;
              // Deterministic reductions only: out-of-place (compute type or output type);
              // in-place uses atomics (the ninth session's tuned candidates lost bitwise checks).
              std::vector<uint32_t> reds = {CUBLASLT_REDUCTION_SCHEME_NONE};
              if (sk > 1) {
                reds.clear();
                for (uint32_t r : {CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE})
                  if (red_mask & r) reds.push_back(r);
              }
              for (uint32_t red : reds)
                for (uint32_t swz = 0; swz <= (swz_ok ? 1u : 0u); ++swz)
                  for (int32_t opt = 0; opt <= opt_max; ++opt) {
                    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > budget_s) {
                      out_of_time = true;
                      goto done;
                    }
                    cublasLtMatmulAlgo_t a = base;
                    cfg<uint32_t>(a, CUBLASLT_ALGO_CONFIG_TILE_ID, tile);
                    cfg<uint32_t>(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, stg);
                    cfg<uint16_t>(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, cl);
                    cfg<int32_t>(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, sk);
                    cfg<uint32_t>(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, red);
                    cfg<uint32_t>(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, swz);
                    cfg<uint32_t>(a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, (uint32_t)opt);
                    cublasLtMatmulHeuristicResult_t chk;
                    ++tried;
                    if (cublasLtMatmulAlgoCheck(h, d, la, lb, ld, ld, &a, &chk) != 0) continue;
                    if (chk.workspaceSize > WS) continue;
                    ++ran;
                    float us = timed(a, 6);
                    if (us > 0) all.push_back({a, us, ids[ai], (int)tile, (int)stg, sk, (int)red, (int)swz, opt, cl});
                  }
            }
    }
  done:
    std::sort(all.begin(), all.end(), [](const Cand& a, const Cand& b) { return a.us < b.us; });
    std::printf("  searched %ld configurations (%ld ran)%s in %.1f s\n", tried, ran, out_of_time ? ", budget spent" : "",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    // Re-time the best few longer, and check each gives the same bits twice.
    const float one = 1.f, zero = 0.f;
    for (size_t i = 0; i < std::min<size_t>(8, all.size()); ++i) {
      Cand& c = all[i];
      float us = timed(c.algo, 40);
      cublasLtMatmul(h, d, &one, w[0], la, x, lb, &zero, out, ld, out, ld, &c.algo, ws, WS, s);
      cublasLtMatmul(h, d, &one, w[0], la, x, lb, &zero, out2, ld, out2, ld, &c.algo, ws, WS, s);
      cudaStreamSynchronize(s);
      std::vector<float> a(on), b(on);
      cudaMemcpy(a.data(), out, on * 4, cudaMemcpyDeviceToHost);
      cudaMemcpy(b.data(), out2, on * 4, cudaMemcpyDeviceToHost);
      const bool same = std::memcmp(a.data(), b.data(), on * 4) == 0;
      std::printf("  #%zu %.2f us (%.2f TB/s) algo %d tile %d stages %d splitk %d red %d swz %d opt %d cluster %d%s\n", i,
                  us, bytes / us / 1e6, c.id, c.tile, c.stages, c.splitk, c.red, c.swz, c.opt, c.cluster,
                  same ? "" : " NOT BITWISE REPEATABLE");
    }
    std::fflush(stdout);
    for (auto& p : w) cudaFree(p);
    cudaFree(x);
    cudaFree(out);
    cudaFree(out2);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(d);
  }
  return 0;
}
