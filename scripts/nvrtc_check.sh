#!/usr/bin/env bash
# nvrtc_check.sh: renders every kernel of tiny Zamba2 modules and compiles each with NVRTC for
# sm_90 (no GPU needed). Finds libnvrtc.so.13 from the pip package nvidia-cuda-nvrtc==13.0.88
# when it is not on the loader path already; fails if NVRTC cannot be loaded.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if ! ldconfig -p 2>/dev/null | grep -q libnvrtc.so.13; then
  lib=$(python3 -c 'import nvidia,os;print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null)/nvidia/cu13/lib
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
ZAMBA2C_REQUIRE_NVRTC=1 cargo test -p zamba2c-codegen --test nvrtc_compile -- --nocapture "$@"
