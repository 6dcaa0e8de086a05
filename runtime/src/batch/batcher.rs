//! [`Batcher`]: sequences in the slots of a [`BatchEngine`], advanced one step at a time. A step
//! decodes every sequence that has a sampled token waiting (one engine call for all of them)
//! and then runs up to `prefill_chunk` prompt tokens of the sequences still reading their
//! prompts, oldest first, so a long new prompt is spread over several steps and never stalls
//! the running sequences for longer than one chunk. A prompt is split only at multiples of the
//! engine's [`BatchEngine::prefill_align`] from its start, so how the other sequences share a
//! step's prompt tokens never changes what a sequence computes.

use crate::batch::{BatchEngine, SlotId};
use crate::generate::sampling::{Sampler, SamplingParams};
use crate::RuntimeError;

/// Prompt tokens run per step unless told otherwise (raised to the engine's
/// [`BatchEngine::prefill_align`]: 512 on the CUDA engine by default).
pub const DEFAULT_PREFILL_CHUNK: usize = 256;

/// A token a step sampled for the sequence in `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampled {
    pub slot: SlotId,
    pub token: u32,
    /// Whether this is the sequence's first token (sampled after the last prompt chunk).
    pub first: bool,
}

/// One sequence in a slot.
struct Sequence {
    prompt: Vec<u32>,
    /// Prompt tokens already run.
    prefilled: usize,
    sampler: Sampler,
    /// The last sampled token: the next step decodes it.
    pending: Option<u32>,
    /// The logits the last token was sampled from.
    logits: Logits,
    /// Admission order (prompts are chunked oldest first).
    admitted: u64,
}

/// Where a sequence's last logits are: a decode step's logits stay in one buffer and each
/// sequence keeps its row index (a 64-row step of a 32000-word vocabulary is 8 MB, copied once
/// per row otherwise); a prompt's last row is the sequence's own.
enum Logits {
    None,
    /// Row `r` of [`Batcher::step_logits`].
    Row(usize),
    Own(Vec<f32>),
}

/// Row `r` of a step's `[rows, vocab]` logits.
fn logits_row(step: &[f32], r: usize, vocab: usize) -> Option<&[f32]> {
    step.get(r * vocab..(r + 1) * vocab)
}

/// Sequences in the slots of a [`BatchEngine`]: add, step, read, release.
pub struct Batcher {
    engine: Box<dyn BatchEngine>,
    slots: Vec<Option<Sequence>>,
    prefill_chunk: usize,
    /// [`BatchEngine::prefill_align`]: prompts are split only at its multiples.
    align: usize,
    admitted: u64,
    /// The logits of the last decode step, `[rows, vocab]`.
    step_logits: Vec<f32>,
    /// Whether each sequence's logits stay readable after a decode step ([`Batcher::logits`]).
    keep_logits: bool,
}

impl Batcher {
    /// Drives `engine`, running at most `prefill_chunk` prompt tokens per step (rounded down to
    /// a multiple of the engine's [`BatchEngine::prefill_align`], at least one).
    pub fn new(engine: Box<dyn BatchEngine>, prefill_chunk: usize) -> Self {
        let slots = (0..engine.max_batch()).map(|_| None).collect();
        let align = engine.prefill_align().max(1);
        Batcher {
            engine,
            slots,
            prefill_chunk: prefill_chunk.max(align) / align * align,
            align,
            admitted: 0,
            step_logits: Vec::new(),
            keep_logits: true,
        }
    }

    /// Whether [`Batcher::logits`] gives each sequence's last logits after a decode step
    /// (default true). Off, a step whose sequences all decode greedily with no penalty asks the
    /// engine for their tokens only ([`BatchEngine::decode_greedy`]: on the CUDA engine one id
    /// a row from the device instead of the logits, docs/KERNELS.md "decode_rows"); those
    /// sequences then have no logits to read.
    pub fn set_keep_logits(&mut self, keep: bool) {
        self.keep_logits = keep;
    }

    /// The engine underneath.
    pub fn engine(&self) -> &dyn BatchEngine {
        self.engine.as_ref()
    }

    /// The number of slots.
    pub fn max_batch(&self) -> usize {
        self.slots.len()
    }

    /// Slots holding a sequence.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Whether a sequence can be added now.
    pub fn has_free_slot(&self) -> bool {
        self.slots.iter().any(Option::is_none)
    }

    /// Whether `slot` holds a sequence.
    pub fn is_active(&self, slot: SlotId) -> bool {
        matches!(self.slots.get(slot), Some(Some(_)))
    }

    /// Checks a prompt against the engine: not empty, every id in the vocabulary, no longer
    /// than the context. The errors say what is wrong without naming where the prompt came
    /// from; callers add that.
    pub fn check_prompt(&self, prompt: &[u32]) -> Result<(), RuntimeError> {
        let (vocab, ctx) = (self.engine.vocab_size(), self.engine.max_context());
        if prompt.is_empty() {
            return Err(RuntimeError::Input("the prompt is empty".into()));
        }
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(RuntimeError::Input(format!(
                "token id {id} is out of range: the vocabulary has {vocab} tokens (ids 0..{})",
                vocab.saturating_sub(1)
            )));
        }
        if prompt.len() > ctx {
            return Err(RuntimeError::Input(format!(
                "the prompt is {} tokens, longer than the context of {ctx} tokens",
                prompt.len()
            )));
        }
        Ok(())
    }

    /// Puts a new sequence in the lowest free slot: its prompt runs over the next steps, then
    /// it is sampled with `params` and a generator seeded with `seed`. Refused when every slot
    /// is taken ([`RuntimeError::NoFreeSlot`]) or the prompt does not fit the engine.
    pub fn add(
        &mut self,
        prompt: Vec<u32>,
        params: SamplingParams,
        seed: u64,
    ) -> Result<SlotId, RuntimeError> {
        self.check_prompt(&prompt)?;
        params.validate().map_err(RuntimeError::Input)?;
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(RuntimeError::NoFreeSlot {
                max_batch: self.slots.len(),
            })?;
        self.engine.reset(slot)?;
        let sampler = Sampler::new(params, seed, &prompt);
        self.admitted += 1;
        self.slots[slot] = Some(Sequence {
            prompt,
            prefilled: 0,
            sampler,
            pending: None,
            logits: Logits::None,
            admitted: self.admitted,
        });
        Ok(slot)
    }

    /// Frees `slot` (its sequence is dropped, its state reset when the slot is reused).
    /// Returns whether it held a sequence.
    pub fn release(&mut self, slot: SlotId) -> bool {
        self.slots.get_mut(slot).and_then(Option::take).is_some()
    }

    /// The logits row the sequence in `slot` last sampled from (none before its first token).
    pub fn logits(&self, slot: SlotId) -> Option<&[f32]> {
        let vocab = self.engine.vocab_size();
        match self.slots.get(slot) {
            Some(Some(s)) => match &s.logits {
                Logits::None => None,
                Logits::Row(r) => logits_row(&self.step_logits, *r, vocab),
                Logits::Own(v) => Some(v),
            },
            _ => None,
        }
    }

    /// Whether the sequence in `slot` has run its whole prompt (false for an empty slot).
    pub fn is_prefilled(&self, slot: SlotId) -> bool {
        matches!(self.slots.get(slot), Some(Some(s)) if s.prefilled == s.prompt.len())
    }

    /// Tokens the state of `slot` holds.
    pub fn position(&self, slot: SlotId) -> usize {
        self.engine.position(slot)
    }

    /// Whether a step would do anything: some sequence has a prompt chunk to run or a token to
    /// decode with room left in its context.
    pub fn has_work(&self) -> bool {
        let ctx = self.engine.max_context();
        self.slots.iter().enumerate().any(|(slot, s)| match s {
            Some(s) if s.prefilled < s.prompt.len() => true,
            Some(s) => s.pending.is_some() && self.engine.position(slot) < ctx,
            None => false,
        })
    }

    /// Decodes `rows` through the logits and samples each row's token with its sequence's
    /// sampler; the logits become the step's buffer ([`Batcher::step_logits`]), row `r` for
    /// the `r`-th of `rows`.
    fn sample_step(
        &mut self,
        rows: &[(SlotId, u32)],
        vocab: usize,
    ) -> Result<Vec<u32>, RuntimeError> {
        let logits = self.engine.decode(rows)?;
        super::check_step_logits(rows.len(), logits.len(), vocab)?;
        // A sequence still pointing into the previous step's logits that is not in this step
        // (its context is full) keeps its row as its own before the buffer is replaced.
        let left_out = self
            .slots
            .iter_mut()
            .enumerate()
            .filter(|(slot, _)| !rows.iter().any(|&(sl, _)| sl == *slot))
            .filter_map(|(_, s)| s.as_mut());
        for s in left_out {
            if let Logits::Row(r) = s.logits {
                let own = logits_row(&self.step_logits, r, vocab).map(<[f32]>::to_vec);
                s.logits = own.map_or(Logits::None, Logits::Own);
            }
        }
        let mut tokens = Vec::with_capacity(rows.len());
        for (&(slot, _), row) in rows.iter().zip(logits.chunks_exact(vocab)) {
            if let Some(s) = self.slots[slot].as_mut() {
                tokens.push(s.sampler.next(row));
            }
        }
        self.step_logits = logits;
        Ok(tokens)
    }

    /// One step: decodes the waiting token of every sequence that has one (a sequence whose
    /// state holds the whole context is skipped: release it), then runs up to
    /// `prefill_chunk` prompt tokens, and samples a token for every sequence that got logits.
    /// The tokens come back in slot order for decodes, then in prompt order.
    pub fn step(&mut self) -> Result<Vec<Sampled>, RuntimeError> {
        let ctx = self.engine.max_context();
        let vocab = self.engine.vocab_size();
        let mut out = Vec::new();

        let rows: Vec<(SlotId, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| {
                let token = s.as_ref()?.pending?;
                (self.engine.position(slot) < ctx).then_some((slot, token))
            })
            .collect();
        if !rows.is_empty() {
            // Greedy tokens without the logits when nobody will read them.
            let tokens_only = !self.keep_logits
                && rows.iter().all(|&(slot, _)| {
                    self.slots[slot]
                        .as_ref()
                        .is_some_and(|s| s.sampler.params.is_argmax())
                });
            let tokens = if tokens_only {
                let tokens = self.engine.decode_greedy(&rows)?;
                if tokens.len() != rows.len() {
                    return Err(RuntimeError::Input(format!(
                        "a decode step of {} sequences gave {} tokens",
                        rows.len(),
                        tokens.len()
                    )));
                }
                tokens
            } else {
                self.sample_step(&rows, vocab)?
            };
            for (r, (&(slot, _), token)) in rows.iter().zip(tokens).enumerate() {
                if let Some(s) = self.slots[slot].as_mut() {
                    if tokens_only {
                        s.sampler.accept(token);
                    }
                    s.logits = if tokens_only {
                        Logits::None
                    } else {
                        Logits::Row(r)
                    };
                    s.pending = Some(token);
                    out.push(Sampled {
                        slot,
                        token,
                        first: false,
                    });
                }
            }
        }

        let mut prefilling: Vec<(u64, SlotId)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| {
                let s = s.as_ref()?;
                (s.prefilled < s.prompt.len()).then_some((s.admitted, slot))
            })
            .collect();
        prefilling.sort();
        let mut budget = self.prefill_chunk;
        for (_, slot) in prefilling {
            if budget == 0 {
                break;
            }
            let Some(s) = self.slots[slot].as_mut() else {
                continue;
            };
            // The rest of the prompt if it fits, else whole multiples of `align` (a later,
            // shorter prompt may still finish in what is left).
            let rest = s.prompt.len() - s.prefilled;
            let n = if rest <= budget {
                rest
            } else {
                budget / self.align * self.align
            };
            if n == 0 {
                continue;
            }
            let chunk = &s.prompt[s.prefilled..s.prefilled + n];
            let row = self.engine.prefill(slot, chunk)?;
            s.prefilled += n;
            budget -= n;
            if s.prefilled == s.prompt.len() {
                let token = s.sampler.next(&row);
                s.logits = Logits::Own(row);
                s.pending = Some(token);
                out.push(Sampled {
                    slot,
                    token,
                    first: true,
                });
            }
        }
        Ok(out)
    }
}
