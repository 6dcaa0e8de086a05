//! Whether this machine can run a plan on the GPU, asked without loading anything: the CLI's
//! `--device auto` (issue 17) picks CUDA when [`probe`] finds a usable device, else the CPU.

use zamba2c_ir::Plan;

use super::nvrtc;

/// The first GPU's name when a plan can run on it; otherwise why not, in words.
pub fn probe(plan: &Plan) -> Result<String, String> {
    // SAFETY: only tries to dlopen libcuda by its known names; no symbol is called.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda.so.1)".into());
    }
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| format!("the CUDA driver does not start: {e:?}"))?;
    if count < 1 {
        return Err("the CUDA driver sees no GPU".into());
    }
    if !plan
        .manifest
        .files
        .contains_key(zamba2c_ir::kernel::PROGRAM_PATH)
    {
        return Err("the plan has no CUDA kernels".into());
    }
    // Kernels compiled ahead of time (`compile --arch`) still need NVRTC on another GPU; the
    // engine tells which at load, so only the no-PTX-and-no-NVRTC case is decided here.
    if plan.manifest.arch.is_none() && !nvrtc::available() {
        return Err("NVRTC (libnvrtc) cannot be loaded to compile the plan's kernels".into());
    }
    let ctx = cudarc::driver::CudaContext::new(0)
        .map_err(|e| format!("cannot open CUDA device 0: {e:?}"))?;
    ctx.name()
        .map_err(|e| format!("cannot read the name of CUDA device 0: {e:?}"))
}
