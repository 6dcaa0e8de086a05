//! The sampling module's tests (top-k, top-p, min-p, seeds, greedy, the repetition penalty),
//! as their own test target: the module is compiled here from the CLI's source, since the
//! `zamba2c` package is a binary only.

#[allow(dead_code)]
#[path = "../src/cli/sampling.rs"]
mod sampling;
