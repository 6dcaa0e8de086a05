//! The CPU interpreter of the IR: the reference meaning of every op, in f32 with f64
//! accumulation, plus [`CpuEngine`], the [`Engine`] that runs a plan's graphs with it.

pub mod attention;
pub mod batch;
pub mod interp;
pub mod mamba;
pub mod math;
pub mod ops;
pub mod state;

use std::borrow::Cow;
use std::collections::BTreeMap;

use petgraph::stable_graph::NodeIndex;
use zamba2c_ir::{Module, Phase, Plan, WeightSpec};

pub use batch::CpuBatchEngine;
pub use interp::{eval_node, eval_steps, run_graph};
pub use state::InferenceState;

use crate::{Engine, RuntimeError, Tensor};

/// Every weight of a plan as f32 tensors, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuWeights {
    pub tensors: BTreeMap<String, Tensor>,
}

impl CpuWeights {
    /// Wraps named tensors.
    pub fn from_tensors(tensors: BTreeMap<String, Tensor>) -> Self {
        CpuWeights { tensors }
    }

    /// Flat values named as in `module.weights`, shaped from the module's weight table; every
    /// weight of the module must be present with the right number of values.
    pub fn from_values(
        module: &Module,
        mut values: BTreeMap<String, Vec<f32>>,
    ) -> Result<Self, RuntimeError> {
        let mut tensors = BTreeMap::new();
        for (name, spec) in &module.weights {
            let data = values
                .remove(name)
                .ok_or_else(|| RuntimeError::Input(format!("weight {name} is missing")))?;
            tensors.insert(name.clone(), weight_tensor(name, spec, data)?);
        }
        Ok(CpuWeights { tensors })
    }

    /// Reads every weight of `plan` as f32. The values are decoded from the bytes the plan
    /// stores (so a bf16 plan's dummy weights are rounded to bf16, as a GPU reads them).
    pub fn from_plan(plan: &Plan) -> Result<Self, RuntimeError> {
        Self::from_plan_with_progress(plan, &mut |_, _| {})
    }

    /// [`CpuWeights::from_plan`], calling `progress(bytes_read, total_bytes)` of the plan's
    /// stored weights after each tensor (the CLI draws a progress bar from it).
    pub fn from_plan_with_progress(
        plan: &Plan,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, RuntimeError> {
        let total: u64 = plan.module.weights.values().map(|w| w.bytes() as u64).sum();
        let mut done = 0u64;
        let mut tensors = BTreeMap::new();
        for (name, spec) in &plan.module.weights {
            let (dtype, bytes) = plan.weights.raw(name)?;
            let data = zamba2c_ir::tensor::to_f32(&bytes, dtype);
            tensors.insert(name.clone(), weight_tensor(name, spec, data)?);
            done += spec.bytes() as u64;
            progress(done, total);
        }
        Ok(CpuWeights { tensors })
    }

    /// Seeded random weights for `module` ([`zamba2c_ir::weights::dummy_values`]), rounded to
    /// each weight's stored dtype.
    pub fn dummy(module: &Module, seed: u64) -> Self {
        let tensors = module
            .weights
            .iter()
            .map(|(name, spec)| {
                let v = zamba2c_ir::weights::dummy_values(seed, name, spec);
                let v = zamba2c_ir::tensor::to_f32(
                    &zamba2c_ir::tensor::from_f32(&v, spec.dtype),
                    spec.dtype,
                );
                (name.clone(), Tensor::new(spec.shape.clone(), v))
            })
            .collect();
        CpuWeights { tensors }
    }

    /// The weight `name`, which may also be a view `base@[a..b]` made by
    /// [`zamba2c_ir::fused::weight_view`]: the slice `a..b` of the last axis of `base`.
    pub fn get(&self, name: &str) -> Result<Cow<'_, Tensor>, RuntimeError> {
        if let Some(t) = self.tensors.get(name) {
            return Ok(Cow::Borrowed(t));
        }
        let missing = || RuntimeError::Input(format!("weight {name} is not loaded"));
        let (base, start, len) = zamba2c_ir::fused::parse_weight_view(name).ok_or_else(missing)?;
        let t = self.tensors.get(base).ok_or_else(missing)?;
        Ok(Cow::Owned(ops::slice(t, start, len).map_err(|e| {
            RuntimeError::Input(format!("weight view {name}: {e}"))
        })?))
    }

    /// Adds or replaces a weight.
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.insert(name.into(), t);
    }
}

/// A plan's module and weights run by the interpreter, with one batch of inference state.
pub struct CpuEngine {
    pub module: Module,
    pub weights: CpuWeights,
    pub state: InferenceState,
}

impl CpuEngine {
    /// Loads `plan`'s weights as f32.
    pub fn new(plan: &Plan) -> Result<Self, RuntimeError> {
        let weights = CpuWeights::from_plan(plan)?;
        Ok(Self::from_parts(plan.module.clone(), weights))
    }

    /// An engine over `module` and `weights`, batch 1, with a context of
    /// `config.max_position_embeddings` tokens.
    pub fn from_parts(module: Module, weights: CpuWeights) -> Self {
        let max = module.config.max_position_embeddings;
        let state = InferenceState::new(&module.states, 1, max);
        CpuEngine {
            module,
            weights,
            state,
        }
    }

    /// Sets the maximum context (tokens the KV caches may hold); keeps the current state.
    pub fn set_max_context(&mut self, tokens: usize) {
        self.state.max_context = tokens;
    }

    /// Runs the graph of `phase` over `tokens` (B rows of T ids) from the current state and
    /// returns the logits `[B,T,V]`. A batch size other than the state's is accepted only at
    /// position 0, where it replaces the state with a fresh one of that batch size.
    pub fn run_phase(
        &mut self,
        phase: Phase,
        tokens: &[Vec<u32>],
        observer: &mut dyn FnMut(NodeIndex, &Tensor),
    ) -> Result<Tensor, RuntimeError> {
        if !tokens.is_empty() && tokens.len() != self.state.batch && self.state.is_fresh() {
            self.state =
                InferenceState::new(&self.module.states, tokens.len(), self.state.max_context);
        }
        let graph = self.module.graph(phase);
        let mut outs = run_graph(graph, tokens, &self.weights, &mut self.state, observer)?;
        if outs.len() != 1 {
            return Err(RuntimeError::Input(format!(
                "the {phase:?} graph has {} outputs, expected the logits only",
                outs.len()
            )));
        }
        Ok(outs.remove(0))
    }
}

impl Engine for CpuEngine {
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::Input("the prompt is empty".into()));
        }
        Ok(self
            .run_phase(Phase::Prompt, &[tokens.to_vec()], &mut |_, _| {})?
            .data)
    }

    fn decode_step(&mut self, token: u32) -> Result<Vec<f32>, RuntimeError> {
        Ok(self
            .run_phase(Phase::Decode, &[vec![token]], &mut |_, _| {})?
            .data)
    }

    fn reset(&mut self) {
        self.state.reset();
    }

    fn position(&self) -> usize {
        self.state.positions.first().copied().unwrap_or(0)
    }

    fn vocab_size(&self) -> usize {
        self.module.config.vocab_size
    }
}

/// Wraps one weight's values as a tensor of its IR shape, refusing a wrong element count.
fn weight_tensor(name: &str, spec: &WeightSpec, data: Vec<f32>) -> Result<Tensor, RuntimeError> {
    if data.len() != spec.numel() {
        return Err(RuntimeError::Input(format!(
            "weight {name} has {} values, the IR wants {:?}",
            data.len(),
            spec.shape
        )));
    }
    Ok(Tensor::new(spec.shape.clone(), data))
}
