#!/usr/bin/env bash
# Nsight Compute over the prompt path's chunked-scan kernels (docs/KERNELS.md "ssd") of the
# dummy-weights 2.7B plan, one prompt of PROMPT tokens (default 2048) in one launch each:
# time, occupancy, stall reasons, shared-memory bank conflicts and memory tables, per kernel.
#   SSD_KNOBS="SSD_MMA=1" bash scripts/ncu_scan.sh     (on the GPU machine, after gpu-stage)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
Z=$PWD/.gpu/bin/zamba2c
plan=/tmp/ncu-scan
knobs=()
IFS=, read -ra kv <<< "${SSD_KNOBS:-SSD_MMA=1}"
for k in "${kv[@]}"; do knobs+=("ZAMBA2C_TUNE_$k"); done
env X=1 "${knobs[@]}" "$Z" compile examples/zamba2-2.7b-config -o "$plan" --dummy-weights --dtype bf16 \
  --arch sm_90 > /dev/null 2>&1 || { echo "ncu_scan: compile failed"; exit 1; }
n=${PROMPT:-2048}
timeout "${NCU_TIMEOUT:-240}" ncu --clock-control none --kernel-name regex:"${NCU_REGEX:-ssd_}" \
  --launch-skip "${NCU_SKIP:-3}" --launch-count "${NCU_COUNT:-3}" \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --section InstructionStats --section MemoryWorkloadAnalysis_Tables \
  --section SourceCounters \
  "$Z" bench "$plan" --device cuda --prompt-len "$n" --prompt-chunk "$n" --gen-len 2 --repeat 1 \
  > "$OUT/ncu_scan.txt" 2>&1
echo "ncu_scan rc $?"
grep -E "z2c_|Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Waves Per SM|Issued Ipc|Warp Cycles Per Issued|Bank|stall|Stall" "$OUT/ncu_scan.txt" | head -${NCU_LINES:-120}
