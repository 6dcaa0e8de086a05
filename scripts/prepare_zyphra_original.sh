#!/usr/bin/env bash
# Puts Zyphra's original standalone Zamba2 source (public GitHub Zyphra/Zamba2) into .zyphra/ of this
# working tree, ready for `scripts/make_standalone_fixtures.py --backend original` on the GPU machine.
# The original code is never committed (.zyphra/ is listed in .git/info/exclude).
#
#   scripts/prepare_zyphra_original.sh GIT_DIR_OR_SOURCE_DIR
#
# GIT_DIR_OR_SOURCE_DIR: a git directory of Zyphra/Zamba2 (its HEAD is exported) or a folder that
# already holds mamba_model.py. Then, as ../shared/tools/zyphra-original/README.md says:
#   * the vendored Triton kernels' tl.math.log1p (gone from Triton 3.x) becomes libdevice.log1p in
#     ops/triton/ssd_chunk_state.py and ops/triton/selective_state_update.py;
#   * einops (pure Python, which the original imports everywhere) is installed into .zyphra/site/,
#     which the fixture script appends to sys.path, since the GPU machine has no network.
set -euo pipefail
src=${1:?usage: scripts/prepare_zyphra_original.sh GIT_DIR_OR_SOURCE_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
dst="$root/.zyphra"
if [[ -e "$dst" ]]; then
  echo "$dst exists; remove it first" >&2
  exit 1
fi
mkdir -p "$dst"
if [[ -f "$src/mamba_model.py" ]]; then
  cp -r "$src"/. "$dst"/
else
  git --git-dir="$src" archive HEAD | tar -x -C "$dst"
fi
for f in ops/triton/ssd_chunk_state.py ops/triton/selective_state_update.py; do
  sed -i 's/tl\.math\.log1p(/libdevice.log1p(/g' "$dst/$f"
  grep -q '^from triton.language.extra import libdevice' "$dst/$f" ||
    sed -i '0,/^import triton.language as tl$/s//import triton.language as tl\nfrom triton.language.extra import libdevice/' "$dst/$f"
  grep -q 'libdevice.log1p' "$dst/$f"
  grep -q '^from triton.language.extra import libdevice' "$dst/$f"
done
python3 -m pip install --quiet --no-deps --target "$dst/site" einops
echo "original source ready in $dst ($(git --git-dir="$src" rev-parse HEAD 2>/dev/null || echo "copied from $src"))"
