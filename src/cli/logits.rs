//! `zamba2c logits PLAN --tokens ... --out FILE.safetensors`: logits at every position.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use zamba2c_ir::Plan;

use super::engine::{check_out_path, open_engine_with_context, write_atomic, Device};
use super::tokens::parse_tokens;

/// Write the logits at every position of a token sequence to a safetensors file
/// (one F32 tensor `logits`, shape [T, vocab]).
///
/// Examples:
///   zamba2c logits plans/demo --tokens 1,415,2936 --out logits.safetensors
///   zamba2c logits plans/demo --tokens 1,415,2936,9060 --decode-from 2 --out l.safetensors
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct LogitsArgs {
    pub plan: PathBuf,
    /// Comma-separated token ids.
    #[arg(long)]
    pub tokens: String,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Run the first K tokens through the prompt graph and the rest one at a time through the
    /// decode graph.
    #[arg(long, value_name = "K")]
    pub decode_from: Option<usize>,
    /// KV cache capacity in tokens (default: the model's max_position_embeddings). Zamba2
    /// without RoPE (2.7B) has no position limit of its own; this allows longer sequences.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_context: Option<u32>,
}

pub fn main(a: LogitsArgs) -> Result<()> {
    let plan = Plan::open(&a.plan)?;
    let vocab = plan.module.config.vocab_size;
    let tokens = parse_tokens(&a.tokens, vocab)?;
    let max = a
        .max_context
        .map_or(plan.module.config.max_position_embeddings, |m| m as usize);
    if tokens.len() > max {
        bail!(
            "--tokens: {} tokens, more than the plan allows ({max} tokens: {})",
            tokens.len(),
            if a.max_context.is_some() {
                "--max-context"
            } else {
                "the model's max_position_embeddings; --max-context raises it"
            }
        );
    }
    check_out_path(&a.out).context("--out")?;
    let k = a.decode_from.unwrap_or(tokens.len());
    if k == 0 || k > tokens.len() {
        bail!(
            "--decode-from: {k} must be between 1 and the number of tokens ({})",
            tokens.len()
        );
    }
    let mut engine = open_engine_with_context(&plan, a.device, max)?;
    let mut logits = engine.prefill(&tokens[..k])?;
    for &t in &tokens[k..] {
        logits.extend(engine.decode_step(t)?);
    }
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![tokens.len(), vocab],
        &bytes,
    )
    .context("logits tensor")?;
    write_atomic(&a.out, |tmp| {
        safetensors::serialize_to_file([("logits", view)], None, tmp)
            .map_err(|e| anyhow!("{}: cannot write: {e}", a.out.display()))
    })
}
