//! `zamba2c bench --device cuda`: time to first token, decode ms/token (median of steps timed
//! with CUDA events), and GPU memory, on random token ids; whether decode replayed a CUDA graph
//! (`ZAMBA2C_NO_CUDA_GRAPH=1` measures the eager launches instead).

use rand::{Rng, SeedableRng};
use serde::Serialize;
use zamba2c_ir::device::{DeviceLayout, MemoryTable};
use zamba2c_ir::Plan;

use super::engine::{CudaEngine, CudaOptions};
use crate::{Engine, RuntimeError};

/// What `bench` measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub device: String,
    pub prompt_len: usize,
    pub gen_len: usize,
    /// Tokens the KV caches were allocated for.
    pub max_context: usize,
    /// Most prompt tokens one prompt launch processed (longer prompts ran in chunks).
    pub prompt_chunk: usize,
    /// Prefill of the prompt through the last position's logits on the host, wall clock,
    /// after a warm-up.
    pub ttft_ms: f64,
    /// The same prefill timed on the device (CUDA events around it): `ttft_ms` minus this is
    /// host time (launch calls, the copy of the logits row).
    pub prefill_gpu_ms: f64,
    /// Median decode step (CUDA events around the step's launches and logits copy).
    pub decode_ms_per_token: f64,
    pub decode_ms_min: f64,
    pub decode_ms_max: f64,
    /// What the plan predicts the engine allocates for this context (`inspect --max-context`):
    /// computed from the plan alone, before loading.
    pub predicted_bytes: u64,
    /// The prediction by part: weights, states, kv_cache, activations, workspace, total.
    pub memory: MemoryTable,
    /// Bytes the engine allocated (weights, states, activations, workspace).
    pub engine_bytes: usize,
    /// Device memory in use just before the engine allocated (the CUDA context, modules).
    pub baseline_gpu_bytes: usize,
    /// Largest device memory in use (total - free) seen during the run: the process's peak
    /// when nothing else runs on the GPU.
    pub peak_gpu_bytes: usize,
    /// Whether every timed decode step replayed a captured CUDA graph (false with
    /// `ZAMBA2C_NO_CUDA_GRAPH=1` or when capture failed: then every step ran eagerly).
    pub cuda_graph: bool,
    /// Timed decode steps that replayed a CUDA graph (of `gen_len`).
    pub cuda_graph_replays: u64,
    /// Why capture was turned off, when a capture failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_graph_failure: Option<String>,
}

fn dev(e: cudarc::driver::DriverError) -> RuntimeError {
    RuntimeError::Device(format!("CUDA driver: {e:?}"))
}

/// Loads `plan` with room for `max_context` tokens (at least `prompt_len + gen_len`), runs
/// one warm-up round, then measures a prefill of `prompt_len` random tokens and `gen_len`
/// decode steps.
pub fn bench(
    plan: &Plan,
    prompt_len: usize,
    gen_len: usize,
    max_context: usize,
) -> Result<BenchReport, RuntimeError> {
    bench_with(plan, prompt_len, gen_len, CudaOptions::new(max_context))
}

/// [`bench`] with explicit load options (`options.max_context` is the context; e.g. a prompt
/// chunk other than the default, `bench --prompt-chunk`).
pub fn bench_with(
    plan: &Plan,
    prompt_len: usize,
    gen_len: usize,
    options: CudaOptions,
) -> Result<BenchReport, RuntimeError> {
    let mut runs = bench_runs(plan, prompt_len, gen_len, options, 1)?;
    runs.pop()
        .ok_or_else(|| RuntimeError::Input("bench: no run".into()))
}

/// [`bench_with`] measured `runs` times on one engine: loaded and warmed up once, reset
/// before each run (the same prompt and steps each time). `bench --repeat` on a 2.7B plan
/// spent most of each run loading the weights again (docs/PERFORMANCE.md, twenty-third
/// session).
pub fn bench_runs(
    plan: &Plan,
    prompt_len: usize,
    gen_len: usize,
    options: CudaOptions,
    runs: usize,
) -> Result<Vec<BenchReport>, RuntimeError> {
    let max_context = options.max_context;
    let options_chunk = options.prompt_chunk;
    if prompt_len == 0 {
        return Err(RuntimeError::Input(
            "--prompt-len must be at least 1".into(),
        ));
    }
    if prompt_len + gen_len > max_context {
        return Err(RuntimeError::Input(format!(
            "{prompt_len} prompt tokens and {gen_len} steps do not fit a context of {max_context}"
        )));
    }
    // The prediction, from the plan alone (what `inspect --max-context` prints).
    let program = super::engine::read_program(plan)?;
    let memory = DeviceLayout::plan(&plan.module, &program, options.shape())
        .map_err(|e| RuntimeError::Input(e.to_string()))?
        .table;
    drop(program);
    let mut e = CudaEngine::with_options(plan, options)?;
    let cu = e.context().clone();
    let device = cu.name().unwrap_or_else(|_| "CUDA device".into());
    let total = cu.total_mem().map_err(dev)?;
    let mut peak = 0usize;
    let sample = |peak: &mut usize| {
        if let Ok((free, _)) = cu.mem_get_info() {
            *peak = (*peak).max(total.saturating_sub(free));
        }
    };
    let vocab = e.vocab_size() as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let prompt: Vec<u32> = (0..prompt_len)
        .map(|_| rng.random_range(0..vocab))
        .collect();
    let steps: Vec<u32> = (0..gen_len).map(|_| rng.random_range(0..vocab)).collect();

    // Warm-up: first launches load modules lazily and touch every buffer; the second decode
    // step captures the decode CUDA graph (reset keeps it), so no timed step pays for capture.
    e.prefill_last(&prompt)?;
    for &t in steps.iter().take(2) {
        e.decode_step(t)?;
    }
    e.reset();
    sample(&mut peak);

    let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = cu.new_event(flags).map_err(dev)?;
    let end = cu.new_event(flags).map_err(dev)?;
    let mut reports = Vec::with_capacity(runs);
    for run in 0..runs {
        if run > 0 {
            e.reset();
        }
        let t0 = std::time::Instant::now();
        start.record(e.stream()).map_err(dev)?;
        e.prefill_last(&prompt)?;
        end.record(e.stream()).map_err(dev)?;
        let ttft_ms = t0.elapsed().as_secs_f64() * 1e3;
        end.synchronize().map_err(dev)?;
        let prefill_gpu_ms = start.elapsed_ms(&end).map_err(dev)? as f64;
        sample(&mut peak);

        let mut times = Vec::with_capacity(gen_len);
        let replays_before = e.cuda_graph_replays();
        for &t in &steps {
            start.record(e.stream()).map_err(dev)?;
            e.decode_step(t)?;
            end.record(e.stream()).map_err(dev)?;
            end.synchronize().map_err(dev)?;
            times.push(start.elapsed_ms(&end).map_err(dev)? as f64);
        }
        sample(&mut peak);
        let cuda_graph_replays = e.cuda_graph_replays() - replays_before;
        times.sort_by(f64::total_cmp);
        let median = if times.is_empty() {
            0.0
        } else {
            times[times.len() / 2]
        };
        reports.push(BenchReport {
            device: device.clone(),
            prompt_len,
            gen_len,
            max_context,
            prompt_chunk: options_chunk,
            ttft_ms,
            prefill_gpu_ms,
            decode_ms_per_token: median,
            decode_ms_min: times.first().copied().unwrap_or(0.0),
            decode_ms_max: times.last().copied().unwrap_or(0.0),
            predicted_bytes: memory.total,
            memory,
            engine_bytes: e.allocated_bytes(),
            baseline_gpu_bytes: e.used_before_alloc(),
            peak_gpu_bytes: peak,
            cuda_graph: gen_len > 0 && cuda_graph_replays == gen_len as u64,
            cuda_graph_replays,
            cuda_graph_failure: e.cuda_graph_failure().map(str::to_owned),
        });
    }
    Ok(reports)
}
