//! Reading a Hugging Face Zamba2 checkpoint directory (spec §1, §5.1): `config.json` plus either
//! one `model.safetensors` or a sharded `model.safetensors.index.json` with its shards.
//! Child modules: `layouts.rs` maps IR weights onto the other tensor layouts (blocks, spec §5.3;
//! the original standalone code, §5.2), `torch.rs` reads a `torch.save` state dict.
//!
//! Every shard is memory-mapped; nothing is read into memory until a weight is asked for, and
//! then only that weight. Every error is one line naming the file and the field or tensor.
//!
//! Hostile files: a shard's 8-byte header length is checked against a 100 MB cap and against the
//! file's real size *before* anything is parsed, and `safetensors::SafeTensors::read_metadata`
//! then checks that the tensors' data offsets are contiguous, non-overlapping, match their
//! shape × dtype without overflow and end exactly at the end of the file. So no size claimed by
//! a file ever drives an allocation or an out-of-range slice; the tests exercise each case.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, View};
use serde_json::Value;

use crate::config::{ConfigError, Zamba2Config};
use crate::fsread::{open_regular, Links};
use crate::graph::{DType, Module, WeightSpec};
use crate::layout::{standalone, Layout};
use crate::tensor::{from_f32, from_safetensors, to_f32, to_safetensors};

mod layouts;
mod torch;

use layouts::Located;

/// The single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The sharded checkpoint's index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Largest safetensors header (and index JSON) read; the safetensors crate uses the same cap.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A checkpoint problem. `Display` is one line naming the file and the field or tensor.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// config.json is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file could not be opened, mapped, read or written.
    #[error("{}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
    /// A file is malformed: not a valid safetensors file, or a bad index JSON (`field` names
    /// the offending JSON field, or is empty).
    #[error("{}: {field}{}{msg}", path.display(), if field.is_empty() { "" } else { ": " })]
    Format {
        path: PathBuf,
        field: String,
        msg: String,
    },
    /// A shard named by the index is missing, unreadable or inconsistent with the index.
    #[error("{}: shard {shard}: {msg}", index.display())]
    Shard {
        index: PathBuf,
        shard: String,
        msg: String,
    },
    /// A weight the model needs is not in the checkpoint. `path` is the file that should hold
    /// it: `model.safetensors`, or the index for a sharded checkpoint.
    #[error("{}: tensor {tensor}: missing (the model needs it)", path.display())]
    Missing { path: PathBuf, tensor: String },
    /// The checkpoint holds a tensor the model does not use and no loader rule explains.
    #[error("{}: tensor {tensor}: extra unknown tensor, not used by the model config.json describes{hint}", path.display())]
    Unknown {
        path: PathBuf,
        tensor: String,
        hint: String,
    },
    /// A weight has the wrong shape.
    #[error("{}: tensor {tensor}: shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        path: PathBuf,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A weight is stored in a non-float dtype.
    #[error("{}: tensor {tensor}: dtype {dtype:?} is not a float type (expected F32, BF16 or F16)", path.display())]
    DType {
        path: PathBuf,
        tensor: String,
        dtype: Dtype,
    },
    /// A weight holds NaN or ±Inf, or a value that overflows the plan dtype.
    #[error("{}: tensor {tensor}: element {index} is {value}{msg}", path.display())]
    NonFinite {
        path: PathBuf,
        tensor: String,
        index: usize,
        value: f32,
        msg: String,
    },
    /// Any other problem with one tensor.
    #[error("{}: tensor {tensor}: {msg}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn format_err(path: &Path, field: &str, msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Format {
        path: path.to_path_buf(),
        field: field.to_string(),
        msg: msg.into(),
    }
}

/// One memory-mapped safetensors file.
struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// Where one tensor lives.
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range in the shard's map (validated by `read_metadata`).
    range: Range<usize>,
}

/// An opened Hugging Face Zamba2 checkpoint directory.
pub struct Checkpoint {
    dir: PathBuf,
    config: Zamba2Config,
    /// The file that lists the tensors: `model.safetensors` or the index.
    source: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
    /// The naming scheme of `tensors` (issue 18; see `layouts.rs`).
    layout: Layout,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("source", &self.source)
            .field("shards", &self.shards.len())
            .field("tensors", &self.tensors.len())
            .field("layout", &self.layout)
            .finish()
    }
}

impl Checkpoint {
    /// Opens MODEL_DIR: config.json (via [`Zamba2Config::from_file`]), then `model.safetensors`
    /// or, when that is absent, a sharded `model.safetensors.index.json` (weight_map name ->
    /// shard file, as transformers prefers); memory-maps the shards and validates their headers.
    ///
    /// Without safetensors it reads a `torch.save` state dict (`pytorch_model.bin` or one
    /// `*.pt`, `torch.rs`); when that holds the original code's names, config.json is read in
    /// the original's field names too (spec §5.2, `layout::standalone`).
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        let torch_file = match single.exists() || index.exists() {
            true => None,
            false => torch::find(dir)?,
        };
        let torch_tensors = torch_file.as_deref().map(torch::open).transpose()?;
        let config_path = dir.join("config.json");
        let config = match &torch_tensors {
            Some((_, t)) if standalone::is_standalone(t.iter().map(|(n, _)| n.as_str())) => {
                let json = crate::config::read_json(&config_path)?;
                standalone::config_from_value(&config_path, &json)?
            }
            _ => Zamba2Config::from_file(&config_path)?,
        };
        let mut ck = Checkpoint {
            dir: dir.to_path_buf(),
            config,
            source: single.clone(),
            shards: Vec::new(),
            tensors: BTreeMap::new(),
            layout: Layout::Layers,
        };
        if single.exists() {
            let (shard, entries) = open_shard(&single)?;
            ck.shards.push(shard);
            for (name, mut e) in entries {
                e.shard = 0;
                ck.tensors.insert(name, e);
            }
        } else if index.exists() {
            ck.source = index;
            ck.open_sharded()?;
        } else if let (Some(path), Some((shard, entries))) = (torch_file, torch_tensors) {
            ck.source = path;
            ck.shards.push(shard);
            ck.tensors.extend(entries);
        } else {
            return Err(io_err(
                dir,
                format!(
                    "no {SINGLE_FILE}, {INDEX_FILE}, {} or .pt file in the checkpoint directory",
                    torch::TORCH_FILE
                ),
            ));
        }
        ck.settle_layout();
        Ok(ck)
    }

    fn open_sharded(&mut self) -> Result<(), CheckpointError> {
        let index = self.source.clone();
        let text = read_capped(&index)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format_err(&index, "", format!("malformed JSON: {e}")))?;
        let wm = v
            .get("weight_map")
            .ok_or_else(|| format_err(&index, "weight_map", "missing"))?
            .as_object()
            .ok_or_else(|| {
                format_err(
                    &index,
                    "weight_map",
                    "expected an object mapping tensor names to shard files",
                )
            })?;
        let mut assigned: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, shard) in wm {
            let shard = shard.as_str().ok_or_else(|| {
                format_err(
                    &index,
                    &format!("weight_map.{name}"),
                    format!("expected a shard file name, got {shard}"),
                )
            })?;
            let mut comps = Path::new(shard).components();
            if !matches!(
                (comps.next(), comps.next()),
                (Some(Component::Normal(_)), None)
            ) {
                return Err(CheckpointError::Shard {
                    index,
                    shard: shard.to_string(),
                    msg: format!(
                        "(named for tensor {name}) is not a plain file name in the checkpoint directory"
                    ),
                });
            }
            assigned.insert(name, shard);
        }
        let names: BTreeSet<&str> = assigned.values().copied().collect();
        let mut found: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        let mut shard_ids: BTreeMap<&str, usize> = BTreeMap::new();
        for shard_name in names {
            let path = self.dir.join(shard_name);
            if !path.exists() {
                let tensor = assigned
                    .iter()
                    .find(|(_, s)| **s == shard_name)
                    .map_or("", |(t, _)| t);
                return Err(CheckpointError::Shard {
                    index,
                    shard: shard_name.to_string(),
                    msg: format!("does not exist (the weight_map names it for tensor {tensor})"),
                });
            }
            let (shard, entries) = open_shard(&path)?;
            let id = self.shards.len();
            self.shards.push(shard);
            shard_ids.insert(shard_name, id);
            for (name, mut e) in entries {
                e.shard = id;
                found.entry(name).or_default().push(e);
            }
        }
        for (name, shard_name) in &assigned {
            let id = shard_ids[shard_name];
            let entries = found.get_mut(*name);
            let pos = entries
                .as_ref()
                .and_then(|es| es.iter().position(|e| e.shard == id));
            match (entries, pos) {
                (Some(es), Some(p)) => {
                    let e = es.swap_remove(p);
                    es.clear();
                    self.tensors.insert(name.to_string(), e);
                }
                _ => {
                    return Err(CheckpointError::Shard {
                        index,
                        shard: shard_name.to_string(),
                        msg: format!(
                            "does not contain tensor {name}, which the weight_map assigns to it"
                        ),
                    })
                }
            }
        }
        // Tensors in a shard but not in the weight_map: transformers loads every key of every
        // shard, so they count; only an ambiguous duplicate is an error.
        for (name, mut es) in found {
            if es.is_empty() || self.tensors.contains_key(&name) {
                continue;
            }
            if es.len() > 1 {
                return Err(CheckpointError::Tensor {
                    path: index,
                    tensor: name,
                    msg: format!(
                        "stored in several shards ({} and {}) and absent from the weight_map",
                        self.shards[es[0].shard].path.display(),
                        self.shards[es[1].shard].path.display()
                    ),
                });
            }
            self.tensors.insert(name, es.swap_remove(0));
        }
        Ok(())
    }

    /// The validated config.json.
    pub fn config(&self) -> &Zamba2Config {
        &self.config
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of every tensor stored in the checkpoint, sorted.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The stored tensor IR weight `name` is read from, with its stored name (`layouts.rs`).
    fn entry(&self, name: &str) -> Result<Located<'_>, CheckpointError> {
        self.locate(name)
    }

    /// Checks dtype and shape of one stored tensor against the IR's spec, returning the dtype.
    fn check_entry(
        &self,
        name: &str,
        e: &Entry,
        spec: &WeightSpec,
    ) -> Result<DType, CheckpointError> {
        let path = &self.shards[e.shard].path;
        let dtype = from_safetensors(e.dtype).ok_or_else(|| CheckpointError::DType {
            path: path.clone(),
            tensor: name.to_string(),
            dtype: e.dtype,
        })?;
        if !shape_matches(name, &e.shape, &spec.shape) {
            return Err(CheckpointError::Shape {
                path: path.clone(),
                tensor: name.to_string(),
                found: e.shape.clone(),
                expected: spec.shape.clone(),
            });
        }
        Ok(dtype)
    }

    /// Checks the checkpoint against the module's weight table (spec §5.1 loader rules): every
    /// weight present with a float dtype and the IR's shape, and no stored tensor the model
    /// does not use except those the loader rules ignore. Returns the first problem: missing
    /// or mis-stored weights (in name order) before extra tensors (in name order).
    ///
    /// This reads only the headers; non-finite values are found by [`Checkpoint::tensor_f32`]
    /// when each weight is converted.
    pub fn check(&self, module: &Module) -> Result<(), CheckpointError> {
        for (name, spec) in &module.weights {
            let at = self.entry(name)?;
            self.check_entry(&at.name, at.entry, &at.stored_spec(spec))?;
        }
        if let Some((name, e, canonical)) = self.first_unknown(module) {
            let name = name.to_string();
            let hint = if canonical.contains("self_attn.linear_")
                && canonical.contains("_adapter_list.")
                && !module.config.use_shared_attention_adapter
            {
                " (an attention adapter: should config.json set use_shared_attention_adapter=true?)"
            } else if canonical == "lm_head.weight" {
                " (does config.json need tie_word_embeddings=false?)"
            } else {
                ""
            };
            return Err(CheckpointError::Unknown {
                path: self.shards[e.shard].path.clone(),
                tensor: name,
                hint: hint.to_string(),
            });
        }
        Ok(())
    }

    /// The IR weight `name` as f32 values in the IR's layout (`spec.shape`, from
    /// `module.weights`): a `conv1d.weight` stored `[CD, 1, K]` (or MLX's `[CD, K, 1]`) becomes
    /// `[CD, K]`, which is the same element order.
    ///
    /// Non-finite values (NaN, ±Inf) are refused with an error naming the tensor and the first
    /// bad element: no trained Zamba2 weight is non-finite, and one would silently turn every
    /// logit into NaN at run time, far from its cause. Refusing here, during the conversion
    /// pass that touches every element anyway, costs one comparison per element.
    pub fn tensor_f32(&self, name: &str, spec: &WeightSpec) -> Result<Vec<f32>, CheckpointError> {
        let at = self.entry(name)?;
        let dtype = self.check_entry(&at.name, at.entry, &at.stored_spec(spec))?;
        let shard = &self.shards[at.entry.shard];
        let values = to_f32(&self.read(&at, spec, dtype), dtype);
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(CheckpointError::NonFinite {
                path: shard.path.clone(),
                tensor: at.name,
                index,
                value: values[index],
                msg: "; refusing a checkpoint with non-finite weights".into(),
            });
        }
        Ok(values)
    }

    /// `tensor_f32` converted to `spec.dtype`, refusing values that overflow it (a bf16 or f32
    /// checkpoint compiled to an f16 plan can exceed f16's ±65504).
    fn tensor_bytes(&self, name: &str, spec: &WeightSpec) -> Result<Vec<u8>, CheckpointError> {
        let values = self.tensor_f32(name, spec)?;
        let overflow = match spec.dtype {
            DType::F16 => values.iter().position(|v| f16::from_f32(*v).is_infinite()),
            DType::BF16 => values.iter().position(|v| bf16::from_f32(*v).is_infinite()),
            DType::F32 | DType::I32 => None,
        };
        if let Some(index) = overflow {
            let at = self.entry(name)?;
            return Err(CheckpointError::NonFinite {
                path: self.shards[at.entry.shard].path.clone(),
                tensor: at.name,
                index,
                value: values[index],
                msg: if spec.dtype == DType::F16 {
                    ", which overflows f16 (bf16 keeps f32's range: --dtype bf16 --shared-dtype bf16)"
                        .into()
                } else {
                    format!(", which overflows the plan dtype {}", spec.dtype)
                },
            });
        }
        Ok(from_f32(&values, spec.dtype))
    }

    /// Writes every weight of `module` into a safetensors file at `out`, each converted to its
    /// `WeightSpec` dtype. Streaming: each tensor is converted only when the writer asks for
    /// its bytes and dropped once written, so peak memory is about one tensor. `progress` is
    /// called after each tensor with `(done, total)`.
    ///
    /// The file is written to `out` + `.partial` and renamed into place on success, so a
    /// failed or interrupted write never leaves a truncated file at `out`.
    pub fn write_plan_weights(
        &self,
        module: &Module,
        out: &Path,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(), CheckpointError> {
        self.check(module)?;
        let state = WriteState {
            total: module.weights.len(),
            done: Cell::new(0),
            error: RefCell::new(None),
            progress: RefCell::new(progress),
        };
        let views: Vec<(&str, LazyTensor<'_>)> = module
            .weights
            .iter()
            .map(|(name, spec)| {
                (
                    name.as_str(),
                    LazyTensor {
                        ck: self,
                        name,
                        spec,
                        dtype: to_safetensors(spec.dtype),
                        state: &state,
                    },
                )
            })
            .collect();
        let mut tmp_name = out.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".partial");
        let tmp = out.with_file_name(tmp_name);
        let result = safetensors::serialize_to_file(views, None, &tmp);
        if let Some(e) = state.error.take() {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(out, format!("writing the weights failed: {e}")));
        }
        fs::rename(&tmp, out).map_err(|e| io_err(out, e))
    }
}

/// Shared by the lazy views of one `write_plan_weights` call.
struct WriteState<'p> {
    total: usize,
    done: Cell<usize>,
    /// The first conversion error; later tensors are then skipped.
    error: RefCell<Option<CheckpointError>>,
    progress: RefCell<&'p mut dyn FnMut(usize, usize)>,
}

/// A weight converted to its plan dtype only when the safetensors writer asks for its data.
struct LazyTensor<'a> {
    ck: &'a Checkpoint,
    name: &'a str,
    spec: &'a WeightSpec,
    dtype: Dtype,
    state: &'a WriteState<'a>,
}

impl View for LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.spec.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if self.state.error.borrow().is_some() {
            // The file is deleted afterwards; what is written now does not matter.
            return Cow::Borrowed(&[]);
        }
        match self.ck.tensor_bytes(self.name, self.spec) {
            Ok(bytes) => {
                let done = self.state.done.get() + 1;
                self.state.done.set(done);
                (self.state.progress.borrow_mut())(done, self.state.total);
                Cow::Owned(bytes)
            }
            Err(e) => {
                *self.state.error.borrow_mut() = Some(e);
                Cow::Borrowed(&[])
            }
        }
    }
    fn data_len(&self) -> usize {
        self.spec.bytes()
    }
}

/// Whether a stored shape is acceptable for the IR shape `want`: equal, or for a
/// `conv1d.weight` `[CD, K]` also `[CD, 1, K]` (HF) and `[CD, K, 1]` (MLX). Squeezing a unit
/// dimension never reorders elements, so the data is used as stored.
/// For an untied model the IR reads every hybrid layer's own `shared_transformer.*` copy, as
/// transformers does (see `lower::shared_block_store`); a checkpoint that stores only the first
/// copy of each block (spec §5.1 rule 1) falls back to it.
fn untied_block_fallback(c: &Zamba2Config, name: &str) -> Option<String> {
    if c.tie_word_embeddings {
        return None;
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let tail = tail.strip_prefix("shared_transformer.")?;
    let layer: usize = layer.parse().ok()?;
    let hybrid = c.hybrid_layer_ids();
    let k = hybrid.iter().position(|&l| l == layer)?;
    let source = hybrid[k % c.num_mem_blocks];
    (source != layer).then(|| format!("model.layers.{source}.shared_transformer.{tail}"))
}

fn shape_matches(name: &str, found: &[usize], want: &[usize]) -> bool {
    if found == want {
        return true;
    }
    if let ([cd, k], true) = (want, name.ends_with("conv1d.weight")) {
        return found == [*cd, 1, *k] || found == [*cd, *k, 1];
    }
    false
}

/// Stored tensors the model does not use but that spec §5.1's loader rules say to ignore:
/// shared-block copies under later hybrid layers, adapter slots of other blocks, a tied
/// `lm_head.weight`, and `rotary_emb.inv_freq` buffers.
fn ignorable(c: &Zamba2Config, name: &str) -> bool {
    if name == "lm_head.weight" && c.tie_word_embeddings {
        return true;
    }
    if name.ends_with("rotary_emb.inv_freq") {
        return true;
    }
    let Some(rest) = name.strip_prefix("model.layers.") else {
        return false;
    };
    let Some((layer, rest)) = rest.split_once('.') else {
        return false;
    };
    let Some(rest) = rest.strip_prefix("shared_transformer.") else {
        return false;
    };
    let hyb = c.hybrid_layer_ids();
    let Some(k) = layer
        .parse::<usize>()
        .ok()
        .and_then(|l| hyb.iter().position(|&h| h == l))
    else {
        return false;
    };
    let nmb = c.num_mem_blocks;
    if k >= nmb && c.tie_word_embeddings {
        // A duplicate copy of block k mod NMB under a later hybrid layer (rule 2). Untied
        // models read these copies (`lower::shared_block_store`), so they are not ignorable.
        return true;
    }
    let block = k % nmb;
    // Under the block's source layer: adapter slots of other blocks (rule 3).
    const ADAPTERS: [&str; 4] = [
        "feed_forward.gate_up_proj_adapter_list.",
        "self_attn.linear_q_adapter_list.",
        "self_attn.linear_k_adapter_list.",
        "self_attn.linear_v_adapter_list.",
    ];
    ADAPTERS.iter().any(|p| {
        rest.strip_prefix(p)
            .and_then(|r| r.split_once('.'))
            .is_some_and(|(slot, tail)| {
                matches!(tail, "0.weight" | "1.weight")
                    && slot.parse::<usize>().is_ok_and(|s| {
                        // Slots of other blocks (rule 3); in an untied model's per-layer
                        // copy, every slot but the layer's own ordinal is unused too.
                        s < hyb.len() && (s % nmb != block || (!c.tie_word_embeddings && s != k))
                    })
            })
    })
}

/// Reads a small JSON file, refusing one over the header cap before reading it.
fn read_capped(path: &Path) -> Result<String, CheckpointError> {
    // Only a regular file: a FIFO or /dev/zero would hang the read (issue 16).
    let (file, len) = open_regular(path, Links::Follow).map_err(|e| io_err(path, e))?;
    if len > MAX_HEADER_BYTES {
        return Err(format_err(
            path,
            "",
            format!("{len} bytes, over the {MAX_HEADER_BYTES}-byte limit for an index"),
        ));
    }
    let mut text = String::new();
    file.take(MAX_HEADER_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| io_err(path, e))?;
    Ok(text)
}

/// Maps one safetensors file and validates its header; returns its tensors (shard id 0).
fn open_shard(path: &Path) -> Result<(Shard, Vec<(String, Entry)>), CheckpointError> {
    let (mut file, len) = open_regular(path, Links::Follow).map_err(|e| io_err(path, e))?;
    if len < 8 {
        return Err(format_err(
            path,
            "",
            format!("truncated: {len} bytes, too short for the 8-byte header length"),
        ));
    }
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|e| io_err(path, e))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES {
        return Err(format_err(
            path,
            "",
            format!("header length {n} bytes is over the {MAX_HEADER_BYTES}-byte limit; not a valid safetensors file"),
        ));
    }
    if n > len - 8 {
        return Err(format_err(
            path,
            "",
            format!(
                "truncated: the header length is {n} bytes but only {} bytes follow it",
                len - 8
            ),
        ));
    }
    // SAFETY: the map is only read, through slices whose bounds the safetensors header
    // validation (below) checked against the map's length. The checkpoint must not be
    // modified or truncated while zamba2c runs; as with any mmap, a concurrent writer would
    // be a user error (truncation would raise SIGBUS, not read out of bounds).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err(path, format!("mmap failed: {e}")))?;
    let header_len = n as usize;
    let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
        let why = match e {
            safetensors::SafeTensorError::MetadataIncompleteBuffer => {
                "the tensors' data does not end exactly at the end of the file (truncated or padded)"
                    .to_string()
            }
            safetensors::SafeTensorError::InvalidOffset(_) => {
                diagnose_offsets(&map[8..8 + header_len], map.len() - 8 - header_len)
                    .unwrap_or_else(|| e.to_string())
            }
            e => e.to_string(),
        };
        format_err(path, "", format!("not a valid safetensors file: {why}"))
    })?;
    let base = 8 + n;
    let entries = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (s, e) = info.data_offsets;
            (
                name,
                Entry {
                    shard: 0,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range: base + s..base + e,
                },
            )
        })
        .collect();
    Ok((
        Shard {
            path: path.to_path_buf(),
            map,
        },
        entries,
    ))
}

/// Names the tensor whose `data_offsets` break a safetensors file's layout. The safetensors
/// crate reports the tensor where it noticed the break (the one after a gap), which is often
/// not the one that is wrong; this looks at every tensor's offsets against the data's size and
/// against each other. `None` when it finds nothing more specific.
fn diagnose_offsets(header: &[u8], data_len: usize) -> Option<String> {
    let v: Value = serde_json::from_slice(header).ok()?;
    let mut spans = Vec::new();
    for (name, t) in v.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let o = t.get("data_offsets")?.as_array()?;
        let (s, e) = (o.first()?.as_u64()?, o.get(1)?.as_u64()?);
        if e < s {
            return Some(format!(
                "tensor {name}: data_offsets [{s}, {e}] end before they start"
            ));
        }
        if e > data_len as u64 {
            return Some(format!(
                "tensor {name}: data_offsets [{s}, {e}] reach past the end of the data ({data_len} bytes)"
            ));
        }
        spans.push((s, e, name));
    }
    spans.sort();
    spans.windows(2).find(|w| w[1].0 < w[0].1).map(|w| {
        format!(
            "tensors {} [{}, {}] and {} [{}, {}]: data_offsets overlap",
            w[0].2, w[0].0, w[0].1, w[1].2, w[1].0, w[1].1
        )
    })
}
