#!/usr/bin/env bash
# linear_rows probe (one device call, docs/PERFORMANCE.md tenth session): `bench --profile
# --batch B` (B in PROBE_PROFILE, default 64) of the 2.7B plan with ZAMBA2C_TUNE_ROWS_GEMM=3
# (linear_rows) beside the library's plan, then ms per step of codegen knob variants
# (PROBE_VARIANTS="ROWS_GEMM=3,ROWS_XSTAGES=2 ...") at PROBE_BATCHES rows, every step on
# decode_rows (ZAMBA2C_TUNE_ROWS_MMA_MIN=1). DTYPE, STATE, KV: the plans' --dtype,
# --state-dtype, --kv-dtype (default bf16, f32, the plan's); PROBE_TAG prefixes the lines.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. "$(dirname "$0")/pack_out.sh"
Z=$PWD/.gpu/bin/zamba2c
comp() { env "$@" "$Z" compile examples/zamba2-2.7b-config -o "$D" --dummy-weights --dtype ${DTYPE:-bf16} ${STATE:+--state-dtype $STATE} ${KV:+--kv-dtype $KV} --arch sm_90 > /dev/null 2>&1 || echo "compile $D failed"; }
# The two base plans only when something is profiled (PROBE_PROFILE=" ": variants alone).
if [ -n "${PROBE_PROFILE:-64}" ] && [ -n "${PROBE_PROFILE// /}" ]; then
  D=/tmp/lib; comp X=1
  D=/tmp/rows; comp ZAMBA2C_TUNE_ROWS_GEMM=3
fi
for b in ${PROBE_PROFILE:-64}; do
  for p in lib rows; do
    echo "== profile $p B=$b"
    ZAMBA2C_TUNE_ROWS_MMA_MIN=${MMA_MIN:-1} timeout $(tmo 100) "$Z" bench /tmp/$p --device cuda --profile --batch $b --prompt-len 512 --out "$OUT/prof_${p}_$b.json" 2>&1 | head -${PROFILE_LINES:-24}
  done
done
line() { # label plan batch env...
  local l=$1 p=$2 b=$3; shift 3
  env X=1 "$@" timeout $(tmo 100) "$Z" bench "$p" --device cuda --batch $b --prompt-len 512 --gen-len 64 --prefill-chunk $((b*512)) --max-context 640 --json 2>/dev/null | tail -1 \
   | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('$l B=$b ms_step %.3f tok_s %.1f' % (r['ms_per_step'], r['decode_tokens_per_s']))" || echo "$l B=$b failed"
}
# The variants' lines also go to $OUT/probe_lines.txt (a later tool's output can push them out
# of the call's tail).
for v in ${PROBE_VARIANTS:-}; do
  D=/tmp/v-${v//[=,]/-}; IFS=, read -ra kv <<< "$v"; envs=(); for k in "${kv[@]}"; do envs+=("ZAMBA2C_TUNE_$k"); done
  comp "${envs[@]}"
  for b in ${PROBE_BATCHES:-8 64}; do line "${PROBE_TAG:-}$v" "$D" $b ZAMBA2C_TUNE_ROWS_MMA_MIN=1 | tee -a "$OUT/probe_lines.txt"; done
done
