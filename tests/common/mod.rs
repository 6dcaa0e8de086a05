//! Shared helpers of the integration tests: fixture paths, running the CLI, reading tensors.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fixtures directory: `$ZAMBA2C_FIXTURES` (set on the GPU machine), else the repository's.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("ZAMBA2C_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// Every fixture model directory (those holding a reference.safetensors), sorted.
pub fn fixture_models() -> Vec<PathBuf> {
    let dir = fixtures().join("models");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("reference.safetensors").is_file())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixture models under {}", dir.display());
    v
}

/// The zamba2c binary: `$ZAMBA2C_BIN` (on the GPU machine, where this build's absolute paths
/// do not exist), else the one cargo built for this test.
pub fn zamba2c_bin() -> PathBuf {
    std::env::var_os("ZAMBA2C_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_zamba2c")))
}

/// Runs the zamba2c binary with `args`.
pub fn zamba2c(args: &[&str]) -> Output {
    Command::new(zamba2c_bin())
        .args(args)
        .output()
        .expect("spawn zamba2c")
}

/// Runs zamba2c and panics with its stderr unless it succeeds.
pub fn zamba2c_ok(args: &[&str]) -> String {
    let out = zamba2c(args);
    assert!(
        out.status.success(),
        "zamba2c {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tensor read from a safetensors file, as f64 values plus its shape.
pub struct Loaded {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Reads tensor `name` of `path` (F32, F64, I64 or I32) as f64.
pub fn read_tensor(path: &Path, name: &str) -> Loaded {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
    let d = t.data();
    let data = match t.dtype() {
        safetensors::Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        safetensors::Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        safetensors::Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        safetensors::Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    Loaded {
        shape: t.shape().to_vec(),
        data,
    }
}

/// Relative error as the issues define it: max |ours - ref| / max |ref|.
pub fn rel_err(ours: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "length mismatch");
    let num = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let den = reference.iter().map(|v| v.abs()).fold(0.0, f64::max);
    num / den
}

/// Comma-separated ids.
pub fn ids_arg(ids: &[f64]) -> String {
    ids.iter()
        .map(|v| (*v as i64).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Every file under `dir` by relative path, with its content.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// A scratch directory for test binary `name`, under Cargo's per-target temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `examples/demo-model` compiled once per test binary, into `scratch(name)/demo-plan`.
pub fn demo_plan(name: &str) -> &'static str {
    static PLAN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PLAN.get_or_init(|| {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model");
        let plan = scratch(name).join("demo-plan");
        zamba2c_ok(&[
            "compile",
            model.to_str().unwrap(),
            "-o",
            plan.to_str().unwrap(),
        ]);
        plan
    })
    .to_str()
    .unwrap()
}

/// `examples/demo-model` copied to `dir/NAME-model`, changed there by `edit`, and compiled into
/// the plan `dir/NAME` (replacing what an earlier run left; `serve` names the model after it).
pub fn edited_demo_plan(dir: &Path, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model");
    let model = dir.join(format!("{name}-model"));
    let _ = std::fs::remove_dir_all(&model);
    std::fs::create_dir_all(&model).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    edit(&model);
    let plan = dir.join(name);
    let _ = std::fs::remove_dir_all(&plan);
    zamba2c_ok(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        plan.to_str().unwrap(),
    ]);
    plan
}
