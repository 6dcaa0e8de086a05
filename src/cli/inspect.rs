//! `zamba2c inspect PLAN_DIR`: the plan's IR, readable as text, Graphviz DOT or JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use zamba2c_ir::Plan;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Dot,
    Json,
}

/// Show what the compiler made: passes, graphs, weights and states of a plan.
///
/// Examples:
///   zamba2c inspect plans/demo
///   zamba2c inspect plans/demo --format dot | dot -Tsvg > decode.svg
///   zamba2c inspect plans/demo --format json | jq .cost
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct InspectArgs {
    pub plan: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn main(a: InspectArgs) -> Result<()> {
    let plan = Plan::open(&a.plan)?;
    let m = &plan.module;
    match a.format {
        Format::Text => {
            println!(
                "plan {} (format {}, {}, weights {}, activations {})",
                a.plan.display(),
                plan.manifest.format_version,
                plan.manifest.created_by,
                m.dtype,
                m.act_dtype
            );
            if let Some(layout) = plan.manifest.checkpoint_layout {
                println!("checkpoint layout: {}", layout.describe());
            }
            println!("passes:");
            for p in &plan.manifest.passes {
                println!(
                    "  {:<32} prompt {:>6} nodes   decode {:>6} nodes",
                    p.name, p.prompt_nodes, p.decode_nodes
                );
            }
            let wbytes: usize = m.weights.values().map(|w| w.bytes()).sum();
            println!("weights: {} tensors, {} bytes", m.weights.len(), wbytes);
            println!("states: {} regions", m.states.len());
            println!("\n{}", zamba2c_passes::cost::render_text(m));
            println!("\n== prompt graph ==\n{}", m.prompt.to_text());
            println!("== decode graph ==\n{}", m.decode.to_text());
        }
        Format::Dot => {
            print!("{}", m.prompt.to_dot("prompt"));
            print!("{}", m.decode.to_dot("decode"));
        }
        Format::Json => {
            let module: serde_json::Value = serde_json::from_str(&m.to_json())?;
            let out = serde_json::json!({
                "manifest": plan.manifest,
                "cost": zamba2c_passes::cost::module_cost(m),
                "module": module,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
