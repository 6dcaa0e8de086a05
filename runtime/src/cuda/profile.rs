//! `zamba2c bench --profile`: every launch of a decode step (and of a prompt chunk) timed with
//! CUDA events in eager mode, set beside what the launch moves and computes (the plan's
//! [`LaunchCost`](zamba2c_ir::kernel::LaunchCost)): achieved bandwidth, the fraction of its own
//! floor on the H200 (bytes at the measured copy bandwidth, FLOPs at the bf16 matmul peak), per
//! node and per kernel family; and the launch gap, the graph-replayed step minus the kernels'
//! sum. Every speed change is judged with it (docs/PERFORMANCE.md).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use serde::Serialize;
use zamba2c_ir::kernel::{GraphId, H200_BF16_FLOPS, H200_COPY_BYTES_PER_S};
use zamba2c_ir::{Phase, Plan};

use super::bench::{bench_with, BenchReport};
use super::blas::LIBRARY_FAMILY;
use super::engine::{CudaEngine, CudaOptions};
use crate::{Engine, RuntimeError};

/// One node's launches.
#[derive(Debug, Clone, Serialize)]
pub struct NodeProfile {
    pub node: usize,
    pub label: String,
    pub op: String,
    pub kernels: Vec<String>,
    pub launches: usize,
    pub ms: f64,
    pub bytes: f64,
    pub flops: f64,
    pub gb_per_s: f64,
    /// The node's floor (max of bytes at the copy bandwidth and FLOPs at the bf16 peak) over
    /// its measured time.
    pub floor_frac: f64,
    /// Share of the phase's kernel time.
    pub frac: f64,
}

/// One kernel family's launches.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyProfile {
    pub family: String,
    pub launches: usize,
    pub ms: f64,
    pub bytes: f64,
    pub gb_per_s: f64,
    /// FLOPs of the family's launches (codegen's cost model) and their rate.
    pub flops: f64,
    pub tflop_per_s: f64,
    pub floor_frac: f64,
    pub frac: f64,
}

/// One phase: a decode step at `context` cached tokens, or a prompt chunk of `tokens`.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseProfile {
    pub phase: String,
    pub tokens: usize,
    pub context: usize,
    pub launches: usize,
    /// Sum of the launches' median times.
    pub kernels_ms: f64,
    pub bytes: f64,
    pub floor_ms: f64,
    pub families: Vec<FamilyProfile>,
    pub nodes: Vec<NodeProfile>,
}

/// The whole profile, with the plain bench it was run beside.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    pub bench: BenchReport,
    pub decode: PhaseProfile,
    /// Graph-replayed decode step (the bench's median) minus the kernels' sum.
    pub launch_gap_ms: f64,
    pub prompt: PhaseProfile,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn floor_ms(bytes: f64, flops: f64) -> f64 {
    (bytes / H200_COPY_BYTES_PER_S).max(flops / H200_BF16_FLOPS) * 1e3
}

/// Per-launch median times of `runs` (calls of table `id` over `b` sequences of `tokens`
/// tokens after `context` cached ones) -> the table's profile.
fn summarise(
    plan: &Plan,
    e: &CudaEngine,
    (id, b): (GraphId, usize),
    runs: &[Vec<f64>],
    tokens: usize,
    context: usize,
) -> Result<PhaseProfile, RuntimeError> {
    let phase = id.phase();
    let gp = e
        .program()
        .table(id)
        .ok_or_else(|| RuntimeError::Device(format!("the plan has no {id:?} table")))?;
    let order = plan.module.graph(phase).topo_order();
    let n = gp.launches.len();
    let ms: Vec<f64> = (0..n)
        .map(|l| median(runs.iter().filter_map(|r| r.get(l).copied()).collect()))
        .collect();
    let total: f64 = ms.iter().sum();
    let mut nodes: BTreeMap<usize, NodeProfile> = BTreeMap::new();
    let mut fams: BTreeMap<String, FamilyProfile> = BTreeMap::new();
    let (mut all_bytes, mut all_floor) = (0.0, 0.0);
    for (l, launch) in gp.launches.iter().enumerate() {
        let bytes = launch.cost.bytes(b, tokens, context);
        let flops = launch.cost.flops(b, tokens, context);
        all_bytes += bytes;
        all_floor += floor_ms(bytes, flops);
        // A launch the library runs is reported as the library's, not as its kernel's.
        let (family, kernel) = if e.runs_library(launch) {
            (LIBRARY_FAMILY.to_string(), LIBRARY_FAMILY.to_string())
        } else {
            let family = e
                .program()
                .kernels
                .get(&launch.kernel)
                .map_or_else(|| launch.kernel.clone(), |k| k.family.clone());
            (family, launch.kernel.clone())
        };
        let node = nodes.entry(launch.node).or_insert_with(|| {
            let (label, op) = order
                .get(launch.node)
                .map(|&i| {
                    let nd = &plan.module.graph(phase).g[i];
                    (nd.label.clone(), nd.op.name().to_string())
                })
                .unwrap_or_default();
            NodeProfile {
                node: launch.node,
                label,
                op,
                kernels: vec![],
                launches: 0,
                ms: 0.0,
                bytes: 0.0,
                flops: 0.0,
                gb_per_s: 0.0,
                floor_frac: 0.0,
                frac: 0.0,
            }
        });
        node.kernels.push(kernel);
        node.launches += 1;
        node.ms += ms[l];
        node.bytes += bytes;
        node.flops += flops;
        let f = fams.entry(family.clone()).or_insert_with(|| FamilyProfile {
            family,
            launches: 0,
            ms: 0.0,
            bytes: 0.0,
            gb_per_s: 0.0,
            flops: 0.0,
            tflop_per_s: 0.0,
            floor_frac: 0.0,
            frac: 0.0,
        });
        f.launches += 1;
        f.ms += ms[l];
        f.bytes += bytes;
        f.flops += flops;
        f.floor_frac += floor_ms(bytes, flops); // floor ms for now; a fraction below
    }
    let mut nodes: Vec<NodeProfile> = nodes.into_values().collect();
    for nd in &mut nodes {
        nd.gb_per_s = nd.bytes / (nd.ms * 1e6).max(1e-9);
        nd.floor_frac = floor_ms(nd.bytes, nd.flops) / nd.ms.max(1e-9);
        nd.frac = nd.ms / total.max(1e-9);
    }
    let mut families: Vec<FamilyProfile> = fams.into_values().collect();
    for f in &mut families {
        f.gb_per_s = f.bytes / (f.ms * 1e6).max(1e-9);
        f.tflop_per_s = f.flops / (f.ms * 1e9).max(1e-9);
        f.floor_frac /= f.ms.max(1e-9);
        f.frac = f.ms / total.max(1e-9);
    }
    families.sort_by(|x, y| y.ms.total_cmp(&x.ms));
    Ok(PhaseProfile {
        phase: id.name().into(),
        tokens,
        context,
        launches: n,
        kernels_ms: total,
        bytes: all_bytes,
        floor_ms: all_floor,
        families,
        nodes,
    })
}

/// Runs the plain bench, then profiles `steps` eager decode steps after a `prompt_len`-token
/// prompt (per-launch medians) and one prompt chunk of up to `prompt_len` tokens: the engine's
/// prompt launch size, or `prompt_chunk` tokens when given (`bench --profile --prompt-chunk`).
pub fn profile(
    plan: &Plan,
    prompt_len: usize,
    gen_len: usize,
    prompt_chunk: Option<usize>,
) -> Result<ProfileReport, RuntimeError> {
    let with_chunk = |ctx: usize| CudaOptions::new(ctx).with_prompt_chunk(prompt_chunk);
    let report = bench_with(plan, prompt_len, gen_len, with_chunk(prompt_len + gen_len))?;
    const STEPS: usize = 8;
    let ctx_len = prompt_len + STEPS + 1;
    let mut e = CudaEngine::with_options(plan, with_chunk(ctx_len))?;
    e.set_cuda_graph(false);
    let vocab = e.vocab_size() as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x9e0f);
    let prompt: Vec<u32> = (0..prompt_len)
        .map(|_| rng.random_range(0..vocab))
        .collect();
    // Warm-up (module loading, first touches), then the decode steps.
    e.prefill(&prompt)?;
    e.decode_step(1)?;
    e.reset();
    e.prefill(&prompt)?;
    let mut runs = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let tok = rng.random_range(0..vocab);
        runs.push(e.profile_phase(Phase::Decode, &[tok])?);
    }
    let decode = summarise(plan, &e, (GraphId::Decode, 1), &runs, 1, prompt_len)?;
    // A prompt chunk from an empty state, as long as one launch of the prompt graph takes.
    let chunk = prompt_len.min(e.prompt_chunk());
    let mut runs = Vec::new();
    for _ in 0..3 {
        e.reset();
        runs.push(e.profile_phase(Phase::Prompt, &prompt[..chunk])?);
    }
    let prompt_p = summarise(plan, &e, (GraphId::Prompt, 1), &runs, chunk, 0)?;
    let launch_gap_ms = report.decode_ms_per_token - decode.kernels_ms;
    Ok(ProfileReport {
        bench: report,
        decode,
        launch_gap_ms,
        prompt: prompt_p,
    })
}

impl ProfileReport {
    /// The human table: per family for both phases, then the decode step's slowest nodes.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for p in [&self.decode, &self.prompt] {
            families_text(&mut s, p);
        }
        let _ = writeln!(
            s,
            "decode step with CUDA graph {:.3} ms; kernels {:.3} ms; launch gap {:.3} ms",
            self.bench.decode_ms_per_token, self.decode.kernels_ms, self.launch_gap_ms
        );
        slowest_nodes(&mut s, &self.decode);
        s
    }
}

/// The family table of one profiled table (both reports print it).
fn families_text(s: &mut String, p: &PhaseProfile) {
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "{} ({} tokens, context {}): {} launches, kernels {:.3} ms, {:.3e} bytes, floor {:.3} ms ({:.0}% of floor)",
        p.phase,
        p.tokens,
        p.context,
        p.launches,
        p.kernels_ms,
        p.bytes,
        p.floor_ms,
        100.0 * p.floor_ms / p.kernels_ms.max(1e-9)
    );
    let _ = writeln!(
        s,
        "  {:<20} {:>8} {:>10} {:>7} {:>10} {:>9} {:>8}",
        "family", "launches", "ms", "share", "GB/s", "TFLOP/s", "floor%"
    );
    for f in &p.families {
        let _ = writeln!(
            s,
            "  {:<20} {:>8} {:>10.4} {:>6.1}% {:>10.1} {:>9.1} {:>7.1}%",
            f.family,
            f.launches,
            f.ms,
            100.0 * f.frac,
            f.gb_per_s,
            f.tflop_per_s,
            100.0 * f.floor_frac
        );
    }
}

/// The twelve slowest nodes of a profiled table.
fn slowest_nodes(s: &mut String, p: &PhaseProfile) {
    use std::fmt::Write as _;
    let mut slow: Vec<&NodeProfile> = p.nodes.iter().collect();
    slow.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let _ = writeln!(s, "slowest {} nodes:", p.phase);
    for n in slow.iter().take(12) {
        let _ = writeln!(
            s,
            "  %{:<4} {:<44} {:<18} {:>8.4} ms {:>8.1} GB/s {:>6.1}% of floor",
            n.node,
            n.label,
            n.op,
            n.ms,
            n.gb_per_s,
            100.0 * n.floor_frac
        );
    }
}

/// A decode step of `batch` sequences profiled (`bench --profile --batch B`): every launch of
/// the table the step runs, and where the rest of a step's wall time goes.
#[derive(Debug, Clone, Serialize)]
pub struct BatchProfileReport {
    pub batch: usize,
    /// Tokens each sequence holds before the profiled steps (its prompt).
    pub context: usize,
    /// Per launch, eager, each between CUDA events (`step.phase` names the table:
    /// `decode` or `decode_rows`).
    pub step: PhaseProfile,
    /// Median wall time of a whole `BatchEngine::decode` call with CUDA graphs on: token and
    /// `meta` upload, the graph replay, the logits download.
    pub call_ms: f64,
    /// Median device time of the same step between CUDA events (upload and graph replay, no
    /// download): `call_ms` minus this is host work and the logits' trip back.
    pub device_step_ms: f64,
    /// Median host time of an argmax over every row's logits (greedy sampling's share of a
    /// batcher step).
    pub argmax_ms: f64,
    /// Median wall time of a whole `BatchEngine::decode_greedy` call: the same step returning
    /// each row's greedy token (picked on the device when the table has `argmax_rows`, so one
    /// id a row comes back instead of the logits).
    pub greedy_call_ms: f64,
}

/// Loads `plan` with `batch` slots, prefills each with a random `prompt_len`-token prompt, then
/// times whole decode calls (graphs on), the same steps on the device alone, and eager steps
/// launch by launch.
pub fn profile_batch(
    plan: &Plan,
    batch: usize,
    prompt_len: usize,
) -> Result<BatchProfileReport, RuntimeError> {
    const STEPS: usize = 8;
    // Each step below appends one token to every slot: 2 warm-up calls, then four runs of STEPS.
    let options = CudaOptions::batched(prompt_len + 4 * STEPS + 2, batch.max(1));
    let mut e = CudaEngine::with_options(plan, options)?;
    let vocab = Engine::vocab_size(&e) as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xba7c);
    let slots: Vec<usize> = (0..batch.max(1)).collect();
    for &s in &slots {
        let prompt: Vec<u32> = (0..prompt_len)
            .map(|_| rng.random_range(0..vocab))
            .collect();
        crate::batch::BatchEngine::prefill(&mut e, s, &prompt)?;
    }
    let step_tokens = |rng: &mut rand::rngs::StdRng| -> Vec<(usize, u32)> {
        slots
            .iter()
            .map(|&s| (s, rng.random_range(0..vocab)))
            .collect()
    };
    // Whole calls: the first runs eagerly, the second captures the step's graph, then replays.
    let (mut call, mut argmax) = (Vec::new(), Vec::new());
    for i in 0..STEPS + 2 {
        let rows = step_tokens(&mut rng);
        let t = std::time::Instant::now();
        let logits = crate::batch::BatchEngine::decode(&mut e, &rows)?;
        let dt = t.elapsed().as_secs_f64() * 1e3;
        let t = std::time::Instant::now();
        let picked: u64 = logits
            .chunks_exact(vocab as usize)
            .map(|row| u64::from(crate::generate::sampling::argmax(row)))
            .sum();
        std::hint::black_box(picked);
        if i >= 2 {
            call.push(dt);
            argmax.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut greedy = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let rows = step_tokens(&mut rng);
        let t = std::time::Instant::now();
        std::hint::black_box(crate::batch::BatchEngine::decode_greedy(&mut e, &rows)?);
        greedy.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut device = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let rows = step_tokens(&mut rng);
        device.push(e.time_decode_step(&rows)?);
    }
    e.set_cuda_graph(false);
    let id = e.decode_table_for(slots.len());
    let mut runs = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let tokens: Vec<u32> = step_tokens(&mut rng).into_iter().map(|r| r.1).collect();
        runs.push(e.profile_call(id, &slots, &tokens)?);
    }
    let step = summarise(plan, &e, (id, slots.len()), &runs, 1, prompt_len)?;
    Ok(BatchProfileReport {
        batch: slots.len(),
        context: prompt_len,
        step,
        call_ms: median(call),
        device_step_ms: median(device),
        argmax_ms: median(argmax),
        greedy_call_ms: median(greedy),
    })
}

impl BatchProfileReport {
    /// The human table: the step's families, the whole call beside its kernels, the slowest
    /// nodes.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "decode step of {} sequences:", self.batch);
        families_text(&mut s, &self.step);
        let _ = writeln!(
            s,
            "whole decode call {:.3} ms; on the device (uploads and graph replay) {:.3} ms; kernels {:.3} ms eager; argmax of {} rows on the host {:.3} ms; whole greedy-token call {:.3} ms",
            self.call_ms,
            self.device_step_ms,
            self.step.kernels_ms,
            self.batch,
            self.argmax_ms,
            self.greedy_call_ms
        );
        slowest_nodes(&mut s, &self.step);
        s
    }
}
