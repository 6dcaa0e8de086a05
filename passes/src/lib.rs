//! zamba2c's optimising passes: graph -> graph rewrites that keep the meaning, run as one
//! ordered pipeline (see `pipeline.rs`, the compiler's table of contents), plus the memory
//! planner and the compiler's cost model (`cost.rs`).

pub mod cost;
pub mod fuse;
pub mod pipeline;
pub mod rewrite;
pub mod shared_concat;

pub use cost::{module_cost, op_costs, Cost, OpCost};
pub use pipeline::{run_pipeline, PassError, PASSES};
