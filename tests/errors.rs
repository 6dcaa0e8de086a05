//! The error catalogue: every class of bad input a user can hand zamba2c, through the built CLI.
//!
//! For each one the CLI must exit with status 1 (not 101: no panic), print exactly one line on
//! stderr (`error: ...`, no tracing output at the default level, no "panicked at"), and that line
//! must name the file and the field or tensor at fault. Bad inputs are made by copying the
//! fixture checkpoint `two_blocks_aba_chunked` (or a plan compiled from it) into a temporary
//! directory and corrupting the copy in Rust (serde_json + safetensors; no python in CI).
//!
//! The last tests check that outputs are atomic: a compile that fails midway leaves the old plan
//! intact and loadable and no temporary directory behind, and a failed `logits` leaves no
//! temporary file.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

const FIXTURE: &str = "two_blocks_aba_chunked";
/// A tensor of the fixture, [H] = [48] f32.
const NORM: &str = "model.final_layernorm.weight";
/// A matrix of the fixture: [DIP, H].
const IN_PROJ: &str = "model.layers.0.mamba.in_proj.weight";

fn fixture() -> PathBuf {
    common::fixtures().join("models").join(FIXTURE)
}

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("errors");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh temporary directory under the scratch directory.
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("case-")
        .tempdir_in(scratch())
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Copies a directory tree (a checkpoint or a plan) into `dst`.
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of the fixture checkpoint under `tmp`.
fn model_copy(tmp: &Path) -> PathBuf {
    let d = tmp.join("model");
    copy_dir(&fixture(), &d);
    d
}

fn edit_config(model: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = model.join("config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// One tensor read out of a safetensors file: dtype, shape, raw bytes.
type Raw = (safetensors::Dtype, Vec<usize>, Vec<u8>);

fn read_tensors(path: &Path) -> BTreeMap<String, Raw> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

fn write_tensors(path: &Path, t: &BTreeMap<String, Raw>) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = t
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Rewrites `model.safetensors` of `model` through `edit`.
fn edit_tensors(model: &Path, edit: impl FnOnce(&mut BTreeMap<String, Raw>)) {
    let p = model.join("model.safetensors");
    let mut t = read_tensors(&p);
    edit(&mut t);
    write_tensors(&p, &t);
}

/// Sets f32 element `i` of tensor `name` to `x`.
fn poke_f32(t: &mut BTreeMap<String, Raw>, name: &str, i: usize, x: f32) {
    let (d, _, b) = t.get_mut(name).unwrap();
    assert_eq!(*d, safetensors::Dtype::F32);
    b[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
}

/// Runs zamba2c and checks the failure contract; returns the one stderr line.
#[track_caller]
fn fails(args: &[&str], must_contain: &[&str]) -> String {
    let out = common::zamba2c(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "zamba2c {args:?} panicked: {stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "zamba2c {args:?}: exit status {:?}, stderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "zamba2c {args:?}: expected exactly one line on stderr, got: {stderr}"
    );
    let line = lines[0];
    assert!(line.starts_with("error: "), "zamba2c {args:?}: {line}");
    for m in must_contain {
        assert!(
            line.contains(m),
            "zamba2c {args:?}: the error does not mention {m:?}: {line}"
        );
    }
    eprintln!("{line}");
    line.to_string()
}

/// `compile MODEL -o TMP/plan` must fail naming `must_contain`.
#[track_caller]
fn compile_fails(model: &Path, must_contain: &[&str]) -> String {
    let plan = model.parent().unwrap().join("plan");
    let line = fails(&["compile", s(model), "-o", s(&plan)], must_contain);
    assert!(
        !plan.exists(),
        "a failed compile created {}",
        plan.display()
    );
    assert_no_temp_left(model.parent().unwrap());
    line
}

/// No `.NAME.tmp-*` / `.old` / `.partial` left in `dir`.
#[track_caller]
fn assert_no_temp_left(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !(n.contains(".tmp-") || n.ends_with(".old") || n.ends_with(".partial")),
            "temporary file or directory left behind: {}",
            dir.join(n).display()
        );
    }
}

/// A good plan of the fixture, compiled once per test process.
fn good_plan() -> &'static Path {
    static P: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &P.get_or_init(|| {
        let t = tempdir();
        let plan = t.path().join("plan");
        common::zamba2c_ok(&["compile", s(&fixture()), "-o", s(&plan)]);
        (t, plan)
    })
    .1
}

/// A copy of the good plan under `tmp`.
fn plan_copy(tmp: &Path) -> PathBuf {
    let d = tmp.join("plan");
    copy_dir(good_plan(), &d);
    d
}

// ---------------------------------------------------------------------------------------------
// files and directories

#[test]
fn missing_model_dir() {
    let t = tempdir();
    let m = t.path().join("no-such-model");
    compile_fails(&m, &[s(&m), "not a checkpoint directory"]);
}

#[test]
fn model_dir_is_a_file() {
    // Tests run as root, so chmod cannot make a directory unreadable; a regular file where the
    // directory should be is the unreadable directory we can make.
    let t = tempdir();
    let m = t.path().join("model");
    std::fs::write(&m, b"not a directory").unwrap();
    compile_fails(&m, &[s(&m), "not a checkpoint directory"]);
}

#[test]
fn missing_config() {
    let t = tempdir();
    let m = model_copy(t.path());
    std::fs::remove_file(m.join("config.json")).unwrap();
    compile_fails(&m, &[s(&m.join("config.json"))]);
}

#[test]
fn config_is_a_directory() {
    let t = tempdir();
    let m = model_copy(t.path());
    std::fs::remove_file(m.join("config.json")).unwrap();
    std::fs::create_dir(m.join("config.json")).unwrap();
    compile_fails(&m, &[s(&m.join("config.json"))]);
}

#[test]
fn missing_weights_file() {
    let t = tempdir();
    let m = model_copy(t.path());
    std::fs::remove_file(m.join("model.safetensors")).unwrap();
    compile_fails(
        &m,
        &[s(&m), "model.safetensors", "model.safetensors.index.json"],
    );
}

// ---------------------------------------------------------------------------------------------
// config.json

#[test]
fn malformed_json() {
    let t = tempdir();
    let m = model_copy(t.path());
    std::fs::write(m.join("config.json"), b"{\"hidden_size\": 48,,}").unwrap();
    compile_fails(&m, &[s(&m.join("config.json")), "malformed JSON", "line 1"]);
}

#[test]
fn config_not_an_object() {
    let t = tempdir();
    let m = model_copy(t.path());
    std::fs::write(m.join("config.json"), b"[1, 2]").unwrap();
    compile_fails(&m, &[s(&m.join("config.json")), "not a JSON object"]);
}

#[test]
fn config_not_utf8() {
    let t = tempdir();
    let m = model_copy(t.path());
    std::fs::write(m.join("config.json"), b"{\"a\": \"\xff\xfe\"}").unwrap();
    compile_fails(&m, &[s(&m.join("config.json"))]);
}

#[test]
fn wrong_field_type() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_config(&m, |c| {
        c.insert("hidden_size".into(), Value::String("48".into()));
    });
    compile_fails(
        &m,
        &[
            s(&m.join("config.json")),
            "hidden_size",
            "expected a non-negative integer",
        ],
    );
}

#[test]
fn wrong_field_type_bool() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_config(&m, |c| {
        c.insert("tie_word_embeddings".into(), Value::from(1));
    });
    compile_fails(&m, &[s(&m.join("config.json")), "tie_word_embeddings"]);
}

#[test]
fn absurd_size() {
    // A config claiming a huge vocabulary is refused before anything is allocated.
    let t = tempdir();
    let m = model_copy(t.path());
    edit_config(&m, |c| {
        c.insert("vocab_size".into(), Value::from(1u64 << 40));
    });
    compile_fails(
        &m,
        &[s(&m.join("config.json")), "vocab_size", "out of range"],
    );
}

#[test]
fn inconsistent_derived_field() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_config(&m, |c| {
        c.insert("mamba_headdim".into(), Value::from(32));
    });
    compile_fails(
        &m,
        &[s(&m.join("config.json")), "mamba_headdim", "inconsistent"],
    );
}

#[test]
fn inconsistent_hybrid_layer_ids() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_config(&m, |c| {
        c.insert("hybrid_layer_ids".into(), serde_json::json!([1, 3]));
    });
    compile_fails(
        &m,
        &[
            s(&m.join("config.json")),
            "hybrid_layer_ids",
            "inconsistent",
        ],
    );
}

#[test]
fn unknown_layer_type() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_config(&m, |c| {
        c["layers_block_type"][2] = Value::String("moe".into());
    });
    compile_fails(
        &m,
        &[
            s(&m.join("config.json")),
            "layers_block_type[2]",
            "unknown layer type",
        ],
    );
}

#[test]
fn layer_count_mismatch() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_config(&m, |c| {
        c.insert("num_hidden_layers".into(), Value::from(8));
    });
    compile_fails(
        &m,
        &[
            s(&m.join("config.json")),
            "layers_block_type",
            "num_hidden_layers",
        ],
    );
}

#[test]
fn wrong_model_type() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_config(&m, |c| {
        c.insert("model_type".into(), Value::String("llama".into()));
    });
    compile_fails(&m, &[s(&m.join("config.json")), "model_type"]);
}

// ---------------------------------------------------------------------------------------------
// weights

#[test]
fn missing_tensor() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_tensors(&m, |t| {
        t.remove(NORM);
    });
    compile_fails(&m, &[s(&m.join("model.safetensors")), NORM, "missing"]);
}

#[test]
fn extra_unknown_tensor() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_tensors(&m, |t| {
        t.insert(
            "model.layers.0.mamba.mystery.weight".into(),
            (safetensors::Dtype::F32, vec![2], vec![0; 8]),
        );
    });
    compile_fails(
        &m,
        &[
            s(&m.join("model.safetensors")),
            "model.layers.0.mamba.mystery.weight",
            "unknown",
        ],
    );
}

#[test]
fn misshaped_tensor() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_tensors(&m, |t| {
        let (_, shape, _) = t.get_mut(IN_PROJ).unwrap();
        let (a, b) = (shape[0], shape[1]);
        *shape = vec![b, a];
    });
    compile_fails(&m, &[s(&m.join("model.safetensors")), IN_PROJ, "shape"]);
}

#[test]
fn wrong_dtype_tensor() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_tensors(&m, |t| {
        let (d, _, _) = t.get_mut(NORM).unwrap();
        *d = safetensors::Dtype::I32;
    });
    compile_fails(&m, &[s(&m.join("model.safetensors")), NORM, "dtype", "I32"]);
}

/// NaN or ±Inf in a weight is refused at compile time (the loader checks every element while
/// converting): no trained Zamba2 weight is non-finite, and one would silently turn every logit
/// into NaN at run time, far from its cause. The error names the tensor and the element.
#[test]
fn nan_in_weights() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_tensors(&m, |t| poke_f32(t, NORM, 5, f32::NAN));
    compile_fails(
        &m,
        &[s(&m.join("model.safetensors")), NORM, "element 5", "NaN"],
    );
}

#[test]
fn inf_in_weights() {
    let t = tempdir();
    let m = model_copy(t.path());
    edit_tensors(&m, |t| poke_f32(t, IN_PROJ, 7, f32::NEG_INFINITY));
    compile_fails(
        &m,
        &[s(&m.join("model.safetensors")), IN_PROJ, "element 7", "inf"],
    );
}

#[test]
fn overflow_in_f16_plan() {
    // 1e6 is finite in f32 but not representable in an f16 plan.
    let t = tempdir();
    let m = model_copy(t.path());
    edit_tensors(&m, |t| poke_f32(t, IN_PROJ, 3, 1e6));
    let plan = t.path().join("plan");
    fails(
        &["compile", s(&m), "-o", s(&plan), "--dtype", "f16"],
        &[s(&m.join("model.safetensors")), IN_PROJ, "overflows"],
    );
    assert!(!plan.exists());
    assert_no_temp_left(t.path());
}

#[test]
fn truncated_weights_file() {
    let t = tempdir();
    let m = model_copy(t.path());
    let p = m.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    compile_fails(&m, &[s(&p), "truncated"]);
}

#[test]
fn truncated_header() {
    let t = tempdir();
    let m = model_copy(t.path());
    let p = m.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..500]).unwrap();
    compile_fails(&m, &[s(&p), "truncated"]);
}

#[test]
fn tiny_weights_file() {
    let t = tempdir();
    let m = model_copy(t.path());
    let p = m.join("model.safetensors");
    std::fs::write(&p, b"abc").unwrap();
    compile_fails(&m, &[s(&p), "truncated"]);
}

#[test]
fn header_claims_a_terabyte() {
    // The 8-byte header length says 1 TB: refused before anything is read or allocated.
    let t = tempdir();
    let m = model_copy(t.path());
    let p = m.join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    compile_fails(&m, &[s(&p), "header length"]);
}

#[test]
fn header_not_json() {
    let t = tempdir();
    let m = model_copy(t.path());
    let p = m.join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8] = b'[';
    std::fs::write(&p, &bytes).unwrap();
    compile_fails(&m, &[s(&p), "not a valid safetensors file"]);
}

#[test]
fn tensor_data_out_of_range() {
    // Rewrite one tensor's data_offsets in the header to point a terabyte past the end of the
    // file (the data, addressed relative to the header's end, is kept as it is).
    let t = tempdir();
    let m = model_copy(t.path());
    let p = m.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let end = header[NORM]["data_offsets"][1].as_u64().unwrap();
    header[NORM]["data_offsets"] =
        serde_json::json!([end + (1u64 << 40), end + (1u64 << 40) + 192]);
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&p, &out).unwrap();
    compile_fails(
        &m,
        &[s(&p), "not a valid safetensors file", NORM, "past the end"],
    );
}

#[test]
fn tensor_data_overlaps_another() {
    // Two tensors of the same size claiming the same bytes: refused (safetensors requires the
    // tensors' data to tile the buffer).
    let t = tempdir();
    let m = model_copy(t.path());
    let p = m.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let other = header["model.layers.0.input_layernorm.weight"]["data_offsets"].clone();
    header[NORM]["data_offsets"] = other;
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&p, &out).unwrap();
    compile_fails(
        &m,
        &[s(&p), "not a valid safetensors file", NORM, "overlap"],
    );
}

// ---------------------------------------------------------------------------------------------
// sharded checkpoints

fn sharded_copy(tmp: &Path) -> PathBuf {
    let d = tmp.join("model");
    copy_dir(&common::fixtures().join("models/sharded"), &d);
    d
}

#[test]
fn index_names_a_missing_shard() {
    let t = tempdir();
    let m = sharded_copy(t.path());
    let shard = "model-00002-of-00003.safetensors";
    std::fs::remove_file(m.join(shard)).unwrap();
    compile_fails(
        &m,
        &[
            s(&m.join("model.safetensors.index.json")),
            shard,
            "does not exist",
        ],
    );
}

#[test]
fn index_names_a_path_outside() {
    let t = tempdir();
    let m = sharded_copy(t.path());
    let p = m.join("model.safetensors.index.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let first = v["weight_map"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    v["weight_map"][&first] = Value::String("../../etc/passwd".into());
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    compile_fails(&m, &[s(&p), "../../etc/passwd", "not a plain file name"]);
}

#[test]
fn index_malformed() {
    let t = tempdir();
    let m = sharded_copy(t.path());
    let p = m.join("model.safetensors.index.json");
    std::fs::write(&p, b"{\"weight_map\": [}").unwrap();
    compile_fails(&m, &[s(&p), "malformed JSON"]);
}

#[test]
fn index_without_weight_map() {
    let t = tempdir();
    let m = sharded_copy(t.path());
    let p = m.join("model.safetensors.index.json");
    std::fs::write(&p, b"{\"metadata\": {}}").unwrap();
    compile_fails(&m, &[s(&p), "weight_map", "missing"]);
}

#[test]
fn index_assigns_a_tensor_to_the_wrong_shard() {
    let t = tempdir();
    let m = sharded_copy(t.path());
    let p = m.join("model.safetensors.index.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let wm = v["weight_map"].as_object_mut().unwrap();
    let (name, shard) = wm
        .iter()
        .find(|(_, s)| s.as_str() != Some("model-00001-of-00003.safetensors"))
        .map(|(a, b)| (a.clone(), b.clone()))
        .unwrap();
    assert_ne!(shard, "model-00001-of-00003.safetensors");
    wm.insert(
        name.clone(),
        Value::String("model-00001-of-00003.safetensors".into()),
    );
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    compile_fails(
        &m,
        &[
            s(&p),
            "model-00001-of-00003.safetensors",
            &name,
            "does not contain",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// plans

#[test]
fn plan_missing() {
    let t = tempdir();
    let p = t.path().join("no-plan");
    let out = t.path().join("l.safetensors");
    fails(
        &["logits", s(&p), "--tokens", "1,2", "--out", s(&out)],
        &[s(&p), "not a plan directory"],
    );
    fails(&["inspect", s(&p)], &[s(&p), "not a plan directory"]);
}

#[test]
fn plan_of_another_format_version() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let mp = p.join("manifest.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    v["format_version"] = Value::from(999);
    std::fs::write(&mp, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    fails(
        &["inspect", s(&p)],
        &[s(&mp), "format_version", "999", "recompile"],
    );
}

#[test]
fn plan_not_a_plan() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let mp = p.join("manifest.json");
    std::fs::write(&mp, b"{\"format\": \"something-else\"}").unwrap();
    fails(
        &["inspect", s(&p)],
        &[s(&mp), "format", "\"something-else\"", "not a zamba2c plan"],
    );
}

#[test]
fn plan_manifest_malformed() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let mp = p.join("manifest.json");
    std::fs::write(&mp, b"{\"format\": ").unwrap();
    fails(&["inspect", s(&p)], &[s(&mp), "malformed"]);
}

#[test]
fn plan_manifest_missing() {
    let t = tempdir();
    let p = plan_copy(t.path());
    std::fs::remove_file(p.join("manifest.json")).unwrap();
    fails(&["inspect", s(&p)], &[s(&p.join("manifest.json"))]);
}

#[test]
fn plan_module_edited_after_compile() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let f = p.join("module.json");
    let text = std::fs::read_to_string(&f).unwrap();
    // Same length, different content.
    let edited = text.replacen("\"vocab_size\": 128", "\"vocab_size\": 129", 1);
    assert_ne!(edited, text);
    std::fs::write(&f, edited).unwrap();
    fails(
        &["inspect", s(&p)],
        &[s(&f), "checksum mismatch", "edited after compile"],
    );
}

#[test]
fn plan_weights_truncated() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let f = p.join("weights.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let out = t.path().join("l.safetensors");
    fails(
        &["logits", s(&p), "--tokens", "1,2", "--out", s(&out)],
        &[s(&f), "bytes", "truncated"],
    );
}

#[test]
fn plan_file_deleted() {
    let t = tempdir();
    let p = plan_copy(t.path());
    std::fs::remove_file(p.join("weights.safetensors")).unwrap();
    fails(&["inspect", s(&p)], &[s(&p.join("weights.safetensors"))]);
}

#[test]
fn plan_manifest_path_escape() {
    // A manifest naming a file outside the plan is refused, not read.
    let t = tempdir();
    let p = plan_copy(t.path());
    let mp = p.join("manifest.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    v["files"]["../../etc/passwd"] = serde_json::json!({"bytes": 1, "blake3": "00"});
    std::fs::write(&mp, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    fails(
        &["inspect", s(&p)],
        &[
            s(&mp),
            "files",
            "../../etc/passwd",
            "not a path inside the plan",
        ],
    );
}

/// Re-hashes `rel` into the plan's manifest: an edit made by someone who also fixed the
/// checksums. The loader must still refuse what is inconsistent.
fn rehash(plan: &Path, rel: &str) {
    let mp = plan.join("manifest.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    let bytes = std::fs::read(plan.join(rel)).unwrap();
    v["files"][rel] = serde_json::json!({"bytes": bytes.len(), "blake3": blake3_hex(&bytes)});
    std::fs::write(&mp, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn blake3_hex(bytes: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new_in(scratch()).unwrap();
    std::fs::write(tmp.path(), bytes).unwrap();
    zamba2c_ir::plan::hash_file(tmp.path()).unwrap().blake3
}

#[test]
fn plan_weights_missing_tensor_rehashed() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let f = p.join("weights.safetensors");
    let mut w = read_tensors(&f);
    w.remove(NORM);
    write_tensors(&f, &w);
    rehash(&p, "weights.safetensors");
    fails(&["inspect", s(&p)], &[s(&f), NORM, "missing"]);
}

#[test]
fn plan_module_malformed_rehashed() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let f = p.join("module.json");
    std::fs::write(&f, b"{\"config\": 5}").unwrap();
    rehash(&p, "module.json");
    fails(&["inspect", s(&p)], &[s(&f), "malformed"]);
}

// ---------------------------------------------------------------------------------------------
// prompts and options

#[test]
fn token_id_out_of_range() {
    let t = tempdir();
    let out = t.path().join("l.safetensors");
    fails(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            "1,128",
            "--out",
            s(&out),
        ],
        &["--tokens", "128", "vocab_size is 128"],
    );
    fails(
        &[
            "run",
            s(good_plan()),
            "--tokens",
            "1,99999999999",
            "--max-new-tokens",
            "1",
        ],
        &["--tokens", "99999999999"],
    );
    assert!(!out.exists());
}

#[test]
fn non_numeric_token() {
    let t = tempdir();
    let out = t.path().join("l.safetensors");
    fails(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            "1,abc",
            "--out",
            s(&out),
        ],
        &["--tokens", "\"abc\""],
    );
    fails(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            "1,-2",
            "--out",
            s(&out),
        ],
        &["--tokens", "\"-2\""],
    );
    fails(
        &["logits", s(good_plan()), "--tokens", "", "--out", s(&out)],
        &["--tokens"],
    );
    fails(
        &[
            "run",
            s(good_plan()),
            "--tokens",
            "1,,2",
            "--max-new-tokens",
            "1",
        ],
        &["--tokens"],
    );
}

#[test]
fn prompt_longer_than_the_plan_allows() {
    // The fixture's max_position_embeddings is 512.
    let long: Vec<String> = (0..513).map(|i| (3 + i % 100).to_string()).collect();
    let long = long.join(",");
    fails(
        &[
            "run",
            s(good_plan()),
            "--tokens",
            &long,
            "--max-new-tokens",
            "1",
        ],
        &["513 tokens", "512"],
    );
    let t = tempdir();
    let out = t.path().join("l.safetensors");
    fails(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            &long,
            "--out",
            s(&out),
        ],
        &["--tokens", "513", "512"],
    );
    assert!(!out.exists());
}

#[test]
fn max_new_tokens_zero() {
    fails(
        &[
            "run",
            s(good_plan()),
            "--tokens",
            "1,2",
            "--max-new-tokens",
            "0",
        ],
        &["--max-new-tokens"],
    );
}

#[test]
fn decode_from_out_of_range() {
    let t = tempdir();
    let out = t.path().join("l.safetensors");
    fails(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            "1,2",
            "--decode-from",
            "3",
            "--out",
            s(&out),
        ],
        &["--decode-from"],
    );
    fails(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            "1,2",
            "--decode-from",
            "0",
            "--out",
            s(&out),
        ],
        &["--decode-from"],
    );
}

#[test]
fn bad_dtype_option() {
    let t = tempdir();
    fails(
        &[
            "compile",
            s(&fixture()),
            "-o",
            s(&t.path().join("plan")),
            "--dtype",
            "f64",
        ],
        &["--dtype", "f64"],
    );
}

// ---------------------------------------------------------------------------------------------
// outputs

#[test]
fn logits_out_under_a_regular_file() {
    // Tests run as root, so a read-only directory does not stop writes; a path "under" a regular
    // file cannot be created by anyone.
    let t = tempdir();
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("y.safetensors");
    fails(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            "1,2",
            "--out",
            s(&out),
        ],
        &["--out", s(&out), "is not a directory"],
    );
    assert_no_temp_left(t.path());
}

#[test]
fn logits_out_in_proc() {
    let out = "/proc/zamba2c-no-such/y.safetensors";
    fails(
        &["logits", s(good_plan()), "--tokens", "1,2", "--out", out],
        &[out],
    );
}

#[test]
fn logits_out_is_a_directory() {
    // The temporary file is written, the rename onto a non-empty directory fails: the directory
    // is untouched and the temporary file removed.
    let t = tempdir();
    let out = t.path().join("outdir");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), b"keep").unwrap();
    fails(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            "1,2",
            "--out",
            s(&out),
        ],
        &[s(&out)],
    );
    assert_eq!(std::fs::read(out.join("keep")).unwrap(), b"keep");
    assert_no_temp_left(t.path());
}

#[test]
fn compile_out_under_a_regular_file() {
    let t = tempdir();
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("plan");
    fails(&["compile", s(&fixture()), "-o", s(&out)], &[s(&out)]);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    assert_no_temp_left(t.path());
}

#[test]
fn compile_refuses_a_non_plan_directory() {
    let t = tempdir();
    let out = t.path().join("important");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("thesis.tex"), b"years of work").unwrap();
    fails(
        &["compile", s(&fixture()), "-o", s(&out)],
        &[s(&out), "not a zamba2c plan"],
    );
    assert_eq!(
        std::fs::read(out.join("thesis.tex")).unwrap(),
        b"years of work"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    assert_no_temp_left(t.path());
}

#[test]
fn compile_out_is_a_file() {
    let t = tempdir();
    let out = t.path().join("plan");
    std::fs::write(&out, b"a file").unwrap();
    fails(&["compile", s(&fixture()), "-o", s(&out)], &[s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), b"a file");
    assert_no_temp_left(t.path());
}

/// A compile that fails midway (a NaN found while converting the weights, after the module was
/// written into the temporary plan) leaves the old plan intact and loadable, and nothing else.
#[test]
fn failed_compile_keeps_the_old_plan() {
    let t = tempdir();
    let plan = t.path().join("plan");
    common::zamba2c_ok(&["compile", s(&fixture()), "-o", s(&plan)]);
    let before = common::snapshot(&plan);
    let m = model_copy(t.path());
    // The last weight in name order, so the conversion fails late, with most of the file written.
    let last = read_tensors(&m.join("model.safetensors"))
        .keys()
        .last()
        .unwrap()
        .clone();
    edit_tensors(&m, |t| poke_f32(t, &last, 0, f32::NAN));
    fails(&["compile", s(&m), "-o", s(&plan)], &[&last, "NaN"]);
    let after = common::snapshot(&plan);
    assert!(before == after, "the old plan changed");
    assert_no_temp_left(t.path());
    let out = t.path().join("l.safetensors");
    common::zamba2c_ok(&["logits", s(&plan), "--tokens", "1,2,3", "--out", s(&out)]);
    assert!(out.is_file());
    assert_no_temp_left(t.path());
}

/// A successful compile over an old plan replaces it, leaving no temporary directory.
#[test]
fn recompile_replaces_the_old_plan() {
    let t = tempdir();
    let plan = t.path().join("plan");
    common::zamba2c_ok(&["compile", s(&fixture()), "-o", s(&plan)]);
    common::zamba2c_ok(&["compile", s(&fixture()), "-o", s(&plan), "--dtype", "bf16"]);
    let m: Value =
        serde_json::from_slice(&std::fs::read(plan.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["dtype"], "bf16");
    assert_no_temp_left(t.path());
}
