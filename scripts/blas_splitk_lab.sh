#!/usr/bin/env bash
# The split-K-as-batch lab (scripts/blas_splitk_lab.cu; issue 12, docs/PERFORMANCE.md
# twenty-second session), on the GPU machine: builds it with the machine's nvcc and prints, on
# decode_rows' narrow 64-row GEMM shapes, cuBLASLt's µs with K cut into 1, 2, 4, 5 or 8 slices
# run as one strided-batch launch, and the fixed-order sum of the slices. LAB_ITERS launches a
# timing (default 40).
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
here=$(cd "$(dirname "$0")" && pwd)
${NVCC:-nvcc} -std=c++17 -O3 -arch=sm_90 -I"$here" -o /tmp/blas_splitk_lab "$here/blas_splitk_lab.cu" -lcublasLt
/tmp/blas_splitk_lab "${LAB_ITERS:-40}" | tee "$OUT/blas_splitk_lab.txt"
