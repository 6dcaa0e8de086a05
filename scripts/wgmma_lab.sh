#!/usr/bin/env bash
# The warpgroup-MMA GEMM lab (scripts/wgmma_lab.cu; issue 12, docs/PERFORMANCE.md twentieth
# session), on the GPU machine: generates the wgmma wrappers, builds with the machine's nvcc for
# sm_90a (wgmma needs the architecture-specific target; nvcc 13.0's -arch=sm_90a shorthand also
# runs a plain sm_90 pass that rejects wgmma, the -gencode form does not) and prints, on decode_rows' stacked-plane
# shapes, cuBLASLt's µs beside each configuration's, with its error against the library.
# LAB_ITERS launches a timing (default 60). NVCC=... picks the compiler. NCU=1: Nsight Compute of
# the lab's kernels instead of the table.
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
here=$(cd "$(dirname "$0")" && pwd)
gen=$(mktemp -d)
python3 "$here/wgmma_lab_ops.py" "$gen/wgmma_lab_ops.cuh" 40 80 96 120 128 160 240
${NVCC:-nvcc} -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I"$gen" -I"$here" -o "$gen/wgmma_lab" "$here/wgmma_lab.cu" -lcublasLt
if [ "${BUILD_ONLY:-0}" = 1 ]; then echo "built $gen/wgmma_lab"; exit 0; fi
if [ "${NCU:-0}" = 1 ]; then
  # Nsight Compute on the lab's own kernels (one timed launch a configuration: LAB_ITERS=1),
  # whether L2 (X re-read by every CTA) or the pipeline bounds them (docs/PERFORMANCE.md,
  # twenty-first session); the whole report in wgmma_lab_ncu.txt.
  ncu --clock-control none --kernel-name regex:gemm_wgmma --launch-count "${NCU_COUNT:-80}" \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
    "$gen/wgmma_lab" 1 > "$OUT/wgmma_lab_ncu.txt" 2>&1
  grep -E "gemm_wgmma|Duration|DRAM Throughput|L2 Cache Throughput|L1/TEX Cache Throughput|Achieved Occupancy|Stall (Long|Barrier|Wait)|Warp Cycles Per Issued" \
    "$OUT/wgmma_lab_ncu.txt" | head -"${NCU_LINES:-200}"
  exit 0
fi
"$gen/wgmma_lab" "${LAB_ITERS:-60}" | tee "$OUT/wgmma_lab.txt"
