#!/usr/bin/env bash
# Runs one libFuzzer target of fuzz/ for SECONDS seconds, in one process (one core: the
# equivalent of -jobs=1 without its log-file indirection).
#
#   scripts/fuzz.sh TARGET SECONDS [extra libFuzzer flags...]
#   scripts/fuzz.sh list
#
# TARGET: config | checkpoint | plan | manifest | outputs | tokens | torch_checkpoint (see fuzz/README.md). Needs cargo-fuzz
# (`cargo install cargo-fuzz`); runs on stable Rust through RUSTC_BOOTSTRAP=1 (cargo-fuzz uses
# nightly-only -Z flags). Builds with --release, debug assertions and overflow checks on, and
# AddressSanitizer (libFuzzer's -malloc_limit_mb works through the sanitizer's malloc hooks).
# New corpus entries go to fuzz/corpus/TARGET (git ignores all but the seed-* files); a crash,
# OOM, over-allocation or timeout writes its reproducer to fuzz/artifacts/TARGET/ — commit it,
# and tests/fuzz_regressions.rs replays it on stable.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
if [[ "${1:-}" == list ]]; then
  RUSTC_BOOTSTRAP=1 cargo fuzz list
  exit 0
fi
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS}
seconds=${2:?usage: scripts/fuzz.sh TARGET SECONDS}
shift 2
case "$target" in
  checkpoint|plan|torch_checkpoint) max_len=65536 ;;
  outputs) max_len=5 ;;  # an operation byte and at most 4 path components
  *) max_len=8192 ;;
esac
mkdir -p "corpus/$target" "artifacts/$target"
export RUSTC_BOOTSTRAP=1
cargo fuzz build --release --debug-assertions "$target"
# -timeout: one input may take at most 10 s (a hang is a finding); -rss_limit_mb and
# -malloc_limit_mb: a header claiming a terabyte must not allocate one.
exec cargo fuzz run --release --debug-assertions "$target" "corpus/$target" -- \
  -max_total_time="$seconds" -timeout=10 \
  -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len="$max_len" \
  -artifact_prefix="artifacts/$target/" -print_final_stats=1 "$@"
