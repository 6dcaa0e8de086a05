//! Choosing the backend (`--device cpu|cuda`) and writing output files atomically.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use zamba2c_ir::Plan;
use zamba2c_runtime::cpu::CpuEngine;
use zamba2c_runtime::Engine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

/// Loads `plan` onto `device`.
pub fn open_engine(plan: &Plan, device: Device) -> Result<Box<dyn Engine>> {
    match device {
        Device::Cpu => Ok(Box::new(CpuEngine::new(plan)?)),
        Device::Cuda => bail!("--device cuda: this build has no CUDA backend yet"),
    }
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename, so a failed or
/// interrupted write leaves the old file or none.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = write(&tmp).and_then(|_| {
        std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
