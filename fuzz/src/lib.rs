//! The fuzz harnesses of zamba2c's untrusted-input paths, shared by the libFuzzer targets
//! (`fuzz/fuzz_targets/*.rs`, nightly via `RUSTC_BOOTSTRAP=1`) and by the stable regression test
//! `tests/fuzz_regressions.rs`, which includes this file with `#[path]` and runs every committed
//! corpus seed and crash reproducer through the same functions.
//!
//! Each `fuzz_*` function must return normally for every input: a panic (including a failed
//! `assert!` of an invariant below), an abort on allocation failure, or a hang is a finding.
//!
//! * [`fuzz_config`]: bytes as `config.json` -> `Zamba2Config::from_value` and `from_file`; a
//!   config that validates must lower to a module that verifies.
//! * [`fuzz_checkpoint`]: bytes as `model.safetensors`, or as `model.safetensors.index.json` +
//!   one shard, beside a tiny valid config -> `Checkpoint::open`, `check`, `tensor_f32` of every
//!   weight of the lowered module, and `write_plan_weights` when the checkpoint passes.
//! * [`fuzz_plan`]: bytes replace one file of a tiny compiled plan (the manifest as is; the module
//!   or the weights with the manifest's checksums updated, as a deliberate editor would) ->
//!   `Plan::open`, and when it opens, the CPU engine runs a prompt and a decode step.
//! * [`fuzz_tokens`]: bytes as a `--tokens` string -> the CLI's `parse_tokens` (the very source
//!   file, `src/cli/tokens.rs`), then the ids through a tiny CPU engine whose context is 8 tokens.
//! * [`fuzz_torch_checkpoint`]: bytes as a `torch.save` file (`pytorch_model.bin`) beside a tiny
//!   config of Zyphra's original code, or as a bare state-dict pickle.

#![allow(clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;
use zamba2c_ir::checkpoint::Checkpoint;
use zamba2c_ir::{
    lower, verify_module, DType, Module, Plan, PlanInfo, PlanWriter, WeightsSource, Zamba2Config,
};
use zamba2c_runtime::cpu::CpuEngine;
use zamba2c_runtime::Engine;

#[path = "../../src/cli/tokens.rs"]
#[allow(dead_code)]
mod tokens;

#[path = "../../src/cli/output.rs"]
#[allow(dead_code)]
mod output;

/// A tiny Zamba2 config (1 Mamba layer + 1 hybrid layer, hidden 8, vocab 16, context 8): its
/// checkpoint is ~9 KB, so the fuzzer's inputs stay small.
pub const TINY_CONFIG: &str = r#"{
  "model_type": "zamba2",
  "vocab_size": 16,
  "hidden_size": 8,
  "num_hidden_layers": 2,
  "layers_block_type": ["mamba", "hybrid"],
  "mamba_d_state": 4,
  "mamba_d_conv": 2,
  "mamba_expand": 2,
  "mamba_ngroups": 1,
  "n_mamba_heads": 2,
  "chunk_size": 4,
  "intermediate_size": 16,
  "num_attention_heads": 2,
  "num_mem_blocks": 1,
  "use_shared_attention_adapter": false,
  "use_mem_rope": true,
  "max_position_embeddings": 8,
  "tie_word_embeddings": true
}"#;

/// Inputs larger than this are ignored (libFuzzer's -max_len keeps them far smaller anyway).
const MAX_INPUT: usize = 1 << 20;

/// Parses [`TINY_CONFIG`].
pub fn tiny_config() -> Zamba2Config {
    let v: Value = serde_json::from_str(TINY_CONFIG).expect("TINY_CONFIG is JSON");
    Zamba2Config::from_value(Path::new("config.json"), &v).expect("TINY_CONFIG is valid")
}

/// The tiny config lowered (f32, no passes): the weight table a checkpoint is checked against.
fn tiny_module() -> &'static Module {
    static M: OnceLock<Module> = OnceLock::new();
    M.get_or_init(|| lower(&tiny_config(), DType::F32))
}

/// A valid `model.safetensors` for [`TINY_CONFIG`]: every weight the model needs, F32, with
/// small deterministic values (norm weights near 1).
pub fn tiny_checkpoint_bytes() -> Vec<u8> {
    let m = tiny_module();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = m
        .weights
        .iter()
        .enumerate()
        .map(|(k, (name, spec))| {
            let n: usize = spec.shape.iter().product();
            let vals: Vec<u8> = (0..n)
                .flat_map(|i| {
                    let x = ((i * 7 + k * 13) % 17) as f32 / 17.0 - 0.5;
                    let x = if name.ends_with("norm.weight") {
                        1.0 + 0.1 * x
                    } else {
                        0.3 * x
                    };
                    x.to_le_bytes()
                })
                .collect();
            (name.clone(), spec.shape.clone(), vals)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let v =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("consistent view");
            (name.clone(), v)
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

/// The shard name the sharded checkpoint input uses.
pub const SHARD_NAME: &str = "model-00001-of-00001.safetensors";

/// A valid sharded-mode input for [`fuzz_checkpoint`]: mode byte 1, the index's length (u16
/// LE), the index JSON, then the shard.
pub fn tiny_sharded_input() -> Vec<u8> {
    let weight_map: serde_json::Map<String, Value> = tiny_module()
        .weights
        .keys()
        .map(|k| (k.clone(), Value::String(SHARD_NAME.into())))
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": weight_map}))
        .expect("index");
    let mut v = vec![1u8];
    v.extend_from_slice(&(index.len() as u16).to_le_bytes());
    v.extend_from_slice(&index);
    v.extend_from_slice(&tiny_checkpoint_bytes());
    v
}

/// A scratch directory for this process (the fuzzer runs one input at a time).
fn scratch() -> &'static Path {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("zamba2c-fuzz-")
            .tempdir()
            .expect("tempdir")
    })
    .path()
}

/// Serialises harness calls that share the scratch directory (the regression test runs them
/// from several threads).
fn lock() -> std::sync::MutexGuard<'static, ()> {
    static L: Mutex<()> = Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every error the loaders return is shown to the user as one line.
fn one_line(what: &str, msg: &str) {
    assert!(
        !msg.contains('\n'),
        "{what}: the error message has several lines: {msg:?}"
    );
    assert!(!msg.is_empty(), "{what}: empty error message");
}

// ---------------------------------------------------------------------------------------------
// config.json

/// Bytes as config.json.
pub fn fuzz_config(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let _g = lock();
    let path = scratch().join("config-fuzz.json");
    std::fs::write(&path, data).expect("write scratch config");
    let from_file = Zamba2Config::from_file(&path);
    if let Err(e) = &from_file {
        one_line("config from_file", &e.to_string());
        assert!(
            e.to_string().starts_with(&path.display().to_string()),
            "the error does not name the file: {e}"
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        assert!(
            from_file.is_err(),
            "from_file accepted bytes that are not JSON"
        );
        return;
    };
    let c = match Zamba2Config::from_value(Path::new("config.json"), &v) {
        Ok(c) => c,
        Err(e) => {
            one_line("config", &e.to_string());
            assert!(e.to_string().starts_with("config.json: "), "{e}");
            return;
        }
    };
    if let Ok(cf) = &from_file {
        assert_eq!(cf, &c, "from_file and from_value disagree");
    }
    // Invariants every validated config keeps.
    assert_eq!(c.layers_block_type.len(), c.num_hidden_layers);
    assert_eq!(c.mamba_headdim * c.n_mamba_heads, c.d_inner());
    assert_eq!(c.n_mamba_heads % c.mamba_ngroups, 0);
    assert_eq!(c.num_attention_heads % c.num_key_value_heads, 0);
    assert!(c.in_proj_dim() > c.conv_dim());
    // A plan stores the config: it must round-trip through serde.
    let back: Zamba2Config = serde_json::from_str(&serde_json::to_string(&c).expect("serializes"))
        .expect("a serialized config reads back");
    assert_eq!(back, c);
    // Lowering and the verifier must accept every config the parser accepts. (Lowering is linear
    // in the layer count; the cap keeps each run fast.)
    if c.num_hidden_layers <= 32 {
        let m = lower(&c, DType::F32);
        if let Err(e) = verify_module(&m) {
            panic!("a config that validates lowers to a module the verifier rejects: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// checkpoints

/// Writes the checkpoint files for one input into `dir` (beside the tiny config.json).
/// Mode (low bit of byte 0): 0 = the rest is model.safetensors; 1 = u16 LE index length, the
/// index JSON, then the one shard [`SHARD_NAME`].
fn write_checkpoint_input(dir: &Path, data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    for f in [
        "model.safetensors",
        "model.safetensors.index.json",
        SHARD_NAME,
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    if mode & 1 == 0 {
        std::fs::write(dir.join("model.safetensors"), rest).expect("write");
    } else {
        if rest.len() < 2 {
            return false;
        }
        let n = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let rest = &rest[2..];
        let n = n.min(rest.len());
        std::fs::write(dir.join("model.safetensors.index.json"), &rest[..n]).expect("write");
        std::fs::write(dir.join(SHARD_NAME), &rest[n..]).expect("write");
    }
    true
}

/// Bytes as a checkpoint (see [`write_checkpoint_input`]) beside the tiny config.
pub fn fuzz_checkpoint(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let _g = lock();
    let dir = scratch().join("checkpoint");
    if !dir.join("config.json").exists() {
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.json"), TINY_CONFIG).expect("write config");
    }
    if !write_checkpoint_input(&dir, data) {
        return;
    }
    let dir_s = dir.display().to_string();
    let ck = match Checkpoint::open(&dir) {
        Ok(ck) => ck,
        Err(e) => {
            let s = e.to_string();
            one_line("Checkpoint::open", &s);
            assert!(
                s.starts_with(&dir_s),
                "the error does not name a file of the checkpoint: {s}"
            );
            return;
        }
    };
    let m = tiny_module();
    let checked = ck.check(m);
    if let Err(e) = &checked {
        one_line("Checkpoint::check", &e.to_string());
    }
    for (name, spec) in &m.weights {
        match ck.tensor_f32(name, spec) {
            Ok(v) => {
                assert!(checked.is_ok() || !v.is_empty() || spec.numel() == 0);
                assert_eq!(
                    v.len(),
                    spec.numel(),
                    "tensor_f32({name}) returned a wrong length"
                );
                assert!(
                    v.iter().all(|x| x.is_finite()),
                    "tensor_f32({name}) returned a non-finite value"
                );
            }
            Err(e) => one_line("tensor_f32", &e.to_string()),
        }
    }
    if checked.is_ok() {
        let out = scratch().join("weights-out.safetensors");
        match ck.write_plan_weights(m, &out, &mut |_, _| {}) {
            Ok(()) => {
                let bytes = std::fs::read(&out).expect("read the written weights");
                let st = safetensors::SafeTensors::deserialize(&bytes)
                    .expect("the written weights are valid safetensors");
                assert_eq!(st.len(), m.weights.len());
            }
            Err(e) => {
                one_line("write_plan_weights", &e.to_string());
                assert!(
                    !out.exists(),
                    "a failed write_plan_weights left its output behind"
                );
            }
        }
        let _ = std::fs::remove_file(&out);
        let partial = scratch().join("weights-out.safetensors.partial");
        assert!(
            !partial.exists(),
            "write_plan_weights left a .partial file behind"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// plans

/// The files of the tiny compiled plan (f32, -O1, real weights from [`tiny_checkpoint_bytes`]).
pub fn tiny_plan_files() -> &'static BTreeMap<String, Vec<u8>> {
    static F: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    F.get_or_init(|| {
        let root = tempfile::tempdir().expect("tempdir");
        let model = root.path().join("model");
        std::fs::create_dir(&model).expect("mkdir");
        std::fs::write(model.join("config.json"), TINY_CONFIG).expect("write");
        std::fs::write(model.join("model.safetensors"), tiny_checkpoint_bytes()).expect("write");
        let ck = Checkpoint::open(&model).expect("the tiny checkpoint opens");
        let mut module = lower(ck.config(), DType::F32);
        let passes = zamba2c_passes::run_pipeline(&mut module, 1, None).expect("passes");
        ck.check(&module).expect("the tiny checkpoint checks");
        let out = root.path().join("plan");
        let mut w = PlanWriter::create(&out).expect("plan writer");
        w.write("module.json", module.to_json().as_bytes())
            .expect("write module");
        // The launch table and kernel sources, as compile writes them (no PTX).
        let program = zamba2c_codegen::emit(&module).expect("codegen");
        zamba2c_codegen::write_kernels(&mut w, &program, None).expect("kernels");
        let wp = w.file_path("weights.safetensors").expect("path");
        ck.write_plan_weights(&module, &wp, &mut |_, _| {})
            .expect("weights");
        let listed = w
            .finish(PlanInfo {
                created_by: "zamba2c-fuzz".into(),
                dtype: DType::F32,
                weights: WeightsSource::File("weights.safetensors".into()),
                tokenizer: None,
                opt_level: 1,
                passes,
                arch: None,
            })
            .expect("finish");
        let manifest = std::iter::once("manifest.json".to_string());
        manifest
            .chain(listed.files.keys().cloned())
            .map(|f| {
                let bytes = std::fs::read(out.join(&f)).expect("read plan file");
                (f, bytes)
            })
            .collect()
    })
}

/// The plan file an input of [`fuzz_plan`] replaces, by byte 0 mod 4. (The manifest replaced
/// as is must get past its own checksum; [`fuzz_manifest`] reseals it instead.)
pub const PLAN_FILES: [&str; 4] = [
    "manifest.json",
    "module.json",
    "weights.safetensors",
    "kernels/program.json",
];

/// Bytes replace one plan file (byte 0 picks which, see [`PLAN_FILES`]); for the module and
/// the weights the manifest's size and checksum of that file are updated.
pub fn fuzz_plan(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let files = tiny_plan_files();
    let _g = lock();
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let target = PLAN_FILES[sel as usize % PLAN_FILES.len()];
    let dir = scratch().join("plan");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_files(&dir, files);
    std::fs::write(dir.join(target), body).expect("write");
    if target != "manifest.json" {
        let mut man: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest");
        let e = zamba2c_ir::plan::hash_file(&dir.join(target)).expect("hash");
        man["files"][target] = serde_json::to_value(e).expect("entry");
        write_sealed(&dir.join("manifest.json"), &mut man);
    }
    open_and_run(&dir);
}

/// Writes the tiny plan's files (some under `kernels/`) into `dir`.
fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    }
}

/// Writes a manifest with its own checksum recomputed, as a deliberate editor would.
fn write_sealed(path: &Path, man: &mut Value) {
    man["manifest_blake3"] = Value::String(zamba2c_ir::plan::manifest_digest(man));
    std::fs::write(path, serde_json::to_vec_pretty(man).expect("json")).expect("write");
}

/// `Plan::open(dir)`; when it opens (and is small), a CPU engine runs a prompt and a step.
fn open_and_run(dir: &Path) {
    if let Some(plan) = open_checked(dir) {
        check_program(&plan);
        run_small(&plan);
    }
}

/// The launch table as the CUDA engine reads it (no GPU needed): refused in one line naming
/// `kernels/program.json`, or valid against the module (`Program::validate`).
fn check_program(plan: &Plan) {
    if let Err(e) = zamba2c_runtime::cuda::engine::read_program(plan) {
        one_line("read_program", &e.to_string());
    }
}

/// `Plan::open(dir)`: an error is one line naming the plan or a file in it; a plan that opens
/// keeps the manifest's invariants (every listed file inside the plan, the weights and the
/// tokenizer among them, random weights only when declared, a valid arch).
fn open_checked(dir: &Path) -> Option<Plan> {
    let plan = match Plan::open(dir) {
        Ok(p) => p,
        Err(e) => {
            let s = e.to_string();
            one_line("Plan::open", &s);
            assert!(
                s.starts_with(&dir.display().to_string()),
                "the error does not name a plan file: {s}"
            );
            return None;
        }
    };
    let m = &plan.manifest;
    let root = std::fs::canonicalize(dir).expect("canonical plan dir");
    for rel in m.files.keys() {
        let p = std::fs::canonicalize(dir.join(rel)).expect("a listed file exists");
        assert!(
            p.starts_with(&root),
            "listed file {rel} resolves outside the plan"
        );
        assert!(
            std::fs::symlink_metadata(dir.join(rel)).is_ok_and(|m| m.is_file()),
            "listed file {rel} is not a regular file"
        );
    }
    if let WeightsSource::File(f) = &m.weights {
        assert!(m.files.contains_key(f), "weights file {f} is not listed");
        assert!(!m.dummy_weights);
    } else {
        assert!(m.dummy_weights, "random weights without dummy_weights");
    }
    if let Some(t) = &m.tokenizer {
        assert!(m.files.contains_key(t), "tokenizer {t} is not listed");
    }
    if let Some(a) = &m.arch {
        assert!(zamba2c_ir::plan::valid_arch(a), "arch {a:?} accepted");
    }
    Some(plan)
}

/// Runs a plan that opened on the CPU: a 2-token prefill and a decode step.
fn run_small(plan: &Plan) {
    // The plan opened: run it, unless it asks for more memory than a fuzz run should give
    // (a hostile but consistent plan may describe a big model; that is refused elsewhere).
    let c = &plan.module.config;
    let weight_bytes: usize = plan.module.weights.values().map(|w| w.bytes()).sum();
    let state_elems = c.num_hidden_layers
        * (c.conv_dim() * c.mamba_d_conv + c.n_mamba_heads * c.mamba_headdim * c.mamba_d_state);
    if weight_bytes > (64 << 20) || state_elems > (16 << 20) || c.vocab_size > 4096 {
        return;
    }
    let mut engine = match CpuEngine::new(plan) {
        Ok(e) => e,
        Err(e) => {
            one_line("CpuEngine::new", &e.to_string());
            return;
        }
    };
    engine.set_max_context(8);
    let v = c.vocab_size as u32;
    match engine.prefill(&[1 % v, 2 % v]) {
        Ok(l) => {
            assert_eq!(
                l.len(),
                2 * c.vocab_size,
                "prefill returned a wrong number of logits"
            );
            if let Ok(l) = engine.decode_step(3 % v) {
                assert_eq!(
                    l.len(),
                    c.vocab_size,
                    "decode_step returned a wrong number of logits"
                );
            }
        }
        Err(e) => one_line("prefill", &e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// manifests

/// Bytes as the tiny plan's `manifest.json`. Byte 0 even: the rest, if it is a JSON object, is
/// resealed (its `manifest_blake3` recomputed, as a deliberate editor would), so the fuzzer
/// reaches every check behind the checksum: paths, weights source, tokenizer, arch, files.
/// Byte 0 odd: the rest as it is.
pub fn fuzz_manifest(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let files = tiny_plan_files();
    let _g = lock();
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let dir = scratch().join("manifest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    }
    let mp = dir.join("manifest.json");
    match serde_json::from_slice::<Value>(body) {
        Ok(mut v) if mode & 1 == 0 && v.is_object() => write_sealed(&mp, &mut v),
        _ => std::fs::write(&mp, body).expect("write"),
    }
    if let Some(plan) = open_checked(&dir) {
        run_small(&plan);
    }
}

// ---------------------------------------------------------------------------------------------
// output paths

/// Names the output-path input picks from, one byte each: entries of the sandbox (see
/// [`output_world`]), names inside them, and new names.
pub const OUTPUT_NAMES: [&str; 20] = [
    "model",
    "plan",
    "file",
    "dir",
    "empty",
    "fifo",
    "link-plan",
    "link-file",
    "link-dangling",
    "link-outside",
    "loop1",
    "kernels",
    "module.json",
    "manifest.json",
    "config.json",
    "x",
    "new",
    ".",
    "weights.bin",
    "foreign",
];

/// Builds the sandbox an output-path input acts in, under `top`: `top/root` is where paths
/// start; `top/outside` is a directory that links lead to. Every link points inside `top`.
fn output_world(top: &Path) -> PathBuf {
    let root = top.join("root");
    let outside = top.join("outside");
    std::fs::create_dir_all(root.join("model")).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("x"), b"outside").expect("write");
    std::fs::write(root.join("model/config.json"), b"{}").expect("write");
    std::fs::write(root.join("model/weights.bin"), b"w").expect("write");
    // A real plan of ours.
    let mut w = PlanWriter::create(&root.join("plan")).expect("plan writer");
    w.write("module.json", b"{}").expect("write");
    w.write("kernels/x", b"k").expect("write");
    w.finish(PlanInfo {
        created_by: "zamba2c-fuzz".into(),
        dtype: DType::F32,
        weights: WeightsSource::Dummy { seed: 0 },
        tokenizer: None,
        opt_level: 0,
        passes: Vec::new(),
        arch: None,
    })
    .expect("plan");
    std::fs::write(root.join("file"), b"file").expect("write");
    std::fs::create_dir(root.join("dir")).expect("mkdir");
    std::fs::write(root.join("dir/x"), b"x").expect("write");
    std::fs::create_dir(root.join("empty")).expect("mkdir");
    std::fs::create_dir(root.join("foreign")).expect("mkdir");
    std::fs::write(
        root.join("foreign/manifest.json"),
        br#"{"format":"theirs"}"#,
    )
    .expect("write");
    let fifo = std::ffi::CString::new(root.join("fifo").to_str().expect("utf-8")).expect("c");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    let link =
        |to: &Path, name: &str| std::os::unix::fs::symlink(to, root.join(name)).expect("link");
    link(&root.join("plan"), "link-plan");
    link(&root.join("file"), "link-file");
    link(&root.join("nowhere"), "link-dangling");
    link(&outside, "link-outside");
    link(&root.join("loop2"), "loop1");
    link(&root.join("loop1"), "loop2");
    root
}

/// What one sandbox entry is, for comparing before and after.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
    Other,
}

/// Every entry under `top` (links not followed), by path.
fn world_snapshot(top: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut todo = vec![top.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let entry = if m.file_type().is_symlink() {
                Entry::Link(std::fs::read_link(&p).expect("readlink"))
            } else if m.is_dir() {
                todo.push(p.clone());
                Entry::Dir
            } else if m.is_file() {
                Entry::File(std::fs::read(&p).expect("read"))
            } else {
                Entry::Other
            };
            out.insert(p, entry);
        }
    }
    out
}

/// Byte 0 picks the operation (even: write a plan with `PlanWriter`, the `compile -o` logic,
/// with the sandbox's `model/` and its files as the inputs, plus `plan/module.json` when bit 1
/// is set; odd: write an output file with the
/// CLI's `OutputFile`, the `--out` logic, reading the sandbox's `plan/`). Each further byte
/// (at most 4) is one path component from [`OUTPUT_NAMES`]. Whatever happens: no panic,
/// nothing temporary left, nothing outside the destination changed, and a destination replaced
/// only if the rules allow it (a plan: absent, empty or a plan of ours holding only its files,
/// not the inputs; a file: absent or a regular file, not inside the plan read).
pub fn fuzz_outputs(data: &[u8]) {
    let Some((&op, names)) = data.split_first() else {
        return;
    };
    if names.is_empty() || names.len() > 4 {
        return;
    }
    let _g = lock();
    let top = scratch().join("outputs");
    let _ = std::fs::remove_dir_all(&top);
    std::fs::create_dir_all(&top).expect("mkdir");
    let top = std::fs::canonicalize(&top).expect("canonical");
    let root = output_world(&top);
    let rel: PathBuf = names
        .iter()
        .map(|&b| OUTPUT_NAMES[b as usize % OUTPUT_NAMES.len()])
        .collect();
    let target = root.join(&rel);
    // Where the destination really is: its directory resolved, its own name kept.
    let real_target = target
        .parent()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .zip(target.file_name())
        .map(|(d, n)| d.join(n));
    let before = world_snapshot(&top);
    let before_kind = std::fs::symlink_metadata(&target).ok();
    let model = root.join("model");
    let mut inputs = vec![
        model.clone(),
        model.join("config.json"),
        model.join("weights.bin"),
    ];
    if op & 2 != 0 {
        // Compiling from a file inside the existing plan (`compile PLAN/sub -o PLAN`).
        inputs.push(root.join("plan/module.json"));
    }
    let result: Result<(), String> = if op & 1 == 0 {
        PlanWriter::create_with_inputs(&target, &inputs)
            .and_then(|mut w| {
                w.write("module.json", b"{\"new\":1}")?;
                w.finish(PlanInfo {
                    created_by: "zamba2c-fuzz".into(),
                    dtype: DType::F32,
                    weights: WeightsSource::Dummy { seed: 1 },
                    tokenizer: None,
                    opt_level: 0,
                    passes: Vec::new(),
                    arch: None,
                })
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        output::OutputFile::prepare("--out", &target, Some(&root.join("plan")))
            .and_then(|f| f.commit(b"out"))
            .map_err(|e| format!("{e:#}"))
    };
    let after = world_snapshot(&top);
    for p in after.keys() {
        let n = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        assert!(
            !(n.starts_with('.') && (n.contains(".tmp-") || n.contains(".old-"))),
            "temporary {} left behind ({rel:?}, {result:?})",
            p.display()
        );
    }
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    match &result {
        Err(e) => {
            one_line("output", e);
            assert!(
                changed.is_empty(),
                "a refused {rel:?} changed {changed:?}: {e}"
            );
        }
        Ok(()) => {
            let real = real_target.expect("an accepted destination has a real directory");
            for p in &changed {
                assert!(
                    p.starts_with(&real),
                    "{rel:?} changed {} outside its destination {}",
                    p.display(),
                    real.display()
                );
            }
            // What was there may be replaced only as the rules say.
            if let Some(m) = &before_kind {
                assert!(!m.file_type().is_symlink(), "{rel:?}: a link was replaced");
                if op & 1 == 0 {
                    assert!(
                        m.is_dir(),
                        "{rel:?}: a non-directory was replaced by a plan"
                    );
                    for i in &inputs {
                        let i = std::fs::canonicalize(i).expect("input");
                        assert!(!i.starts_with(&real), "{rel:?}: input {i:?} was replaced");
                    }
                    // Non-empty: it held a manifest of ours, and nothing but its files.
                    let inside: Vec<(&PathBuf, &Entry)> = before
                        .iter()
                        .filter(|(p, _)| p.starts_with(&real) && **p != real)
                        .collect();
                    if !inside.is_empty() {
                        let ours = matches!(
                            before.get(&real.join("manifest.json")),
                            Some(Entry::File(b)) if serde_json::from_slice::<Value>(b)
                                .is_ok_and(|v| v["format"] == "zamba2c-plan")
                        );
                        assert!(ours, "{rel:?}: a directory that is not a plan was replaced");
                        let foreign = inside.iter().any(|(p, e)| {
                            !matches!(e, Entry::Dir)
                                && !["manifest.json", "module.json", "kernels/x"]
                                    .iter()
                                    .any(|f| **p == real.join(f))
                        });
                        assert!(!foreign, "{rel:?}: a plan with other files was replaced");
                    }
                } else {
                    assert!(m.is_file(), "{rel:?}: a non-file was replaced by --out");
                }
            }
            if op & 1 == 1 {
                let plan = std::fs::canonicalize(root.join("plan")).expect("plan");
                assert!(!real.starts_with(&plan), "{rel:?}: written inside the plan");
                assert_eq!(std::fs::read(&real).expect("written"), b"out");
            } else {
                assert!(
                    real.join("manifest.json").is_file(),
                    "{rel:?}: no plan written"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// prompts

/// A CPU engine over the tiny plan (context 8 tokens).
fn tiny_engine() -> &'static Mutex<CpuEngine> {
    static E: OnceLock<Mutex<CpuEngine>> = OnceLock::new();
    E.get_or_init(|| {
        let files = tiny_plan_files();
        let dir = tempfile::tempdir().expect("tempdir");
        write_files(dir.path(), files);
        let plan = Plan::open(dir.path()).expect("the tiny plan opens");
        Mutex::new(CpuEngine::new(&plan).expect("engine"))
    })
}

/// Bytes as a `--tokens` string; byte 0 picks the vocabulary size (0 = the tiny model's 16, whose
/// ids then run through the engine; otherwise 1..=255).
pub fn fuzz_tokens(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((&v, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return; // the shell hands the CLI a String; clap refuses non-UTF-8 before parse_tokens
    };
    let vocab = if v == 0 { 16 } else { v as usize };
    let ids = match tokens::parse_tokens(s, vocab) {
        Ok(ids) => ids,
        Err(e) => {
            let m = format!("{e:#}");
            one_line("parse_tokens", &m);
            assert!(m.starts_with("--tokens: "), "{m}");
            return;
        }
    };
    assert!(!ids.is_empty());
    assert!(
        ids.iter().all(|&i| (i as usize) < vocab),
        "an id at or above vocab_size was accepted"
    );
    if v != 0 || ids.len() > 64 {
        return;
    }
    let mut e = tiny_engine().lock().unwrap_or_else(|e| e.into_inner());
    e.reset();
    match e.prefill(&ids) {
        Ok(l) => {
            assert!(
                ids.len() <= 8,
                "a prompt longer than the context was accepted"
            );
            assert_eq!(l.len(), ids.len() * 16);
            // Decode until the context is full, then one more must be refused.
            let mut pos = ids.len();
            while pos < 8 {
                e.decode_step(ids[0]).expect("decode within the context");
                pos += 1;
            }
            let r = e.decode_step(ids[0]);
            assert!(r.is_err(), "a decode step past the context was accepted");
        }
        Err(err) => {
            assert!(
                ids.len() > 8,
                "a prompt within the context was refused: {err}"
            );
            one_line("prefill", &err.to_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// torch.save state dicts (issue 14)

/// A tiny config in the field names of Zyphra's original code (spec §5.2): 1 Mamba layer + 1
/// hybrid layer, hidden 8, vocab 16; its `torch.save` checkpoint (the `torch_checkpoint` seed,
/// made by `scripts/make_fuzz_torch_seeds.py`) is ~20 KB.
pub const TINY_STANDALONE_CONFIG: &str = r#"{
  "num_hidden_layers": 2, "hidden_size": 8, "state_size": 4, "conv_dimension": 2,
  "expansion_factor": 2, "num_attention_heads": 2, "mamba_headdim": 4,
  "layers_block_type": ["m", "g"], "add_bias_linear": false, "use_shared_block_lora": true,
  "lora_rank": 2, "gated_linear_unit": true, "kv_channels": 4, "ffn_hidden_size": 32,
  "vocab_size": 16, "num_query_groups": 2, "use_mem_rope": true, "num_mem_blocks": 1,
  "use_shared_attention_lora": true
}"#;

/// Mode byte even: the rest is `pytorch_model.bin` beside [`TINY_STANDALONE_CONFIG`] ->
/// `Checkpoint::open`, `check` against the lowered module and `tensor_f32` of every weight.
/// Mode byte odd: the rest is a bare pickle -> `pickle::read_state_dict`, whose tensors must
/// then have consistent sizes. Every error must be one line.
pub fn fuzz_torch_checkpoint(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        match zamba2c_ir::pickle::read_state_dict(rest) {
            Ok(tensors) => {
                for (_, t) in tensors {
                    assert_eq!(t.shape.len(), t.stride.len());
                }
            }
            Err(e) => one_line("pickle", &e.to_string()),
        }
        return;
    }
    let _g = lock();
    let dir = scratch().join("torch");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(dir.join("config.json"), TINY_STANDALONE_CONFIG).expect("write config");
    let bin = dir.join("pytorch_model.bin");
    std::fs::write(&bin, rest).expect("write checkpoint");
    let ck = match Checkpoint::open(&dir) {
        Ok(ck) => ck,
        Err(e) => {
            one_line("torch open", &e.to_string());
            assert!(
                e.to_string().contains(&dir.display().to_string()),
                "the error names no file: {e}"
            );
            return;
        }
    };
    let module = lower(ck.config(), DType::F32);
    if let Err(e) = ck.check(&module) {
        one_line("torch check", &e.to_string());
        return;
    }
    for (name, spec) in &module.weights {
        match ck.tensor_f32(name, spec) {
            Ok(v) => {
                assert_eq!(v.len(), spec.numel(), "{name}");
                assert!(v.iter().all(|x| x.is_finite()), "{name}");
            }
            Err(e) => one_line("torch tensor_f32", &e.to_string()),
        }
    }
}

/// The committed inputs of `target`: the seeds (`corpus/TARGET/seed-*`; the units a local fuzz
/// run adds beside them are not committed) and every crash reproducer (`artifacts/TARGET/*`).
pub fn committed_inputs(fuzz_dir: &Path, target: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for (sub, prefix) in [("corpus", "seed-"), ("artifacts", "")] {
        if let Ok(rd) = std::fs::read_dir(fuzz_dir.join(sub).join(target)) {
            v.extend(rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| {
                p.is_file()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            }));
        }
    }
    v.sort();
    v
}
