//! `zamba2c tokenize PLAN --prompt TEXT`: the token ids `run --prompt` would feed the model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;
use zamba2c_ir::Plan;

use super::input::{check_prompt_text, prompt_byte_cap};
use super::output::print_stdout;
use super::run::encode_prompt;
use super::text::TextTokenizer;

/// Print the token ids of a prompt, tokenized with the plan's tokenizer.json exactly as
/// `run --prompt` and `logits --prompt` tokenize it (BOS added).
///
/// Examples:
///   zamba2c tokenize plans/demo -p "Hello, my name is"
///   zamba2c tokenize plans/demo -p "Hello, my name is" --json | jq '.ids | length'
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct TokenizeArgs {
    /// The plan directory (from `zamba2c compile`).
    pub plan: PathBuf,
    /// The prompt text.
    #[arg(short = 'p', long, value_name = "TEXT")]
    pub prompt: String,
    /// Print one JSON object {"ids": [...]} instead of comma-separated ids.
    #[arg(long)]
    pub json: bool,
}

pub fn main(a: TokenizeArgs) -> Result<()> {
    let plan = Plan::open(&a.plan)?;
    let config = &plan.module.config;
    check_prompt_text(
        "--prompt",
        &a.prompt,
        prompt_byte_cap(config.max_position_embeddings),
    )?;
    let tok = TextTokenizer::from_plan(&plan)?;
    let ids = encode_prompt(&tok, "--prompt", &a.prompt, config.vocab_size)?;
    let line = if a.json {
        json!({ "ids": ids }).to_string()
    } else {
        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    };
    print_stdout(&format!("{line}\n"))
}
