//! Per-sequence inference state on the host (spec §4): conv windows, SSM states and KV caches
//! for every state id of `module.states`, plus the number of tokens processed.

use zamba2c_ir::{DType, StateId, StateSpec};

use crate::RuntimeError;

/// The conv state of one layer: `[B, channels, kernel]`, the last `kernel` pre-conv inputs of
/// each channel, oldest first (zeros at the start of a sequence).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvState {
    pub channels: usize,
    pub kernel: usize,
    pub data: Vec<f32>,
}

/// The SSM state of one layer: `[B, heads, head_dim, d_state]`, held as f32 values of its
/// element dtype (`compile --state-dtype`): the scan rounds to it when it stores the state, as
/// the GPU does.
#[derive(Debug, Clone, PartialEq)]
pub struct SsmState {
    pub heads: usize,
    pub head_dim: usize,
    pub d_state: usize,
    pub dtype: DType,
    pub data: Vec<f32>,
}

/// The K and V caches of one hybrid layer. Per batch row, token-major: `k[b]` holds
/// `len[b] × kv_heads × head_dim` values (keys after RoPE), `v[b]` likewise, each rounded to
/// the cache's element dtype when appended (`compile --kv-dtype`), as the GPU stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCache {
    pub kv_heads: usize,
    pub head_dim: usize,
    pub dtype: DType,
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

/// All state of `batch` sequences processed together: one call runs T tokens of every row,
/// and each row may be at its own position (a batch of sequences that joined at different
/// times, see [`InferenceState::stack`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferenceState {
    /// `B`, the number of sequences.
    pub batch: usize,
    /// Tokens each KV cache may hold; a call that would exceed it is refused.
    pub max_context: usize,
    /// Tokens each row processed since creation or the last reset (`B` entries).
    pub positions: Vec<usize>,
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
                    dtype,
                    ..
                } => StateRegion::Ssm(SsmState {
                    heads,
                    head_dim,
                    d_state,
                    dtype,
                    data: vec![0.0; batch * heads * head_dim * d_state],
                }),
                StateSpec::Kv {
                    kv_heads,
                    head_dim,
                    dtype,
                    ..
                } => StateRegion::Kv(KvCache {
                    kv_heads,
                    head_dim,
                    dtype,
                    k: vec![Vec::new(); batch],
                    v: vec![Vec::new(); batch],
                    len: vec![0; batch],
                }),
            })
            .collect();
        InferenceState {
            batch,
            max_context,
            positions: vec![0; batch],
            regions,
        }
    }

    /// Whether no row has processed a token yet.
    pub fn is_fresh(&self) -> bool {
        self.positions.iter().all(|&p| p == 0)
    }

    /// One state of `parts.len()` rows: row `i` is `parts[i]`'s only row. Every part must have
    /// batch 1 and the same regions (states of one module); the result takes the smallest
    /// `max_context`. [`InferenceState::split`] undoes it. This is how several sequences that
    /// joined at different times run one batched step.
    pub fn stack(parts: Vec<InferenceState>) -> Result<Self, RuntimeError> {
        let Some(first) = parts.first() else {
            return Err(RuntimeError::Input("no states to stack".into()));
        };
        let mut out = InferenceState {
            batch: parts.len(),
            max_context: parts.iter().map(|p| p.max_context).min().unwrap_or(0),
            positions: Vec::with_capacity(parts.len()),
            regions: first.regions.iter().map(StateRegion::empty_like).collect(),
        };
        for (i, part) in parts.into_iter().enumerate() {
            if part.batch != 1 || part.regions.len() != out.regions.len() {
                return Err(RuntimeError::Input(format!(
                    "state {i} to stack has batch {} and {} regions, expected batch 1 and {}",
                    part.batch,
                    part.regions.len(),
                    out.regions.len()
                )));
            }
            out.positions.extend(part.positions);
            for (id, (dst, src)) in out.regions.iter_mut().zip(part.regions).enumerate() {
                dst.append_row(src)
                    .map_err(|e| RuntimeError::Input(format!("state {i}, region {id}: {e}")))?;
            }
        }
        Ok(out)
    }

    /// The rows of this state as `batch` states of one row each, in order (the inverse of
    /// [`InferenceState::stack`]); each keeps this state's `max_context`.
    pub fn split(self) -> Vec<InferenceState> {
        let b = self.batch;
        let mut rows: Vec<InferenceState> = self
            .positions
            .iter()
            .map(|&p| InferenceState {
                batch: 1,
                max_context: self.max_context,
                positions: vec![p],
                regions: Vec::with_capacity(self.regions.len()),
            })
            .collect();
        for region in self.regions {
            for (row, r) in rows.iter_mut().zip(region.into_rows(b)) {
                row.regions.push(r);
            }
        }
        rows
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
        self.positions.fill(0);
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

impl StateRegion {
    /// A region of the same kind and sizes with no rows.
    fn empty_like(&self) -> Self {
        match self {
            StateRegion::Conv(c) => StateRegion::Conv(ConvState {
                data: Vec::new(),
                ..*c
            }),
            StateRegion::Ssm(s) => StateRegion::Ssm(SsmState {
                data: Vec::new(),
                ..*s
            }),
            StateRegion::Kv(kv) => StateRegion::Kv(KvCache {
                kv_heads: kv.kv_heads,
                head_dim: kv.head_dim,
                dtype: kv.dtype,
                k: Vec::new(),
                v: Vec::new(),
                len: Vec::new(),
            }),
        }
    }

    /// Appends the rows of `other` (a region of the same kind and sizes) after this one's.
    fn append_row(&mut self, other: StateRegion) -> Result<(), String> {
        match (self, other) {
            (StateRegion::Conv(a), StateRegion::Conv(b))
                if (a.channels, a.kernel) == (b.channels, b.kernel) =>
            {
                a.data.extend_from_slice(&b.data)
            }
            (StateRegion::Ssm(a), StateRegion::Ssm(b))
                if (a.heads, a.head_dim, a.d_state, a.dtype)
                    == (b.heads, b.head_dim, b.d_state, b.dtype) =>
            {
                a.data.extend_from_slice(&b.data)
            }
            (StateRegion::Kv(a), StateRegion::Kv(b))
                if (a.kv_heads, a.head_dim, a.dtype) == (b.kv_heads, b.head_dim, b.dtype) =>
            {
                a.k.extend(b.k);
                a.v.extend(b.v);
                a.len.extend(b.len);
            }
            _ => return Err("the regions differ in kind or size".into()),
        }
        Ok(())
    }

    /// This region of `b` rows as `b` regions of one row each.
    fn into_rows(self, b: usize) -> Vec<StateRegion> {
        let row = |data: &[f32], i: usize| {
            let n = data.len() / b.max(1);
            data[i * n..(i + 1) * n].to_vec()
        };
        match self {
            StateRegion::Conv(c) => (0..b)
                .map(|i| {
                    StateRegion::Conv(ConvState {
                        data: row(&c.data, i),
                        ..c
                    })
                })
                .collect(),
            StateRegion::Ssm(s) => (0..b)
                .map(|i| {
                    StateRegion::Ssm(SsmState {
                        data: row(&s.data, i),
                        ..s
                    })
                })
                .collect(),
            StateRegion::Kv(kv) => {
                kv.k.into_iter()
                    .zip(kv.v)
                    .zip(kv.len)
                    .map(|((k, v), len)| {
                        StateRegion::Kv(KvCache {
                            kv_heads: kv.kv_heads,
                            head_dim: kv.head_dim,
                            dtype: kv.dtype,
                            k: vec![k],
                            v: vec![v],
                            len: vec![len],
                        })
                    })
                    .collect()
            }
        }
    }
}

fn wrong_kind(id: StateId, want: &str) -> RuntimeError {
    RuntimeError::Input(format!("state id {id} is not a {want} state region"))
}
