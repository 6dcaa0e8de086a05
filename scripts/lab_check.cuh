// CK(call): a lab's CUDA or cuBLASLt call that must return 0 (scripts/blas_search_lab.cu,
// gemv_lab.cu, gemv12_lab.cu, wgmma_lab.cu: standalone nvcc programs run on the GPU machine),
// else the file, line, call and what it returned on stderr, and exit 1.
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

// What a failed call returned: CUDA's own text for a runtime error, the number for a library
// status.
inline const char* lab_status(cudaError_t e) { return cudaGetErrorString(e); }
template <typename T> inline const char* lab_status(T e) {
  static char text[32];
  std::snprintf(text, sizeof text, "status %d", (int)e);
  return text;
}

#define CK(x)                                                                        \
  do {                                                                               \
    auto e_ = (x);                                                                   \
    if ((int)e_ != 0) {                                                              \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, lab_status(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)
