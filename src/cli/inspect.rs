//! `zamba2c inspect PLAN_DIR`: the plan's IR, readable as text, Graphviz DOT or JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use zamba2c_ir::kernel::{Program, PROGRAM_PATH};
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

/// Tokens of the prompt chunk the program's prompt cost is given for.
const PROMPT_COST_TOKENS: usize = 512;

/// The plan's launch table, when it has one (plans always do since format 1).
fn read_program(plan: &Plan) -> Result<Option<Program>> {
    let path = plan.dir.join(PROGRAM_PATH);
    if !plan.manifest.files.contains_key(PROGRAM_PATH) {
        return Ok(None);
    }
    Ok(Some(zamba2c_ir::plan::read_json_file(&path)?))
}

/// What runs: launches and bytes per graph, launches per decode op, and every fused op
/// emitted through its decomposition (with why).
fn program_text(m: &zamba2c_ir::Module, p: &Program) -> String {
    use std::fmt::Write as _;
    let c = p.cost(PROMPT_COST_TOKENS);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "program (what runs):\n  decode step: {} launches, {:.4e} bytes per token at empty context (+{:.4e} per cached token), {:.4e} FLOP",
        c.decode.launches, c.decode.bytes_per_token, c.decode.bytes_per_cached_token, c.decode.flops_per_token
    );
    let _ = writeln!(
        s,
        "  prompt chunk of {} tokens: {} launches, {:.4e} bytes, {:.4e} FLOP",
        c.prompt.tokens, c.prompt.launches, c.prompt.bytes, c.prompt.flops
    );
    let order = m.decode.topo_order();
    let mut per_node: std::collections::BTreeMap<usize, (usize, f64)> = Default::default();
    for l in &p.decode.launches {
        let e = per_node.entry(l.node).or_default();
        e.0 += 1;
        e.1 += l.cost.bytes(1, 1, 0);
    }
    let _ = writeln!(s, "  decode launches per op:");
    for (node, (n, bytes)) in &per_node {
        if let Some(&idx) = order.get(*node) {
            let nd = &m.decode.g[idx];
            let _ = writeln!(
                s,
                "    %{node:<4} {:<44} {:<18} {n:>2} launches {bytes:>12.4e} B",
                nd.label,
                nd.op.name()
            );
        }
    }
    for (phase, gp) in [("prompt", &p.prompt), ("decode", &p.decode)] {
        for d in &gp.decomposed {
            let _ = writeln!(
                s,
                "  decomposed ({phase}) %{} {} ({}): {}",
                d.node, d.label, d.op, d.reason
            );
        }
    }
    s
}

pub fn main(a: InspectArgs) -> Result<()> {
    let plan = Plan::open(&a.plan)?;
    let m = &plan.module;
    let program = read_program(&plan)?;
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
            if let Some(p) = &program {
                println!("{}", program_text(m, p));
            }
            println!("\n== prompt graph ==\n{}", m.prompt.to_text());
            println!("== decode graph ==\n{}", m.decode.to_text());
        }
        Format::Dot => {
            print!("{}", m.prompt.to_dot("prompt"));
            print!("{}", m.decode.to_dot("decode"));
        }
        Format::Json => {
            let module: serde_json::Value = serde_json::from_str(&m.to_json())?;
            let mut out = serde_json::json!({
                "manifest": plan.manifest,
                "cost": zamba2c_passes::cost::module_cost(m),
                "module": module,
            });
            if let Some(p) = &program {
                out["program"] = serde_json::json!({
                    "prompt": p.cost(PROMPT_COST_TOKENS).prompt,
                    "decode": p.cost(PROMPT_COST_TOKENS).decode,
                    "decomposed": {"prompt": p.prompt.decomposed, "decode": p.decode.decomposed},
                });
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
