//! Per-sequence inference state on the host (spec §4): conv windows, SSM states and KV caches
//! for every state id of `module.states`, plus the number of tokens processed.

use zamba2c_ir::{StateId, StateSpec};

use crate::RuntimeError;

/// The conv state of one layer: `[B, channels, kernel]`, the last `kernel` pre-conv inputs of
/// each channel, oldest first (zeros at the start of a sequence).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvState {
    pub channels: usize,
    pub kernel: usize,
    pub data: Vec<f32>,
}

/// The SSM state of one layer: `[B, heads, head_dim, d_state]`, always f32.
#[derive(Debug, Clone, PartialEq)]
pub struct SsmState {
    pub heads: usize,
    pub head_dim: usize,
    pub d_state: usize,
    pub data: Vec<f32>,
}

/// The K and V caches of one hybrid layer. Per batch row, token-major: `k[b]` holds
/// `len[b] × kv_heads × head_dim` values (keys after RoPE), `v[b]` likewise.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCache {
    pub kv_heads: usize,
    pub head_dim: usize,
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub len: Vec<usize>,
}

/// One state region.
#[derive(Debug, Clone, PartialEq)]
pub enum StateRegion {
    Conv(ConvState),
    Ssm(SsmState),
    Kv(KvCache),
}

/// All state of `batch` sequences processed in lockstep.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceState {
    /// `B`, the number of sequences.
    pub batch: usize,
    /// Tokens each KV cache may hold; a call that would exceed it is refused.
    pub max_context: usize,
    /// Tokens processed since creation or the last reset.
    pub position: usize,
    /// Indexed by [`StateId`], as `module.states`.
    pub regions: Vec<StateRegion>,
}

impl InferenceState {
    /// Zeroed state for the regions `specs` (`module.states`).
    pub fn new(specs: &[StateSpec], batch: usize, max_context: usize) -> Self {
        let regions = specs
            .iter()
            .map(|s| match *s {
                StateSpec::Conv {
                    channels, kernel, ..
                } => StateRegion::Conv(ConvState {
                    channels,
                    kernel,
                    data: vec![0.0; batch * channels * kernel],
                }),
                StateSpec::Ssm {
                    heads,
                    head_dim,
                    d_state,
                    ..
                } => StateRegion::Ssm(SsmState {
                    heads,
                    head_dim,
                    d_state,
                    data: vec![0.0; batch * heads * head_dim * d_state],
                }),
                StateSpec::Kv {
                    kv_heads, head_dim, ..
                } => StateRegion::Kv(KvCache {
                    kv_heads,
                    head_dim,
                    k: vec![Vec::new(); batch],
                    v: vec![Vec::new(); batch],
                    len: vec![0; batch],
                }),
            })
            .collect();
        InferenceState {
            batch,
            max_context,
            position: 0,
            regions,
        }
    }

    /// Clears every region and the position (keeps the batch size and max context).
    pub fn reset(&mut self) {
        for r in &mut self.regions {
            match r {
                StateRegion::Conv(c) => c.data.fill(0.0),
                StateRegion::Ssm(s) => s.data.fill(0.0),
                StateRegion::Kv(kv) => {
                    kv.k.iter_mut().for_each(Vec::clear);
                    kv.v.iter_mut().for_each(Vec::clear);
                    kv.len.fill(0);
                }
            }
        }
        self.position = 0;
    }

    fn region(&mut self, id: StateId) -> Result<&mut StateRegion, RuntimeError> {
        let n = self.regions.len();
        self.regions.get_mut(id).ok_or_else(|| {
            RuntimeError::Input(format!(
                "state id {id} does not exist (the module has {n} state regions)"
            ))
        })
    }

    /// The conv state `id`.
    pub fn conv_mut(&mut self, id: StateId) -> Result<&mut ConvState, RuntimeError> {
        match self.region(id)? {
            StateRegion::Conv(c) => Ok(c),
            _ => Err(wrong_kind(id, "conv")),
        }
    }

    /// The SSM state `id`.
    pub fn ssm_mut(&mut self, id: StateId) -> Result<&mut SsmState, RuntimeError> {
        match self.region(id)? {
            StateRegion::Ssm(s) => Ok(s),
            _ => Err(wrong_kind(id, "SSM")),
        }
    }

    /// The KV cache `id`.
    pub fn kv_mut(&mut self, id: StateId) -> Result<&mut KvCache, RuntimeError> {
        match self.region(id)? {
            StateRegion::Kv(kv) => Ok(kv),
            _ => Err(wrong_kind(id, "KV cache")),
        }
    }
}

fn wrong_kind(id: StateId, want: &str) -> RuntimeError {
    RuntimeError::Input(format!("state id {id} is not a {want} state region"))
}
