// CK(call): a lab's CUDA or cuBLASLt call that must return 0 (scripts/blas_search_lab.cu,
// scripts/wgmma_lab.cu: standalone nvcc programs run on the GPU machine), else the file, line,
// call and code on stderr and exit 1.
#pragma once
#include <cstdio>
#include <cstdlib>

#define CK(x)                                                                      \
  do {                                                                             \
    auto e_ = (x);                                                                 \
    if ((int)e_ != 0) {                                                            \
      std::fprintf(stderr, "%s:%d %s -> %d\n", __FILE__, __LINE__, #x, (int)e_);   \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)
