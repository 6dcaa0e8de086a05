#!/usr/bin/env bash
# compute-sanitizer memcheck and racecheck over a prompt and decode steps of small plans
# (every decode family: proj_gemv with norms/adapters/GELU·up/residual/split norm,
# mamba_step, attention_decode; the prompt families with their epilogues), on the GPU machine:
#   bash scripts/gpu_sanitize.sh     (after staging .gpu/bin/zamba2c; carry .gpu)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. "$(dirname "$0")/pack_out.sh"
Z=$PWD/.gpu/bin/zamba2c
rc=0
MODELS=${MODELS:-two_blocks_adapter_rope ngroups_gqa_rope}
# A model is a fixture's name, or `examples/<dir>` (a config only: random weights), e.g.
# examples/zamba2-ssd-shape-config, whose Mamba heads take the chunked scan's tensor-core steps.
model_src() {
  case "$1" in examples/*) echo "$1 --dummy-weights" ;; *) echo "tests/fixtures/models/$1" ;; esac
}
for m in $( [ "${BATCHED:-1}" = only ] || echo $MODELS ); do
  # f16: f16 weights, every GEMM on one f16 plane (round_f16, norms writing f16, mma f16).
  for dt in ${DTYPES:-f32 bf16 f16}; do
    tag=${m//\//-}
    p=/tmp/san-$tag-$dt
    "$Z" compile $(model_src "$m") -o "$p" --dtype "$dt" > /dev/null 2>&1 || { echo "compile $m $dt failed"; rc=1; continue; }
    # 150 tokens: three chunks of the chunked scan (one partial), three query tiles of the
    # flash prompt attention; then decode steps.
    toks=$(python3 -c 'print(",".join(str((i*37+11)%60) for i in range(150)))')
    for tool in memcheck racecheck; do
      ZAMBA2C_NO_CUDA_GRAPH=1 timeout $(tmo ${SAN_TIMEOUT:-200}) compute-sanitizer --tool $tool --error-exitcode 9 \
        "$Z" logits "$p" --tokens "$toks" --decode-from 144 --device cuda --out /tmp/san.safetensors \
        > "$OUT/san-$tag-$dt-$tool.log" 2>&1
      r=$?
      echo "$m $dt $tool: rc=$r $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/san-$tag-$dt-$tool.log" | tail -1)"
      [ $r -eq 0 ] || rc=1
    done
  done
done
# The batched engine (slots, per-row meta, the several-row proj_gemv): `bench --batch 4` of
# short prompts, eager, under both tools; then `bench --batch 16` with every prompt prefilled
# first, so each step runs 16 rows through decode_rows (norms writing planes, the stacked
# library GEMMs and pair_sum, mamba_step_pipe (d_state 8: a thread a state row), argmax_rows), and the same on a plan
# with decode_rows' split-K cluster GEMM (ZAMBA2C_TUNE_ROWS_GEMM=2), and an f16 plan with an f16
# SSM state. BATCHED=0 skips them;
# BATCHED=only runs nothing else.
if [ "${BATCHED:-1}" != 0 ]; then
  m=${MODELS%% *}
  p=/tmp/san-$m-bf16
  [ -d "$p" ] || "$Z" compile "tests/fixtures/models/$m" -o "$p" --dtype bf16 > /dev/null 2>&1
  ps=/tmp/san-$m-bf16-splitk
  ZAMBA2C_TUNE_ROWS_GEMM=2 "$Z" compile "tests/fixtures/models/$m" -o "$ps" --dtype bf16 > /dev/null 2>&1 \
    || { echo "compile $m split-K failed"; rc=1; }
  pf=/tmp/san-$m-f16
  [ -d "$pf" ] || "$Z" compile "tests/fixtures/models/$m" -o "$pf" --dtype f16 > /dev/null 2>&1
  # An f16 SSM state (mamba_step's 16-bit loads and stores in decode_rows).
  pst=/tmp/san-$m-f16-state
  "$Z" compile "tests/fixtures/models/$m" -o "$pst" --dtype f16 --state-dtype f16 > /dev/null 2>&1 \
    || { echo "compile $m f16 state failed"; rc=1; }
  for run in "4 $p" "16 $p" "16 $ps" "16 $pf" "16 $pst"; do
    set -- $run
    b=$1 plan=$2 tag=$(basename "$2")-b$1
    for tool in memcheck racecheck; do
      ZAMBA2C_NO_CUDA_GRAPH=1 timeout $(tmo ${SAN_TIMEOUT:-200}) compute-sanitizer --tool $tool --error-exitcode 9 \
        "$Z" bench "$plan" --device cuda --batch "$b" --prompt-len 20 --gen-len 6 --max-context 64 \
        --prefill-chunk $((b * 20)) --json > "$OUT/san-$tag-$tool.log" 2>&1
      r=$?
      echo "$tag batch $b $tool: rc=$r $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/san-$tag-$tool.log" | tail -1)"
      [ $r -eq 0 ] || rc=1
    done
  done
fi
exit $rc
