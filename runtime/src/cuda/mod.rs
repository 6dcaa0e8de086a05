//! The CUDA backend: runs a plan's generated kernels through cudarc's driver API. All cudarc
//! code of the runtime lives in this module.
//!
//! - [`engine`]: [`CudaEngine`] loads a plan (weights uploaded once, one buffer per activation,
//!   state regions and KV caches of a fixed capacity; kernels' PTX loaded on several threads,
//!   `ZAMBA2C_SERIAL_LOAD=1` one at a time) and runs the prompt and decode graphs with no
//!   allocation inside a step.
//! - [`blas`]: cuBLASLt for the launches a plan marks as library GEMMs (falls back to their
//!   kernels when the library is missing or `ZAMBA2C_NO_LIBRARY_GEMM=1`).
//! - [`graph`]: the decode step captured once as a CUDA graph and replayed
//!   (`ZAMBA2C_NO_CUDA_GRAPH=1` keeps it eager).
//! - [`nvrtc`]: kernel sources to PTX (ahead of time for `compile --arch`, or at load), with
//!   an on-disk cache keyed by source, options, arch and NVRTC version.
//! - [`validate`]: runs the same tokens on the CPU interpreter and the GPU and names the first
//!   node whose output differs beyond tolerance.
//! - [`bench`]: time to first token, decode ms/token (CUDA events), GPU memory.
//! - [`probe`]: whether a usable GPU is there (`--device auto`).
//! - [`profile`]: every launch timed with events beside its bytes and FLOPs (`bench --profile`).

pub mod bench;
pub mod blas;
pub mod engine;
pub mod graph;
pub mod nvrtc;
pub mod probe;
pub mod profile;
pub mod validate;

pub use bench::{bench, bench_runs, bench_with, BenchReport};
pub use engine::{CudaEngine, CudaOptions};
pub use probe::probe;
pub use profile::{profile, profile_batch, BatchProfileReport, ProfileReport};
pub use validate::{validate, validate_engines, ValidateReport};
