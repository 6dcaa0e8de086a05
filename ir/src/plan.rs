//! The plan directory: a versioned, self-contained, checksummed compile result.
//!
//! ```text
//! PLAN_DIR/manifest.json       format + version, what made it, checksums of every other file
//! PLAN_DIR/module.json         the IR (both graphs, weight and state tables)
//! PLAN_DIR/weights.safetensors the weights in the dtype and layout the runtime reads
//! PLAN_DIR/tokenizer.json      copied from the checkpoint when it has one
//! ```
//! A plan is written into a temporary directory beside the target and renamed into place, so
//! an interrupted compile leaves the old plan or none (issue 2 §4).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::graph::{DType, Module};
use crate::layout::Layout;
use crate::serial::ModuleFile;
use crate::verify::verify_module;
use crate::weights::WeightStore;

/// The plan format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The `format` tag of every manifest.
pub const FORMAT: &str = "zamba2c-plan";
/// Manifest and module files larger than this are refused before they are read.
const MAX_JSON_BYTES: u64 = 256 << 20;

/// A plan error, naming the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct PlanError {
    pub path: PathBuf,
    pub msg: String,
}

impl PlanError {
    pub fn new(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        PlanError {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsSource {
    /// A safetensors file inside the plan.
    File(String),
    /// Random weights made at load from this seed (`--dummy-weights`).
    Dummy { seed: u64 },
}

/// One pass of the pipeline as it ran for this plan: node counts after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassRecord {
    pub name: String,
    pub prompt_nodes: usize,
    pub decode_nodes: usize,
}

/// A file of the plan with its size and BLAKE3 hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub blake3: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub created_by: String,
    pub dtype: DType,
    pub weights: WeightsSource,
    pub tokenizer: Option<String>,
    /// Optimisation level the plan was compiled at.
    pub opt_level: u8,
    pub passes: Vec<PassRecord>,
    /// Target GPU architecture when kernels were compiled ahead of time (e.g. `sm_90`).
    #[serde(default)]
    pub arch: Option<String>,
    /// The naming scheme of the checkpoint the weights were read from (absent for dummy
    /// weights and for plans made before issue 18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_layout: Option<Layout>,
    /// Every other file of the plan, by relative path.
    pub files: BTreeMap<String, FileEntry>,
}

/// What the compiler tells the writer beyond the files themselves.
#[derive(Debug, Clone)]
pub struct PlanInfo {
    pub created_by: String,
    pub dtype: DType,
    pub weights: WeightsSource,
    pub tokenizer: Option<String>,
    pub opt_level: u8,
    pub passes: Vec<PassRecord>,
    pub arch: Option<String>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> PlanError {
    PlanError::new(path, e.to_string())
}

/// Hashes a file with BLAKE3 (streaming; the file may be many GB).
pub fn hash_file(path: &Path) -> Result<FileEntry, PlanError> {
    let mut f = fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileEntry {
        bytes,
        blake3: h.finalize().to_hex().to_string(),
    })
}

/// Writes a plan into a temporary directory beside `target`; [`PlanWriter::finish`] renames it
/// into place. Dropped unfinished, it removes the temporary directory.
pub struct PlanWriter {
    target: PathBuf,
    tmp: PathBuf,
    files: Vec<String>,
    done: bool,
    checkpoint_layout: Option<Layout>,
}

impl PlanWriter {
    /// Starts a plan at `target` (which may exist: it is replaced only at `finish`).
    pub fn create(target: &Path) -> Result<Self, PlanError> {
        let name = target
            .file_name()
            .ok_or_else(|| PlanError::new(target, "output path has no directory name"))?
            .to_string_lossy()
            .to_string();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(PlanError::new(
                target,
                format!("cannot write: {} is not a directory", parent.display()),
            ));
        }
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).map_err(|e| io_err(target, format!("cannot write here: {e}")))?;
        Ok(PlanWriter {
            target: target.to_path_buf(),
            tmp,
            files: Vec::new(),
            done: false,
            checkpoint_layout: None,
        })
    }

    /// The path at which to write plan file `rel` (registers it for the manifest).
    pub fn file_path(&mut self, rel: &str) -> Result<PathBuf, PlanError> {
        let p = self.tmp.join(rel);
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).map_err(|e| io_err(&self.target.join(rel), e))?;
        }
        if !self.files.iter().any(|f| f == rel) {
            self.files.push(rel.to_string());
        }
        Ok(p)
    }

    /// Records in the manifest which checkpoint layout the weights were read from.
    pub fn record_checkpoint_layout(&mut self, layout: Layout) {
        self.checkpoint_layout = Some(layout);
    }

    /// Writes plan file `rel` with `bytes`.
    pub fn write(&mut self, rel: &str, bytes: &[u8]) -> Result<(), PlanError> {
        let p = self.file_path(rel)?;
        fs::write(&p, bytes).map_err(|e| io_err(&self.target.join(rel), e))
    }

    /// Hashes every file, writes the manifest, syncs, and renames the plan into place.
    pub fn finish(mut self, info: PlanInfo) -> Result<Manifest, PlanError> {
        let mut files = BTreeMap::new();
        for rel in &self.files {
            let p = self.tmp.join(rel);
            fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_err(&self.target.join(rel), e))?;
            files.insert(rel.clone(), hash_file(&p)?);
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            created_by: info.created_by,
            dtype: info.dtype,
            weights: info.weights,
            tokenizer: info.tokenizer,
            opt_level: info.opt_level,
            passes: info.passes,
            arch: info.arch,
            checkpoint_layout: self.checkpoint_layout,
            files,
        };
        let mp = self.tmp.join("manifest.json");
        let mut f = fs::File::create(&mp).map_err(|e| io_err(&mp, e))?;
        f.write_all(
            serde_json::to_string_pretty(&manifest)
                .expect("manifest serializes")
                .as_bytes(),
        )
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(&self.target.join("manifest.json"), e))?;
        // Replace: move any old plan aside, move the new one in, then delete the old one.
        let old = self.tmp.with_extension("old");
        let had_old = self.target.exists();
        if had_old {
            if !self.target.join("manifest.json").exists()
                && fs::read_dir(&self.target)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                return Err(PlanError::new(
                    &self.target,
                    "exists and is not a zamba2c plan; refusing to replace it",
                ));
            }
            fs::rename(&self.target, &old).map_err(|e| io_err(&self.target, e))?;
        }
        if let Err(e) = fs::rename(&self.tmp, &self.target) {
            if had_old {
                let _ = fs::rename(&old, &self.target);
            }
            return Err(io_err(&self.target, e));
        }
        if had_old {
            let _ = fs::remove_dir_all(&old);
        }
        self.done = true;
        Ok(manifest)
    }
}

impl Drop for PlanWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Reads a JSON file of bounded size.
pub fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PlanError> {
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.len() > MAX_JSON_BYTES {
        return Err(PlanError::new(
            path,
            format!("{} bytes is too large for this file", meta.len()),
        ));
    }
    let text = fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| PlanError::new(path, format!("malformed: {e}")))
}

/// A loaded, checked plan.
pub struct Plan {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub module: Module,
    pub weights: WeightStore,
}

impl Plan {
    /// Opens `dir`: checks the format version and every file's checksum, rebuilds and verifies
    /// the IR, and maps the weights.
    pub fn open(dir: &Path) -> Result<Plan, PlanError> {
        if !dir.is_dir() {
            return Err(PlanError::new(
                dir,
                "not a plan directory (does not exist or is not a directory)",
            ));
        }
        let mp = dir.join("manifest.json");
        if !mp.is_file() {
            return Err(PlanError::new(
                &mp,
                "missing: this directory is not a zamba2c plan (make one with `zamba2c compile`)",
            ));
        }
        let raw: serde_json::Value = read_json_file(&mp)?;
        let shown =
            |v: Option<&serde_json::Value>| v.map_or("missing".to_string(), |v| v.to_string());
        let fmt = raw.get("format");
        if fmt.and_then(|v| v.as_str()) != Some(FORMAT) {
            return Err(PlanError::new(
                &mp,
                format!(
                    "format: {} is not {FORMAT:?}: not a zamba2c plan",
                    shown(fmt)
                ),
            ));
        }
        let ver = raw.get("format_version");
        if ver.and_then(|v| v.as_u64()) != Some(FORMAT_VERSION as u64) {
            return Err(PlanError::new(
                &mp,
                format!("format_version: the plan has {}, this zamba2c reads version {FORMAT_VERSION}; recompile the plan", shown(ver)),
            ));
        }
        let manifest: Manifest = serde_json::from_value(raw)
            .map_err(|e| PlanError::new(&mp, format!("malformed: {e}")))?;
        for (rel, entry) in &manifest.files {
            if rel.contains("..") || Path::new(rel).is_absolute() {
                return Err(PlanError::new(
                    &mp,
                    format!("files: {rel:?} is not a path inside the plan"),
                ));
            }
            let p = dir.join(rel);
            let got = hash_file(&p)?;
            if got.bytes != entry.bytes {
                return Err(PlanError::new(
                    &p,
                    format!(
                        "is {} bytes, the manifest says {}: truncated or edited after compile",
                        got.bytes, entry.bytes
                    ),
                ));
            }
            if got.blake3 != entry.blake3 {
                return Err(PlanError::new(
                    &p,
                    "checksum mismatch: edited after compile",
                ));
            }
        }
        let module_path = dir.join("module.json");
        if !manifest.files.contains_key("module.json") {
            return Err(PlanError::new(&mp, "files: module.json is not listed"));
        }
        let mf: ModuleFile = read_json_file(&module_path)?;
        let module = mf
            .to_module()
            .map_err(|e| PlanError::new(&module_path, e))?;
        verify_module(&module).map_err(|e| PlanError::new(&module_path, e.to_string()))?;
        let weights = match &manifest.weights {
            WeightsSource::File(rel) => {
                if !manifest.files.contains_key(rel) {
                    return Err(PlanError::new(
                        &mp,
                        format!("weights: {rel} is not listed in files"),
                    ));
                }
                WeightStore::open_file(&dir.join(rel), &module)?
            }
            WeightsSource::Dummy { seed } => WeightStore::dummy(*seed, &module),
        };
        Ok(Plan {
            dir: dir.to_path_buf(),
            manifest,
            module,
            weights,
        })
    }
}
