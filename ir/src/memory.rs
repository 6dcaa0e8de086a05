//! The memory plan (the `memory` section of `module.json`, made by the `plan-memory` pass):
//! where every buffer lives. Four separate regions: weights, recurrent state (conv + SSM),
//! KV cache, and per graph one activation arena reused by liveness.
//!
//! Every activation is `[B, T, w]` (or `[B, T]` for the token ids), so a buffer's size is its
//! bytes per row times `R = B·T` rows. The arena is planned per row: a buffer at
//! `offset_per_row` with `bytes_per_row` occupies bytes
//! `[offset_per_row·R, (offset_per_row + bytes_per_row)·R)` of an arena of
//! `arena_bytes_per_row·R` bytes, for any `R` chosen at load time (decode: `R = B`).

use serde::{Deserialize, Serialize};

/// Alignment of every offset, in bytes (per row for activations; scaled by `R` it stays aligned).
pub const ALIGN: usize = 256;

/// Rounds `n` up to a multiple of `a`.
pub fn align_up(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

/// One activation buffer: the output of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffer {
    /// The node's id in the serialized graph (its position in topological order).
    pub node: usize,
    pub label: String,
    pub offset_per_row: usize,
    pub bytes_per_row: usize,
    /// Live from the step that writes it to the last step that reads it (topological ids).
    pub first: usize,
    pub last: usize,
}

/// The activation arena of one graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arena {
    pub arena_bytes_per_row: usize,
    /// Sum of every buffer's size: the arena size without reuse, for comparison.
    pub unshared_bytes_per_row: usize,
    pub buffers: Vec<Buffer>,
}

/// One weight in the weights region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightSlot {
    pub name: String,
    pub offset: usize,
    pub bytes: usize,
}

/// One state region (by state id) in the recurrent-state region (per sequence) or in the KV
/// region (per sequence and cached token: both K and V).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSlot {
    pub state: usize,
    pub offset: usize,
    pub bytes: usize,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryPlan {
    pub align: usize,
    /// Weights in the weight table's (name) order; `weights_bytes` in total.
    pub weights: Vec<WeightSlot>,
    pub weights_bytes: usize,
    /// Conv and SSM states, per sequence: `recurrent_bytes_per_seq` in total.
    pub recurrent: Vec<StateSlot>,
    pub recurrent_bytes_per_seq: usize,
    /// KV caches, per sequence and cached token: `kv_bytes_per_token` in total.
    pub kv: Vec<StateSlot>,
    pub kv_bytes_per_token: usize,
    pub prompt: Arena,
    pub decode: Arena,
}
