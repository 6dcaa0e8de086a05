//! Choosing the backend (`--device auto|cpu|cuda`), one sequence or a batch of slots; output files
//! are `output.rs`'s.

use anyhow::{Context, Result};
use clap::ValueEnum;
use zamba2c_ir::Plan;
use zamba2c_runtime::batch::BatchEngine;
use zamba2c_runtime::cpu::{CpuBatchEngine, CpuEngine, CpuWeights};
use zamba2c_runtime::cuda::{CudaEngine, CudaOptions};
use zamba2c_runtime::Engine;

/// The largest `--max-batch` / `--batch` accepted (slots are allocated as sequences arrive,
/// but the slot table is sized up front).
pub const MAX_BATCH: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// CUDA when a usable GPU is there (driver, a device, the plan's kernels), else the CPU.
    Auto,
    Cpu,
    Cuda,
}

impl Device {
    /// The backend `--device` means for `plan`: `auto` becomes CUDA when
    /// [`zamba2c_runtime::cuda::probe`] finds a usable GPU, else the CPU, and says which (and
    /// why) in one info line on stderr.
    pub fn resolve(self, plan: &Plan) -> Device {
        if self != Device::Auto {
            return self;
        }
        match zamba2c_runtime::cuda::probe(plan) {
            Ok(gpu) => {
                tracing::info!("--device auto: cuda ({gpu})");
                Device::Cuda
            }
            Err(why) => {
                tracing::info!("--device auto: cpu ({why})");
                Device::Cpu
            }
        }
    }

    /// `cpu` or `cuda` (`auto` before it is resolved).
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

/// The largest context `--max-context` defaults to: the GPU allocates the KV caches for the
/// whole context up front (issue 11), and a config may claim up to 2^24 positions.
pub const DEFAULT_CONTEXT_CAP: usize = 16384;

/// Tokens a sequence may hold when `--max-context` is not given: the model's
/// `max_position_embeddings`, at most [`DEFAULT_CONTEXT_CAP`].
pub fn default_context(plan: &Plan) -> usize {
    plan.module
        .config
        .max_position_embeddings
        .min(DEFAULT_CONTEXT_CAP)
}

/// `--max-context` when given, else [`default_context`]; refuses 0 naming the flag.
pub fn context_or_default(flag: Option<usize>, plan: &Plan) -> Result<usize> {
    match flag {
        Some(0) => anyhow::bail!("--max-context: must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(default_context(plan)),
    }
}

/// Loads `plan` onto `device` with KV room for `max_context` tokens.
pub fn open_engine(plan: &Plan, device: Device, max_context: usize) -> Result<Box<dyn Engine>> {
    let ctx = max_context;
    match device.resolve(plan) {
        Device::Cpu | Device::Auto => {
            super::limits::check_cpu_memory(plan, 0, "")?;
            let mut e = CpuEngine::from_parts(plan.module.clone(), load_cpu_weights(plan)?);
            e.set_max_context(ctx);
            Ok(Box::new(e))
        }
        Device::Cuda => Ok(Box::new(
            CudaEngine::new(plan, ctx).context("--device cuda")?,
        )),
    }
}

/// Loads `plan` onto `device` with `max_batch` sequence slots of `max_context` tokens each.
/// On CUDA the engine allocates every slot's states and KV cache up front (what
/// `inspect --max-batch` prints); a batch that does not fit the GPU is refused in one line.
/// `invariant`: a batch-invariant CUDA engine (`CudaOptions::batch_invariant`: a sequence's
/// tokens do not depend on the batch it runs in, at the cost of one-row steps on the GEMMs).
pub fn open_batch_engine(
    plan: &Plan,
    device: Device,
    max_batch: usize,
    max_context: usize,
    invariant: bool,
) -> Result<Box<dyn BatchEngine>> {
    match device.resolve(plan) {
        Device::Cpu | Device::Auto => Ok(Box::new(CpuBatchEngine::from_parts(
            plan.module.clone(),
            load_cpu_weights(plan)?,
            max_batch,
            max_context,
        )?)),
        Device::Cuda => {
            let options =
                CudaOptions::batched(max_context, max_batch).with_batch_invariance(invariant);
            Ok(Box::new(
                CudaEngine::with_options(plan, options)
                    .with_context(|| format!("--device cuda --max-batch {max_batch}"))?,
            ))
        }
    }
}

/// The plan's weights as f32 for the CPU interpreter, with a progress bar by bytes on stderr
/// when it is a terminal (indicatif draws nothing otherwise): a multi-GB plan takes a while.
fn load_cpu_weights(plan: &Plan) -> Result<CpuWeights> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("loading weights for the CPU");
    let weights = CpuWeights::from_plan_with_progress(plan, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    Ok(weights)
}
