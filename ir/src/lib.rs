//! zamba2c's intermediate representation: the Zamba2 config, checkpoint reading, the typed
//! graph with its ops, lowering from a config, the verifier, and the plan format.

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod fsread;
pub mod fused;
pub mod graph;
pub mod kernel;
pub mod layout;
pub mod lower;
pub mod op;
pub mod verify;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use config::{ConfigError, LayerType, Zamba2Config};
pub use graph::{DType, Dim, Graph, Module, Node, Phase, Shape, StateSpec, WeightSpec};
pub use lower::{lower, lower_mixed, lower_with_kv};
pub use op::{Op, OpKind, StateId};
pub use verify::{verify_module, VerifyError};
pub mod pickle;
pub mod plan;
pub mod scratch;
pub mod serial;
pub mod tensor;
pub mod units;
pub mod weights;

pub use plan::{Manifest, Plan, PlanError, PlanInfo, PlanWriter, WeightsSource};
pub use weights::WeightStore;
