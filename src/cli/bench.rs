//! `zamba2c bench PLAN --device cuda`: time to first token, decode ms/token, peak memory; with
//! `--batch B`, B sequences at once: generated tokens/s, ms per step, TTFT under load.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use zamba2c_ir::Plan;

use zamba2c_runtime::batch::DEFAULT_PREFILL_CHUNK;
use zamba2c_runtime::cuda::CudaOptions;
use zamba2c_runtime::Engine;

use super::bench_table::{peak_rss_bytes, summarize, table, MAX_REPEAT};
use super::engine::{open_batch_engine, open_engine, Device, MAX_BATCH};
use super::limits::{check_lengths, check_prompt_chunk};
use super::output::{print_stdout, OutputFile};

/// Measure prompt processing and decoding on random token ids.
///
/// On CUDA, decode ms/token is the median over steps timed with CUDA events; on the CPU it is
/// the median of wall-clock steps. With --batch B, B prompts arrive together and each
/// generates --gen-len tokens through the batched engine (prompts chunked between decode
/// steps); the report has generated tokens/s (prompts included), ms per decode step, and the
/// time to first token of the sequences under that load (wall clock).
///
/// Examples:
///   zamba2c bench plans/z27 --prompt-len 128,512,2048 --gen-len 128 --repeat 5
///   zamba2c bench plans/z27 --device cuda --prompt-len 512 --gen-len 128 --json
///   zamba2c bench plans/z27 --device cuda --profile
///   zamba2c bench plans/demo --device cpu --prompt-len 16 --gen-len 16
///   zamba2c bench plans/demo --device cpu --batch 8 --prompt-len 16 --gen-len 16
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    pub plan: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Prompt tokens; with --gen-len at most the model's context (max_position_embeddings).
    /// A comma-separated list (128,512,2048) measures each: one table row (and one JSON
    /// object, in an array) per length.
    #[arg(
        long,
        default_value = "512",
        value_delimiter = ',',
        num_args = 1,
        value_name = "N[,N...]"
    )]
    pub prompt_len: Vec<usize>,
    /// Runs per prompt length (one sequence on CUDA: one engine, loaded once and reset between
    /// runs): the table gives the mean ± standard deviation over them, the JSON the median
    /// run's fields plus the means and deviations.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub repeat: usize,
    /// Decode steps after the prompt.
    #[arg(long, default_value_t = 128)]
    pub gen_len: usize,
    /// Sequences run at once (1: the one-sequence engine).
    #[arg(long, default_value_t = 1, value_name = "B")]
    pub batch: usize,
    /// Tokens the KV caches are allocated for (default: --prompt-len + --gen-len); the report
    /// has the memory the plan predicts for it beside what was allocated and the peak.
    #[arg(long, value_name = "N")]
    pub max_context: Option<usize>,
    /// CUDA, one sequence: most prompt tokens one prompt launch processes (the activation
    /// arena is sized for it; default 1024, at most the context). Longer prompts run in chunks.
    /// With --profile, the prompt chunk profiled is this long (at most --prompt-len).
    #[arg(long, value_name = "N")]
    pub prompt_chunk: Option<usize>,
    /// With --batch: prompt tokens run per step, between decode steps (at least the engine's
    /// prompt launch size, 512 on CUDA, where prompts are split: a prompt in a batch runs the
    /// launches it runs alone).
    #[arg(long, default_value_t = DEFAULT_PREFILL_CHUNK, value_name = "N")]
    pub prefill_chunk: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Time every kernel of a decode step and of a prompt chunk (CUDA events, eager), beside
    /// the bytes and FLOPs each moves: per node, per kernel family, and the launch gap. With
    /// --batch B: a decode step of B sequences after --prompt-len tokens each, through the
    /// table the engine picks for B rows, beside the whole decode call's wall time.
    #[arg(long)]
    pub profile: bool,
    /// Also write the JSON report to this file (atomically; a new path or a regular file, not
    /// inside the plan).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn main(mut a: BenchArgs) -> Result<()> {
    if a.prompt_len.contains(&0) {
        bail!("--prompt-len: must be at least 1");
    }
    if a.repeat == 0 || a.repeat > MAX_REPEAT {
        bail!("--repeat: must be in 1..={MAX_REPEAT}, got {}", a.repeat);
    }
    if a.batch == 0 || a.batch > MAX_BATCH {
        bail!("--batch: must be in 1..={MAX_BATCH}, got {}", a.batch);
    }
    if a.batch > 1 && a.gen_len == 0 {
        bail!("--gen-len: must be at least 1 with --batch");
    }
    if a.prefill_chunk == 0 {
        bail!("--prefill-chunk: must be at least 1");
    }
    check_prompt_chunk(a.prompt_chunk)?;
    if a.prompt_chunk.is_some() && a.batch > 1 {
        bail!("--prompt-chunk: only for the one-sequence bench (no --batch)");
    }
    if a.profile && a.device == Device::Cpu {
        bail!("--profile: only with --device cuda (it times GPU kernels)");
    }
    if a.profile && (a.prompt_len.len() > 1 || a.repeat > 1) {
        bail!("--profile: one --prompt-len and no --repeat (it reports every kernel of one run)");
    }
    // The output is checked (and its temporary file claimed) before any work.
    let out = a
        .out
        .as_deref()
        .map(|p| OutputFile::prepare("--out", p, Some(&a.plan)))
        .transpose()?;
    let plan = Plan::open(&a.plan)?;
    a.device = a.device.resolve(&plan);
    if a.profile && a.device != Device::Cuda {
        bail!("--profile: times GPU kernels, and --device auto found no usable GPU here");
    }
    if a.prompt_chunk.is_some() && a.device != Device::Cuda {
        bail!("--prompt-chunk: sizes the CUDA engine's prompt launches; only with --device cuda");
    }
    if a.max_context == Some(0) {
        bail!("--max-context: must be at least 1");
    }
    for &len in &a.prompt_len {
        match a.max_context {
            Some(n) if len.saturating_add(a.gen_len) > n => bail!(
                "--max-context: {n} tokens, fewer than --prompt-len {len} + --gen-len {}",
                a.gen_len
            ),
            Some(_) => {}
            None => check_lengths(len, a.gen_len, plan.module.config.max_position_embeddings)?,
        }
    }
    // The context each row allocates: --max-context, else the row's prompt + generated tokens.
    let ctx_for = |len: usize| a.max_context.unwrap_or(len + a.gen_len);

    // A spinner on stderr while the bench runs (indicatif hides it when stderr is no terminal).
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    if a.profile {
        // One batched step, or one sequence's decode step and prompt chunk.
        let (json, text) = if a.batch > 1 {
            spinner.set_message(format!(
                "profiling a {}-sequence decode step of {} on cuda",
                a.batch,
                a.plan.display()
            ));
            let p = zamba2c_runtime::cuda::profile_batch(&plan, a.batch, a.prompt_len[0])
                .context("bench --profile --batch")?;
            (serde_json::to_string(&p)?, p.to_text())
        } else {
            spinner.set_message(format!("profiling {} on cuda", a.plan.display()));
            let p =
                zamba2c_runtime::cuda::profile(&plan, a.prompt_len[0], a.gen_len, a.prompt_chunk)
                    .context("bench --profile")?;
            (serde_json::to_string(&p)?, p.to_text())
        };
        spinner.finish_and_clear();
        if let Some(out) = out {
            out.commit(json.as_bytes())?;
        }
        print_stdout(&if a.json { format!("{json}\n") } else { text })?;
        return Ok(());
    }
    let mut cpu_engine = None;
    let mut rows = Vec::new();
    for &prompt_len in &a.prompt_len {
        let mut runs = Vec::with_capacity(a.repeat);
        spinner.set_message(format!(
            "benchmarking {} on {}: {} x prompt {prompt_len} tokens, {} decode steps ({} run{})",
            a.plan.display(),
            a.device.name(),
            a.batch,
            a.gen_len,
            a.repeat,
            if a.repeat == 1 { "" } else { "s" }
        ));
        if a.device == Device::Cuda && a.batch <= 1 {
            // One engine for every run of a length: loaded and warmed up once, reset between runs.
            let options = CudaOptions::new(ctx_for(prompt_len)).with_prompt_chunk(a.prompt_chunk);
            for report in
                zamba2c_runtime::cuda::bench_runs(&plan, prompt_len, a.gen_len, options, a.repeat)
                    .context("bench --device cuda")?
            {
                runs.push(serde_json::to_value(report)?);
            }
        } else {
            for _ in 0..a.repeat {
                let report = if a.batch > 1 {
                    batch_bench(&plan, &a, prompt_len, ctx_for(prompt_len))?
                } else {
                    // One CPU engine for every row and run: loading is not what is measured.
                    if cpu_engine.is_none() {
                        let ctx = a.prompt_len.iter().map(|&l| ctx_for(l)).max().unwrap_or(1);
                        cpu_engine = Some(open_engine(&plan, Device::Cpu, ctx)?);
                    }
                    match cpu_engine.as_mut() {
                        Some(e) => cpu_bench(e.as_mut(), prompt_len, a.gen_len)?,
                        None => unreachable!("the CPU engine was opened above"),
                    }
                };
                runs.push(report);
            }
        }
        rows.push(summarize(runs)?);
    }
    spinner.finish_and_clear();
    // One length: the object a single run always printed (plus the repeat statistics); a
    // list: an array of them, one per length (README).
    let report = if a.prompt_len.len() == 1 {
        rows[0].clone()
    } else {
        serde_json::Value::Array(rows.clone())
    };
    let text = serde_json::to_string(&report)?;
    if let Some(out) = out {
        out.commit(text.as_bytes())?;
    }
    if a.json {
        print_stdout(&format!("{text}\n"))?;
    } else {
        print_stdout(&table(&plan, &a.plan, &rows))?;
    }
    Ok(())
}

/// `--batch B`: B sequences through the batched engine (see `zamba2c_runtime::batch::bench`).
fn batch_bench(
    plan: &Plan,
    a: &BenchArgs,
    prompt_len: usize,
    ctx: usize,
) -> Result<serde_json::Value> {
    // The engine `run --prompts-file` drives (batch-invariant).
    let engine = open_batch_engine(plan, a.device, a.batch, ctx, true)?;
    let report =
        zamba2c_runtime::batch::bench(engine, a.batch, prompt_len, a.gen_len, a.prefill_chunk)
            .context("bench --batch")?;
    let mut v = serde_json::to_value(report)?;
    v["device"] = serde_json::json!(a.device.name());
    if a.device == Device::Cpu {
        v["peak_rss_bytes"] = serde_json::json!(peak_rss_bytes());
    }
    Ok(v)
}

/// Wall-clock bench on the CPU interpreter (a reference point, not a target).
fn cpu_bench(e: &mut dyn Engine, prompt_len: usize, gen_len: usize) -> Result<serde_json::Value> {
    e.reset();
    let vocab = e.vocab_size() as u64;
    // A fixed LCG keeps the token ids reproducible without pulling an RNG into the CLI.
    let mut x = 0x5eedu64;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) % vocab) as u32
    };
    let prompt: Vec<u32> = (0..prompt_len).map(|_| next()).collect();
    let t0 = Instant::now();
    e.prefill(&prompt)?;
    let ttft = t0.elapsed().as_secs_f64() * 1e3;
    let mut steps = Vec::with_capacity(gen_len);
    for _ in 0..gen_len {
        let t = Instant::now();
        e.decode_step(next())?;
        steps.push(t.elapsed().as_secs_f64() * 1e3);
    }
    steps.sort_by(f64::total_cmp);
    let median = steps.get(steps.len() / 2).copied().unwrap_or(0.0);
    Ok(serde_json::json!({
        "device": "cpu",
        "prompt_len": prompt_len,
        "gen_len": gen_len,
        "ttft_ms": ttft,
        "decode_ms_per_token": median,
        "peak_rss_bytes": peak_rss_bytes(),
    }))
}
