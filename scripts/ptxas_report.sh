#!/usr/bin/env bash
# Registers, spills and shared memory of every kernel of a compiled plan, from its PTX, on a
# machine with no GPU: ptxas and cuobjdump from the CUDA 13.0 pip wheels (docs/PERFORMANCE.md
# thirteenth session: a whole-unrolled proj_gemv took 241 registers, one block an SM, which this
# shows before a GPU call does). With FILTER=<regex>, only kernels whose name matches; with
# LOADS=1, each kernel's global loads issued before its first multiply-add (how many a warp has
# in flight at once, at most).
#   bash scripts/ptxas_report.sh /tmp/plan                 # after `zamba2c compile ... --arch sm_90`
#   FILTER=proj_gemv LOADS=1 bash scripts/ptxas_report.sh /tmp/plan
set -euo pipefail
plan=${1:?usage: ptxas_report.sh <plan dir>}
[ -d "$plan/kernels" ] || { echo "ptxas_report: $plan/kernels: no such folder (compile the plan with --arch sm_90)" >&2; exit 1; }
if ! command -v ptxas > /dev/null; then
  cu=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "bin"))' 2>/dev/null || true)
  [ -x "$cu/ptxas" ] || python3 -m pip install -q nvidia-cuda-nvcc==13.0.88 "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88" > /dev/null
  cu=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "bin"))')
  export PATH=$cu:$PATH
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%-34s %5s %7s %7s %s\n' kernel regs spill_B smem_B "${LOADS:+loads_before_first_ffma}"
for ptx in "$plan"/kernels/*.sm_90.ptx; do
  name=$(basename "$ptx" .sm_90.ptx)
  [[ "$name" =~ ${FILTER:-.} ]] || continue
  info=$(ptxas -arch=sm_90 -O3 -v "$ptx" -o "$tmp/k.cubin" 2>&1)
  regs=$(grep -o 'Used [0-9]* registers' <<< "$info" | awk '{print $2}' | head -1 || true)
  spill=$(grep -o '[0-9]* bytes spill stores' <<< "$info" | awk '{s += $1} END {print s + 0}' || true)
  smem=$(grep -o '[0-9]* bytes smem' <<< "$info" | awk '{print $1}' | head -1 || true)
  loads=""
  if [ -n "${LOADS:-}" ] && command -v cuobjdump > /dev/null; then
    loads=$(cuobjdump -sass "$tmp/k.cubin" 2>/dev/null | awk '/FFMA/ {exit} /LDG|LD\.E/ {n++} END {print n + 0}')
  fi
  printf '%-34s %5s %7s %7s %s\n' "$name" "${regs:-?}" "$spill" "${smem:-0}" "$loads"
done
