#!/usr/bin/env bash
# The README's demo: compile the shipped demo model (random weights, real 32000-token
# vocabulary) into a plan and continue a prompt with it on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
./target/release/zamba2c compile examples/demo-model -o target/demo-plan
./target/release/zamba2c inspect target/demo-plan | head -n 12
./target/release/zamba2c run target/demo-plan --tokens 1,415,5565,302,4843,349 --max-new-tokens 16 --json
