//! The host's share of a batched decode step: a [`Batcher`] over an engine that does no work
//! but hand back `rows × vocab` logits (as the CUDA engine's download does), so what is timed
//! is the batcher's own work per step — sampling every row and keeping its logits — for 64
//! rows of the 32000-word vocabulary by default (docs/PERFORMANCE.md).
//!
//!     cargo run --release -p zamba2c-runtime --example batch_host_overhead [ROWS] [VOCAB]

use std::time::Instant;

use zamba2c_runtime::batch::{BatchEngine, Batcher, SlotId};
use zamba2c_runtime::generate::sampling::{argmax, SamplingParams};
use zamba2c_runtime::RuntimeError;

/// Positions only; every call returns copies of one fixed logits buffer.
struct Logits {
    rows: usize,
    vocab: usize,
    pos: Vec<usize>,
    buf: Vec<f32>,
}

impl BatchEngine for Logits {
    fn max_batch(&self) -> usize {
        self.rows
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn max_context(&self) -> usize {
        1 << 20
    }
    fn position(&self, s: SlotId) -> usize {
        self.pos[s]
    }
    fn prefill(&mut self, s: SlotId, t: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        self.pos[s] += t.len();
        Ok(self.buf[..self.vocab].to_vec())
    }
    fn decode(&mut self, b: &[(SlotId, u32)]) -> Result<Vec<f32>, RuntimeError> {
        for &(s, _) in b {
            self.pos[s] += 1;
        }
        Ok(self.buf[..b.len() * self.vocab].to_vec())
    }
    fn reset(&mut self, s: SlotId) -> Result<(), RuntimeError> {
        self.pos[s] = 0;
        Ok(())
    }
}

fn main() -> Result<(), RuntimeError> {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (rows, vocab) = (arg(1, 64).max(1), arg(2, 32000).max(1));
    const STEPS: usize = 50;
    let buf: Vec<f32> = (0..rows * vocab)
        .map(|i| (i.wrapping_mul(2654435761) % 1000) as f32 * 1e-3)
        .collect();
    let t = Instant::now();
    let mut picked = 0u64;
    for _ in 0..STEPS {
        for r in buf.chunks_exact(vocab) {
            picked += u64::from(argmax(r));
        }
    }
    let argmax_ms = t.elapsed().as_secs_f64() * 1e3 / STEPS as f64;
    let t = Instant::now();
    for _ in 0..STEPS {
        std::hint::black_box(buf.to_vec());
    }
    let copy_ms = t.elapsed().as_secs_f64() * 1e3 / STEPS as f64;
    let engine = Logits {
        rows,
        vocab,
        pos: vec![0; rows],
        buf,
    };
    let mut b = Batcher::new(Box::new(engine), usize::MAX);
    for _ in 0..rows {
        b.add(vec![1, 2, 3], SamplingParams::default(), 0)?;
    }
    b.step()?;
    let t = Instant::now();
    for _ in 0..STEPS {
        b.step()?;
    }
    let step_ms = t.elapsed().as_secs_f64() * 1e3 / STEPS as f64;
    println!(
        "{rows} rows x {vocab}: batcher step {step_ms:.3} ms (of which the engine's logits copy ~{copy_ms:.3} ms); greedy argmax of the rows {argmax_ms:.3} ms ({picked})"
    );
    Ok(())
}
