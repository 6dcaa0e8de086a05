//! `zamba2c compile MODEL_DIR -o PLAN_DIR`: checkpoint -> IR -> passes -> plan directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use zamba2c_ir::checkpoint::Checkpoint;
use zamba2c_ir::fsread::{open_regular, Links};
use zamba2c_ir::plan::valid_arch;
use zamba2c_ir::{
    lower_with_kv, verify_module, DType, PlanInfo, PlanWriter, WeightsSource, Zamba2Config,
};

/// Compile a Hugging Face Zamba2 checkpoint (a directory, or a Hub repo id) into a
/// self-contained plan.
///
/// A repo id (ORG/NAME) is looked up in the local Hugging Face cache (HF_HUB_CACHE, else
/// HF_HOME/hub, else ~/.cache/huggingface/hub) at --revision, and downloaded into it when
/// missing (from HF_ENDPOINT, with HF_TOKEN for gated repos; never with HF_HUB_OFFLINE=1).
///
/// Examples:
///   zamba2c compile Zyphra/Zamba2-2.7B -o plans/z27 --dtype bf16
///   zamba2c compile ./Zamba2-2.7B -o plans/z27 --dtype bf16
///   zamba2c compile ./config-only -o plans/bench --dummy-weights --dtype bf16
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct CompileArgs {
    /// Checkpoint directory: config.json, model.safetensors (or a sharded index, or a torch.save
    /// pytorch_model.bin / *.pt), tokenizer.json; any layout the README lists. Or a Hugging
    /// Face repo id (ORG/NAME) that is not a directory here.
    #[arg(value_name = "MODEL_DIR|ORG/NAME")]
    pub model_dir: PathBuf,
    /// With a repo id: the branch, tag or commit (default: main).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Output plan directory. An existing one is replaced atomically, and only if it is empty
    /// or a zamba2c plan holding nothing but its own files.
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
    /// Weight dtype of the plan: f32, bf16 or f16. With 16-bit weights the prompt's and batched
    /// steps' GEMMs run on tensor cores: bf16 weights read f32 activations as two bf16 planes
    /// (hi + lo), f16 weights as one f16 rounding (half the tensor-core work; docs/KERNELS.md
    /// "GEMM inputs").
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Activation dtype (residual stream, conv state, KV cache). f32 by default: with bf16
    /// activations a random-weight 2.7B model is 7.4e-2 away from f32 (transformers' own bf16
    /// run is 7.5e-2), with f32 activations and bf16 weights 2.8e-5 (docs/PERFORMANCE.md).
    #[arg(long, default_value = "f32")]
    pub act_dtype: String,
    /// KV cache dtype: f32, bf16 or f16 (default: bf16 with bf16 or f16 weights, else the
    /// activation dtype). A 16-bit cache halves the cache and the bytes decode attention
    /// reads per cached token; K and V are rounded to it when cached, on the CPU as on the GPU.
    /// On the 2.7B shape the bf16 plan with a bf16 cache is 4.5e-3 from transformers f32, top-1
    /// 99.6%, inside the 2e-2 / 99% bar (docs/PERFORMANCE.md, 2026-12-01); f16 keeps 3 more
    /// bits (emulated: 4.8e-4 for the cache alone against bf16's 4.0e-3).
    #[arg(long, value_name = "f32|bf16|f16")]
    pub kv_dtype: Option<String>,
    /// SSM state dtype: f32, f16 or bf16 (default: f16 with bf16 or f16 weights, else f32). The
    /// recurrence runs in f32; the state each Mamba layer keeps per sequence (71 MB per sequence
    /// in f32 on the 2.7B) is rounded to it when stored, halving what a decode step reads and
    /// writes per sequence: a 64-row step of the 2.7B 8.68 -> 8.19 ms on the H200, its fidelity
    /// unchanged where the state carries the outputs (decode 4.56e-3 -> 4.62e-3 from
    /// transformers f32, the same top-1), and over 10,000 decode steps no drift from the f32
    /// state's logits (2.5e-4 .. 4.5e-4 throughout; docs/PERFORMANCE.md, eighteenth session).
    /// bf16 keeps 8 bits (3.1e-3 emulated); f16 needs values below 65504.
    #[arg(long, value_name = "f32|f16|bf16")]
    pub state_dtype: Option<String>,
    /// Weight dtype of the shared attention and MLP blocks' projections (with their adapters)
    /// and of each hybrid layer's `linear`: bf16 or f16 (default: f16 with --dtype bf16, else
    /// --dtype). f16 there gives those GEMMs one f16 plane of their f32 input (half the
    /// tensor-core work of two bf16 planes) while the Mamba mixers' in_proj and out_proj keep
    /// two bf16 planes: on the 2.7B shape TTFT 71.6 -> 59.9 ms at 2048 tokens, fidelity as the
    /// all-bf16 plan's (4.5e-3 from transformers f32, top-1 99.6%; docs/PERFORMANCE.md,
    /// seventeenth session). A weight beyond f16's ±65504 is refused: bf16 here keeps it.
    #[arg(long, value_name = "bf16|f16")]
    pub shared_dtype: Option<String>,
    /// A sequence's tokens do not depend on the other sequences of a batch (`run --prompts-file
    /// --max-batch B` prints what each prompt gives alone, bit for bit): every decode step, of
    /// one row too, runs the `decode_rows` table, whose projections sum in an order fixed at
    /// compile time (docs/KERNELS.md "linear_rows"). Costs single-sequence decode speed (more
    /// launches than the one-row table).
    #[arg(long)]
    pub batch_invariant: bool,
    /// Random weights (the directory needs only config.json); the plan records the seed.
    #[arg(long)]
    pub dummy_weights: bool,
    /// Seed of --dummy-weights.
    #[arg(short = 's', long, default_value_t = 0)]
    pub seed: u64,
    /// Optimisation level: 0 skips the optimising passes.
    #[arg(short = 'O', default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub opt_level: u8,
    /// Write the IR after each pass (text and Graphviz DOT) into this directory.
    #[arg(long, value_name = "DIR")]
    pub dump_ir: Option<PathBuf>,
    /// Also compile every kernel with NVRTC for this GPU architecture (e.g. sm_90) and store
    /// the PTX in the plan; needs libnvrtc.so.13 (no GPU).
    #[arg(long)]
    pub arch: Option<String>,
}

pub fn main(mut a: CompileArgs) -> Result<()> {
    // Every flag and the output directory are checked before any work (issue 16).
    let dtype = DType::parse_float(&a.dtype)
        .with_context(|| format!("--dtype: {:?} is not one of f32, bf16, f16", a.dtype))?;
    let act_dtype = DType::parse_float(&a.act_dtype).with_context(|| {
        format!(
            "--act-dtype: {:?} is not one of f32, bf16, f16",
            a.act_dtype
        )
    })?;
    // bf16 and f16 weights get the measured 16-bit defaults below (cache, state, shared blocks).
    let sixteen_bit = matches!(dtype, DType::BF16 | DType::F16);
    let kv_dtype = match a.kv_dtype.as_deref() {
        // 16-bit weights: a bf16 cache by default (docs/PERFORMANCE.md: inside the fidelity
        // bar). With f16 weights an f16 cache keeps 3 more bits in the same bytes (emulated:
        // the f16 plan 6.0e-3 -> 4.1e-3); it becomes their default once the H200 has run it.
        None if sixteen_bit => DType::BF16,
        None => act_dtype,
        Some("f32") => DType::F32,
        Some("bf16") => DType::BF16,
        Some("f16") => DType::F16,
        Some(other) => bail!("--kv-dtype: {other:?} is not one of f32, bf16, f16"),
    };
    let state_dtype = match a.state_dtype.as_deref() {
        // 16-bit weights: an f16 state by default (the measured trade in the doc comment above);
        // f32 weights keep the exact plan's f32 state.
        None if sixteen_bit => DType::F16,
        None => DType::F32,
        Some(s) => DType::parse_float(s)
            .with_context(|| format!("--state-dtype: {s:?} is not one of f32, f16, bf16"))?,
    };
    let shared_dtype = match a.shared_dtype.as_deref() {
        // The measured default of bf16 plans (the doc comment above).
        None if dtype == DType::BF16 => Some(DType::F16),
        None => None,
        Some(s @ ("bf16" | "f16")) if sixteen_bit => DType::parse_float(s),
        Some("bf16" | "f16") => bail!(
            "--shared-dtype: needs 16-bit weights (--dtype bf16 or f16), not --dtype {}",
            a.dtype
        ),
        Some(other) => bail!("--shared-dtype: {other:?} is not one of bf16, f16"),
    };
    if let Some(arch) = &a.arch {
        if !valid_arch(arch) {
            bail!("--arch: {arch:?} is not a GPU architecture like sm_90");
        }
    }
    if let Some(d) = &a.dump_ir {
        if std::fs::symlink_metadata(d).is_ok_and(|m| !m.is_dir()) {
            bail!("--dump-ir: {}: exists and is not a directory", d.display());
        }
    }
    // A repo id names the cache's snapshot; a path that exists is always the path.
    let arg = a.model_dir.to_string_lossy().into_owned();
    let is_hub = !a.model_dir.exists() && super::hub::is_repo_id(&arg);
    if a.revision.is_some() && !is_hub {
        bail!("--revision: only with a Hugging Face repo id (ORG/NAME), not the directory {arg}");
    }
    if is_hub {
        a.model_dir = super::hub::resolve(&arg, a.revision.as_deref())?;
    }
    if !a.model_dir.is_dir() {
        bail!(
            "{}: not a checkpoint directory (does not exist or is not a directory)",
            a.model_dir.display()
        );
    }
    let mut w =
        PlanWriter::create_with_inputs(&a.out, &checkpoint_inputs(&a.model_dir)).context("-o")?;
    let (config, checkpoint) = if a.dummy_weights {
        (
            Zamba2Config::from_file(&a.model_dir.join("config.json"))?,
            None,
        )
    } else {
        let ck = Checkpoint::open(&a.model_dir)?;
        (ck.config().clone(), Some(ck))
    };
    // One line on a terminal that says which step runs (indicatif draws nothing on a pipe);
    // the weights get their own bar below.
    let steps = ProgressBar::new_spinner();
    steps.enable_steady_tick(std::time::Duration::from_millis(120));
    steps.set_message("lowering and running the passes");
    let mut module = lower_with_kv(&config, dtype, act_dtype, kv_dtype);
    module.set_ssm_state_dtype(state_dtype);
    if let Some(d) = shared_dtype {
        module.set_shared_projection_dtype(d);
    }
    module.batch_invariant = a.batch_invariant;
    verify_module(&module).context("after lowering")?;
    let passes = zamba2c_passes::run_pipeline(&mut module, a.opt_level, a.dump_ir.as_deref())?;
    if let Some(ck) = &checkpoint {
        ck.check(&module)?;
    }

    if let Some(ck) = &checkpoint {
        w.record_checkpoint_layout(ck.layout());
    }
    w.write("module.json", module.to_json().as_bytes())?;
    steps.finish_and_clear();
    let weights = match &checkpoint {
        Some(ck) => {
            let path = w.file_path("weights.safetensors")?;
            let bar = progress_bar(module.weights.len() as u64, "converting weights");
            ck.write_plan_weights(&module, &path, &mut |done, _| bar.set_position(done as u64))?;
            bar.finish_and_clear();
            WeightsSource::File("weights.safetensors".into())
        }
        None => WeightsSource::Dummy { seed: a.seed },
    };
    let tokenizer = copy_tokenizer(&a.model_dir, &mut w)?;
    if tokenizer.is_none() {
        tracing::warn!(
            "{}: no tokenizer.json; the plan runs token ids only (run --tokens), not text prompts",
            a.model_dir.display()
        );
    }
    let steps = ProgressBar::new_spinner();
    steps.enable_steady_tick(std::time::Duration::from_millis(120));
    steps.set_message("emitting the CUDA kernels");
    let program = zamba2c_codegen::emit(&module)?;
    steps.finish_and_clear();
    let ptx = match &a.arch {
        Some(arch) => {
            let jobs: Vec<(String, String, String)> = program
                .kernels
                .values()
                .map(|k| {
                    let path = a.out.join(zamba2c_codegen::source_path(&k.name));
                    (k.name.clone(), k.source.clone(), path.display().to_string())
                })
                .collect();
            // NVRTC compiles the kernels on all cores in one batch: a spinner, not a count.
            let bar = ProgressBar::new_spinner();
            bar.set_message(format!(
                "compiling {} kernels with NVRTC for {arch}",
                jobs.len()
            ));
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            let ptx = zamba2c_runtime::cuda::nvrtc::compile_many(&jobs, arch)?;
            bar.finish_and_clear();
            Some((arch.as_str(), ptx))
        }
        None => None,
    };
    zamba2c_codegen::write_kernels(
        &mut w,
        &program,
        ptx.as_ref().map(|(arch, p)| (*arch, &p[..])),
    )?;
    let manifest = w.finish(PlanInfo {
        created_by: format!("zamba2c {}", env!("CARGO_PKG_VERSION")),
        dtype,
        weights,
        tokenizer,
        opt_level: a.opt_level,
        passes,
        arch: a.arch.clone(),
    })?;
    // Not eprintln!: a closed stderr is no reason to panic.
    let _ = writeln!(
        std::io::stderr(),
        "compiled {} -> {} ({} weights, {} prompt nodes, {} decode nodes, {} kernels{}, {} files)",
        a.model_dir.display(),
        a.out.display(),
        module.weights.len(),
        module.prompt.len(),
        module.decode.len(),
        program.kernels.len(),
        a.arch
            .as_deref()
            .map(|x| format!(" compiled for {x}"))
            .unwrap_or_default(),
        manifest.files.len() + 1
    );
    Ok(())
}

/// What `compile` reads, as paths the output must neither be nor hold: the checkpoint
/// directory and everything in it, links followed (a Hugging Face cache links each file into
/// a `blobs/` directory elsewhere).
fn checkpoint_inputs(model_dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![model_dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(model_dir) {
        v.extend(rd.flatten().map(|e| e.path()));
    }
    v
}

/// The tokenizer files a plan carries, and the most bytes each may have (tokenizer.json files
/// of large vocabularies are tens of MB).
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];
const MAX_TOKENIZER_FILE_BYTES: u64 = 512 << 20;

/// Copies the checkpoint's tokenizer files into the plan, so `run` needs only the plan: each
/// must be a regular file (links followed) under the size cap, and is streamed, not read whole.
fn copy_tokenizer(model_dir: &Path, w: &mut PlanWriter) -> Result<Option<String>> {
    let mut main = None;
    for name in TOKENIZER_FILES {
        let src = model_dir.join(name);
        if std::fs::symlink_metadata(&src).is_err() {
            continue;
        }
        let (file, len) =
            open_regular(&src, Links::Follow).map_err(|e| anyhow!("{}: {e}", src.display()))?;
        if len > MAX_TOKENIZER_FILE_BYTES {
            bail!(
                "{}: is {len} bytes, over the {MAX_TOKENIZER_FILE_BYTES}-byte limit for a tokenizer file",
                src.display()
            );
        }
        let dst = w.file_path(name)?;
        let mut out = std::fs::File::create(&dst)
            .with_context(|| format!("{}: cannot write", dst.display()))?;
        let copied = std::io::copy(&mut file.take(len), &mut out)
            .with_context(|| format!("{}: cannot read", src.display()))?;
        if copied != len {
            bail!("{}: changed size while being copied", src.display());
        }
        if name == "tokenizer.json" {
            main = Some(name.to_string());
        }
    }
    Ok(main)
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
