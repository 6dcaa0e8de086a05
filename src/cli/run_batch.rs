//! `zamba2c run --prompts-file F --max-batch B`: the prompts as one batch through the
//! runtime's [`Batcher`] (each prompt joins when a slot frees up and leaves when it stops),
//! one JSON object per prompt in input order, each the same as that prompt run alone.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::json;
use zamba2c_ir::Plan;
use zamba2c_runtime::batch::{Batcher, SlotId, DEFAULT_PREFILL_CHUNK};
use zamba2c_runtime::generate::{Continuation, Outcome, Settings, StopReason, TextSink};

use super::engine::open_batch_engine;
use super::run::{fmt_ms, fmt_rate, fmt_tokens, result_json, Job, RunArgs, Sink};
use super::text::TextTokenizer;

/// Runs `jobs` in batches of up to `--max-batch` and prints each result as soon as every
/// earlier one is printed.
pub(super) fn run_batched(
    plan: &Plan,
    a: &RunArgs,
    jobs: &[Job],
    settings: &Settings,
    tok: Option<&TextTokenizer>,
) -> Result<()> {
    // Batch-invariant: each prompt's output is the one it gives alone (issue 12; docs/KERNELS.md
    // "Batch invariance").
    let engine = open_batch_engine(plan, a.device, a.max_batch, settings.max_context, true)?;
    let mut batch = Batcher::new(engine, DEFAULT_PREFILL_CHUNK);
    let mut sink = Sink {
        out: std::io::stdout(),
        closed: false,
    };
    let t0 = Instant::now();
    let mut running: BTreeMap<SlotId, (usize, Continuation)> = BTreeMap::new();
    let mut done: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let (mut next_job, mut printed) = (0, 0);
    while printed < jobs.len() && !sink.closed {
        while next_job < jobs.len() && batch.has_free_slot() {
            let job = &jobs[next_job];
            let slot = batch
                .add(job.ids.clone(), settings.params, settings.seed)
                .map_err(|e| e.context(job.source.clone()))?;
            running.insert(slot, (next_job, Continuation::new(&job.ids, settings, tok)));
            next_job += 1;
        }
        if !batch.has_work() {
            bail!(
                "the batch stalled with {} prompts running (a sequence neither stopped nor advanced)",
                running.len()
            );
        }
        for s in batch.step()? {
            let Some((_, cont)) = running.get_mut(&s.slot) else {
                continue;
            };
            let (_, stop) = cont.push(s.token)?;
            if let Some(reason) = stop {
                batch.release(s.slot);
                if let Some((index, cont)) = running.remove(&s.slot) {
                    done[index] = Some(cont.finish(reason)?.1);
                }
            }
        }
        while let Some(Some(o)) = done.get(printed) {
            let job = &jobs[printed];
            if o.reason == StopReason::Context {
                tracing::warn!(
                    "{}: stopped after {} tokens: the context is full ({} tokens, the plan's max_position_embeddings)",
                    job.source,
                    o.generated.len(),
                    settings.max_context
                );
            }
            let mut obj = result_json(job, o, settings);
            obj["index"] = json!(printed);
            obj["prompt"] = json!(job.text);
            sink.write(&format!("{obj}\n"))?;
            printed += 1;
        }
    }
    if !a.quiet {
        let wall = t0.elapsed().as_secs_f64();
        let prompt: usize = jobs.iter().map(|j| j.ids.len()).sum();
        let generated: usize = done.iter().flatten().map(|o| o.generated.len()).sum();
        // Not eprintln!: a closed stderr is no reason to panic.
        let _ = writeln!(
            std::io::stderr(),
            "{} prompts in batches of up to {} | prompt: {} | generated: {} | {} wall{}",
            jobs.len(),
            a.max_batch,
            fmt_tokens(prompt),
            fmt_tokens(generated),
            fmt_ms(wall),
            fmt_rate(generated, wall),
        );
    }
    Ok(())
}
