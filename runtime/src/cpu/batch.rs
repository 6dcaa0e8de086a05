//! [`CpuBatchEngine`]: the interpreter behind the [`BatchEngine`] slots API. Each slot has its
//! own state (conv windows, SSM states, KV caches); a decode step stacks the states of the
//! slots it serves into one batch, runs the decode graph once over all of them (every weight
//! read once for the batch, each row at its own position), and splits the states back.

use zamba2c_ir::{Module, Phase, Plan};

use crate::batch::{BatchEngine, SlotId};
use crate::cpu::state::InferenceState;
use crate::cpu::{run_graph, CpuWeights};
use crate::{RuntimeError, Tensor};

/// The interpreter with `max_batch` sequence slots.
pub struct CpuBatchEngine {
    module: Module,
    weights: CpuWeights,
    max_context: usize,
    /// One state of batch 1 per slot; `None` until the slot is first used (a slot's state is
    /// allocated when a sequence needs it, not for all slots up front).
    slots: Vec<Option<InferenceState>>,
}

impl CpuBatchEngine {
    /// Loads `plan`'s weights as f32, with `max_batch` slots of `max_context` tokens each.
    pub fn new(plan: &Plan, max_batch: usize, max_context: usize) -> Result<Self, RuntimeError> {
        let weights = CpuWeights::from_plan(plan)?;
        Self::from_parts(plan.module.clone(), weights, max_batch, max_context)
    }

    /// An engine over `module` and `weights`.
    pub fn from_parts(
        module: Module,
        weights: CpuWeights,
        max_batch: usize,
        max_context: usize,
    ) -> Result<Self, RuntimeError> {
        if max_batch == 0 {
            return Err(RuntimeError::Input(
                "a batch engine needs at least one slot".into(),
            ));
        }
        Ok(CpuBatchEngine {
            module,
            weights,
            max_context,
            slots: (0..max_batch).map(|_| None).collect(),
        })
    }

    fn check_slot(&self, slot: SlotId) -> Result<(), RuntimeError> {
        if slot < self.slots.len() {
            Ok(())
        } else {
            Err(RuntimeError::NoSuchSlot {
                slot,
                max_batch: self.slots.len(),
            })
        }
    }

    /// The state of `slot`, made on first use.
    fn state(&mut self, slot: SlotId) -> Result<&mut InferenceState, RuntimeError> {
        self.check_slot(slot)?;
        let (specs, ctx) = (&self.module.states, self.max_context);
        Ok(self.slots[slot].get_or_insert_with(|| InferenceState::new(specs, 1, ctx)))
    }

    /// Runs the graph of `phase` once and returns its only output.
    fn run(
        &self,
        phase: Phase,
        tokens: &[Vec<u32>],
        state: &mut InferenceState,
    ) -> Result<Tensor, RuntimeError> {
        let graph = self.module.graph(phase);
        let mut outs = run_graph(graph, tokens, &self.weights, state, &mut |_, _| {})?;
        if outs.len() != 1 {
            return Err(RuntimeError::Input(format!(
                "the {phase:?} graph has {} outputs, expected the logits only",
                outs.len()
            )));
        }
        Ok(outs.remove(0))
    }
}

impl BatchEngine for CpuBatchEngine {
    fn max_batch(&self) -> usize {
        self.slots.len()
    }

    fn vocab_size(&self) -> usize {
        self.module.config.vocab_size
    }

    fn max_context(&self) -> usize {
        self.max_context
    }

    fn position(&self, slot: SlotId) -> usize {
        match self.slots.get(slot) {
            Some(Some(s)) => s.positions[0],
            _ => 0,
        }
    }

    fn prefill(&mut self, slot: SlotId, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::Input("the prompt is empty".into()));
        }
        let vocab = self.vocab_size();
        let mut state = std::mem::take(self.state(slot)?);
        let result = self.run(Phase::Prompt, &[tokens.to_vec()], &mut state);
        self.slots[slot] = Some(state);
        let logits = result?;
        let n = logits.data.len();
        if n < vocab {
            return Err(RuntimeError::Input(format!(
                "the prompt graph gave {n} logits for a vocabulary of {vocab}"
            )));
        }
        Ok(logits.data[n - vocab..].to_vec())
    }

    fn decode(&mut self, batch: &[(SlotId, u32)]) -> Result<Vec<f32>, RuntimeError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        for (i, &(slot, _)) in batch.iter().enumerate() {
            self.check_slot(slot)?;
            if batch[..i].iter().any(|&(s, _)| s == slot) {
                return Err(RuntimeError::Input(format!(
                    "slot {slot} appears twice in one decode step"
                )));
            }
        }
        let mut parts = Vec::with_capacity(batch.len());
        for &(slot, _) in batch {
            parts.push(std::mem::take(self.state(slot)?));
        }
        let mut state = InferenceState::stack(parts)?;
        let tokens: Vec<Vec<u32>> = batch.iter().map(|&(_, t)| vec![t]).collect();
        let result = self.run(Phase::Decode, &tokens, &mut state);
        for (&(slot, _), row) in batch.iter().zip(state.split()) {
            self.slots[slot] = Some(row);
        }
        Ok(result?.data)
    }

    fn reset(&mut self, slot: SlotId) -> Result<(), RuntimeError> {
        self.check_slot(slot)?;
        if let Some(s) = &mut self.slots[slot] {
            s.reset();
        }
        Ok(())
    }
}
