//! `zamba2c convert MODEL_DIR -o OUT_DIR`: any checkpoint zamba2c reads (the layers or blocks
//! layout, or Zyphra's original standalone `torch.save` state dict) written as a Hugging Face
//! "layers" checkpoint: `model.safetensors` plus a `config.json` transformers 5.24 loads.
//!
//! Weights are copied in the dtype they are stored in (no rounding); the original's fused q/k/v
//! is de-interleaved (spec §5.2). The original has no dt clamp, and transformers clamps
//! `dt >= time_step_min` on its prompt path (spec §3.5), so for a standalone checkpoint the
//! written config sets `time_step_min` to [`NO_CLAMP_TIME_STEP_MIN`] = 1e-30 rather than 0
//! (0 breaks transformers' weight initialisation, `math.log(0)`): the clamp then binds only
//! where `softplus(dt_raw + dt_bias) < 1e-30`, i.e. `dt_raw + dt_bias < -69`, and there moves
//! dt by less than 1e-30, far below f32 resolution of any term it enters. zamba2c reads the
//! converted directory with that same tiny clamp, to the same effect.

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use safetensors::View;
use serde_json::{json, Value};
use zamba2c_ir::checkpoint::Checkpoint;
use zamba2c_ir::tensor::to_safetensors;
use zamba2c_ir::{lower, CheckpointError, DType, LayerType, WeightSpec, Zamba2Config};

use super::compile::progress_bar;

/// `time_step_min` of a converted config whose source has no dt clamp (module docs).
pub const NO_CLAMP_TIME_STEP_MIN: f64 = 1e-30;

/// Files besides the weights that a Hugging Face checkpoint directory carries along.
const COPIED: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Write a checkpoint as a Hugging Face (transformers) Zamba2 checkpoint.
///
/// Reads every layout `compile` reads and writes OUT_DIR (which must not exist) with
/// model.safetensors (weights in their stored dtype), config.json and the tokenizer files.
/// A standalone checkpoint's config gets time_step_min = 1e-30, so transformers' prompt-path
/// dt clamp never binds, matching the original code, which has none.
///
/// Examples:
///   zamba2c convert ./Zamba2-2.7B-original -o ./Zamba2-2.7B-hf
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ConvertArgs {
    /// Checkpoint directory (any layout `compile` reads).
    pub model_dir: PathBuf,
    /// Output directory; must not exist.
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
}

pub fn main(a: ConvertArgs) -> Result<()> {
    if !a.model_dir.is_dir() {
        bail!(
            "{}: not a checkpoint directory (does not exist or is not a directory)",
            a.model_dir.display()
        );
    }
    if a.out.exists() || a.out.is_symlink() {
        bail!(
            "{}: already exists; convert writes a new directory and never replaces one",
            a.out.display()
        );
    }
    let name = a
        .out
        .file_name()
        .with_context(|| format!("{}: the output path has no directory name", a.out.display()))?
        .to_string_lossy()
        .to_string();
    let parent = match a.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!(
            "{}: cannot write: {} is not a directory",
            a.out.display(),
            parent.display()
        );
    }
    let ck = Checkpoint::open(&a.model_dir)?;
    let module = lower(ck.config(), DType::F32);
    ck.check(&module)?;

    // Everything goes into a directory of our own beside OUT_DIR, renamed into place at the end.
    let tmp = TempDir::create(parent.join(format!(".{name}.convert-{}", std::process::id())))?;
    let weights = tmp.path().join("model.safetensors");
    write_weights(&ck, &module.weights, &weights)?;
    let config = hf_config(ck.config());
    std::fs::write(
        tmp.path().join("config.json"),
        serde_json::to_string_pretty(&config)? + "\n",
    )
    .with_context(|| format!("{}: cannot write config.json", a.out.display()))?;
    for f in COPIED {
        let src = a.model_dir.join(f);
        if src.is_file() {
            std::fs::copy(&src, tmp.path().join(f))
                .with_context(|| format!("{}: cannot copy", src.display()))?;
        }
    }
    tmp.persist(&a.out)?;
    eprintln!(
        "converted {} ({} layout) -> {} ({} tensors, Hugging Face layers layout)",
        a.model_dir.display(),
        ck.layout(),
        a.out.display(),
        module.weights.len()
    );
    Ok(())
}

/// A directory this command created, removed on drop unless [`TempDir::persist`] renamed it.
struct TempDir(Option<PathBuf>);

impl TempDir {
    fn create(path: PathBuf) -> Result<TempDir> {
        std::fs::create_dir(&path)
            .with_context(|| format!("{}: cannot create a directory here", path.display()))?;
        Ok(TempDir(Some(path)))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn persist(mut self, to: &Path) -> Result<()> {
        if let Some(p) = self.0.take() {
            if let Err(e) = std::fs::rename(&p, to) {
                self.0 = Some(p);
                bail!("{}: cannot write: {e}", to.display());
            }
        }
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// The shape transformers' parameter has: `conv1d.weight` keeps its unit dimension.
fn hf_shape(name: &str, spec: &WeightSpec) -> Vec<usize> {
    match spec.shape.as_slice() {
        [cd, k] if name.ends_with("conv1d.weight") => vec![*cd, 1, *k],
        s => s.to_vec(),
    }
}

/// One weight, read from the checkpoint only when the safetensors writer asks for its data.
struct LazyWeight<'a> {
    ck: &'a Checkpoint,
    name: &'a str,
    spec: &'a WeightSpec,
    dtype: DType,
    shape: Vec<usize>,
    error: &'a RefCell<Option<CheckpointError>>,
    bar: &'a indicatif::ProgressBar,
}

impl View for LazyWeight<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        to_safetensors(self.dtype)
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if self.error.borrow().is_some() {
            // The file is removed with the temporary directory; what is written does not matter.
            return Cow::Borrowed(&[]);
        }
        match self.ck.tensor_stored(self.name, self.spec) {
            Ok((_, bytes)) => {
                self.bar.inc(1);
                Cow::Owned(bytes)
            }
            Err(e) => {
                *self.error.borrow_mut() = Some(e);
                Cow::Borrowed(&[])
            }
        }
    }
    fn data_len(&self) -> usize {
        self.spec.numel() * self.dtype.size()
    }
}

fn write_weights(
    ck: &Checkpoint,
    weights: &std::collections::BTreeMap<String, WeightSpec>,
    out: &Path,
) -> Result<()> {
    let error = RefCell::new(None);
    let bar = progress_bar(weights.len() as u64, "converting weights");
    let views = weights
        .iter()
        .map(|(name, spec)| {
            Ok((
                name.as_str(),
                LazyWeight {
                    ck,
                    name,
                    spec,
                    dtype: ck.stored_dtype(name, spec)?,
                    shape: hf_shape(name, spec),
                    error: &error,
                    bar: &bar,
                },
            ))
        })
        .collect::<Result<Vec<_>, CheckpointError>>()?;
    let written = safetensors::serialize_to_file(views, None, out);
    bar.finish_and_clear();
    if let Some(e) = error.take() {
        return Err(e.into());
    }
    written.with_context(|| format!("{}: writing the weights failed", out.display()))
}

/// A transformers 5.24 `config.json` for `c` (spec §1.1 field names).
fn hf_config(c: &Zamba2Config) -> Value {
    let layers: Vec<&str> = c
        .layers_block_type
        .iter()
        .map(|t| match t {
            LayerType::Mamba => "mamba",
            LayerType::Hybrid => "hybrid",
        })
        .collect();
    json!({
        "architectures": ["Zamba2ForCausalLM"],
        "model_type": "zamba2",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "layers_block_type": layers,
        "mamba_d_state": c.mamba_d_state,
        "mamba_d_conv": c.mamba_d_conv,
        "mamba_expand": c.mamba_expand,
        "mamba_ngroups": c.mamba_ngroups,
        "n_mamba_heads": c.n_mamba_heads,
        "mamba_headdim": c.mamba_headdim,
        "time_step_min": if c.prompt_dt_clamp { c.time_step_min } else { NO_CLAMP_TIME_STEP_MIN },
        "chunk_size": c.chunk_size,
        "add_bias_linear": c.add_bias_linear,
        "intermediate_size": c.intermediate_size,
        "hidden_act": c.hidden_act,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "num_mem_blocks": c.num_mem_blocks,
        "use_shared_attention_adapter": c.use_shared_attention_adapter,
        "adapter_rank": c.adapter_rank,
        "use_mem_rope": c.use_mem_rope,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": c.tie_word_embeddings,
        "pad_token_id": c.pad_token_id,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
    })
}
