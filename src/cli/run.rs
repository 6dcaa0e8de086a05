//! `zamba2c run PLAN`: continue a prompt (text or token ids) with the model, streaming the text.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use zamba2c_ir::Plan;
use zamba2c_runtime::generate::{eos_ids, generate, Outcome, Settings, StopReason, TextSink};

use super::engine::{context_or_default, open_engine, Device, MAX_BATCH};
use super::input::{check_prompt_text, prompt_byte_cap, read_prompt, read_prompt_file};
use super::sampling::{self, ModelDefaults, SamplingFlags};
use super::text::{strip_one_newline, TextTokenizer};
use super::tokens::parse_tokens;

/// Continue a prompt with the model, printing the text as it is generated.
///
/// The prompt is text (--prompt, --prompt-file, or standard input when no prompt flag is
/// given), tokenized with the plan's tokenizer.json (BOS added), or token ids (--tokens).
/// Generation stops at the end-of-sequence token (from generation_config.json, else
/// config.json, included in the output, as transformers' generate does; not with --ignore-eos), after --max-new-tokens tokens, or at a
/// --stop string. Sampling defaults come from the model's generation_config.json as in
/// transformers (greedy unless it says do_sample; flags override it). A timing summary goes to
/// stderr; logs too (RUST_LOG=info).
///
/// Examples:
///   zamba2c run plans/demo -p "Hello, my name is" -n 16
///   echo "Once upon a time" | zamba2c run plans/demo -t 0.8 --top-p 0.95 -s 7
///   zamba2c run plans/demo -f prompt.txt --stop $'\n\n' --json | jq -r .text
///   zamba2c run plans/demo --prompts-file prompts.txt -n 32 > results.jsonl
///   zamba2c run plans/demo --prompts-file prompts.txt --max-batch 8 > results.jsonl
///   zamba2c run plans/demo --tokens 1,415,2936 -n 16
///   zamba2c run plans/demo --tokens 1,415 -n 8 --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
#[command(group(clap::ArgGroup::new("input").args(["tokens", "prompt", "prompt_file", "prompts_file"])))]
pub struct RunArgs {
    /// The plan directory (from `zamba2c compile`).
    pub plan: PathBuf,
    /// Comma-separated prompt token ids (works without a tokenizer; prints ids then). Generates
    /// exactly --max-new-tokens tokens: EOS does not stop an ids-in run.
    #[arg(long, value_name = "IDS")]
    pub tokens: Option<String>,
    /// The prompt text.
    #[arg(short = 'p', long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Read the prompt text from FILE (one trailing newline is dropped).
    #[arg(short = 'f', long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Run every line of FILE as its own prompt; prints one JSON object per prompt.
    #[arg(long, value_name = "FILE")]
    pub prompts_file: Option<PathBuf>,
    /// With --prompts-file: run up to B prompts at once as one batch (each prompt's output is
    /// the same whatever B and the other prompts; the objects are printed in input order).
    #[arg(long, default_value_t = 1, value_name = "B")]
    pub max_batch: usize,
    /// The most tokens to generate (EOS included); --max-tokens is the same (vLLM's name).
    #[arg(
        short = 'n',
        long,
        visible_alias = "max-tokens",
        default_value_t = 32,
        value_name = "N"
    )]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingFlags,
    /// Stop when the generated text contains STRING (not printed); repeatable.
    #[arg(long, value_name = "STRING")]
    pub stop: Vec<String>,
    /// Do not stop at the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print the prompt text before the generated text.
    #[arg(long)]
    pub echo: bool,
    /// Where to run the plan.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Tokens a sequence may hold, prompt and generated; the GPU allocates its KV caches for
    /// this many (default: the model's max_position_embeddings, at most 16384).
    #[arg(long, value_name = "N")]
    pub max_context: Option<usize>,
    /// Print one JSON object per prompt and nothing else on stdout (the text is not streamed;
    /// `| jq .text` works): prompt_tokens, generated_tokens, text, stop_reason, seed, and timings
    /// (prompt_ms, decode_ms, prompt_tokens_per_s, generated_tokens_per_s).
    #[arg(long)]
    pub json: bool,
    /// With --device cuda: run every kernel on the GPU and the CPU interpreter side by side
    /// over the prompt and --max-new-tokens greedy steps, and name the first op whose output
    /// differs beyond tolerance.
    #[arg(long)]
    pub validate: bool,
    /// No timing summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// One prompt to run.
pub(super) struct Job {
    /// Where it came from, for error messages (`--prompt`, `--prompts-file F:3`, ...).
    pub(super) source: String,
    pub(super) text: Option<String>,
    pub(super) ids: Vec<u32>,
}

/// stdout that remembers when the reader went away instead of failing.
pub(super) struct Sink {
    pub(super) out: std::io::Stdout,
    pub(super) closed: bool,
}

impl TextSink for Sink {
    type Error = anyhow::Error;

    fn closed(&self) -> bool {
        self.closed
    }

    fn write(&mut self, s: &str) -> Result<()> {
        if self.closed || s.is_empty() {
            return Ok(());
        }
        let mut lock = self.out.lock();
        match lock.write_all(s.as_bytes()).and_then(|_| lock.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(anyhow!("stdout: {e}")),
        }
    }
}

pub fn main(mut a: RunArgs) -> Result<()> {
    if a.max_new_tokens == 0 {
        bail!("--max-new-tokens: must be at least 1");
    }
    if a.stop.iter().any(String::is_empty) {
        bail!("--stop: the stop string is empty");
    }
    if a.max_batch == 0 || a.max_batch > MAX_BATCH {
        bail!(
            "--max-batch: must be in 1..={MAX_BATCH}, got {}",
            a.max_batch
        );
    }
    if a.max_batch > 1 && a.prompts_file.is_none() {
        tracing::warn!("--max-batch has no effect on one prompt (it batches --prompts-file)");
    }
    let plan = Plan::open(&a.plan)?;
    a.device = a.device.resolve(&plan);
    let params = sampling::resolve(
        &a.sampling,
        &ModelDefaults::from_plan(&plan)?,
        &plan.dir.join("generation_config.json"),
    )?;
    let vocab = plan.module.config.vocab_size;
    let max_context = context_or_default(a.max_context, &plan)?;

    // The tokenizer: required for text prompts; optional with --tokens (ids are printed then).
    let tok = if a.tokens.is_some() {
        match TextTokenizer::from_plan_optional(&plan) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("{e:#}; printing token ids only");
                None
            }
        }
    } else {
        Some(TextTokenizer::from_plan(&plan)?)
    };
    if let Some(t) = &tok {
        tracing::info!(path = %t.path().display(), vocab = t.vocab_size(), "tokenizer loaded");
    }
    if !a.stop.is_empty() && tok.is_none() {
        bail!("--stop: needs the plan's tokenizer.json to see text, and this plan has none");
    }

    let jobs = collect_jobs(&a, tok.as_ref(), vocab, max_context)?;
    let eos = eos_ids(&plan)?;
    tracing::info!(?eos, "end-of-sequence ids");
    let seed = a.sampling.seed.unwrap_or_else(rand::random);
    if !params.is_greedy() {
        tracing::info!(seed, "sampling");
    }
    let settings = Settings {
        params,
        seed,
        max_new_tokens: a.max_new_tokens,
        max_context,
        eos,
        ignore_eos: a.ignore_eos,
        stops: a.stop.clone(),
    };

    if a.validate {
        return validate(&plan, &a, &jobs);
    }
    // Every --prompts-file run goes through the batched engine, --max-batch 1 too: on CUDA it
    // is batch-invariant, so a prompt's output does not depend on --max-batch or on the other
    // prompts (docs/KERNELS.md "Batch invariance"). One prompt with --prompt runs the
    // one-sequence engine (the one-row kernels, the fastest for a single sequence).
    if a.prompts_file.is_some() {
        return super::run_batch::run_batched(&plan, &a, &jobs, &settings, tok.as_ref());
    }
    // One prompt (--prompt, --prompt-file, --tokens or stdin): `collect_jobs` gives one job.
    let [job] = jobs.as_slice() else {
        bail!("one prompt expected, {} given", jobs.len());
    };
    let mut engine = open_engine(&plan, a.device, max_context)?;
    let mut sink = Sink {
        out: std::io::stdout(),
        closed: false,
    };
    // With --json stdout is JSON only (issue 17): the text is in the object, not streamed.
    let stream = !a.json && tok.is_some();
    if stream && a.echo {
        if let Some(t) = &job.text {
            sink.write(t)?;
        }
    }
    let o = generate(
        engine.as_mut(),
        &job.source,
        &job.ids,
        &settings,
        tok.as_ref(),
        stream.then_some(&mut sink),
    )?;
    if o.reason == StopReason::Context {
        tracing::warn!(
            "{}: stopped after {} tokens: the context is full ({max_context} tokens: --max-context)",
            job.source,
            o.generated.len()
        );
    }
    if a.json {
        sink.write(&format!("{}\n", result_json(job, &o, &settings)))?;
    } else if stream {
        sink.write("\n")?;
    } else {
        let s: Vec<String> = o.generated.iter().map(u32::to_string).collect();
        sink.write(&format!("{}\n", s.join(",")))?;
    }
    if !a.quiet {
        let (prompt, generated) = (job.ids.len(), o.generated.len());
        // Not eprintln!: a closed stderr is no reason to panic.
        let _ = writeln!(
            std::io::stderr(),
            "prompt: {} in {}{} | generated: {} in {}{}",
            fmt_tokens(prompt),
            fmt_ms(o.prompt_s),
            fmt_rate(prompt, o.prompt_s),
            fmt_tokens(generated),
            fmt_ms(o.decode_s),
            fmt_rate(generated, o.decode_s),
        );
    }
    Ok(())
}

/// The prompts to run, tokenized and checked against the plan.
/// `--validate`: GPU kernels against the CPU interpreter, node by node (issue 4).
fn validate(plan: &Plan, a: &RunArgs, jobs: &[Job]) -> Result<()> {
    if a.device != Device::Cuda {
        bail!("--validate: compares the GPU with the CPU interpreter; add --device cuda");
    }
    for job in jobs {
        let report = zamba2c_runtime::cuda::validate(plan, &job.ids, a.max_new_tokens, None)
            .with_context(|| format!("--validate ({})", job.source))?;
        if !report.passed() {
            bail!("--validate ({}): {report}", job.source);
        }
        println!("{}: {report}", job.source);
    }
    Ok(())
}

fn collect_jobs(
    a: &RunArgs,
    tok: Option<&TextTokenizer>,
    vocab: usize,
    max_context: usize,
) -> Result<Vec<Job>> {
    let mut texts: Vec<(String, String)> = Vec::new();
    let cap = prompt_byte_cap(max_context);
    if let Some(s) = &a.tokens {
        let ids = parse_tokens(s, vocab)?;
        check_len("--tokens", ids.len(), max_context)?;
        return Ok(vec![Job {
            source: "--tokens".into(),
            text: None,
            ids,
        }]);
    } else if let Some(p) = &a.prompt {
        check_prompt_text("--prompt", p, cap)?;
        texts.push(("--prompt".into(), p.clone()));
    } else if let Some(f) = &a.prompt_file {
        let s = read_prompt_file("--prompt-file", f, cap)?;
        texts.push((
            format!("--prompt-file {}", f.display()),
            strip_one_newline(&s).to_string(),
        ));
    } else if let Some(f) = &a.prompts_file {
        let s = read_prompt_file("--prompts-file", f, super::input::prompts_file_byte_cap())?;
        for (i, line) in s.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            // A blank line (a trailing one, or one between paragraphs) is no prompt.
            if line.trim().is_empty() {
                continue;
            }
            let source = format!("--prompts-file {}: line {}", f.display(), i + 1);
            check_prompt_text(&source, line, cap)?;
            texts.push((source, line.to_string()));
        }
        if texts.is_empty() {
            bail!(
                "--prompts-file {}: has no prompts (one prompt per line)",
                f.display()
            );
        }
    } else {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!("reading the prompt from stdin (end it with Ctrl-D; or give --prompt TEXT)");
        }
        let s = read_prompt("stdin", stdin.lock(), cap)?;
        texts.push(("stdin".into(), strip_one_newline(&s).to_string()));
    }
    let tok = tok.context("a text prompt needs the plan's tokenizer")?;
    let mut jobs = Vec::new();
    for (source, text) in texts {
        // An empty --prompt "" (or prompt file) is the tokenizer's special tokens alone: BOS, from
        // which transformers' generate continues too. Empty stdin is more likely a mistake.
        if text.is_empty() && source == "stdin" {
            bail!("stdin: the prompt is empty (give --prompt TEXT, --prompt-file FILE or --tokens IDS, or pipe text in)");
        }
        let ids = encode_prompt(tok, &source, &text, vocab)?;
        check_len(&source, ids.len(), max_context)?;
        jobs.push(Job {
            source,
            text: Some(text),
            ids,
        });
    }
    Ok(jobs)
}

/// Tokenizes prompt text from `source` as `run` does (BOS added by the tokenizer's
/// post-processor), checking the ids against the plan's vocabulary; `logits --prompt` and
/// `tokenize` use it too, so the three agree.
pub(super) fn encode_prompt(
    tok: &TextTokenizer,
    source: &str,
    text: &str,
    vocab: usize,
) -> Result<Vec<u32>> {
    let ids = tok.encode(text).with_context(|| source.to_string())?;
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        bail!(
            "{}: token id {bad} of {source} is outside the plan's vocab_size {vocab}: the tokenizer does not belong to this model",
            tok.path().display()
        );
    }
    if ids.is_empty() {
        bail!(
            "{source}: the prompt is empty and {} adds no BOS token to start from; give some text",
            tok.path().display()
        );
    }
    Ok(ids)
}

fn check_len(source: &str, n: usize, max_context: usize) -> Result<()> {
    if n > max_context {
        bail!(
            "{source}: the prompt is {n} tokens, longer than the plan allows ({max_context} tokens: --max-context, by default the model's max_position_embeddings up to 16384)"
        );
    }
    Ok(())
}

pub(super) fn result_json(job: &Job, o: &Outcome, s: &Settings) -> Value {
    let rate = |n: usize, secs: f64| {
        if has_rate(n, secs) {
            json!(n as f64 / secs)
        } else {
            Value::Null
        }
    };
    json!({
        "prompt_tokens": job.ids,
        "generated_tokens": o.generated,
        "text": o.text,
        "stop_reason": o.reason.as_str(),
        "seed": if s.params.is_greedy() { Value::Null } else { json!(s.seed) },
        "prompt_ms": o.prompt_s * 1e3,
        "decode_ms": o.decode_s * 1e3,
        "total_ms": (o.prompt_s + o.decode_s) * 1e3,
        "prompt_tokens_per_s": rate(job.ids.len(), o.prompt_s),
        "generated_tokens_per_s": rate(o.generated.len(), o.decode_s),
    })
}

pub(super) fn fmt_ms(secs: f64) -> String {
    format!("{:.1} ms", secs * 1e3)
}

/// "1 token", "5 tokens".
pub(super) fn fmt_tokens(n: usize) -> String {
    format!("{n} token{}", if n == 1 { "" } else { "s" })
}

/// Shortest time a rate is given for: below it tokens/s measures the clock, not the model.
const MIN_RATE_SECS: f64 = 1e-3;

/// Whether `n` tokens in `secs` make a rate worth printing: one token is no rate (a run's one
/// generated token comes from the prompt's logits, and its "decode time" is bookkeeping; the
/// rate was in the thousands of tokens/s), nor is a time too short to measure.
fn has_rate(n: usize, secs: f64) -> bool {
    n >= 2 && secs >= MIN_RATE_SECS
}

/// " (12.3 tok/s)", or nothing when [`has_rate`] says the rate means nothing.
pub(super) fn fmt_rate(n: usize, secs: f64) -> String {
    if has_rate(n, secs) {
        format!(" ({:.1} tok/s)", n as f64 / secs)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_words_and_rates() {
        assert_eq!(fmt_tokens(1), "1 token");
        assert_eq!(fmt_tokens(0), "0 tokens");
        assert_eq!(fmt_tokens(2), "2 tokens");
        assert_eq!(fmt_rate(10, 0.5), " (20.0 tok/s)");
        assert_eq!(fmt_rate(1, 0.5), "");
        assert_eq!(fmt_rate(10, 1e-6), "");
    }
}
