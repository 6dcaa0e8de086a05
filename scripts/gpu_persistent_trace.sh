#!/usr/bin/env bash
# The persistent decode step, traced (one device call; docs/PERFORMANCE.md twelfth session):
# the 2.7B plan with ZAMBA2C_TUNE_PERSISTENT=1 (and each TRACE_VARIANTS knob set), one
# `bench` a grid in TRACE_GRIDS ("default": the runtime's choice) with
# ZAMBA2C_PERSISTENT_TRACE, summarised by scripts/persistent_trace.py (each launch's work,
# spread over the blocks, barrier), beside the default plan's eager per-launch profile.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. "$(dirname "$0")/pack_out.sh"
Z=$PWD/.gpu/bin/zamba2c
comp() {  # dir, knobs...
  local d=$1; shift
  env X=1 "$@" "$Z" compile examples/zamba2-2.7b-config -o "$d" --dummy-weights --dtype bf16 --arch sm_90 \
    > /dev/null 2>&1 || echo "compile $d failed"
}
for v in base ${TRACE_VARIANTS:-}; do
  d=/tmp/persist-${v//[=,]/-}
  knobs=(ZAMBA2C_TUNE_PERSISTENT=1)
  [ "$v" != base ] && knobs+=($(tr ',' '\n' <<< "$v" | sed 's/^/ZAMBA2C_TUNE_/'))
  comp "$d" "${knobs[@]}"
  for g in ${TRACE_GRIDS:-default 264 132}; do
    grid=X=1; [ "$g" != default ] && grid=ZAMBA2C_PERSISTENT_GRID=$g
    tr=$OUT/trace_${v//[=,]/-}_$g.json
    env "$grid" ZAMBA2C_PERSISTENT_TRACE="$tr" timeout $(tmo 60) "$Z" bench "$d" --device cuda --prompt-len 512 --gen-len 16 \
      --json 2>/dev/null | tail -1 | python3 -c "import json,sys; print('$v grid $g traced decode_ms', round(json.loads(sys.stdin.read())['decode_ms_per_token'], 4))"
    env "$grid" timeout $(tmo 60) "$Z" bench "$d" --device cuda --prompt-len 512 --gen-len 64 \
      --json 2>/dev/null | tail -1 | python3 -c "import json,sys; print('$v grid $g decode_ms', round(json.loads(sys.stdin.read())['decode_ms_per_token'], 4))"
    python3 scripts/persistent_trace.py "$tr" | head -${TRACE_LINES:-16}
  done
done
if [ "${TRACE_PROFILE:-1}" = 1 ]; then
  comp /tmp/default-plan
  timeout $(tmo 90) "$Z" bench /tmp/default-plan --device cuda --profile --prompt-len 512 --gen-len 32 \
    --out "$OUT/profile_default_512.json" > "$OUT/profile_default_512.txt" 2>&1
  head -${PROFILE_LINES:-45} "$OUT/profile_default_512.txt"
fi
