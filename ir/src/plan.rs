//! The plan directory: a versioned, self-contained, checksummed compile result.
//!
//! ```text
//! PLAN_DIR/manifest.json       format + version, what made it, checksums of every other file,
//!                              and a checksum of the manifest itself (`manifest_blake3`)
//! PLAN_DIR/module.json         the IR (both graphs, weight and state tables)
//! PLAN_DIR/weights.safetensors the weights in the dtype and layout the runtime reads
//! PLAN_DIR/tokenizer.json      copied from the checkpoint when it has one
//! PLAN_DIR/kernels/            generated CUDA sources, PTX and the launch table
//! ```
//! A plan is written into a temporary directory beside the target and renamed into place, so
//! an interrupted compile leaves the old plan or none (issue 2 §4). The target is replaced only
//! when it is empty or a zamba2c plan holding nothing but its own files, and never when it is
//! or holds the checkpoint being compiled (issue 16). Temporary directories are removed on
//! failure (`Drop`), on SIGINT/SIGTERM (the CLI's handler, through [`crate::scratch`]), and,
//! when a crash left them, by the next compile into the same directory.
//!
//! Reading: every file the manifest lists must be a plain relative path inside the plan, a
//! regular file (no link, FIFO or device), of the listed size (checked before hashing) and
//! BLAKE3; the manifest must match its own checksum; and the module it describes must be
//! exactly what its validated config lowers to (`serial`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fsread::{kind_of, open_regular, read_capped, Links};
use crate::graph::{DType, Module};
use crate::layout::Layout;
use crate::scratch;
use crate::serial::ModuleFile;
use crate::verify::verify_module;
use crate::weights::WeightStore;

/// The plan format this build reads and writes. 2: the manifest checksums itself and says
/// whether its weights are random (`dummy_weights`).
pub const FORMAT_VERSION: u32 = 2;
/// The `format` tag of every manifest.
pub const FORMAT: &str = "zamba2c-plan";
/// module.json and kernels/program.json larger than this are refused before they are read.
const MAX_JSON_BYTES: u64 = 256 << 20;
/// manifest.json larger than this is refused before it is read (a real one is a few KB per
/// hundred kernels).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// A plan lists at most this many files, and a directory walked before replacing it may hold
/// at most this many entries, this deep.
const MAX_PLAN_FILES: usize = 100_000;
const MAX_PLAN_DEPTH: usize = 8;
/// Written first into a temporary plan directory and removed just before it is renamed into
/// place: a directory `.NAME.tmp-PID` holding it is an unfinished plan of ours.
const INCOMPLETE_MARKER: &str = ".zamba2c-incomplete";
/// The manifest's own checksum field.
const SELF_CHECKSUM: &str = "manifest_blake3";

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
    /// True exactly when the plan was compiled with `--dummy-weights`: random weights are
    /// refused unless the plan says so here, and `inspect` shows it.
    pub dummy_weights: bool,
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
    /// BLAKE3 of this manifest without this field, as compact JSON with sorted keys
    /// ([`manifest_digest`]): an edited manifest is refused like an edited file.
    pub manifest_blake3: String,
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

/// Whether `arch` names a GPU architecture the way NVRTC takes it (`sm_90`): the manifest's
/// `arch` becomes part of file names, so nothing else is accepted.
pub fn valid_arch(arch: &str) -> bool {
    let Some(rest) = arch.strip_prefix("sm_") else {
        return false;
    };
    // Digits, then at most one letter suffix (sm_90a).
    let digits = rest.trim_end_matches(|c: char| c.is_ascii_lowercase());
    (1..=4).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && rest.len() - digits.len() <= 1
}

/// The relative path `rel` of a plan file, if it is one: plain names joined by `/`, nothing
/// absolute, no `.` or `..`, no empty component.
pub fn plan_file_path(rel: &str) -> Result<PathBuf, String> {
    let segments: Vec<&str> = rel.split('/').collect();
    let plain = |s: &&str| !s.is_empty() && *s != "." && *s != ".." && !s.contains(['\0', '\\']);
    if segments.len() > MAX_PLAN_DEPTH || !segments.iter().all(plain) {
        return Err(format!("{rel:?} is not a plain file name inside the plan"));
    }
    Ok(PathBuf::from(rel))
}

/// The checksum a manifest carries of itself: BLAKE3 of its JSON with [`SELF_CHECKSUM`]
/// removed, compact, keys sorted (serde_json's map is ordered).
pub fn manifest_digest(manifest: &Value) -> String {
    let mut v = manifest.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove(SELF_CHECKSUM);
    }
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    blake3::hash(&bytes).to_hex().to_string()
}

/// Hashes a regular file (never a link) with BLAKE3, streaming (the file may be many GB).
pub fn hash_file(path: &Path) -> Result<FileEntry, PlanError> {
    let (file, len) = open_regular(path, Links::Refuse).map_err(|e| PlanError::new(path, e))?;
    hash_open(file, path, len)
}

/// Hashes `len` bytes of an open file; a file that is longer or shorter than it was is an error.
fn hash_open(file: fs::File, path: &Path, len: u64) -> Result<FileEntry, PlanError> {
    let mut f = file.take(len.saturating_add(1));
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
    if bytes != len {
        return Err(PlanError::new(
            path,
            format!("changed size while being read ({len} bytes, then {bytes})"),
        ));
    }
    Ok(FileEntry {
        bytes,
        blake3: h.finalize().to_hex().to_string(),
    })
}

/// Whether `dir` holds a manifest.json of ours (any format version): parses, with our marker.
fn our_manifest(dir: &Path) -> Option<Value> {
    let bytes = read_capped(
        &dir.join("manifest.json"),
        MAX_MANIFEST_BYTES,
        Links::Refuse,
    )
    .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    (v.get("format").and_then(Value::as_str) == Some(FORMAT)).then_some(v)
}

/// Checks that `target` may be replaced by a new plan: it does not exist, or is an empty
/// directory, or a zamba2c plan holding only the files its manifest lists; and it neither is
/// nor holds any of `inputs` (canonical paths of what is being compiled).
pub fn check_replaceable(target: &Path, inputs: &[PathBuf]) -> Result<(), PlanError> {
    let meta = match fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(target, e)),
        Ok(m) => m,
    };
    let refuse = |why: String| PlanError::new(target, format!("{why}; refusing to replace it"));
    if !meta.is_dir() {
        return Err(refuse(format!(
            "exists and is {}, not a plan directory",
            kind_of(&meta)
        )));
    }
    if let Ok(canon) = fs::canonicalize(target) {
        if let Some(i) = inputs.iter().find(|i| i.starts_with(&canon)) {
            return Err(refuse(if *i == canon {
                "is the checkpoint directory being compiled".to_string()
            } else {
                format!("holds {}, an input of this compile", i.display())
            }));
        }
    }
    let empty = fs::read_dir(target)
        .map_err(|e| io_err(target, e))?
        .next()
        .is_none();
    if empty {
        return Ok(());
    }
    let Some(manifest) = our_manifest(target) else {
        return Err(refuse(
            "exists, is not empty, and is not a zamba2c plan (no manifest.json of ours)".into(),
        ));
    };
    let listed: BTreeSet<&str> = manifest
        .get("files")
        .and_then(Value::as_object)
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut seen = 0usize;
    if let Err(rel) = only_listed(target, "", 0, &listed, &mut seen) {
        return Err(refuse(format!(
            "holds {rel}, which is not a file of the plan its manifest.json describes"
        )));
    }
    Ok(())
}

/// Walks `dir` (the plan directory plus `prefix`, not following links): every entry must be a
/// directory or a path the manifest lists. Returns the first other entry's relative path.
fn only_listed(
    dir: &Path,
    prefix: &str,
    depth: usize,
    listed: &BTreeSet<&str>,
    seen: &mut usize,
) -> Result<(), String> {
    let mut entries = fs::read_dir(dir)
        .map_err(|e| format!("{prefix} ({e})"))?
        .take(MAX_PLAN_FILES + 1)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{prefix} ({e})"))?;
    // Name order, so the entry an error names does not depend on the file system.
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(format!("{prefix}{}", name.to_string_lossy()));
        };
        let rel = format!("{prefix}{name}");
        *seen += 1;
        if *seen > MAX_PLAN_FILES {
            return Err(format!("{rel} (more than {MAX_PLAN_FILES} entries)"));
        }
        let ft = e.file_type().map_err(|e| format!("{rel} ({e})"))?;
        if ft.is_dir() && depth < MAX_PLAN_DEPTH {
            only_listed(&e.path(), &format!("{rel}/"), depth + 1, listed, seen)?;
        } else if !(rel == "manifest.json" || listed.contains(rel.as_str())) {
            // (A listed path of the wrong kind is named by the checks that open it.)
            return Err(rel);
        }
    }
    Ok(())
}

/// Removes `.NAME.tmp-PID` and `.NAME.old-PID` directories beside a plan target that a
/// compile killed before it could clean up left behind: only when process PID is gone and the
/// directory is ours (it holds our unfinished-plan marker, or is a plan holding only its files).
fn sweep_stale(parent: &Path, name: &str) {
    let Ok(rd) = fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in rd.flatten() {
        let file_name = e.file_name();
        let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest
            .strip_prefix("tmp-")
            .or_else(|| rest.strip_prefix("old-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || scratch::process_alive(pid) {
            continue;
        }
        let p = e.path();
        if !fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let marked =
            fs::symlink_metadata(p.join(INCOMPLETE_MARKER)).is_ok_and(|m| m.file_type().is_file());
        if marked || (our_manifest(&p).is_some() && check_replaceable(&p, &[]).is_ok()) {
            scratch::remove_path(&p);
            tracing::info!(path = %p.display(), pid, "removed a temporary plan directory left by a compile that did not finish");
        }
    }
}

/// Writes a plan into a temporary directory beside `target`; [`PlanWriter::finish`] renames it
/// into place. Dropped unfinished, it removes the temporary directory.
pub struct PlanWriter {
    target: PathBuf,
    parent: PathBuf,
    name: String,
    inputs: Vec<PathBuf>,
    tmp: PathBuf,
    tmp_id: u64,
    files: Vec<String>,
    done: bool,
    checkpoint_layout: Option<Layout>,
}

impl PlanWriter {
    /// Starts a plan at `target` (which may exist: it is replaced only at `finish`).
    pub fn create(target: &Path) -> Result<Self, PlanError> {
        Self::create_with_inputs(target, &[])
    }

    /// Starts a plan at `target`, refusing at once (before any work) a target that may not be
    /// replaced ([`check_replaceable`]) — in particular one that is or holds any of `inputs`,
    /// the files and directories being compiled.
    pub fn create_with_inputs(target: &Path, inputs: &[PathBuf]) -> Result<Self, PlanError> {
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                PlanError::new(target, "output path has no directory name (or not UTF-8)")
            })?
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
        let inputs: Vec<PathBuf> = inputs
            .iter()
            .filter_map(|p| fs::canonicalize(p).ok())
            .collect();
        check_replaceable(target, &inputs)?;
        sweep_stale(&parent, &name);
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        scratch::remove_path(&tmp);
        let tmp_id = {
            let mut reg = scratch::lock();
            fs::create_dir(&tmp).map_err(|e| io_err(target, format!("cannot write here: {e}")))?;
            reg.register(&tmp)
        };
        let w = PlanWriter {
            target: target.to_path_buf(),
            parent,
            name,
            inputs,
            tmp,
            tmp_id,
            files: Vec::new(),
            done: false,
            checkpoint_layout: None,
        };
        fs::write(w.tmp.join(INCOMPLETE_MARKER), b"")
            .map_err(|e| io_err(target, format!("cannot write here: {e}")))?;
        Ok(w)
    }

    /// The path at which to write plan file `rel` (registers it for the manifest).
    pub fn file_path(&mut self, rel: &str) -> Result<PathBuf, PlanError> {
        let relp = plan_file_path(rel).map_err(|e| PlanError::new(&self.target, e))?;
        // Create the directories one by one: `create_dir_all` would recreate the temporary
        // directory itself if a signal handler had just removed it.
        let mut dir = self.tmp.clone();
        let comps: Vec<_> = relp.components().collect();
        for c in &comps[..comps.len() - 1] {
            dir.push(c);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(io_err(&self.target.join(rel), e)),
            }
        }
        if !self.files.iter().any(|f| f == rel) {
            self.files.push(rel.to_string());
        }
        Ok(self.tmp.join(relp))
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
        let mut manifest = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            created_by: info.created_by,
            dtype: info.dtype,
            dummy_weights: matches!(info.weights, WeightsSource::Dummy { .. }),
            weights: info.weights,
            tokenizer: info.tokenizer,
            opt_level: info.opt_level,
            passes: info.passes,
            arch: info.arch,
            checkpoint_layout: self.checkpoint_layout,
            files,
            manifest_blake3: String::new(),
        };
        let value = serde_json::to_value(&manifest)
            .map_err(|e| io_err(&self.target.join("manifest.json"), e))?;
        manifest.manifest_blake3 = manifest_digest(&value);
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| io_err(&self.target.join("manifest.json"), e))?;
        let mp = self.tmp.join("manifest.json");
        let mut f = fs::File::create(&mp).map_err(|e| io_err(&mp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err(&self.target.join("manifest.json"), e))?;
        fs::remove_file(self.tmp.join(INCOMPLETE_MARKER)).map_err(|e| io_err(&self.target, e))?;
        let _ = fs::File::open(&self.tmp).and_then(|d| d.sync_all());
        // Move any old plan aside and the new one in under the scratch lock, so a signal's
        // cleanup sees either the old plan in place or the new one, never neither.
        let old = {
            let mut reg = scratch::lock_to_commit();
            self.swap_into_place(&mut reg)
        }?;
        if let Some((old, id)) = old {
            scratch::remove_path(&old);
            scratch::unregister(id);
        }
        Ok(manifest)
    }

    /// The renames of [`PlanWriter::finish`]; returns the old plan moved aside, if any.
    fn swap_into_place(
        &mut self,
        reg: &mut scratch::Registry,
    ) -> Result<Option<(PathBuf, u64)>, PlanError> {
        // Again: the target may have changed while the plan was being compiled.
        check_replaceable(&self.target, &self.inputs)?;
        let old = self
            .parent
            .join(format!(".{}.old-{}", self.name, std::process::id()));
        let had_old = fs::symlink_metadata(&self.target).is_ok();
        let mut old_id = None;
        if had_old {
            fs::rename(&self.target, &old).map_err(|e| io_err(&self.target, e))?;
            old_id = Some(reg.register(&old));
        }
        if let Err(e) = fs::rename(&self.tmp, &self.target) {
            if let Some(id) = old_id {
                let _ = fs::rename(&old, &self.target);
                reg.unregister(id);
            }
            return Err(io_err(&self.target, e));
        }
        reg.unregister(self.tmp_id);
        self.done = true;
        Ok(old_id.map(|id| (old, id)))
    }
}

impl Drop for PlanWriter {
    fn drop(&mut self) {
        if !self.done {
            let mut reg = scratch::lock();
            scratch::remove_path(&self.tmp);
            reg.unregister(self.tmp_id);
        }
    }
}

/// Reads a JSON file of the plan: a regular file (not a link) of bounded size.
pub fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PlanError> {
    read_json_capped(path, MAX_JSON_BYTES)
}

fn read_json_capped<T: serde::de::DeserializeOwned>(path: &Path, cap: u64) -> Result<T, PlanError> {
    let bytes = read_capped(path, cap, Links::Refuse).map_err(|e| PlanError::new(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| PlanError::new(path, format!("malformed: {e}")))
}

/// A loaded, checked plan.
pub struct Plan {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub module: Module,
    pub weights: WeightStore,
}

impl Plan {
    /// Opens `dir`: checks the format version, the manifest's own checksum and every file's
    /// size and checksum, rebuilds and verifies the IR, and maps the weights.
    pub fn open(dir: &Path) -> Result<Plan, PlanError> {
        if !dir.is_dir() {
            return Err(PlanError::new(
                dir,
                "not a plan directory (does not exist or is not a directory)",
            ));
        }
        let mp = dir.join("manifest.json");
        if fs::symlink_metadata(&mp).is_err() {
            return Err(PlanError::new(
                &mp,
                "missing: this directory is not a zamba2c plan (make one with `zamba2c compile`)",
            ));
        }
        let raw: Value = read_json_capped(&mp, MAX_MANIFEST_BYTES)?;
        let manifest = check_manifest(&mp, raw)?;
        let bad = |msg: String| PlanError::new(&mp, msg);
        // Nothing unlisted: a file dropped from the list would escape every check.
        let listed: BTreeSet<&str> = manifest.files.keys().map(String::as_str).collect();
        if let Err(rel) = only_listed(dir, "", 0, &listed, &mut 0) {
            return Err(PlanError::new(
                dir,
                format!("holds {rel}, which manifest.json does not list: edited after compile"),
            ));
        }
        // Every file's kind and size first (a truncated file fails fast, and a FIFO or
        // device is never opened), then every checksum.
        for (rel, entry) in &manifest.files {
            let p = dir.join(rel);
            no_links_below(dir, rel)?;
            let m = fs::symlink_metadata(&p).map_err(|e| io_err(&p, e))?;
            if !m.is_file() {
                return Err(PlanError::new(
                    &p,
                    format!("is {}, not a regular file", kind_of(&m)),
                ));
            }
            if m.len() != entry.bytes {
                return Err(PlanError::new(
                    &p,
                    format!(
                        "is {} bytes, the manifest says {}: truncated or edited after compile",
                        m.len(),
                        entry.bytes
                    ),
                ));
            }
        }
        for (rel, entry) in &manifest.files {
            let p = dir.join(rel);
            let (file, len) = open_regular(&p, Links::Refuse).map_err(|e| PlanError::new(&p, e))?;
            if len != entry.bytes {
                return Err(PlanError::new(
                    &p,
                    format!(
                        "changed size while being read ({} bytes, then {len})",
                        entry.bytes
                    ),
                ));
            }
            let got = hash_open(file, &p, len)?;
            if got.blake3 != entry.blake3 {
                return Err(PlanError::new(
                    &p,
                    "checksum mismatch: edited after compile",
                ));
            }
        }
        let module_path = dir.join("module.json");
        if !manifest.files.contains_key("module.json") {
            return Err(bad("files: module.json is not listed".into()));
        }
        let mf: ModuleFile = read_json_file(&module_path)?;
        let module = mf
            .to_module()
            .map_err(|e| PlanError::new(&module_path, e))?;
        verify_module(&module).map_err(|e| PlanError::new(&module_path, e.to_string()))?;
        if module.dtype != manifest.dtype {
            return Err(bad(format!(
                "dtype: {} but module.json has {}: edited after compile",
                manifest.dtype, module.dtype
            )));
        }
        let weights = match &manifest.weights {
            WeightsSource::File(rel) => WeightStore::open_file(&dir.join(rel), &module)?,
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

/// The manifest's checks that need no other file: format, version, its own checksum, paths,
/// and the consistency of what it says about weights, tokenizer and architecture.
fn check_manifest(mp: &Path, raw: Value) -> Result<Manifest, PlanError> {
    let bad = |msg: String| PlanError::new(mp, msg);
    let shown = |v: Option<&Value>| v.map_or("missing".to_string(), |v| v.to_string());
    let fmt = raw.get("format");
    if fmt.and_then(Value::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "format: {} is not {FORMAT:?}: not a zamba2c plan",
            shown(fmt)
        )));
    }
    let ver = raw.get("format_version");
    if ver.and_then(Value::as_u64) != Some(FORMAT_VERSION as u64) {
        return Err(bad(format!(
            "format_version: the plan has {}, this zamba2c reads version {FORMAT_VERSION}; recompile the plan",
            shown(ver)
        )));
    }
    let digest = manifest_digest(&raw);
    match raw.get(SELF_CHECKSUM).and_then(Value::as_str) {
        Some(d) if d == digest => {}
        Some(_) => {
            return Err(bad(format!(
                "{SELF_CHECKSUM}: does not match the manifest's content: edited after compile"
            )))
        }
        None => return Err(bad(format!("{SELF_CHECKSUM}: missing"))),
    }
    let manifest: Manifest =
        serde_json::from_value(raw).map_err(|e| bad(format!("malformed: {e}")))?;
    if manifest.files.len() > MAX_PLAN_FILES {
        return Err(bad(format!(
            "files: {} entries, more than the {MAX_PLAN_FILES} a plan may have",
            manifest.files.len()
        )));
    }
    for rel in manifest.files.keys() {
        plan_file_path(rel).map_err(|e| bad(format!("files: {e}")))?;
        if rel == "manifest.json" {
            return Err(bad("files: lists manifest.json itself".into()));
        }
    }
    let listed = |field: &str, rel: &str| -> Result<(), PlanError> {
        if manifest.files.contains_key(rel) {
            Ok(())
        } else {
            Err(bad(format!("{field}: {rel:?} is not listed in files")))
        }
    };
    match (&manifest.weights, manifest.dummy_weights) {
        (WeightsSource::File(rel), false) => listed("weights", rel)?,
        (WeightsSource::Dummy { .. }, true) => {
            if manifest.files.contains_key("weights.safetensors") {
                return Err(bad(
                    "weights: random (dummy) weights, yet the plan holds weights.safetensors: edited after compile"
                        .into(),
                ));
            }
        }
        (WeightsSource::Dummy { .. }, false) => {
            return Err(bad(
                "weights: random (dummy) weights, but dummy_weights is false: only a plan compiled with --dummy-weights may have them"
                    .into(),
            ))
        }
        (WeightsSource::File(_), true) => {
            return Err(bad(
                "dummy_weights: true, but weights names a file: edited after compile".into(),
            ))
        }
    }
    if let Some(t) = &manifest.tokenizer {
        listed("tokenizer", t)?;
    }
    if let Some(a) = &manifest.arch {
        if !valid_arch(a) {
            return Err(bad(format!(
                "arch: {a:?} is not a GPU architecture like sm_90"
            )));
        }
    }
    Ok(manifest)
}

/// Refuses a plan file `rel` under `dir` reached through a symbolic link: every directory
/// between the plan and the file must be a real directory.
fn no_links_below(dir: &Path, rel: &str) -> Result<(), PlanError> {
    let mut p = dir.to_path_buf();
    let comps: Vec<_> = Path::new(rel).components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        p.push(c);
        let m = fs::symlink_metadata(&p).map_err(|e| io_err(&p, e))?;
        if !m.is_dir() {
            return Err(PlanError::new(
                &p,
                format!("is {}, not a directory of the plan", kind_of(&m)),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_and_paths() {
        for a in ["sm_90", "sm_80", "sm_90a", "sm_100a", "sm_1200"] {
            assert!(valid_arch(a), "{a}");
        }
        for a in [
            "",
            "sm_",
            "bogus",
            "sm_9x0",
            "sm_90/../x",
            "sm_12345",
            "sm_90ab",
            "compute_90",
        ] {
            assert!(!valid_arch(a), "{a}");
        }
        for p in ["module.json", "kernels/k.cu", "a/b/c"] {
            assert!(plan_file_path(p).is_ok(), "{p}");
        }
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            "a/b/c/d/e/f/g/h/i",
        ] {
            assert!(plan_file_path(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn digest_ignores_itself_and_key_order() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":[1,2],"manifest_blake3":"x"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":[1,2],"a":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"b":[2,1],"a":1}"#).unwrap();
        assert_eq!(manifest_digest(&a), manifest_digest(&b));
        assert_ne!(manifest_digest(&a), manifest_digest(&c));
    }

    fn info() -> PlanInfo {
        PlanInfo {
            created_by: "test".into(),
            dtype: DType::F32,
            weights: WeightsSource::Dummy { seed: 1 },
            tokenizer: None,
            opt_level: 0,
            passes: Vec::new(),
            arch: None,
        }
    }

    fn write_plan(target: &Path, inputs: &[PathBuf]) -> Result<Manifest, PlanError> {
        let mut w = PlanWriter::create_with_inputs(target, inputs)?;
        w.write("module.json", b"{}")?;
        w.write("kernels/a.cu", b"x")?;
        w.finish(info())
    }

    #[test]
    fn replaces_only_plans_and_empty_directories() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("plan");
        let m = write_plan(&t, &[]).unwrap();
        assert!(m.dummy_weights);
        let raw: Value =
            serde_json::from_slice(&fs::read(t.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(
            raw[SELF_CHECKSUM].as_str(),
            Some(manifest_digest(&raw).as_str())
        );
        assert!(!t.join(INCOMPLETE_MARKER).exists());
        // A plan is replaced; an empty directory too.
        write_plan(&t, &[]).unwrap();
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        write_plan(&empty, &[]).unwrap();
        // A plan with a file of the user's inside is not.
        fs::write(t.join("kernels/notes.txt"), b"mine").unwrap();
        let e = write_plan(&t, &[]).unwrap_err().to_string();
        assert!(e.contains("holds kernels/notes.txt"), "{e}");
        assert_eq!(fs::read(t.join("kernels/notes.txt")).unwrap(), b"mine");
        fs::remove_file(t.join("kernels/notes.txt")).unwrap();
        // Nor a directory of something else, a file, a link, or what is being compiled.
        let other = d.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("manifest.json"), br#"{"format": "theirs"}"#).unwrap();
        let e = write_plan(&other, &[]).unwrap_err().to_string();
        assert!(e.contains("not a zamba2c plan"), "{e}");
        let file = d.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(write_plan(&file, &[])
            .unwrap_err()
            .to_string()
            .contains("a regular file"));
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&t, &link).unwrap();
        let e = write_plan(&link, &[]).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let input = fs::canonicalize(t.join("module.json")).unwrap();
        let e = write_plan(&t, &[input]).unwrap_err().to_string();
        assert!(e.contains("an input of this compile"), "{e}");
        let e = write_plan(&t, &[fs::canonicalize(&t).unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("is the checkpoint directory"), "{e}");
        // Nothing temporary is left anywhere.
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_swept() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("plan");
        // A pid above the kernel's limit (2^22) belongs to no process.
        let dead = 4_194_304 + 17;
        let stale_tmp = d.path().join(format!(".plan.tmp-{dead}"));
        fs::create_dir_all(stale_tmp.join("kernels")).unwrap();
        fs::write(stale_tmp.join(INCOMPLETE_MARKER), b"").unwrap();
        fs::write(stale_tmp.join("kernels/a.cu"), b"x").unwrap();
        // Not ours (no marker, no plan): kept.
        let foreign = d.path().join(format!(".plan.tmp-{}", dead + 1));
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("data"), b"x").unwrap();
        // Ours but its process is alive (this one's parent): kept.
        let live = d
            .path()
            .join(format!(".plan.tmp-{}", std::os::unix::process::parent_id()));
        fs::create_dir(&live).unwrap();
        fs::write(live.join(INCOMPLETE_MARKER), b"").unwrap();
        // An old plan moved aside by a dead process: swept.
        write_plan(&d.path().join("p2"), &[]).unwrap();
        let stale_old = d.path().join(format!(".plan.old-{dead}"));
        fs::rename(d.path().join("p2"), &stale_old).unwrap();
        write_plan(&t, &[]).unwrap();
        assert!(!stale_tmp.exists());
        assert!(!stale_old.exists());
        assert!(foreign.join("data").exists());
        assert!(live.exists());
    }

    #[test]
    fn a_failed_plan_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("plan");
        {
            let mut w = PlanWriter::create(&t).unwrap();
            w.write("module.json", b"{}").unwrap();
            assert!(w.file_path("../escape").is_err());
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
