//! zamba2c's runtime: loads a compiled plan and runs prompt processing and decoding, on the
//! CPU interpreter (the reference meaning of every op) or on an NVIDIA GPU.

pub mod batch;
pub mod cpu;
pub mod cuda;
pub mod generate;
pub mod tensor;

pub use tensor::Tensor;

/// A runtime error: names the plan file, op or kernel involved.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Plan(#[from] zamba2c_ir::PlanError),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Device(String),
    /// A tokenizer file that cannot be read or used; the message names the file.
    #[error("{0}")]
    Tokenizer(String),
    /// A chat template that cannot be read, compiled or rendered (or that refused the
    /// conversation through `raise_exception`).
    #[error("{0}")]
    ChatTemplate(String),
    /// A sequence was offered to a batch engine whose slots are all taken.
    #[error("all {max_batch} sequence slots are in use")]
    NoFreeSlot { max_batch: usize },
    /// A slot index outside the batch engine.
    #[error("sequence slot {slot} does not exist (the engine has {max_batch})")]
    NoSuchSlot { slot: usize, max_batch: usize },
    /// Something this backend cannot do yet (the message says what, and what works instead).
    #[error("{0}")]
    Unsupported(String),
    /// An error with what was being done when it happened (e.g. which prompt).
    #[error("{context}: {inner}")]
    Context {
        context: String,
        inner: Box<RuntimeError>,
    },
}

impl RuntimeError {
    /// This error with `context` (what was being done) in front.
    pub fn context(self, context: impl Into<String>) -> Self {
        RuntimeError::Context {
            context: context.into(),
            inner: Box::new(self),
        }
    }
}

/// One sequence's inference on some backend (batch 1 at the CLI; the plan keeps `B`).
pub trait Engine {
    /// Runs the prompt graph over `tokens` from the current state (empty or cached) and
    /// returns the logits at every position, `[T, vocab]` row-major.
    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError>;
    /// As [`Engine::prefill`], but returns only the last position's logits, `[vocab]`: what
    /// generation needs, and a backend may skip copying the other rows off the device.
    fn prefill_last(&mut self, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let vocab = self.vocab_size();
        let mut logits = self.prefill(tokens)?;
        if logits.len() < vocab {
            return Err(RuntimeError::Input(format!(
                "the engine returned {} logits for a vocabulary of {vocab}",
                logits.len()
            )));
        }
        Ok(logits.split_off(logits.len() - vocab))
    }
    /// Runs the decode graph for one token and returns its logits, `[vocab]`.
    fn decode_step(&mut self, token: u32) -> Result<Vec<f32>, RuntimeError>;
    /// Clears all recurrent state and KV caches.
    fn reset(&mut self);
    /// Tokens processed since the last reset.
    fn position(&self) -> usize;
    /// The vocabulary size (width of a logits row).
    fn vocab_size(&self) -> usize;
}
