//! `zamba2c inspect PLAN_DIR`: the plan's IR, readable as text, Graphviz DOT or JSON.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use zamba2c_ir::device::{DeviceLayout, DeviceShape, MemoryTable};
use zamba2c_ir::kernel::{plan_rows_mma_min, Program, PROGRAM_PATH, ROWS_MMA_MIN};
use zamba2c_ir::units::si;
use zamba2c_ir::{Manifest, Plan, WeightsSource};
use zamba2c_runtime::cuda::blas::LIBRARY_FAMILY;

use super::engine::{context_or_default, MAX_BATCH};
use super::output::print_stdout;

/// Which graph `--format dot` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphChoice {
    /// The graph of a prompt chunk (T tokens).
    Prompt,
    /// The graph of one decode step.
    Decode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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
///   zamba2c inspect plans/z27 --format dot --graph prompt | dot -Tpng -o prompt.png
///   zamba2c inspect plans/demo --format json | jq .cost
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct InspectArgs {
    pub plan: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Context the memory table is computed for (default: what `run` allocates, the model's
    /// max_position_embeddings up to 16384).
    #[arg(long, value_name = "N")]
    pub max_context: Option<usize>,
    /// Sequences the memory table is computed for.
    #[arg(long, default_value_t = 1, value_name = "B")]
    pub max_batch: usize,
    /// Prompt tokens per launch the memory table is computed for (the activation arena;
    /// default 1024 for one sequence and 512 with --max-batch above 1, at most the context;
    /// `bench --prompt-chunk` runs with it).
    #[arg(long, value_name = "N")]
    pub prompt_chunk: Option<usize>,
    /// With --format dot: the graph to draw (default: decode), clustered per layer and
    /// coloured by op kind.
    #[arg(long, value_enum, value_name = "GRAPH")]
    pub graph: Option<GraphChoice>,
}

/// Tokens of the prompt chunk the program's prompt cost is given for.
const PROMPT_COST_TOKENS: usize = 512;

/// Rows of the decode step the `decode_rows` cost is given for: `--max-batch`, at least the
/// rows from which that table runs.
fn rows_cost_rows(max_batch: usize) -> usize {
    max_batch.max(ROWS_MMA_MIN)
}

/// The plan's launch table, when it has one (plans always do since format 1).
fn read_program(plan: &Plan) -> Result<Option<Program>> {
    let path = plan.dir.join(PROGRAM_PATH);
    if !plan.manifest.files.contains_key(PROGRAM_PATH) {
        return Ok(None);
    }
    Ok(Some(zamba2c_ir::plan::read_json_file(&path)?))
}

/// The family a launch runs: its kernel's, or for a library GEMM
/// `cublaslt|<its kernel's family>` (cuBLASLt when the library loads at run time, else the
/// kernel; docs/KERNELS.md "Library GEMMs").
fn launch_family(p: &Program, l: &zamba2c_ir::kernel::Launch) -> Option<String> {
    let k = p.kernels.get(&l.kernel)?;
    Some(match l.library {
        Some(_) => format!("{LIBRARY_FAMILY}|{}", k.family),
        None => k.family.clone(),
    })
}

/// Launches per kernel family of one graph (the GEMM, scan and attention kernels each op got).
fn family_counts(
    p: &Program,
    gp: &zamba2c_ir::kernel::GraphProgram,
) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for l in &gp.launches {
        if let Some(f) = launch_family(p, l) {
            *out.entry(f).or_insert(0) += 1;
        }
    }
    out
}

/// The kernel families each node of a graph launches, in launch order, each named once.
fn op_kernels(
    p: &Program,
    gp: &zamba2c_ir::kernel::GraphProgram,
) -> std::collections::BTreeMap<usize, Vec<String>> {
    let mut out: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for l in &gp.launches {
        if let Some(f) = launch_family(p, l) {
            let v = out.entry(l.node).or_default();
            if !v.contains(&f) {
                v.push(f);
            }
        }
    }
    out
}

/// What runs: launches and bytes per graph, launches per decode op, and every fused op
/// emitted through its decomposition (with why).
fn program_text(m: &zamba2c_ir::Module, p: &Program, rows: usize) -> String {
    use std::fmt::Write as _;
    let c = p.cost(PROMPT_COST_TOKENS, rows);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "program (what runs):\n  decode step: {} launches, {} per token at empty context (+{} per cached token), {}",
        c.decode.launches,
        si(c.decode.bytes_per_token, "B"),
        si(c.decode.bytes_per_cached_token, "B"),
        si(c.decode.flops_per_token, "FLOP")
    );
    let _ = writeln!(
        s,
        "  prompt chunk of {} tokens: {} launches, {}, {}",
        c.prompt.tokens,
        c.prompt.launches,
        si(c.prompt.bytes, "B"),
        si(c.prompt.flops, "FLOP")
    );
    if let Some(r) = &c.decode_rows {
        let from = plan_rows_mma_min(m).unwrap_or(ROWS_MMA_MIN);
        let _ = writeln!(
            s,
            "  decode step of {} rows (steps of >= {from} rows run decode_rows: projections on the tensor-core GEMMs; ZAMBA2C_TUNE_ROWS_MMA_MIN changes it): {} launches, {} per step at empty context (decode table: {}), +{} per cached token per row, {}",
            r.rows,
            r.launches,
            si(r.bytes_per_step, "B"),
            si(r.decode_bytes_per_step, "B"),
            si(r.bytes_per_cached_token, "B"),
            si(r.flops_per_step, "FLOP")
        );
    }
    let tables: Vec<(&str, &zamba2c_ir::kernel::GraphProgram)> = p
        .tables()
        .into_iter()
        .map(|(id, gp)| (id.name(), gp))
        .collect();
    for &(phase, gp) in &tables {
        let fams: Vec<String> = family_counts(p, gp)
            .iter()
            .map(|(f, n)| format!("{f} {n}"))
            .collect();
        let _ = writeln!(s, "  {phase} kernels by family: {}", fams.join(", "));
    }
    let order = m.decode.topo_order();
    let mut per_node: std::collections::BTreeMap<usize, (usize, f64)> = Default::default();
    for l in &p.decode.launches {
        let e = per_node.entry(l.node).or_default();
        e.0 += 1;
        e.1 += l.cost.bytes(1, 1, 0);
    }
    let _ = writeln!(s, "  decode launches per op:");
    let decode_kernels = op_kernels(p, &p.decode);
    for (node, (n, bytes)) in &per_node {
        if let Some(&idx) = order.get(*node) {
            let nd = &m.decode.g[idx];
            let _ = writeln!(
                s,
                "    %{node:<4} {:<44} {:<18} {n:>2} launches {:>10}  {}",
                nd.label,
                nd.op.name(),
                si(*bytes, "B"),
                decode_kernels
                    .get(node)
                    .map(|f| f.join(" + "))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(rows) = &p.decode_rows {
        let _ = writeln!(s, "  decode_rows launches per op:");
        let rows_kernels = op_kernels(p, rows);
        for (node, fams) in &rows_kernels {
            if let Some(&idx) = order.get(*node) {
                let nd = &m.decode.g[idx];
                let _ = writeln!(
                    s,
                    "    %{node:<4} {:<44} {:<18} {}",
                    nd.label,
                    nd.op.name(),
                    fams.join(" + ")
                );
            }
        }
    }
    for &(phase, gp) in &tables {
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

/// The device memory table for `shape` (what the CUDA engine allocates; issue 11).
fn memory_table(plan: &Plan, p: &Program, shape: DeviceShape) -> Result<MemoryTable> {
    let layout = DeviceLayout::plan(&plan.module, p, shape)
        .with_context(|| plan.dir.join(PROGRAM_PATH).display().to_string())?;
    Ok(layout.table)
}

fn memory_text(t: &MemoryTable, shape: DeviceShape) -> String {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mut s = format!(
        "GPU memory for {} tokens of context, batch {}, {}-token prompt chunks:\n",
        shape.max_context, shape.batch, shape.prompt_chunk
    );
    for (name, b) in [
        ("weights", t.weights),
        ("states (conv, SSM)", t.states),
        ("KV cache", t.kv_cache),
        ("activations (arena)", t.activations),
        ("workspace", t.workspace),
        ("total", t.total),
    ] {
        s += &format!("  {name:<20} {b:>14} bytes {:>9.3} GiB\n", gib(b));
    }
    s
}

pub fn main(a: InspectArgs) -> Result<()> {
    if a.graph.is_some() && a.format != Format::Dot {
        bail!("--graph: chooses the graph --format dot draws; text and JSON show both");
    }
    if a.max_batch == 0 || a.max_batch > MAX_BATCH {
        bail!(
            "--max-batch: must be in 1..={MAX_BATCH}, got {}",
            a.max_batch
        );
    }
    super::limits::check_prompt_chunk(a.prompt_chunk)?;
    let plan = Plan::open(&a.plan)?;
    let m = &plan.module;
    let program = read_program(&plan)?;
    let mut shape = DeviceShape::new(context_or_default(a.max_context, &plan)?, a.max_batch);
    if let Some(n) = a.prompt_chunk {
        shape = shape.with_prompt_chunk(n);
    }
    let memory = program
        .as_ref()
        .map(|p| memory_table(&plan, p, shape))
        .transpose()?;
    let text = match a.format {
        Format::Text => {
            // Only a 16-bit SSM state is named (the line's other fields stay as they were).
            let mut state = match m.ssm_state_dtype() {
                zamba2c_ir::DType::F32 => String::new(),
                d => format!(", SSM state {d}"),
            };
            if let Some(d) = m.shared_projection_dtype() {
                state += &format!(", shared blocks' projections {d}");
            }
            if m.batch_invariant {
                state += ", batch-invariant";
            }
            let mut t = format!(
                "plan {} (format {}, {}, weights {}, activations {}, KV cache {}{state})\n",
                a.plan.display(),
                plan.manifest.format_version,
                plan.manifest.created_by,
                m.dtype,
                m.act_dtype,
                m.kv_dtype
            );
            if let Some(layout) = plan.manifest.checkpoint_layout {
                t += &format!("checkpoint layout: {}\n", layout.describe());
            }
            t += "passes:\n";
            for p in &plan.manifest.passes {
                t += &format!(
                    "  {:<32} prompt {:>6} nodes   decode {:>6} nodes\n",
                    p.name, p.prompt_nodes, p.decode_nodes
                );
            }
            let wbytes: u128 = m.weights.values().map(|w| w.bytes() as u128).sum();
            t += &format!(
                "weights: {} tensors, {}, {}\n",
                m.weights.len(),
                si(wbytes as f64, "B"),
                weights_source(&plan.manifest)
            );
            t += &format!("states: {} regions\n", m.states.len());
            t += &format!("\n{}\n", zamba2c_passes::cost::render_text(m));
            if let Some(p) = &program {
                t += &format!("{}\n", program_text(m, p, rows_cost_rows(a.max_batch)));
            }
            if let Some(mem) = &memory {
                t += &format!("{}\n", memory_text(mem, shape));
            }
            t += &format!("\n== prompt graph ==\n{}\n", m.prompt.to_text());
            t += &format!("== decode graph ==\n{}\n", m.decode.to_text());
            t
        }
        Format::Dot => match a.graph.unwrap_or(GraphChoice::Decode) {
            GraphChoice::Prompt => super::dot::graph_dot(&m.prompt, "prompt"),
            GraphChoice::Decode => super::dot::graph_dot(&m.decode, "decode"),
        },
        Format::Json => {
            let module: serde_json::Value = serde_json::from_str(&m.to_json())?;
            let mut out = serde_json::json!({
                "manifest": plan.manifest,
                "cost": zamba2c_passes::cost::module_cost(m),
                "module": module,
            });
            if let Some(p) = &program {
                let c = p.cost(PROMPT_COST_TOKENS, rows_cost_rows(a.max_batch));
                // Which kernels each op runs on (by family), per graph: node -> families.
                let ops = |gp| -> serde_json::Value {
                    op_kernels(p, gp)
                        .into_iter()
                        .map(|(n, f)| (n.to_string(), serde_json::json!(f)))
                        .collect::<serde_json::Map<_, _>>()
                        .into()
                };
                out["program"] = serde_json::json!({
                    "prompt": c.prompt,
                    "decode": c.decode,
                    "decomposed": {"prompt": p.prompt.decomposed, "decode": p.decode.decomposed},
                    "families": {
                        "prompt": family_counts(p, &p.prompt),
                        "decode": family_counts(p, &p.decode),
                    },
                    "op_kernels": {"prompt": ops(&p.prompt), "decode": ops(&p.decode)},
                });
                // Steps of at least `rows_mma_min` rows run the third table (docs/KERNELS.md
                // "decode_rows"): its cost at `rows` rows, families and kernels per op.
                if let Some(rows) = &p.decode_rows {
                    out["program"]["decode_rows"] = serde_json::json!({
                        "rows_mma_min": plan_rows_mma_min(m).unwrap_or(ROWS_MMA_MIN),
                        "cost": c.decode_rows,
                        "decomposed": rows.decomposed,
                        "families": family_counts(p, rows),
                        "op_kernels": ops(rows),
                    });
                }
            }
            if let Some(mem) = &memory {
                out["memory"] = serde_json::to_value(mem)?;
                out["memory_shape"] = serde_json::to_value(shape)?;
            }
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
