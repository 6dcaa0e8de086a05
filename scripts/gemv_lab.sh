#!/usr/bin/env bash
# The GEMV design lab (scripts/gemv_lab.cu; docs/PERFORMANCE.md thirteenth session), on the GPU
# machine: builds it with the machine's nvcc for sm_90 and prints each design's µs and TB/s on the
# 2.7B decode projections' shapes. LAB_ITERS launches a timing (default 60).
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvcc -std=c++17 -O3 -arch=sm_90 -o /tmp/gemv_lab "$(dirname "$0")/gemv_lab.cu"
/tmp/gemv_lab "${LAB_ITERS:-60}" | tee "$OUT/gemv_lab.txt"
