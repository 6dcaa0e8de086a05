//! `zamba2c inspect PLAN_DIR`: the plan's IR, readable as text, Graphviz DOT or JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use zamba2c_ir::{Manifest, Plan, WeightsSource};

use super::output::print_stdout;

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
    let text = match a.format {
        Format::Text => {
            let mut t = format!(
                "plan {} (format {}, {}, weights {}, activations {})\n",
                a.plan.display(),
                plan.manifest.format_version,
                plan.manifest.created_by,
                m.dtype,
                m.act_dtype
            );
            t += "passes:\n";
            for p in &plan.manifest.passes {
                t += &format!(
                    "  {:<32} prompt {:>6} nodes   decode {:>6} nodes\n",
                    p.name, p.prompt_nodes, p.decode_nodes
                );
            }
            let wbytes: u128 = m.weights.values().map(|w| w.bytes() as u128).sum();
            t += &format!(
                "weights: {} tensors, {} bytes, {}\n",
                m.weights.len(),
                wbytes,
                weights_source(&plan.manifest)
            );
            t += &format!("states: {} regions\n", m.states.len());
            t += &format!("\n{}\n", zamba2c_passes::cost::render_text(m));
            t += &format!("\n== prompt graph ==\n{}\n", m.prompt.to_text());
            t += &format!("== decode graph ==\n{}\n", m.decode.to_text());
            t
        }
        Format::Dot => m.prompt.to_dot("prompt") + &m.decode.to_dot("decode"),
        Format::Json => {
            let module: serde_json::Value = serde_json::from_str(&m.to_json())?;
            let out = serde_json::json!({
                "manifest": plan.manifest,
                "cost": zamba2c_passes::cost::module_cost(m),
                "module": module,
            });
            serde_json::to_string_pretty(&out)? + "\n"
        }
    };
    // A reader that stops early (`| head -1`) ends the command quietly (output.rs).
    print_stdout(&text)
}

/// Where the weights come from, as `inspect` shows it: random weights are said to be random.
fn weights_source(m: &Manifest) -> String {
    match &m.weights {
        WeightsSource::File(f) => format!("from {f}"),
        WeightsSource::Dummy { seed } => {
            format!("RANDOM (compiled with --dummy-weights, seed {seed}; not a trained model)")
        }
    }
}
