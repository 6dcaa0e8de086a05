#!/usr/bin/env bash
# The README's demo: compile the shipped demo model (random weights, real 32000-token
# vocabulary) into a plan and continue a prompt with it on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
# The build's progress shows (a fresh clone compiles for a few minutes).
cargo build --release
./target/release/zamba2c compile examples/demo-model -o target/demo-plan
./target/release/zamba2c inspect target/demo-plan > target/demo-plan.txt
head -n 24 target/demo-plan.txt
./target/release/zamba2c run target/demo-plan --prompt "Hello, my name is" --max-new-tokens 16 --json
