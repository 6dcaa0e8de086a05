//! `zamba2c logits PLAN --tokens IDS | --prompt TEXT --out FILE.safetensors`: logits at every
//! position.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use zamba2c_ir::Plan;

use super::engine::{default_context, open_engine, Device};
use super::input::{check_prompt_text, prompt_byte_cap};
use super::limits::check_cpu_memory;
use super::output::OutputFile;
use super::run::encode_prompt;
use super::text::TextTokenizer;
use super::tokens::parse_tokens;

/// Write the logits at every position of a token sequence to a safetensors file
/// (one F32 tensor `logits`, shape [T, vocab]).
///
/// The input is token ids (--tokens) or text (-p/--prompt), tokenized exactly as `run` does
/// (BOS added; `zamba2c tokenize` shows the ids).
///
/// Examples:
///   zamba2c logits plans/demo --tokens 1,415,2936 --out logits.safetensors
///   zamba2c logits plans/demo -p "Hello, my name is" --out logits.safetensors
///   zamba2c logits plans/demo --tokens 1,415,2936,9060 --decode-from 2 --out l.safetensors
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
#[command(group(clap::ArgGroup::new("input").args(["tokens", "prompt"]).required(true)))]
pub struct LogitsArgs {
    pub plan: PathBuf,
    /// Comma-separated token ids.
    #[arg(long, value_name = "IDS")]
    pub tokens: Option<String>,
    /// Prompt text, tokenized with the plan's tokenizer.json as `run --prompt` does.
    #[arg(short = 'p', long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Output safetensors file: a new path or a regular file (replaced atomically), not inside
    /// the plan.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Run the first K tokens through the prompt graph and the rest one at a time through the
    /// decode graph.
    #[arg(long, value_name = "K")]
    pub decode_from: Option<usize>,
    /// KV cache capacity in tokens (default: the model's max_position_embeddings, at most
    /// 16384). Zamba2 without RoPE (2.7B) has no position limit of its own; this allows longer
    /// sequences.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_context: Option<u32>,
}

pub fn main(mut a: LogitsArgs) -> Result<()> {
    // The output is checked (and its temporary file claimed) before any work.
    let out = OutputFile::prepare("--out", &a.out, Some(&a.plan))?;
    let plan = Plan::open(&a.plan)?;
    a.device = a.device.resolve(&plan);
    let vocab = plan.module.config.vocab_size;
    let max = a
        .max_context
        .map_or_else(|| default_context(&plan), |m| m as usize);
    let (flag, tokens) = match (&a.tokens, &a.prompt) {
        (Some(ids), _) => ("--tokens", parse_tokens(ids, vocab)?),
        (None, Some(text)) => {
            check_prompt_text("--prompt", text, prompt_byte_cap(max))?;
            let tok = TextTokenizer::from_plan(&plan)?;
            ("--prompt", encode_prompt(&tok, "--prompt", text, vocab)?)
        }
        (None, None) => bail!("give --tokens IDS or --prompt TEXT"),
    };
    if tokens.len() > max {
        bail!(
            "{flag}: {} tokens, more than the plan allows ({max} tokens: {})",
            tokens.len(),
            if a.max_context.is_some() {
                "--max-context"
            } else {
                "the model's max_position_embeddings up to 16384; --max-context raises it"
            }
        );
    }
    let k = a.decode_from.unwrap_or(tokens.len());
    if k == 0 || k > tokens.len() {
        bail!(
            "--decode-from: {k} must be between 1 and the number of tokens ({})",
            tokens.len()
        );
    }
    // The logits are held three times: as computed, as bytes, and serialized.
    let logits_bytes = tokens.len() as u128 * vocab as u128 * 4;
    if a.device == Device::Cpu {
        check_cpu_memory(&plan, 3 * logits_bytes, "the logits")?;
    }
    let mut engine = open_engine(&plan, a.device, max)?;
    let mut logits = engine.prefill(&tokens[..k])?;
    for &t in &tokens[k..] {
        logits.extend(engine.decode_step(t)?);
    }
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    drop(logits);
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![tokens.len(), vocab],
        &bytes,
    )
    .context("logits tensor")?;
    let file = safetensors::serialize([("logits", view)], None)
        .map_err(|e| anyhow!("{}: cannot serialize: {e}", out.path().display()))?;
    out.commit(&file)
}
