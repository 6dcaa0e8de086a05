//! What a command may ask for: lengths from flags against the plan's context, and the CPU
//! engine's memory against what the machine has, checked before anything is allocated.
//!
//! The CPU interpreter holds every weight as f32 (`CpuWeights::from_plan`); a consistent but
//! huge plan (random weights from `--dummy-weights` need no file) aborted in the allocator at
//! load before issue 16. The arithmetic is u128, so no size from a plan can overflow it.

use anyhow::{bail, Result};
use zamba2c_ir::device::MAX_PROMPT_CHUNK;
use zamba2c_ir::Plan;

/// `--prompt-len` and `--gen-len` of `bench`: a prompt of at least one token, and together
/// within the model's context.
pub fn check_lengths(prompt_len: usize, gen_len: usize, context: usize) -> Result<()> {
    if prompt_len == 0 {
        bail!("--prompt-len: must be at least 1");
    }
    if prompt_len > context {
        bail!(
            "--prompt-len: {prompt_len} tokens, more than the plan's context ({context} tokens: the model's max_position_embeddings)"
        );
    }
    if gen_len > context - prompt_len {
        bail!(
            "--gen-len: {gen_len} steps after a {prompt_len}-token prompt, more than the plan's context ({context} tokens: the model's max_position_embeddings)"
        );
    }
    Ok(())
}

/// `--prompt-chunk` of `bench` and `inspect`: prompt launches of 1 to [`MAX_PROMPT_CHUNK`]
/// tokens (the activation arena grows with it).
pub fn check_prompt_chunk(chunk: Option<usize>) -> Result<()> {
    match chunk {
        Some(n) if n == 0 || n > MAX_PROMPT_CHUNK => {
            bail!("--prompt-chunk: must be in 1..={MAX_PROMPT_CHUNK}, got {n}")
        }
        _ => Ok(()),
    }
}

/// Bytes of memory the machine can still give (`MemAvailable` of /proc/meminfo), if known.
pub fn available_memory() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes the CPU interpreter needs for `plan`'s weights (every one as f32).
pub fn cpu_weight_bytes(plan: &Plan) -> u128 {
    plan.module
        .weights
        .values()
        .map(|w| w.shape.iter().map(|&d| d as u128).product::<u128>() * 4)
        .sum()
}

/// Refuses to load `plan` on the CPU when its weights plus `extra` bytes (what the command
/// itself will hold, e.g. the logits) exceed the memory available.
pub fn check_cpu_memory(plan: &Plan, extra: u128, extra_what: &str) -> Result<()> {
    let weights = cpu_weight_bytes(plan);
    let need = weights + extra;
    if let Some(avail) = available_memory() {
        if need > avail {
            let extra = if extra > 0 {
                format!(" and {extra} for {extra_what}")
            } else {
                String::new()
            };
            bail!(
                "{}: the CPU engine needs {need} bytes ({weights} for the weights as f32{extra}), more than the {avail} bytes of memory available",
                plan.dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_against_the_context() {
        assert!(check_lengths(16, 16, 32).is_ok());
        assert!(check_lengths(0, 1, 32).is_err());
        assert!(check_lengths(33, 0, 32).is_err());
        assert!(check_lengths(16, 17, 32).is_err());
        let e = check_lengths(1, usize::MAX, 32).unwrap_err().to_string();
        assert!(e.starts_with("--gen-len: "), "{e}");
        let e = check_lengths(usize::MAX, usize::MAX, 32)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--prompt-len: "), "{e}");
    }

    #[test]
    fn meminfo_is_read() {
        // Linux only, as zamba2c: the figure exists and is positive.
        assert!(available_memory().is_some_and(|m| m > 0));
    }
}
