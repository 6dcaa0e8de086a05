//! Many sequences at once (issue 12): [`BatchEngine`], the slots API a backend implements
//! (each slot one sequence's conv/SSM state and KV cache; one decode step over any set of
//! slots, whatever each one's position), and [`Batcher`], the loop a scheduler drives on top
//! of it (admit a prompt, step, read each sequence's logits and sampled token, release).
//!
//! The CPU interpreter ([`crate::cpu::CpuBatchEngine`]) and the CUDA engine
//! ([`crate::cuda::CudaEngine`], slots on the device) implement the slots API; any
//! one-sequence [`Engine`] serves as a batch of one through [`SingleSlot`].

mod batcher;
mod bench;

pub use batcher::{Batcher, Sampled, DEFAULT_PREFILL_CHUNK};
pub use bench::{bench, BatchBenchReport};

use crate::generate::sampling::argmax;
use crate::{Engine, RuntimeError};

/// A slot index, `0 .. max_batch`.
pub type SlotId = usize;

/// A backend that holds up to [`BatchEngine::max_batch`] sequences, one per slot, each with its
/// own recurrent state and KV cache. Slots are independent: what one slot computes never
/// depends on which other slots run in the same call.
pub trait BatchEngine {
    /// The number of slots.
    fn max_batch(&self) -> usize;
    /// The vocabulary size (width of a logits row).
    fn vocab_size(&self) -> usize;
    /// Tokens each slot's state may hold.
    fn max_context(&self) -> usize;
    /// Tokens processed by `slot` since its last reset.
    fn position(&self, slot: SlotId) -> usize;
    /// Runs `tokens` (a prompt, or the next chunk of one) through the prompt graph from
    /// `slot`'s state and returns the logits of the last token, `[vocab]`.
    fn prefill(&mut self, slot: SlotId, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError>;
    /// One decode step for every `(slot, token)` pair (distinct slots, each at its own
    /// position), run together; returns the logits `[n, vocab]` in the order given.
    fn decode(&mut self, batch: &[(SlotId, u32)]) -> Result<Vec<f32>, RuntimeError>;
    /// Clears `slot`'s state for a new sequence.
    fn reset(&mut self, slot: SlotId) -> Result<(), RuntimeError>;
    /// Prompt tokens at whose multiples, counted from a sequence's start, its prompt may be
    /// split across [`BatchEngine::prefill`] calls without changing what it computes: the CUDA
    /// engine's prompt launch size (a prompt alone runs in launches of that many tokens, so a
    /// prompt split there runs the same launches in a batch); 1 where any split gives the same
    /// results.
    fn prefill_align(&self) -> usize {
        1
    }
    /// [`BatchEngine::decode`], returning each row's greedy token (the first index of its
    /// largest logit, [`argmax`]) instead of its logits. A backend that can pick them where
    /// the logits are (the CUDA engine, on the device) saves moving the logits.
    fn decode_greedy(&mut self, batch: &[(SlotId, u32)]) -> Result<Vec<u32>, RuntimeError> {
        greedy_tokens(&self.decode(batch)?, batch.len(), self.vocab_size())
    }
}

/// Each row's greedy token ([`argmax`]) of a decode step's `rows × vocab` logits.
pub(crate) fn greedy_tokens(
    logits: &[f32],
    rows: usize,
    vocab: usize,
) -> Result<Vec<u32>, RuntimeError> {
    check_step_logits(rows, logits.len(), vocab)?;
    Ok(logits.chunks_exact(vocab.max(1)).map(argmax).collect())
}

/// That a decode step of `rows` sequences gave `rows × vocab` logits (`len`).
fn check_step_logits(rows: usize, len: usize, vocab: usize) -> Result<(), RuntimeError> {
    if len == rows * vocab {
        return Ok(());
    }
    Err(RuntimeError::Input(format!(
        "a decode step of {rows} sequences gave {len} logits, expected {rows} x {vocab}"
    )))
}

/// A one-sequence [`Engine`] as a [`BatchEngine`] of one slot.
pub struct SingleSlot<E> {
    engine: E,
    max_context: usize,
}

impl<E: Engine> SingleSlot<E> {
    /// Wraps `engine`, whose KV room is `max_context` tokens.
    pub fn new(engine: E, max_context: usize) -> Self {
        SingleSlot {
            engine,
            max_context,
        }
    }

    fn check(&self, slot: SlotId) -> Result<(), RuntimeError> {
        if slot == 0 {
            Ok(())
        } else {
            Err(RuntimeError::NoSuchSlot { slot, max_batch: 1 })
        }
    }
}

impl<E: Engine> BatchEngine for SingleSlot<E> {
    fn max_batch(&self) -> usize {
        1
    }

    fn vocab_size(&self) -> usize {
        self.engine.vocab_size()
    }

    fn max_context(&self) -> usize {
        self.max_context
    }

    fn position(&self, _slot: SlotId) -> usize {
        self.engine.position()
    }

    fn prefill(&mut self, slot: SlotId, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        self.check(slot)?;
        self.engine.prefill_last(tokens)
    }

    fn decode(&mut self, batch: &[(SlotId, u32)]) -> Result<Vec<f32>, RuntimeError> {
        match batch {
            [] => Ok(Vec::new()),
            &[(slot, token)] => {
                self.check(slot)?;
                self.engine.decode_step(token)
            }
            _ => Err(RuntimeError::Input(format!(
                "{} sequences in one decode step for an engine of one slot",
                batch.len()
            ))),
        }
    }

    fn reset(&mut self, slot: SlotId) -> Result<(), RuntimeError> {
        self.check(slot)?;
        self.engine.reset();
        Ok(())
    }
}
