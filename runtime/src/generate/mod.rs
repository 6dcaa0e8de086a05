//! Generating a continuation, shared by `zamba2c run` and the server: sampling
//! ([`sampling`]), text in and out ([`text`]), what one sequence has generated and why it stops
//! ([`Continuation`]), and the one-sequence loop over an [`Engine`] ([`generate`]). The batched
//! loop is [`crate::batch::Batcher`] feeding one [`Continuation`] per sequence.

pub mod chat;
pub mod sampling;
pub mod text;

use std::time::Instant;

use zamba2c_ir::Plan;

use crate::{Engine, RuntimeError};
use sampling::{Sampler, SamplingParams};
use text::{StopFilter, StreamDecoder, TextTokenizer};

/// What a generation is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub params: SamplingParams,
    pub seed: u64,
    /// The most tokens to generate (EOS included).
    pub max_new_tokens: usize,
    /// Tokens the state may hold: generation stops when the next decode would exceed it.
    pub max_context: usize,
    /// End-of-sequence ids (generation stops after one, which counts as generated).
    pub eos: Vec<u32>,
    pub ignore_eos: bool,
    /// Stop strings: the text ends before the first match.
    pub stops: Vec<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    Length,
    Stop,
    Context,
    /// The reader went away (stdout closed, a client disconnected).
    Closed,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::Length => "length",
            StopReason::Stop => "stop",
            StopReason::Context => "context",
            StopReason::Closed => "closed",
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub generated: Vec<u32>,
    /// The text generated (cut before a stop string); none without a tokenizer.
    pub text: Option<String>,
    pub reason: StopReason,
    /// From the start until the first token was chosen.
    pub prompt_s: f64,
    /// From the first token until the end.
    pub decode_s: f64,
}

/// Where streamed text goes.
pub trait TextSink {
    type Error: From<RuntimeError>;
    /// Shows `text` (possibly empty).
    fn write(&mut self, text: &str) -> Result<(), Self::Error>;
    /// Whether the reader went away (generation stops then).
    fn closed(&self) -> bool;
}

/// What one sequence has generated so far: the ids, the text (detokenized as it streams, stop
/// strings held back), and the checks that end it (EOS, the token limit, a stop string, the
/// context). The caller chooses the tokens and feeds them in with [`Continuation::push`].
pub struct Continuation<'t> {
    prompt_len: usize,
    max_new_tokens: usize,
    max_context: usize,
    eos: Vec<u32>,
    ignore_eos: bool,
    decoder: Option<StreamDecoder<'t>>,
    filter: StopFilter,
    generated: Vec<u32>,
    started: Instant,
    first_token: Option<Instant>,
}

impl<'t> Continuation<'t> {
    /// A continuation of `prompt`; with a tokenizer its text is tracked. The clock for
    /// [`Outcome::prompt_s`] starts now.
    pub fn new(prompt: &[u32], s: &Settings, tok: Option<&'t TextTokenizer>) -> Self {
        Continuation {
            prompt_len: prompt.len(),
            max_new_tokens: s.max_new_tokens,
            max_context: s.max_context,
            eos: s.eos.clone(),
            ignore_eos: s.ignore_eos,
            decoder: tok.map(|t| StreamDecoder::new(t, prompt)),
            filter: StopFilter::new(&s.stops),
            generated: Vec::new(),
            started: Instant::now(),
            first_token: None,
        }
    }

    /// The tokens generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// Takes the next token: returns the text it adds (after the stop filter; possibly empty)
    /// and, when generation ends with it, why.
    pub fn push(&mut self, next: u32) -> Result<(String, Option<StopReason>), RuntimeError> {
        self.first_token.get_or_insert_with(Instant::now);
        self.generated.push(next);
        tracing::debug!(token = next, "generated");
        let is_eos = !self.ignore_eos && self.eos.contains(&next);
        let mut shown = String::new();
        // The EOS token counts as generated (as in HF generate) but is never shown as text.
        if let (Some(d), false) = (self.decoder.as_mut(), is_eos) {
            shown = self.filter.push(&d.push(next)?);
            if self.filter.stopped() {
                return Ok((shown, Some(StopReason::Stop)));
            }
        }
        if is_eos {
            return Ok((shown, Some(StopReason::Eos)));
        }
        if self.generated.len() >= self.max_new_tokens {
            return Ok((shown, Some(StopReason::Length)));
        }
        // The state holds the prompt and every generated token but this one: full when that
        // is max_context, i.e. prompt + generated > max_context.
        if self.prompt_len + self.generated.len() > self.max_context {
            return Ok((shown, Some(StopReason::Context)));
        }
        Ok((shown, None))
    }

    /// Ends the generation for `reason`: returns the text held back until now (an incomplete
    /// character, a possible start of a stop string) and the outcome.
    pub fn finish(mut self, reason: StopReason) -> Result<(String, Outcome), RuntimeError> {
        let mut tail = String::new();
        // The tail held back by the detokenizer (an incomplete character) or the stop filter.
        if let Some(d) = self.decoder.as_mut() {
            if !self.filter.stopped() {
                tail = self.filter.push(&d.finish()?);
                if !self.filter.stopped() {
                    tail += &self.filter.finish();
                }
            }
        }
        let reason = if self.filter.stopped() {
            StopReason::Stop
        } else {
            reason
        };
        let first = self.first_token.unwrap_or(self.started);
        let outcome = Outcome {
            text: self
                .decoder
                .as_ref()
                .map(|_| self.filter.text().to_string()),
            generated: self.generated,
            reason,
            prompt_s: (first - self.started).as_secs_f64(),
            decode_s: first.elapsed().as_secs_f64(),
        };
        Ok((tail, outcome))
    }
}

/// Runs one prompt on `engine` (from its current state): prefill, then sample and decode until
/// a stop. Streams the text to `sink`. `source` names the prompt in errors.
pub fn generate<S: TextSink>(
    engine: &mut dyn Engine,
    source: &str,
    prompt: &[u32],
    s: &Settings,
    tok: Option<&TextTokenizer>,
    sink: Option<&mut S>,
) -> Result<Outcome, S::Error> {
    let sampler = Sampler::new(s.params, s.seed, prompt);
    generate_with(engine, source, prompt, sampler, s, tok, sink)
}

/// [`generate`] with the caller's sampler (its seed and the history its repetition penalty
/// sees: a chat turn's is the whole conversation, not only the tokens prefilled now).
pub fn generate_with<S: TextSink>(
    engine: &mut dyn Engine,
    source: &str,
    prompt: &[u32],
    mut sampler: Sampler,
    s: &Settings,
    tok: Option<&TextTokenizer>,
    mut sink: Option<&mut S>,
) -> Result<Outcome, S::Error> {
    let vocab = engine.vocab_size();
    let mut cont = Continuation::new(prompt, s, tok);

    let logits = engine.prefill_last(prompt).map_err(|e| {
        e.context(format!(
            "{source}: running the prompt ({} tokens)",
            prompt.len()
        ))
    })?;
    if logits.len() < vocab {
        return Err(short_logits(logits.len(), vocab).into());
    }
    let mut next = sampler.next(&logits[logits.len() - vocab..]);
    let reason = loop {
        let (shown, stop) = cont.push(next)?;
        if let Some(out) = sink.as_deref_mut() {
            out.write(&shown)?;
            if out.closed() {
                break StopReason::Closed;
            }
        }
        if let Some(reason) = stop {
            break reason;
        }
        let row = engine.decode_step(next).map_err(|e| {
            e.context(format!(
                "{source}: decoding token {} (position {})",
                cont.generated().len(),
                engine.position()
            ))
        })?;
        if row.len() < vocab {
            return Err(short_logits(row.len(), vocab).into());
        }
        next = sampler.next(&row[row.len() - vocab..]);
    };
    let (tail, outcome) = cont.finish(reason)?;
    if let Some(out) = sink {
        out.write(&tail)?;
    }
    Ok(outcome)
}

fn short_logits(got: usize, vocab: usize) -> RuntimeError {
    RuntimeError::Input(format!(
        "the engine returned {got} logits for a vocabulary of {vocab}"
    ))
}

/// The end-of-sequence ids: `eos_token_id` of the plan's generation_config.json (a number or
/// a list) when it has one, else the model config's. (Moved from the CLI.)
pub fn eos_ids(plan: &Plan) -> Result<Vec<u32>, RuntimeError> {
    use serde_json::Value;
    let path = plan.dir.join("generation_config.json");
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| RuntimeError::Input(format!("{}: cannot read: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| RuntimeError::Input(format!("{}: malformed JSON: {e}", path.display())))?;
        let bad = || {
            RuntimeError::Input(format!(
                "{}: eos_token_id: expected a token id or a list of token ids",
                path.display()
            ))
        };
        match v.get("eos_token_id") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                return items
                    .iter()
                    .map(|x| x.as_u64().map(|i| i as u32).ok_or_else(bad))
                    .collect();
            }
            Some(x) => return Ok(vec![x.as_u64().ok_or_else(bad)? as u32]),
        }
    }
    Ok(plan
        .module
        .config
        .eos_token_id
        .filter(|&i| i >= 0)
        .map(|i| vec![i as u32])
        .unwrap_or_default())
}
