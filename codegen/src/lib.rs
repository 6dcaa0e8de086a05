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

pub mod families;
pub mod nvrtc;
pub mod program;
pub mod render;

pub use nvrtc::{NvrtcError, NvrtcInfo};
pub use program::{
    build_program, Arg, CType, Extent, GraphProgram, Kernel, Launch, Param, Program, Storage, Value,
};

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
    #[error(transparent)]
    Nvrtc(#[from] NvrtcError),
}

/// One generated kernel source as it goes into a plan: `kernels/<name>.cu`, and its PTX
/// (`kernels/<name>.<arch>.ptx`) when it was compiled ahead of time.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelSource {
    pub name: String,
    pub source: String,
    /// The architecture and PTX, when compiled with NVRTC.
    pub ptx: Option<(String, String)>,
}

impl KernelSource {
    /// Path of the source inside the plan directory.
    pub fn source_path(&self) -> String {
        source_path(&self.name)
    }
}

/// Path of kernel `name`'s source inside a plan directory.
pub fn source_path(name: &str) -> String {
    format!("kernels/{name}.cu")
}

/// Path of kernel `name`'s PTX for `arch` inside a plan directory.
pub fn ptx_path(name: &str, arch: &str) -> String {
    format!("kernels/{name}.{arch}.ptx")
}

/// Generates the CUDA sources of every kernel of `module`, sorted by name. With `arch`
/// (e.g. `sm_90`) every kernel is also compiled with NVRTC (which must then be loadable); a
/// kernel that does not compile fails with the NVRTC log and the kernel's plan path.
pub fn emit(module: &Module, arch: Option<&str>) -> Result<Vec<KernelSource>, CodegenError> {
    let program = build_program(module)?;
    let mut out: Vec<KernelSource> = program
        .kernels
        .values()
        .map(|k| KernelSource {
            name: k.name.clone(),
            source: k.source.clone(),
            ptx: None,
        })
        .collect();
    if let Some(arch) = arch {
        let jobs: Vec<(String, String, String)> = out
            .iter()
            .map(|k| (k.name.clone(), k.source.clone(), k.source_path()))
            .collect();
        let ptx = nvrtc::compile_many(&jobs, arch)?;
        for (k, p) in out.iter_mut().zip(ptx) {
            k.ptx = Some((arch.to_string(), p));
        }
    }
    Ok(out)
}

/// Writes the kernels into a plan being written (`kernels/*.cu`, and `*.ptx` when compiled).
pub fn write_kernels(writer: &mut PlanWriter, kernels: &[KernelSource]) -> Result<(), PlanError> {
    for k in kernels {
        writer.write(&k.source_path(), k.source.as_bytes())?;
        if let Some((arch, ptx)) = &k.ptx {
            writer.write(&ptx_path(&k.name, arch), ptx.as_bytes())?;
        }
    }
    Ok(())
}
