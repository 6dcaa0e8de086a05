//! Continuous batching for the server: a bounded queue of sequences, and the thread that
//! admits them into free slots of the runtime's [`Batcher`] between steps, steps it, and sends
//! each sequence's tokens to its request. A sequence whose request went away (the receiver was
//! dropped: the client disconnected) is released before the next step. All batching itself is
//! the runtime's; this only schedules.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use zamba2c_runtime::batch::{Batcher, SlotId};
use zamba2c_runtime::generate::text::TextTokenizer;
use zamba2c_runtime::generate::{Continuation, Settings, StopReason};

use super::metrics::Metrics;

/// One sequence to generate (a request with several prompts sends one per prompt).
pub struct Sequence {
    pub prompt: Vec<u32>,
    pub settings: Settings,
    /// Top alternatives to report per token (`Some(0)`: only the chosen token's logprob).
    pub logprobs: Option<usize>,
    /// The choice index within its request.
    pub choice: usize,
    pub events: UnboundedSender<Event>,
    /// When the request arrived (for time to first token).
    pub arrived: Instant,
}

/// A token's log-probability and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// What the scheduler tells a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A generated token and the text it adds (possibly empty: held back).
    Token {
        choice: usize,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// The sequence ended; `text` is the last text held back until now.
    Done {
        choice: usize,
        text: String,
        reason: StopReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The sequence failed (an engine error).
    Failed { choice: usize, message: String },
}

/// Why a submission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue has no room for every sequence of the request.
    QueueFull,
    /// The server is shutting down.
    Closed,
}

struct Queue {
    waiting: VecDeque<Sequence>,
    closed: bool,
}

/// The queue between the handlers and the scheduler thread.
pub struct Scheduler {
    queue: Mutex<Queue>,
    wake: Condvar,
    capacity: usize,
    /// Slots free after the scheduler's last admission: sequences that will get one at once
    /// do not count against the queue.
    free_slots: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Scheduler {
    /// A queue of at most `capacity` sequences waiting for one of `slots` slots.
    pub fn new(capacity: usize, slots: usize, metrics: Arc<Metrics>) -> Self {
        Scheduler {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            capacity,
            free_slots: AtomicUsize::new(slots),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues all of `seqs` or none: refused when more would wait than the free slots and
    /// the queue's capacity hold.
    pub fn submit(&self, seqs: Vec<Sequence>) -> Result<(), Refused> {
        let mut q = self.lock();
        if q.closed {
            return Err(Refused::Closed);
        }
        let room = self.capacity + self.free_slots.load(Ordering::SeqCst);
        if q.waiting.len() + seqs.len() > room {
            return Err(Refused::QueueFull);
        }
        q.waiting.extend(seqs);
        self.metrics.set_queue_depth(q.waiting.len());
        drop(q);
        self.wake.notify_all();
        Ok(())
    }

    /// Records how many slots are free now.
    fn set_free(&self, batch: &Batcher) {
        self.free_slots
            .store(batch.max_batch() - batch.active(), Ordering::SeqCst);
    }

    /// Refuses new work; the thread finishes what is queued and running, then returns.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// The scheduler thread's loop: runs until [`Scheduler::close`] and every sequence is done.
    pub fn run(&self, mut batch: Batcher, tok: &TextTokenizer) {
        let mut running: BTreeMap<SlotId, Running> = BTreeMap::new();
        loop {
            // Admit waiting sequences into free slots; sleep while there is nothing to do.
            {
                let mut q = self.lock();
                loop {
                    while batch.has_free_slot() {
                        let Some(seq) = q.waiting.pop_front() else {
                            break;
                        };
                        if seq.events.is_closed() {
                            self.metrics.disconnect();
                            continue;
                        }
                        match batch.add(seq.prompt.clone(), seq.settings.params, seq.settings.seed)
                        {
                            Ok(slot) => {
                                self.metrics.prompt_tokens(seq.prompt.len());
                                let cont = Continuation::new(&seq.prompt, &seq.settings, Some(tok));
                                running.insert(
                                    slot,
                                    Running {
                                        last: seq.arrived,
                                        first: true,
                                        cont,
                                        seq,
                                    },
                                );
                            }
                            Err(e) => {
                                let _ = seq.events.send(Event::Failed {
                                    choice: seq.choice,
                                    message: e.to_string(),
                                });
                            }
                        }
                    }
                    self.metrics.set_queue_depth(q.waiting.len());
                    self.set_free(&batch);
                    if !running.is_empty() {
                        break;
                    }
                    if q.closed && q.waiting.is_empty() {
                        return;
                    }
                    q = self.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
            }
            // Clients that went away free their slots now.
            let gone: Vec<SlotId> = running
                .iter()
                .filter(|(_, r)| r.seq.events.is_closed())
                .map(|(&s, _)| s)
                .collect();
            for slot in gone {
                batch.release(slot);
                running.remove(&slot);
                self.metrics.disconnect();
            }
            self.set_free(&batch);
            self.metrics.set_active_slots(batch.active());
            if running.is_empty() {
                continue;
            }
            let sampled = match batch.step() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("batched step failed: {e}");
                    for (slot, r) in std::mem::take(&mut running) {
                        batch.release(slot);
                        r.fail(&e.to_string());
                    }
                    continue;
                }
            };
            for s in sampled {
                let Some(r) = running.get_mut(&s.slot) else {
                    continue;
                };
                let now = Instant::now();
                self.metrics
                    .token(r.first, now.duration_since(r.last).as_secs_f64());
                r.first = false;
                r.last = now;
                let logprob = r
                    .seq
                    .logprobs
                    .and_then(|n| token_logprob(batch.logits(s.slot)?, s.token, n, tok));
                let (text, stop) = match r.cont.push(s.token) {
                    Ok(x) => x,
                    Err(e) => {
                        batch.release(s.slot);
                        if let Some(r) = running.remove(&s.slot) {
                            r.fail(&e.to_string());
                        }
                        continue;
                    }
                };
                let _ = r.seq.events.send(Event::Token {
                    choice: r.seq.choice,
                    text,
                    logprob,
                });
                if let Some(reason) = stop {
                    batch.release(s.slot);
                    // Before the client hears it is done (it may send its next request at once).
                    self.set_free(&batch);
                    if let Some(r) = running.remove(&s.slot) {
                        r.finish(reason);
                    }
                }
            }
            self.set_free(&batch);
            self.metrics.set_active_slots(batch.active());
        }
    }
}

/// A sequence in a slot.
struct Running<'t> {
    seq: Sequence,
    cont: Continuation<'t>,
    /// Whether the next token is the first.
    first: bool,
    /// When the last token (or the request) came.
    last: Instant,
}

impl Running<'_> {
    fn finish(self, reason: StopReason) {
        let (choice, prompt_tokens) = (self.seq.choice, self.seq.prompt.len());
        let event = match self.cont.finish(reason) {
            Ok((text, outcome)) => Event::Done {
                choice,
                text,
                reason: outcome.reason,
                prompt_tokens,
                completion_tokens: outcome.generated.len(),
            },
            Err(e) => Event::Failed {
                choice,
                message: e.to_string(),
            },
        };
        let _ = self.seq.events.send(event);
    }

    fn fail(self, message: &str) {
        let _ = self.seq.events.send(Event::Failed {
            choice: self.seq.choice,
            message: message.to_string(),
        });
    }
}

/// The text token `id` adds after other text (its leading space included, which a
/// SentencePiece decoder drops at the start of a string): `decode([a, id])` less `decode([a])`
/// for a plain anchor token `a`.
pub fn token_text(tok: &TextTokenizer, id: u32) -> String {
    let anchor = tok.encode_plain("a").ok().and_then(|v| v.first().copied());
    match anchor {
        Some(a) => {
            let base = tok.decode(&[a]).unwrap_or_default();
            let both = tok.decode(&[a, id]).unwrap_or_default();
            both.strip_prefix(base.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| tok.decode(&[id]).unwrap_or_default())
        }
        None => tok.decode(&[id]).unwrap_or_default(),
    }
}

/// The log-probability of `token` under `logits` (log-softmax in f64) and the `n` most likely
/// tokens (ties by id), with their text as the tokenizer decodes each alone.
pub fn token_logprob(
    logits: &[f32],
    token: u32,
    n: usize,
    tok: &TextTokenizer,
) -> Option<TokenLogprob> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    if token as usize >= logits.len() {
        return None;
    }
    let lp = |i: usize| (logits[i] as f64 - lse) as f32;
    let text = |id: u32| token_text(tok, id);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let n = n.min(order.len());
    if n > 0 {
        order.select_nth_unstable_by(n - 1, |&a, &b| {
            logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
        });
        order.truncate(n);
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    } else {
        order.clear();
    }
    Some(TokenLogprob {
        token: text(token),
        logprob: lp(token as usize),
        top: order.iter().map(|&i| (text(i as u32), lp(i))).collect(),
    })
}
