//! zamba2c's CUDA C++ emitter. For every op of a module's prompt and decode graphs it picks a
//! kernel family, fills that family's context (shapes baked in as constants), renders the
//! family's tera template under `templates/`, and records the launch: which buffers, weights,
//! states and scalars go into each parameter, and the grid as a function of batch and tokens.
//!
//! The [`Program`] is the single interface between the compiler and the runtime: a kernel's
//! parameter list ([`Param`]) renders its C signature, and the same list, paired with
//! [`Arg`]s, is what the runtime pushes at launch, so the two cannot drift apart.
//! Identical kernels (same family and context) are generated once and named after the first
//! node that uses them: `z2c_<family>_<p|d><node>` (`p`: prompt graph, `d`: decode graph,
//! node = position in the graph's topological order, as in `module.json`).

pub mod cost;
pub mod families;
pub mod flash;
pub mod fused;
pub mod program;
pub mod render;

pub use program::{
    build_program, Arg, CType, Decomposed, Extent, GraphProgram, Kernel, Launch, Param, Program,
    Storage, Value,
};
pub use zamba2c_ir::kernel::{ptx_path, source_path, PROGRAM_PATH};

use zamba2c_ir::{Module, PlanError, PlanWriter};

/// A codegen error: names the node or kernel involved.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("{phase} graph, node %{node} ({label}): {msg}")]
    Node {
        phase: &'static str,
        node: usize,
        label: String,
        msg: String,
    },
    #[error("template {template}: {msg}")]
    Template { template: String, msg: String },
}

/// Generates the program of `module`: every kernel's CUDA source and the launch table.
/// (Compiling the sources to PTX is the runtime's NVRTC wrapper's job, so that every CUDA
/// library call lives in `zamba2c_runtime::cuda`.)
pub fn emit(module: &Module) -> Result<Program, CodegenError> {
    build_program(module)
}

/// Writes the program into a plan being written: `kernels/<name>.cu` for every kernel,
/// `kernels/program.json` (the launch table the runtime executes), and, when given,
/// `kernels/<name>.<arch>.ptx` for each kernel in `program.kernels` order.
pub fn write_kernels(
    writer: &mut PlanWriter,
    program: &Program,
    ptx: Option<(&str, &[String])>,
) -> Result<(), PlanError> {
    for k in program.kernels.values() {
        writer.write(&source_path(&k.name), k.source.as_bytes())?;
    }
    if let Some((arch, ptx)) = ptx {
        for (k, p) in program.kernels.values().zip(ptx) {
            writer.write(&ptx_path(&k.name, arch), p.as_bytes())?;
        }
    }
    let json = serde_json::to_string(program).expect("the program serializes");
    writer.write(PROGRAM_PATH, json.as_bytes())
}

/// A tuning knob of the kernels: `ZAMBA2C_TUNE_<NAME>` from the environment when set
/// (developer sweeps on the GPU, docs/KERNELS.md), else the default. Plans record what they
/// were generated with in their kernel sources, so a plan is still reproducible. 0 counts as
/// unset here; `tune_mode` is for knobs whose 0 is a setting.
pub(crate) fn tune(name: &str, default: usize) -> usize {
    knob(name).filter(|&v| v > 0).unwrap_or(default)
}

/// A tuning knob whose 0 is a setting (a mode, or off), not "unset" as in `tune`.
pub(crate) fn tune_mode(name: &str, default: usize) -> usize {
    knob(name).unwrap_or(default)
}

/// `ZAMBA2C_TUNE_<NAME>` as a number, when set to one.
fn knob(name: &str) -> Option<usize> {
    std::env::var(format!("ZAMBA2C_TUNE_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
}
