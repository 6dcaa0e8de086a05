#!/usr/bin/env bash
# One GPU round on the lent H200 (docs/PERFORMANCE.md says how each figure was made):
#   bash scripts/gpu_round.sh            (after ../shared/tools/gpu-stage; carry .gpu)
# 1. the CUDA kernel tests (every kernel family against the CPU interpreter, node by node);
# 2. the 2.7B shape against transformers (default plan and f32 plan) and `bench` at 512, 2048
#    and 4096 tokens of context (scripts/gpu_check_27b.py);
# 3. Nsight Compute over one decode step of the default plan: time and DRAM bytes per kernel.
# PROFILE=0 skips the one-sequence profiles (PROFILE_PLANS="dir dir2" profiles several plans); CHECK_ARGS="--bc-scale 16" passes options to step 2.
# Optional steps by environment: MEMORY=1, SWEEP=1, SERVE=1, BATCH=1 (`bench --batch` at
# B = 1 8 32 64 on the 2.7B shape, issue 12; BATCHES="8 64" picks others), BATCH_MMA=1
# (`bench --batch` at 16 32 64 on decode_rows and on decode, MMA_BATCHES picks others),
# LIBRARY=1 (library GEMMs on and off), CHUNKS="1024 2048" (TTFT per prompt launch size), BATCH_PROFILE=1 (`bench --profile --batch`),
# VARIANT_TESTS="ATTN_KERNEL=1" (kernel tests of a knob variant), VARIANTS="ATTN_KERNEL=1" (its TTFT and decode),
# BATCH_VARIANTS="STACK_SPLIT=2" (`bench --batch 64` of a knob variant beside the default),
# RUN_VARIANTS="ZAMBA2C_NO_DEVICE_ARGMAX=1" (`bench --batch 64` under a runtime setting; with
# RUN_TTFT=1 its TTFT and decode too, the info log kept),
# RUN_VARIANT_TESTS="ZAMBA2C_NO_DEVICE_ARGMAX=1" (the cuda_batch tests under a runtime setting),
# NCU_ROWS=1 (Nsight Compute of decode_rows' GEMMs in a 64-row step), NCU_SOURCE=1 (per-instruction
# sectors and stalls of a 64-row step's kernels; NCU_SOURCE_PROMPT_KERNELS a prompt's too), BATCH_CHECK=1 (a batch
# of prompts against each alone on the 2.7B shape, issue 12; BATCH_CHECK_KNOBS=K=V,.. its knobs). Knob variants take
# several knobs as KNOB=V,KNOB2=V2; DTYPE=f16 among them compiles that variant with --dtype f16,
# STATE=f32 with --state-dtype f32, KV=f16 with --kv-dtype f16 (DTYPE / STATE / KV in the
# environment: the main 2.7B plan too), INVARIANT=1 with --batch-invariant.
# Logs and JSON go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
. "$(dirname "$0")/pack_out.sh"
export PYTHONUNBUFFERED=1
Z=$PWD/.gpu/bin/zamba2c
rc=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  for t in .gpu/tests/cuda_kernels-*; do
    [ -e "$t" ] || continue
    ZAMBA2C_FIXTURES=$PWD/.gpu/fixtures timeout $(tmo 300) "$t" --test-threads 1 2>&1 | tail -40 > "$OUT/kernels.log" || rc=1
    tail -5 "$OUT/kernels.log"
  done
  # The batched engine (runtime/tests/cuda_batch.rs): sequences joining and leaving slots
  # against the CPU alone, one slot against the one-sequence engine bitwise.
  for t in .gpu/tests/cuda_batch-*; do
    [ -e "$t" ] || continue
    timeout $(tmo 300) "$t" --test-threads 1 --nocapture > "$OUT/batch_tests.log" 2>&1 || rc=1
    grep -E "panicked|differ|test result|^test |bitwise" "$OUT/batch_tests.log" | head -40
  done
fi
# Kernel variants behind codegen knobs (VARIANT_TESTS="STEP_ROWS_BATCHED=64 ..."): the CUDA
# kernel tests again with ZAMBA2C_TUNE_<KNOB>=<V>, every kernel against the CPU interpreter.
# The batched-engine tests too: decode_rows runs only there.
# The environment ZAMBA2C_TUNE_<KNOB>=<V> of each knob of a variant KNOB=V[,KNOB2=V2...].
tune_env() {
  local kv k
  IFS=, read -ra kv <<< "$1"
  for k in "${kv[@]}"; do
    case "${k%%=*}" in DTYPE|STATE|KV|INVARIANT) ;; *) printf 'ZAMBA2C_TUNE_%s\n' "$k" ;; esac
  done
}
# The weight dtype a variant spec asks for (DTYPE=f16 among its knobs: `compile --dtype f16`),
# else $DTYPE (default bf16: the default plan).
spec_dtype() {
  local kv k d=${DTYPE:-bf16}
  IFS=, read -ra kv <<< "$1"
  for k in "${kv[@]}"; do [ "${k%%=*}" = DTYPE ] && d=${k#*=}; done
  echo "$d"
}
# The `compile --state-dtype` flags a variant spec asks for (STATE=f16 among its knobs), else
# $STATE; none: the compile's default (f16 with 16-bit weights since the eighteenth session).
spec_state() {
  local kv k d=${STATE:-}
  IFS=, read -ra kv <<< "$1"
  for k in "${kv[@]}"; do [ "${k%%=*}" = STATE ] && d=${k#*=}; done
  [ -n "$d" ] && echo "--state-dtype $d"
}
# The `compile --kv-dtype` flags a variant spec asks for (KV=f16 among its knobs), else $KV;
# none: the compile's default.
spec_kv() {
  local kv k d=${KV:-}
  IFS=, read -ra kv <<< "$1"
  for k in "${kv[@]}"; do [ "${k%%=*}" = KV ] && d=${k#*=}; done
  [ -n "$d" ] && echo "--kv-dtype $d"
}
# `compile --batch-invariant` where a variant spec holds INVARIANT=1.
spec_invariant() {
  local kv k
  IFS=, read -ra kv <<< "$1"
  for k in "${kv[@]}"; do [ "$k" = INVARIANT=1 ] && echo "--batch-invariant"; done
}
for v in ${VARIANT_TESTS:-}; do
  for t in .gpu/tests/cuda_kernels-* .gpu/tests/cuda_batch-*; do
    [ -e "$t" ] || continue
    log="$OUT/variant_${v//[=,]/-}_$(basename "${t%-*}").log"
    mapfile -t knobs < <(tune_env "$v")
    env "${knobs[@]}" ZAMBA2C_FIXTURES=$PWD/.gpu/fixtures timeout $(tmo 300) "$t" --test-threads 1 \
      > "$log" 2>&1 || rc=1
    echo "variant $v $(basename "${t%-*}"): $(grep -E '^test result' "$log" | tail -1)"
    grep -E "panicked|differ" "$log" | head -5
  done
done
# The batched-engine tests under a runtime setting (RUN_VARIANT_TESTS="ZAMBA2C_NO_DEVICE_ARGMAX=1").
for e in ${RUN_VARIANT_TESTS:-}; do
  for t in .gpu/tests/cuda_batch-*; do
    [ -e "$t" ] || continue
    log="$OUT/run_variant_${e//[^A-Za-z0-9_.-]/-}.log"  # a value may hold a path
    env "$e" ZAMBA2C_FIXTURES=$PWD/.gpu/fixtures timeout $(tmo 300) "$t" --test-threads 1 > "$log" 2>&1 || rc=1
    echo "run variant $e $(basename "${t%-*}"): $(grep -E '^test result' "$log" | tail -1)"
    grep -E "panicked|differ" "$log" | head -5
  done
done
if [ "${PLANS:-}" != none ]; then
  timeout $(tmo ${CHECK_TIMEOUT:-420}) python3 scripts/gpu_check_27b.py --zamba2c "$Z" --out "$OUT" --plans "${PLANS:-bf16:f32,f32:f32}" ${CHECK_ARGS:-} 2>&1 | tail -60 > "$OUT/check27b.log" || rc=1
  tail -25 "$OUT/check27b.log"
fi
# The 2.7B shape with random weights straight from its config (no Python process holding GPU
# memory beside it): what the memory figures of issue 11 are measured on.
M=/tmp/mem27
"$Z" compile examples/zamba2-2.7b-config -o "$M" --dummy-weights --dtype "${DTYPE:-bf16}" \
  $(spec_state "") $(spec_kv "") --arch sm_90 > /dev/null 2>&1 || rc=1
# Batched decode step per launch (BATCH_PROFILE=1, `bench --profile --batch B`, B from
# PROFILE_BATCHES): the table the engine picks, its kernels, and the whole call's wall time.
if [ "${BATCH_PROFILE:-0}" = 1 ]; then
  for b in ${PROFILE_BATCHES:-16 64}; do
    timeout $(tmo 120) "$Z" bench "$M" --device cuda --profile --batch "$b" --prompt-len 512 \
      --out "$OUT/profile_batch_$b.json" 2>&1 | head -32 || rc=1
  done
fi
P=${PROFILE_PLAN:-/tmp/z27/plan-bf16_act_f32}
[ -d "$P" ] || P=$M
if [ "${MEMORY:-0}" = 1 ]; then
  for spec in "448 64 512" "4064 32 4096" "16320 64 16384"; do
    set -- $spec
    timeout $(tmo 120) "$Z" bench "$M" --device cuda --prompt-len "$1" --gen-len "$2" --max-context "$3" --json \
      > "$OUT/memory_$3.json" 2> "$OUT/memory_$3.err" || rc=1
    python3 -c "import json,sys; b=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print('memory', sys.argv[2], 'predicted', b.get('predicted_bytes'), 'engine', b.get('engine_bytes'), 'baseline', b.get('baseline_gpu_bytes'), 'peak', b.get('peak_gpu_bytes'), 'peak GiB %.3f' % (b['peak_gpu_bytes']/2**30), 'ttft', b.get('ttft_ms'), 'decode', b.get('decode_ms_per_token'))" "$OUT/memory_$3.json" "$3" || tail -3 "$OUT/memory_$3.err"
  done
  RUST_LOG=info timeout $(tmo 200) "$Z" bench "$M" --prompt-len 128,512,2048 --gen-len 16 --repeat 2 > "$OUT/bench_table.txt" 2>&1 || rc=1
  cat "$OUT/bench_table.txt"
fi
# TTFT against the prompt launch size (CHUNKS="1024 2048 4096": `bench --prompt-chunk C`, one
# sequence, 2048- and 4064-token prompts) on the dummy-weights 2.7B plan, beside the default 512.
if [ -n "${CHUNKS:-}" ]; then
  for pl in 2048 4064; do
    for c in 512 $CHUNKS; do
      [ "$c" -le 4096 ] || continue
      timeout $(tmo 90) "$Z" bench "$M" --device cuda --prompt-len $pl --gen-len 8 --max-context 4096 \
        --prompt-chunk "$c" --json 2>/dev/null | tail -1 \
        | python3 -c "import json,sys; b=json.loads(sys.stdin.read()); print('chunk $c prompt $pl ttft_ms', round(b['ttft_ms'],2), 'peak_gib', round(b['peak_gpu_bytes']/2**30,3), 'engine_gib', round(b['engine_bytes']/2**30,3))" \
        || echo "chunk $c prompt $pl failed"
    done
  done
fi
# Codegen knob variants on the dummy-weights 2.7B plan: TTFT, and decode ms per token (64
# tokens after the 512-token prompt, 8 after 2048) (VARIANTS="MMA_NARROW_BM=32 ..."), beside the
# default plan's, measured once.
variant_line() {  # label, plan, prompt length, [VAR=value of the environment]
  local gen=8; [ "$3" = 512 ] && gen=64
  env ${4:-X=1} RUST_LOG=${RUST_LOG:-warn} timeout $(tmo 60) "$Z" bench "$2" --device cuda --prompt-len "$3" --gen-len $gen --json \
    2>"$OUT/variant_line.err" | tail -1 \
    | python3 -c "import json,sys; b=json.loads(sys.stdin.read()); print('$1 prompt $3 ttft_ms', round(b['ttft_ms'],2), 'decode_ms', round(b['decode_ms_per_token'],4))"
}
if [ -n "${VARIANTS:-}" ] || [ "${RUN_TTFT:-0}" = 1 ]; then
  for pl in 512 2048; do variant_line default "$M" $pl; done
fi
# TTFT and decode under each runtime setting of RUN_VARIANTS (RUN_TTFT=1); the runs' info log
# (e.g. ZAMBA2C_BLAS_TUNE's choices) kept in run_variant_<setting>_<prompt>.log.
if [ "${RUN_TTFT:-0}" = 1 ]; then
  for e in ${RUN_VARIANTS:-}; do
    for pl in 512 2048; do
      RUST_LOG=info variant_line "run $e" "$M" $pl "$e"
      cp "$OUT/variant_line.err" "$OUT/run_variant_${e//[^A-Za-z0-9_.-]/-}_$pl.log"
    done
  done
fi
# The dummy-weights 2.7B plan compiled with codegen knobs KNOB=V[,KNOB2=V2...] (ZAMBA2C_TUNE_KNOB)
# into $2.
variant_plan() {
  local knobs
  mapfile -t knobs < <(tune_env "$1")
  env X=1 "${knobs[@]}" "$Z" compile examples/zamba2-2.7b-config -o "$2" --dummy-weights --dtype "$(spec_dtype "$1")" \
    $(spec_state "$1") $(spec_kv "$1") $(spec_invariant "$1") --arch sm_90 \
    > /dev/null 2>&1 || { echo "variant $1: compile failed"; return 1; }
}
for v in ${VARIANTS:-}; do
  d=/tmp/var-${v//=/-}
  variant_plan "$v" "$d" || { rc=1; continue; }
  for pl in 512 2048; do variant_line "variant $v" "$d" $pl; done
done
# Codegen knob variants on batched decode (BATCH_VARIANTS="STACK_SPLIT=2 ..."): `bench --batch`
# at B in VARIANT_BATCHES (default 64; every prompt prefilled first, so each step runs all B
# rows) on the default plan and on each variant's plan, one line each.
batch_line() {  # label, plan, batch, [VAR=value of the environment]
  env ${4:-X=1} timeout $(tmo 200) "$Z" bench "$2" --device cuda --batch "$3" --prompt-len 512 --gen-len 128 \
    --prefill-chunk $(($3 * 512)) --max-context 640 --json 2>"$OUT/batch_line_${1//[^A-Za-z0-9_.-]/-}_$3.err" | tail -1 \
    | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('batch_variant $1 B=$3 decode_tok_s %.1f ms_step %.3f rows %s' % (r['decode_tokens_per_s'], r['ms_per_step'], r['rows_per_step']))" \
    || echo "batch_variant $1 B=$3 failed"
}
if [ -n "${BATCH_VARIANTS:-}${RUN_VARIANTS:-}" ]; then
  for b in ${VARIANT_BATCHES:-64}; do batch_line default "$M" "$b"; done
fi
# Runtime settings on the same plan (RUN_VARIANTS="ZAMBA2C_NO_DEVICE_ARGMAX=1 ..."): greedy
# tokens picked on the host (the logits downloaded, docs/KERNELS.md "decode_rows"), or
# ZAMBA2C_TUNE_ROWS_MMA_MIN=8 (steps of 8 rows on decode_rows; VARIANT_BATCHES="8 64").
for e in ${RUN_VARIANTS:-}; do
  for b in ${VARIANT_BATCHES:-64}; do batch_line "$e" "$M" "$b" "$e"; done
done
if [ -n "${BATCH_VARIANTS:-}" ]; then
  for v in $BATCH_VARIANTS; do
    d=/tmp/bvar-${v//[=,]/-}
    variant_plan "$v" "$d" || { rc=1; continue; }
    # The knobs in the environment of the runs too (runtime ones: ROWS_MMA_MIN=1).
    for b in ${VARIANT_BATCHES:-64}; do batch_line "$v" "$d" "$b" "$(tune_env "$v" | tr '\n' ' ')"; done
  done
fi
# Overlapped launches (docs/KERNELS.md "Overlapping launches"): decode ms/token of the default
# plan with programmatic dependent launch on and off (ZAMBA2C_NO_PDL=1, same process kind, same
# plan).
decode_ms() {  # plan, context, extra env...
  local plan=$1 ctx=$2; shift 2
  env "$@" timeout $(tmo 90) "$Z" bench "$plan" --device cuda --prompt-len $((ctx - 64)) --gen-len 64 \
    --max-context "$ctx" --repeat 2 --json 2>/dev/null | tail -1 \
    | python3 -c 'import json,sys; print(round(json.loads(sys.stdin.read())["decode_ms_per_token"], 4))'
}
if [ "${PDL:-0}" = 1 ]; then
  for ctx in 512 4096; do
    echo "pdl default plan ctx $ctx on $(decode_ms "$M" $ctx X=1) off $(decode_ms "$M" $ctx ZAMBA2C_NO_PDL=1)" | tee -a "$OUT/pdl.txt"
  done
fi
# Nsight Compute over the GEMMs of a 64-row step (NCU_ROWS=1): the decode_rows linears
# (kernels z2c_linear_mma_pipe_r*), their time, throughput, occupancy and launch statistics;
# NCU_ROWS_PLAN picks a plan (e.g. /tmp/bvar-ROWS_GEMM-2 from BATCH_VARIANTS=ROWS_GEMM=2),
# NCU_ROWS_METRICS adds metrics (e.g. the stall reasons
# smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,...).
if [ "${NCU_ROWS:-0}" = 1 ] && command -v ncu >/dev/null; then
  timeout $(tmo 300) ncu --clock-control none --kernel-name regex:"${NCU_ROWS_REGEX:-linear_mma_pipe_r}" \
    --launch-count "${NCU_COUNT:-12}" --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SourceCounters --section MemoryWorkloadAnalysis \
    ${NCU_ROWS_METRICS:+--metrics "$NCU_ROWS_METRICS"} \
    "$Z" bench "${NCU_ROWS_PLAN:-$M}" --device cuda --batch 64 --prompt-len 512 --gen-len 2 \
    --prefill-chunk 32768 --max-context 640 > "$OUT/ncu_rows.txt" 2>&1 || rc=1
  grep -E "z2c_|Duration|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Stall|stalled|Cluster|Block Limit|Waves Per SM|Grid Size|Shared Memory Config|Bank Conflicts" "$OUT/ncu_rows.txt" | head -${NCU_LINES:-160}
fi
# Nsight Compute's source counters per SASS instruction (NCU_SOURCE=1): where a kernel's
# excessive L2 sectors and warp stalls sit (scripts/ncu_sectors.py), for the first launch of
# each kernel named in NCU_SOURCE_KERNELS (regexes; names shared with the prompt table, like
# rms_norm_p2, would catch a prompt launch first) in a 64-row step (NCU_SOURCE_ROWS_PLAN picks a
# plan), of each in NCU_SOURCE_PROMPT_KERNELS in a 512-token prompt and of each in
# NCU_SOURCE_DECODE_KERNELS in a one-sequence decode. One ncu run a kernel;
# each report's CSV in ncu_source_<name>.csv.
ncu_source() {  # regex, tag, command...
  local re=$1 tag=$2; shift 2
  timeout $(tmo 120) ncu --clock-control none --kernel-name regex:"$re" --launch-count 1 \
    --section SpeedOfLight --section SourceCounters --import-source no -o "/tmp/ncu_source_$tag" -f \
    "$@" > "$OUT/ncu_source_$tag.log" 2>&1 || { rc=1; echo "ncu_source $tag: ncu failed"; return; }
  ncu --import "/tmp/ncu_source_$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu_source_$tag.csv" 2>/dev/null \
    && python3 scripts/ncu_sectors.py "$OUT/ncu_source_$tag.csv" --top "${NCU_SOURCE_TOP:-6}"
}
if [ "${NCU_SOURCE:-0}" = 1 ] && command -v ncu >/dev/null; then
  for k in ${NCU_SOURCE_KERNELS:-mamba_step_pipe attention_decode_r pair_sum_r}; do
    ncu_source "$k" "rows_${k//[^A-Za-z0-9_]/-}" "$Z" bench "${NCU_SOURCE_ROWS_PLAN:-$M}" --device cuda --batch 64 \
      --prompt-len 512 --gen-len 2 --prefill-chunk 32768 --max-context 640
  done
  toks=$(python3 -c 'print(",".join(str((i*7919+11)%31990+5) for i in range(512)))')
  for k in ${NCU_SOURCE_PROMPT_KERNELS:-}; do
    ncu_source "$k" "prompt_${k//[^A-Za-z0-9_]/-}" "$Z" logits "$M" --tokens "$toks" \
      --out /tmp/ncu_source_prompt.safetensors --device cuda
  done
  # The one-sequence decode table's kernels (NCU_SOURCE_DECODE_KERNELS, e.g. "proj_gemv_d2
  # mamba_step_d5 attention_decode_d"): names ending in _d<N> run only there.
  for k in ${NCU_SOURCE_DECODE_KERNELS:-}; do
    ncu_source "$k" "decode_${k//[^A-Za-z0-9_]/-}" "$Z" bench "$M" --device cuda --prompt-len 512 --gen-len 4 \
      --max-context 640
  done
fi
if [ "${NCU_PROMPT:-0}" = 1 ] && command -v ncu >/dev/null; then
  toks=$(python3 -c 'print(",".join(str((i*7919+11)%31990+5) for i in range(512)))')
  timeout $(tmo 240) ncu --clock-control none --kernel-name regex:'linear_mma_pipe|ssd_chunk_out|attention_flash' \
    --launch-count 8 --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
    "$Z" logits "$M" --tokens "$toks" --out /tmp/ncu_prompt.safetensors --device cuda > "$OUT/ncu_prompt.txt" 2>&1 || rc=1
  grep -E "z2c_|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Stall|Block Limit|Waves Per SM" "$OUT/ncu_prompt.txt" | head -120
fi
# One-sequence profiles of $P, or of each plan in PROFILE_PLANS (files profile_<ctx>_<i>.*).
if [ "${PROFILE:-1}" = 1 ]; then
  i=0
  for pp in ${PROFILE_PLANS:-$P}; do
    [ -d "$pp" ] || { echo "profile: no plan $pp"; continue; }
    sfx=""; [ -n "${PROFILE_PLANS:-}" ] && sfx="_$i"
    echo "profile of $pp"
    for ctx in ${PROFILE_CONTEXTS:-512 4096}; do
      # PROFILE_CHUNK=2048: the prompt chunk profiled is that long (at most the context).
      timeout $(tmo 120) "$Z" bench "$pp" --device cuda --profile --prompt-len "$ctx" --gen-len 32 \
        ${PROFILE_CHUNK:+--prompt-chunk $PROFILE_CHUNK} \
        --out "$OUT/profile_$ctx$sfx.json" > "$OUT/profile_$ctx$sfx.txt" 2>&1 || rc=1
      head -40 "$OUT/profile_$ctx$sfx.txt"
    done
    i=$((i + 1))
  done
fi
if [ "${SWEEP:-0}" = 1 ] && [ -d /tmp/z27/ckpt ]; then
  # Decode-kernel tuning knobs (codegen/src/fused/mod.rs `tune`): one plan per setting.
  for loads in ${SWEEP_LOADS:-8 16 32}; do
    for mw in ${SWEEP_MIN_WARPS:-2048 4096 8192}; do
      d=/tmp/sweep-$loads-$mw
      ZAMBA2C_TUNE_GEMV_LOADS=$loads ZAMBA2C_TUNE_GEMV_MIN_WARPS=$mw "$Z" compile /tmp/z27/ckpt -o "$d" \
        --dtype bf16 --dummy-weights --arch sm_90 > /dev/null 2>&1 || { echo "sweep compile $loads $mw failed"; continue; }
      ms=$(timeout $(tmo 60) "$Z" bench "$d" --device cuda --prompt-len 512 --gen-len 64 --json 2>/dev/null \
        | python3 -c 'import json,sys; print(round(json.loads(sys.stdin.read().strip().splitlines()[-1])["decode_ms_per_token"], 4))')
      echo "sweep loads=$loads min_warps=$mw decode_ms=$ms" | tee -a "$OUT/sweep.txt"
    done
  done
fi
if [ "${BATCH:-0}" = 1 ]; then
  # Issue 12's table: `bench --batch B` on the 2.7B shape (dummy weights, the plan above),
  # 512-token prompts, 128 generated tokens each, B = 1 8 32 64 (B = 1: the one-sequence
  # bench). One JSON object per B in batch_B.json, the table in batch_table.txt.
  # Every prompt is prefilled before the first decode step (--prefill-chunk B x 512), so the
  # decode steps run all B rows (`rows_per_step`); BATCH_PREFILL=256 admits one chunk a step
  # instead, as `serve` does.
  for b in ${BATCHES:-1 8 32 64}; do
    timeout $(tmo 300) "$Z" bench "$M" --device cuda --batch "$b" --prompt-len 512 --gen-len 128 \
      --prefill-chunk "${BATCH_PREFILL:-$((b * 512))}" \
      --max-context 640 --json > "$OUT/batch_$b.json" 2> "$OUT/batch_$b.err" || { rc=1; tail -3 "$OUT/batch_$b.err"; }
  done
  python3 - "$OUT" ${BATCHES:-1 8 32 64} <<'PY' | tee "$OUT/batch_table.txt"
import json, sys
out, batches = sys.argv[1], sys.argv[2:]
print(f"{'batch':>5} {'rows/step':>9} {'gen tok/s':>10} {'decode tok/s':>12} {'ms/step':>8} {'max ms/step':>11} {'TTFT med ms':>11} {'TTFT max ms':>11}")
for b in batches:
    try:
        r = json.loads(open(f"{out}/batch_{b}.json").read().strip().splitlines()[-1])
    except Exception as e:
        print(f"{b:>5} failed ({e})")
        continue
    if isinstance(r, list):
        r = r[0]
    if "ms_per_step" in r:
        row = (r["generated_tokens_per_s"], r["decode_tokens_per_s"], r["ms_per_step"], r["ms_per_step_max"], r["ttft_ms_median"], r["ttft_ms_max"])
    else:
        # The one-sequence bench: decode ms per token is the step; TTFT is its own.
        ms, ttft = r.get("decode_ms_per_token", 0.0), r.get("ttft_ms", 0.0)
        row = (1e3 / ms if ms else 0.0, 1e3 / ms if ms else 0.0, ms, ms, ttft, ttft)
    print(f"{b:>5} {r.get('rows_per_step', 1):>9} {row[0]:>10.1f} {row[1]:>12.1f} {row[2]:>8.3f} {row[3]:>11.3f} {row[4]:>11.1f} {row[5]:>11.1f}")
PY
fi
# Issue 12's GPU check (BATCH_CHECK=1): random prompts on the 2.7B shape run as one batch of
# up to BATCH_CHECK_B (default 64) against each run alone, greedy tokens compared
# (scripts/gpu_batch_check.py; batch_check.json).
if [ "${BATCH_CHECK:-0}" = 1 ]; then
  # BATCH_CHECK_KNOBS="ROWS_BLOCKS=528": codegen and runtime knobs for the check's compile and
  # runs; BATCH_CHECK_ARGS="--batch-invariant": the plan compiled `--batch-invariant`.
  env X=1 $(tune_env "${BATCH_CHECK_KNOBS:-}") timeout $(tmo 400) python3 scripts/gpu_batch_check.py --zamba2c "$Z" --out "$OUT" \
    --batch "${BATCH_CHECK_B:-64}" --dtype "${DTYPE:-bf16}" ${KV:+--kv-dtype "$KV"} ${BATCH_CHECK_ARGS:-} 2>&1 | tail -12 || rc=1
fi
if [ "${BATCH_MMA:-0}" = 1 ]; then
  # Batched decode on the tensor-core table `decode_rows` (docs/KERNELS.md "decode_rows") against
  # the GEMV table: `bench --batch B` on the 2.7B plan above with the default threshold (steps of
  # >= ROWS_MMA_MIN rows on decode_rows) and with ZAMBA2C_TUNE_ROWS_MMA_MIN=1000 (every step on decode,
  # the path measured before). One line per run in batch_mma.txt, the JSON of every run in
  # batch_mma.json (two files: the device tool returns only a few).
  : > "$OUT/batch_mma.json"
  for b in ${MMA_BATCHES:-16 32 64}; do
    for knob in default 1000; do
      if [ "$knob" = default ]; then envs="X=1"; else envs="ZAMBA2C_TUNE_ROWS_MMA_MIN=$knob"; fi
      env "$envs" timeout $(tmo 300) "$Z" bench "$M" --device cuda --batch "$b" --prompt-len 512 --gen-len 128 \
        --max-context 640 --json 2> /tmp/batch_mma.err | tail -1 > /tmp/batch_mma.one \
        || { rc=1; tail -3 /tmp/batch_mma.err; }
      cat /tmp/batch_mma.one >> "$OUT/batch_mma.json"
      python3 - "$b" "$knob" /tmp/batch_mma.one <<'PY' | tee -a "$OUT/batch_mma.txt"
import json, sys
b, knob, path = sys.argv[1:]
table = "decode_rows" if knob == "default" and int(b) >= 16 else "decode"
try:
    r = json.loads(open(path).read().strip())
    print(f"batch_mma B={b} rows_mma_min={knob} ({table}) decode_tok_s {r['decode_tokens_per_s']:.1f} ms_step {r['ms_per_step']:.3f} ms_step_max {r['ms_per_step_max']:.3f}")
except Exception as e:
    print(f"batch_mma B={b} rows_mma_min={knob}: failed ({e})")
PY
    done
  done
fi
if [ "${SERVE:-0}" = 1 ] && [ -d "$P" ]; then
  # zamba2c serve on CUDA (one slot), one completion over loopback.
  "$Z" serve "$P" --device cuda --max-batch 1 --port 8123 > "$OUT/serve.log" 2>&1 &
  sp=$!
  for i in $(seq 1 60); do curl -s 127.0.0.1:8123/health > /dev/null && break; sleep 1; done
  curl -s 127.0.0.1:8123/v1/completions -H 'Content-Type: application/json' \
    -d '{"prompt": "The capital of France is", "max_tokens": 8}' | tee -a "$OUT/serve.log"; echo
  kill -TERM $sp; wait $sp
fi
# Prompt launch size (CHUNKS=1): TTFT of 2048- and 4064-token prompts with prompt launches of
# 512 (the default), 1024 and 2048 tokens (`bench --prompt-chunk`), printed only.
if [ "${CHUNKS:-0}" = 1 ]; then
  for c in 512 1024 2048; do
    for pl in ${CHUNK_PROMPTS:-2048 4064}; do
      timeout $(tmo 90) "$Z" bench "$M" --device cuda --prompt-len $pl --gen-len 8 --max-context 4096 --prompt-chunk $c --json \
        2>/dev/null | tail -1 | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('prompt chunk $c prompt $pl ttft_ms %.1f prefill_gpu_ms %.1f engine_GiB %.3f' % (r['ttft_ms'], r['prefill_gpu_ms'], r['engine_bytes']/2**30))"
    done
  done
fi
# Library GEMMs (LIBRARY=1, docs/KERNELS.md "Library GEMMs"): TTFT and decode of the default
# plan with cuBLASLt running the marked projections and with their own kernels
# (ZAMBA2C_NO_LIBRARY_GEMM=1), same plan, printed only.
if [ "${LIBRARY:-0}" = 1 ]; then
  RUST_LOG=info "$Z" bench "$M" --device cuda --prompt-len 64 --gen-len 2 2>&1 | grep -i "library" | head -2
  for pl in 512 2048; do
    for envs in X=1 ZAMBA2C_NO_LIBRARY_GEMM=1; do
      env "$envs" timeout $(tmo 90) "$Z" bench "$M" --device cuda --prompt-len $pl --gen-len 32 --max-context 4096 --json \
        2>/dev/null | tail -1 | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('library $envs prompt $pl ttft_ms %.2f decode_ms %.3f' % (r['ttft_ms'], r['decode_ms_per_token']))"
    done
  done
fi
if [ "${SERVE_LOAD:-0}" = 1 ]; then
  # Issue 13's table: `serve --device cuda --max-batch 64` on a dummy-weights 2.7B plan under
  # N concurrent streams (scripts/load_serve.py: 512-token prompts, 128 tokens each). serve
  # needs a tokenizer: a word-level one over the 32000 ids ("t<id>"), made here with the
  # tokenizers package that transformers brings.
  C=/tmp/ck27tok S=/tmp/serve27
  mkdir -p "$C" && cp examples/zamba2-2.7b-config/config.json "$C/"
  python3 - "$C/tokenizer.json" <<'PY'
import sys
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(32000)}, unk_token="t0"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
tok.save(sys.argv[1])
PY
  "$Z" compile "$C" -o "$S" --dummy-weights --dtype bf16 --arch sm_90 > /dev/null 2>&1 || { echo "serve plan: compile failed"; rc=1; }
  "$Z" serve "$S" --device cuda --max-batch 64 --max-context 1024 --port 8124 > "$OUT/serve_load.log" 2>&1 &
  sp=$!
  for i in $(seq 1 90); do
    curl -s 127.0.0.1:8124/health > /dev/null && break
    kill -0 $sp 2> /dev/null || break
    sleep 1
  done
  timeout $(tmo 300) python3 scripts/load_serve.py --url http://127.0.0.1:8124 --concurrency ${LOAD_LEVELS:-1,16,64} \
    --prompt-len 512 --gen-len 128 --requests 1 --out "$OUT/load_serve.json" 2>&1 | tail -8 || rc=1
  kill -TERM $sp 2> /dev/null; wait $sp
  tail -3 "$OUT/serve_load.log"
fi
if [ "${NCU:-1}" = 1 ] && [ -d "$P" ] && command -v ncu >/dev/null; then
  ZAMBA2C_NO_CUDA_GRAPH=1 timeout $(tmo 240) ncu --clock-control none \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --csv --page raw \
    "$Z" logits "$P" --tokens 5,6 --decode-from 1 --max-context 600 --out /tmp/ncu_logits.safetensors --device cuda \
    > "$OUT/ncu_decode.csv" 2>/dev/null || rc=1
  python3 scripts/ncu_summary.py "$OUT/ncu_decode.csv" | tee "$OUT/ncu_summary.txt"
fi
# The fidelity lines last: the device tool returns only the tail of the output.
grep -h "^FIDELITY" "$OUT/check27b.log" 2> /dev/null
exit $rc
