//! `zamba2c bench PLAN --device cuda`: time to first token, decode ms/token, peak memory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use zamba2c_ir::Plan;

use super::engine::{open_engine, Device};
use super::limits::check_lengths;
use super::output::{print_stdout, OutputFile};

/// Measure prompt processing and decoding on random token ids.
///
/// On CUDA, decode ms/token is the median over steps timed with CUDA events; on the CPU it is
/// the median of wall-clock steps.
///
/// Examples:
///   zamba2c bench plans/z27 --device cuda --prompt-len 512 --gen-len 128 --json
///   zamba2c bench plans/demo --device cpu --prompt-len 16 --gen-len 16
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    pub plan: PathBuf,
    #[arg(long, value_enum, default_value = "cuda")]
    pub device: Device,
    /// Prompt tokens; with --gen-len at most the model's context (max_position_embeddings).
    #[arg(long, default_value_t = 512)]
    pub prompt_len: usize,
    /// Decode steps after the prompt.
    #[arg(long, default_value_t = 128)]
    pub gen_len: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file (atomically; a new path or a regular file, not
    /// inside the plan).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn main(a: BenchArgs) -> Result<()> {
    if a.prompt_len == 0 {
        bail!("--prompt-len: must be at least 1");
    }
    // The output is checked (and its temporary file claimed) before any work.
    let out = a
        .out
        .as_deref()
        .map(|p| OutputFile::prepare("--out", p, Some(&a.plan)))
        .transpose()?;
    let plan = Plan::open(&a.plan)?;
    check_lengths(
        a.prompt_len,
        a.gen_len,
        plan.module.config.max_position_embeddings,
    )?;
    // A spinner on stderr while the bench runs (indicatif hides it when stderr is no terminal).
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "benchmarking {} on {:?}: prompt {} tokens, {} decode steps",
        a.plan.display(),
        a.device,
        a.prompt_len,
        a.gen_len
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let report = match a.device {
        Device::Cuda => serde_json::to_value(
            zamba2c_runtime::cuda::bench(&plan, a.prompt_len, a.gen_len)
                .context("bench --device cuda")?,
        )?,
        Device::Cpu => cpu_bench(&plan, a.prompt_len, a.gen_len)?,
    };
    spinner.finish_and_clear();
    let text = serde_json::to_string(&report)?;
    if let Some(out) = out {
        out.commit(text.as_bytes())?;
    }
    if a.json {
        print_stdout(&format!("{text}\n"))?;
    } else {
        let mut lines = String::new();
        for (k, v) in report.as_object().into_iter().flatten() {
            lines += &format!("{k:>22}: {v}\n");
        }
        print_stdout(&lines)?;
    }
    Ok(())
}

/// Wall-clock bench on the CPU interpreter (a reference point, not a target).
fn cpu_bench(plan: &Plan, prompt_len: usize, gen_len: usize) -> Result<serde_json::Value> {
    let mut e = open_engine(plan, Device::Cpu)?;
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
    }))
}
