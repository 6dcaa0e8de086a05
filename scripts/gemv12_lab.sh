#!/usr/bin/env bash
# The 12-bit weight lab (scripts/gemv12_lab.cu; issue 9, docs/PERFORMANCE.md nineteenth session),
# on the GPU machine: builds it with the machine's nvcc for sm_90 and prints, on the 2.7B decode
# projections' shapes, the bf16 GEMV's and the packed GEMV's µs, their read ceilings and the
# packed result's difference from the bf16 one. LAB_ITERS launches a timing (default 60).
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvcc -std=c++17 -O3 -arch=sm_90 -o /tmp/gemv12_lab "$(dirname "$0")/gemv12_lab.cu"
/tmp/gemv12_lab "${LAB_ITERS:-60}" | tee "$OUT/gemv12_lab.txt"
