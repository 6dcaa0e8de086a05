//! Choosing the backend (`--device cpu|cuda`); output files are `output.rs`'s.

use anyhow::{Context, Result};
use clap::ValueEnum;
use zamba2c_ir::Plan;
use zamba2c_runtime::cpu::CpuEngine;
use zamba2c_runtime::cuda::CudaEngine;
use zamba2c_runtime::Engine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

/// Loads `plan` onto `device`, with KV room for the model's `max_position_embeddings`.
pub fn open_engine(plan: &Plan, device: Device) -> Result<Box<dyn Engine>> {
    open_engine_with_context(plan, device, 0)
}

/// Loads `plan` onto `device` with KV room for at least `tokens` tokens (and at least the
/// model's `max_position_embeddings`): `logits` knows its sequence length up front.
pub fn open_engine_with_context(
    plan: &Plan,
    device: Device,
    tokens: usize,
) -> Result<Box<dyn Engine>> {
    let ctx = plan.module.config.max_position_embeddings.max(tokens);
    match device {
        Device::Cpu => {
            super::limits::check_cpu_memory(plan, 0, "")?;
            let mut e = CpuEngine::new(plan)?;
            e.set_max_context(ctx);
            Ok(Box::new(e))
        }
        Device::Cuda => Ok(Box::new(
            CudaEngine::new(plan, ctx).context("--device cuda")?,
        )),
    }
}
