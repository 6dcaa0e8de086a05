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
    edit_manifest(&p, |v| {
        v["files"]["../../etc/passwd"] = serde_json::json!({"bytes": 1, "blake3": "00"});
    });
    fails(
        &["inspect", s(&p)],
        &[
            s(&mp),
            "files",
            "../../etc/passwd",
            "not a plain file name inside the plan",
        ],
    );
}

/// Re-hashes `rel` into the plan's manifest and reseals the manifest: an edit made by someone
/// who also fixed every checksum. The loader must still refuse what is inconsistent.
fn rehash(plan: &Path, rel: &str) {
    edit_manifest(plan, |v| {
        let bytes = std::fs::read(plan.join(rel)).unwrap();
        v["files"][rel] = serde_json::json!({"bytes": bytes.len(), "blake3": blake3_hex(&bytes)});
    });
}

/// Edits the plan's manifest and recomputes its own checksum (`manifest_blake3`).
fn edit_manifest(plan: &Path, edit: impl FnOnce(&mut Value)) {
    let mp = plan.join("manifest.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    edit(&mut v);
    v["manifest_blake3"] = Value::String(zamba2c_ir::plan::manifest_digest(&v));
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

#[test]
fn bad_shared_dtype_options() {
    let t = tempdir();
    let plan = t.path().join("plan");
    let model = fixture();
    for (args, want) in [
        (
            &["--dtype", "bf16", "--shared-dtype", "f32"][..],
            "not one of bf16, f16",
        ),
        (&["--shared-dtype", "f16"][..], "needs 16-bit weights"),
        (
            &["--dtype", "f32", "--shared-dtype", "bf16"][..],
            "needs 16-bit weights",
        ),
    ] {
        let mut cmd = vec!["compile", s(&model), "-o", s(&plan)];
        cmd.extend_from_slice(args);
        fails(&cmd, &["--shared-dtype", want]);
        assert!(!plan.exists());
    }
}

/// The default bf16 plan stores the shared blocks' projections in f16: a shared weight beyond
/// f16's range is refused, naming it and the flag that keeps it in bf16.
#[test]
fn overflow_in_a_shared_block_of_the_bf16_plan() {
    const DOWN: &str = "model.layers.1.shared_transformer.feed_forward.down_proj.weight";
    let t = tempdir();
    let m = model_copy(t.path());
    edit_tensors(&m, |t| poke_f32(t, DOWN, 2, 1e6));
    let plan = t.path().join("plan");
    fails(
        &["compile", s(&m), "-o", s(&plan), "--dtype", "bf16"],
        &[
            s(&m.join("model.safetensors")),
            DOWN,
            "overflows",
            "--shared-dtype bf16",
        ],
    );
    assert!(!plan.exists());
    assert_no_temp_left(t.path());
    common::zamba2c_ok(&[
        "compile",
        s(&m),
        "-o",
        s(&plan),
        "--dtype",
        "bf16",
        "--shared-dtype",
        "bf16",
    ]);
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

// ---------------------------------------------------------------------------------------------
// Hostile input, round two (issue 16): outputs that are not ours, integrity of the manifest,
// bounds on every size, files that are not regular files, values out of physical range, and
// no panics on closed pipes.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A plan of the demo model (it has a tokenizer, for text prompts), compiled once.
fn demo_plan() -> &'static Path {
    static P: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &P.get_or_init(|| {
        let t = tempdir();
        let plan = t.path().join("demo");
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model");
        common::zamba2c_ok(&["compile", s(&model), "-o", s(&plan)]);
        (t, plan)
    })
    .1
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(s(p)).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Runs zamba2c with `stdin` from `input` and a deadline: a hang is a failure, not a stuck
/// test. Returns the output as `fails` checks it.
#[track_caller]
fn fails_within(args: &[&str], input: Stdio, secs: u64, must_contain: &[&str]) -> String {
    let mut child = Command::new(common::zamba2c_bin())
        .args(args)
        .stdin(input)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("zamba2c {args:?} did not end within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    for m in must_contain {
        assert!(lines[0].contains(m), "{args:?}: no {m:?} in {}", lines[0]);
    }
    lines[0].to_string()
}

// --- outputs: compile -o

#[test]
fn compile_refuses_to_replace_the_checkpoint() {
    let t = tempdir();
    let m = model_copy(t.path());
    let before = common::snapshot(&m);
    fails(
        &["compile", s(&m), "-o", s(&m)],
        &["-o", s(&m), "is the checkpoint directory", "refusing"],
    );
    assert!(common::snapshot(&m) == before, "the checkpoint changed");
    assert_no_temp_left(t.path());
}

#[test]
fn compile_refuses_a_plan_holding_the_checkpoint() {
    // A real plan of ours, with the checkpoint being compiled moved inside it: replacing the
    // plan would delete the input.
    let t = tempdir();
    let p = plan_copy(t.path());
    let m = p.join("model");
    copy_dir(&fixture(), &m);
    let before = common::snapshot(&p);
    fails(
        &["compile", s(&m), "-o", s(&p)],
        &["-o", s(&p), "an input of this compile", "refusing"],
    );
    assert!(common::snapshot(&p) == before, "the plan directory changed");
    assert_no_temp_left(t.path());
}

#[test]
fn compile_refuses_a_directory_with_a_foreign_manifest() {
    // The old rule ("has a file named manifest.json") would have deleted data.csv.
    let t = tempdir();
    let out = t.path().join("project");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("manifest.json"), br#"{"name": "my-app"}"#).unwrap();
    std::fs::write(out.join("data.csv"), b"1,2,3").unwrap();
    let before = common::snapshot(&out);
    fails(
        &["compile", s(&fixture()), "-o", s(&out)],
        &[s(&out), "not a zamba2c plan", "refusing"],
    );
    assert!(common::snapshot(&out) == before);
    assert_no_temp_left(t.path());
}

#[test]
fn compile_refuses_a_plan_with_files_of_the_user() {
    let t = tempdir();
    let p = plan_copy(t.path());
    std::fs::write(p.join("kernels/my-notes.txt"), b"keep me").unwrap();
    let before = common::snapshot(&p);
    fails(
        &["compile", s(&fixture()), "-o", s(&p)],
        &[s(&p), "kernels/my-notes.txt", "refusing"],
    );
    assert!(common::snapshot(&p) == before);
    assert_no_temp_left(t.path());
}

#[test]
fn compile_refuses_a_symlink_as_output() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let link = t.path().join("current");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    fails(
        &["compile", s(&fixture()), "-o", s(&link)],
        &[s(&link), "symbolic link", "refusing"],
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_no_temp_left(t.path());
}

#[test]
fn compile_replaces_a_plan_of_an_older_format() {
    // A plan of ours is replaceable whatever its format version (it is refused at load).
    let t = tempdir();
    let p = plan_copy(t.path());
    let mp = p.join("manifest.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    v["format_version"] = Value::from(1);
    v.as_object_mut().unwrap().remove("manifest_blake3");
    std::fs::write(&mp, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    fails(
        &["inspect", s(&p)],
        &[s(&mp), "format_version", "recompile"],
    );
    common::zamba2c_ok(&["compile", s(&fixture()), "-o", s(&p)]);
    common::zamba2c_ok(&["inspect", s(&p)]);
    assert_no_temp_left(t.path());
}

#[test]
fn errors_come_before_the_work() {
    // A checkpoint whose last weight is NaN fails only after the conversion: a bad --arch, a
    // bad -o and a bad --dtype must be reported instead, so they were checked first.
    let t = tempdir();
    let m = model_copy(t.path());
    let last = read_tensors(&m.join("model.safetensors"))
        .keys()
        .last()
        .unwrap()
        .clone();
    edit_tensors(&m, |t| poke_f32(t, &last, 0, f32::NAN));
    let plan = t.path().join("plan");
    fails(
        &["compile", s(&m), "-o", s(&plan), "--arch", "bogus"],
        &["--arch", "bogus"],
    );
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    fails(&["compile", s(&m), "-o", s(&file)], &["-o", s(&file)]);
    fails(
        &["compile", s(&m), "-o", s(&plan), "--act-dtype", "f8"],
        &["--act-dtype"],
    );
    fails(
        &["compile", s(&m), "-o", s(&plan), "--dump-ir", s(&file)],
        &["--dump-ir", s(&file), "not a directory"],
    );
    // logits: an unwritable --out is named, not the missing plan.
    let out = file.join("l.safetensors");
    let missing = t.path().join("no-plan");
    fails(
        &["logits", s(&missing), "--tokens", "1", "--out", s(&out)],
        &["--out", s(&out), "is not a directory"],
    );
    assert!(!plan.exists());
    assert_no_temp_left(t.path());
}

/// An interrupted compile (SIGINT, SIGTERM) removes its temporary directory and ends by the
/// signal, leaving the old plan as it was.
/// Waits (up to 20 s) until `child`, a compile into `dir/plan`, has made its temporary plan
/// directory, or has ended; whether the directory is there.
fn wait_for_plan_tmp(child: &mut std::process::Child, dir: &Path) -> bool {
    let tmp = dir.join(format!(".plan.tmp-{}", child.id()));
    let start = Instant::now();
    while !tmp.exists() && start.elapsed() < Duration::from_secs(20) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    tmp.exists()
}

#[test]
fn interrupted_compile_leaves_nothing_behind() {
    use std::os::unix::process::CommandExt;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let t = tempdir();
        let plan = t.path().join("plan");
        common::zamba2c_ok(&["compile", s(&fixture()), "-o", s(&plan)]);
        // The demo model (32000 x 256 embeddings) takes long enough to catch mid-compile,
        // mostly: on a loaded machine the compile may finish between the poll that saw its
        // temporary directory and the signal. Such a run replaced the plan as it should; the
        // next attempt starts from that plan. At least one attempt must be interrupted.
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model");
        let mut interrupted = false;
        for _attempt in 0..10 {
            let before = common::snapshot(&plan);
            let mut cmd = Command::new(common::zamba2c_bin());
            cmd.args(["compile", s(&model), "-o", s(&plan), "--dtype", "bf16"])
                .stderr(Stdio::null());
            // The signals at their default action in the child, however the tests were started
            // (a background job inherits SIGINT ignored, and zamba2c rightly keeps it so).
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGINT, libc::SIG_DFL);
                    libc::signal(libc::SIGTERM, libc::SIG_DFL);
                    Ok(())
                });
            }
            let mut child = cmd.spawn().unwrap();
            wait_for_plan_tmp(&mut child, t.path());
            // SAFETY: signalling our own child (a zombie until waited for, so its pid is not
            // reused even when it has exited).
            assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
            let status = child.wait().unwrap();
            assert_no_temp_left(t.path());
            if status.success() {
                continue;
            }
            assert_eq!(status.signal(), Some(sig), "{status:?}");
            assert!(common::snapshot(&plan) == before, "the old plan changed");
            interrupted = true;
            break;
        }
        assert!(
            interrupted,
            "no compile of 10 was caught before it finished"
        );
    }
}

/// A SIGINT that the parent set to be ignored (a shell's background job) stays ignored.
#[test]
fn ignored_sigint_stays_ignored() {
    use std::os::unix::process::CommandExt;
    let t = tempdir();
    let plan = t.path().join("plan");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model");
    let mut cmd = Command::new(common::zamba2c_bin());
    cmd.args(["compile", s(&model), "-o", s(&plan)])
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    assert!(
        wait_for_plan_tmp(&mut child, t.path()),
        "the compile did not start its temporary directory"
    );
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    common::zamba2c_ok(&["inspect", s(&plan)]);
    assert_no_temp_left(t.path());
}

#[test]
fn stale_temporary_directories_are_swept() {
    let t = tempdir();
    let plan = t.path().join("plan");
    // Left by a compile whose process (a pid above the kernel's 2^22 limit) is gone.
    let stale = t.path().join(".plan.tmp-4194321");
    std::fs::create_dir_all(stale.join("kernels")).unwrap();
    std::fs::write(stale.join(".zamba2c-incomplete"), b"").unwrap();
    std::fs::write(stale.join("weights.safetensors"), vec![0u8; 4096]).unwrap();
    // Not ours: kept.
    let foreign = t.path().join(".plan.tmp-4194322");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), b"years of work").unwrap();
    common::zamba2c_ok(&["compile", s(&fixture()), "-o", s(&plan)]);
    assert!(
        !stale.exists(),
        "the stale temporary directory is still there"
    );
    assert_eq!(
        std::fs::read(foreign.join("thesis.tex")).unwrap(),
        b"years of work"
    );
}

// --- outputs: --out files

#[test]
fn out_refuses_a_symlink_and_leaves_its_target() {
    let t = tempdir();
    let target = t.path().join("precious.txt");
    std::fs::write(&target, b"precious").unwrap();
    let link = t.path().join("l.safetensors");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    fails(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            "1,2",
            "--out",
            s(&link),
        ],
        &["--out", s(&link), "symbolic link"],
    );
    // As root, a link to /dev/null used to turn /dev/null into a regular file.
    let devnull = t.path().join("null.safetensors");
    std::os::unix::fs::symlink("/dev/null", &devnull).unwrap();
    fails(
        &[
            "bench",
            s(good_plan()),
            "--device",
            "cpu",
            "--prompt-len",
            "2",
            "--gen-len",
            "1",
            "--out",
            s(&devnull),
        ],
        &["--out", s(&devnull), "symbolic link"],
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    assert_no_temp_left(t.path());
}

#[test]
fn out_refuses_a_fifo_and_a_device() {
    let t = tempdir();
    let fifo = t.path().join("fifo");
    mkfifo(&fifo);
    fails_within(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            "1,2",
            "--out",
            s(&fifo),
        ],
        Stdio::null(),
        20,
        &["--out", s(&fifo), "FIFO"],
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // A character device of our own (1:3 is /dev/null's); tests run as root.
    let dev = t.path().join("null");
    let c = std::ffi::CString::new(s(&dev)).unwrap();
    // SAFETY: a valid path; mknod only creates the node.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    assert_eq!(made, 0, "mknod needs root, as the tests have");
    fails(
        &[
            "logits",
            s(good_plan()),
            "--tokens",
            "1,2",
            "--out",
            s(&dev),
        ],
        &["--out", s(&dev), "character device"],
    );
    assert!(std::fs::symlink_metadata(&dev)
        .unwrap()
        .file_type()
        .is_char_device());
    assert_no_temp_left(t.path());
}

#[test]
fn out_refuses_a_path_inside_the_plan() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let before = common::snapshot(&p);
    let w = p.join("weights.safetensors");
    fails(
        &["logits", s(&p), "--tokens", "1,2", "--out", s(&w)],
        &["--out", s(&w), "inside", "the plan this command reads"],
    );
    let k = p.join("kernels/report.json");
    fails(
        &["bench", s(&p), "--device", "cpu", "--out", s(&k)],
        &["--out", s(&k), "inside"],
    );
    assert!(common::snapshot(&p) == before);
    common::zamba2c_ok(&["inspect", s(&p)]);
}

#[test]
fn out_replaces_a_regular_file() {
    let t = tempdir();
    let out = t.path().join("l.safetensors");
    std::fs::write(&out, b"old").unwrap();
    common::zamba2c_ok(&[
        "logits",
        s(good_plan()),
        "--tokens",
        "1,2",
        "--out",
        s(&out),
    ]);
    assert_eq!(common::read_tensor(&out, "logits").shape, vec![2, 128]);
    let report = t.path().join("bench.json");
    common::zamba2c_ok(&[
        "bench",
        s(good_plan()),
        "--device",
        "cpu",
        "--prompt-len",
        "2",
        "--gen-len",
        "1",
        "--out",
        s(&report),
    ]);
    let v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["prompt_len"], 2);
    assert_no_temp_left(t.path());
}

// --- integrity of the manifest

#[test]
fn manifest_edited_without_its_checksum() {
    // Swapping the real weights for random ones by editing the manifest.
    let t = tempdir();
    let p = plan_copy(t.path());
    let mp = p.join("manifest.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    v["weights"] = serde_json::json!({"dummy": {"seed": 0}});
    v["dummy_weights"] = Value::Bool(true);
    v["files"]
        .as_object_mut()
        .unwrap()
        .remove("weights.safetensors");
    std::fs::write(&mp, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    fails(
        &["inspect", s(&p)],
        &[s(&mp), "manifest_blake3", "edited after compile"],
    );
}

#[test]
fn manifest_declares_dummy_weights_it_was_not_compiled_with() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let mp = p.join("manifest.json");
    edit_manifest(&p, |v| {
        v["weights"] = serde_json::json!({"dummy": {"seed": 0}})
    });
    fails(
        &["inspect", s(&p)],
        &[s(&mp), "weights", "dummy", "--dummy-weights"],
    );
    // Saying so as well, while the plan still holds its weights file, is refused too.
    edit_manifest(&p, |v| v["dummy_weights"] = Value::Bool(true));
    fails(
        &["inspect", s(&p)],
        &[s(&mp), "weights.safetensors", "edited after compile"],
    );
}

#[test]
fn dummy_weights_are_shown_as_such() {
    let t = tempdir();
    let plan = t.path().join("plan");
    common::zamba2c_ok(&[
        "compile",
        s(&fixture()),
        "-o",
        s(&plan),
        "--dummy-weights",
        "--seed",
        "7",
    ]);
    let text = common::zamba2c_ok(&["inspect", s(&plan)]);
    assert!(
        text.contains("RANDOM (compiled with --dummy-weights, seed 7"),
        "{}",
        text.lines().take(12).collect::<Vec<_>>().join("\n")
    );
    let json: Value = serde_json::from_str(&common::zamba2c_ok(&[
        "inspect",
        s(&plan),
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(json["manifest"]["dummy_weights"], true);
}

#[test]
fn manifest_points_the_tokenizer_outside_the_plan() {
    for bad in ["../../../etc/passwd", "/etc/passwd"] {
        let t = tempdir();
        let p = plan_copy(t.path());
        let mp = p.join("manifest.json");
        edit_manifest(&p, |v| v["tokenizer"] = Value::String(bad.into()));
        fails(
            &["inspect", s(&p)],
            &[s(&mp), "tokenizer", bad, "not listed"],
        );
        // Listing it as a plan file is refused as well.
        edit_manifest(&p, |v| {
            v["files"][bad] = serde_json::json!({"bytes": 1, "blake3": "00"});
        });
        fails(
            &["inspect", s(&p)],
            &[s(&mp), "files", bad, "not a plain file name"],
        );
    }
}

#[test]
fn manifest_drops_a_file_from_its_list() {
    // An unlisted file is unchecked: the plan is refused rather than half-verified.
    let t = tempdir();
    let p = plan_copy(t.path());
    let kernel = edit_first_kernel(&p);
    edit_manifest(&p, |v| {
        v["files"].as_object_mut().unwrap().remove(&kernel);
    });
    fails(
        &["inspect", s(&p)],
        &[s(&p), &kernel, "not list", "edited after compile"],
    );
    let mp = p.join("manifest.json");
    edit_manifest(&p, |v| {
        v["files"]
            .as_object_mut()
            .unwrap()
            .remove("weights.safetensors");
    });
    fails(&["inspect", s(&p)], &[s(&mp), "weights", "not listed"]);
}

/// Appends a line to the first kernel source of the plan; returns its relative path.
fn edit_first_kernel(p: &Path) -> String {
    let mut ks: Vec<_> = std::fs::read_dir(p.join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    ks.sort();
    let rel = format!("kernels/{}", ks[0]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p.join(&rel))
        .unwrap();
    writeln!(f, "// edited").unwrap();
    rel
}

#[test]
fn manifest_arch_is_not_a_path() {
    let t = tempdir();
    let p = plan_copy(t.path());
    edit_manifest(&p, |v| v["arch"] = Value::String("../../x".into()));
    fails(
        &["inspect", s(&p)],
        &[s(&p.join("manifest.json")), "arch", "../../x"],
    );
}

// --- plan and checkpoint files that are not regular files

#[test]
fn plan_file_replaced_by_a_fifo_or_a_link() {
    for (rel, kind) in [
        ("manifest.json", "fifo"),
        ("module.json", "fifo"),
        ("weights.safetensors", "fifo"),
        ("weights.safetensors", "zero"),
        ("module.json", "link"),
    ] {
        let t = tempdir();
        let p = plan_copy(t.path());
        let f = p.join(rel);
        std::fs::remove_file(&f).unwrap();
        match kind {
            "fifo" => mkfifo(&f),
            "zero" => std::os::unix::fs::symlink("/dev/zero", &f).unwrap(),
            _ => std::os::unix::fs::symlink(good_plan().join(rel), &f).unwrap(),
        }
        let want = match kind {
            "fifo" => "FIFO",
            _ => "symbolic link",
        };
        fails_within(&["inspect", s(&p)], Stdio::null(), 20, &[s(&f), want]);
    }
}

#[test]
fn plan_file_sized_before_it_is_hashed() {
    // A 64 GiB sparse file in place of the weights: refused by its size at once.
    let t = tempdir();
    let p = plan_copy(t.path());
    let f = p.join("weights.safetensors");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let start = Instant::now();
    fails(
        &["inspect", s(&p)],
        &[s(&f), "68719476736 bytes", "the manifest says"],
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn checkpoint_file_that_is_not_a_regular_file() {
    for (name, kind) in [
        ("config.json", "fifo"),
        ("model.safetensors", "fifo"),
        ("model.safetensors", "zero"),
        ("config.json", "loop"),
        ("tokenizer.json", "fifo"),
    ] {
        let t = tempdir();
        let m = model_copy(t.path());
        let f = m.join(name);
        let _ = std::fs::remove_file(&f);
        let want = match kind {
            "fifo" => "FIFO",
            "zero" => "character device",
            _ => "symbolic link loop",
        };
        match kind {
            "fifo" => mkfifo(&f),
            "zero" => std::os::unix::fs::symlink("/dev/zero", &f).unwrap(),
            _ => {
                let other = m.join("other.json");
                std::os::unix::fs::symlink(&f, &other).unwrap();
                std::os::unix::fs::symlink(&other, &f).unwrap();
            }
        }
        let plan = t.path().join("plan");
        fails_within(
            &["compile", s(&m), "-o", s(&plan)],
            Stdio::null(),
            20,
            &[s(&f), want],
        );
        assert!(!plan.exists());
        assert_no_temp_left(t.path());
    }
}

#[test]
fn checkpoint_symlinks_are_followed() {
    // The Hugging Face cache links each file of a snapshot into blobs/: that still compiles.
    let t = tempdir();
    let blobs = t.path().join("blobs");
    copy_dir(&fixture(), &blobs);
    let snap = t.path().join("snapshot");
    std::fs::create_dir(&snap).unwrap();
    for e in std::fs::read_dir(&blobs).unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), snap.join(e.file_name())).unwrap();
    }
    let plan = t.path().join("plan");
    common::zamba2c_ok(&["compile", s(&snap), "-o", s(&plan)]);
    // ... and -o onto the blobs directory it reads through the links is refused.
    let before = common::snapshot(&blobs);
    fails(
        &["compile", s(&snap), "-o", s(&blobs)],
        &["-o", s(&blobs), "refusing"],
    );
    assert!(common::snapshot(&blobs) == before);
}

#[test]
fn config_json_too_large() {
    // 2 GiB (sparse): refused by its size before it is read.
    let t = tempdir();
    let m = model_copy(t.path());
    let f = m.join("config.json");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let start = Instant::now();
    compile_fails(&m, &[s(&f), "2147483648 bytes", "limit"]);
    assert!(start.elapsed() < Duration::from_secs(10));
}

// --- config values out of physical range, and sizes out of bounds

#[test]
fn config_values_out_of_physical_range() {
    for (field, value, shown) in [
        ("rms_norm_eps", serde_json::json!(1e39), "rms_norm_eps"),
        ("rms_norm_eps", serde_json::json!(-1e-5), "rms_norm_eps"),
        ("time_step_min", serde_json::json!(-3.0), "time_step_min"),
    ] {
        let t = tempdir();
        let m = model_copy(t.path());
        edit_config(&m, |c| {
            c.insert(field.into(), value.clone());
        });
        compile_fails(&m, &[s(&m.join("config.json")), shown, "out of range"]);
    }
    // rope_theta lives under rope_parameters in HF 5.24 configs.
    let t = tempdir();
    let m = model_copy(t.path());
    edit_config(&m, |c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_theta": 1e-300, "rope_type": "default"}),
        );
    });
    compile_fails(
        &m,
        &[s(&m.join("config.json")), "rope_theta", "out of range"],
    );
}

/// A config whose sizes are each within bounds but multiply to terabytes of weights.
fn huge_config(model: &Path, vocab: u64, hidden: u64) {
    edit_config(model, |c| {
        for k in [
            "mamba_headdim",
            "attention_head_dim",
            "kv_channels",
            "attention_hidden_size",
            "head_dim",
            "num_query_groups",
        ] {
            c.remove(k);
        }
        c.insert("hidden_size".into(), Value::from(hidden));
        c.insert("vocab_size".into(), Value::from(vocab));
        c.insert("intermediate_size".into(), Value::from(4 * hidden));
        for k in [
            "n_mamba_heads",
            "num_attention_heads",
            "num_key_value_heads",
        ] {
            c.insert(k.into(), Value::from(8));
        }
    });
}

#[test]
fn config_sizes_that_multiply_to_terabytes() {
    let t = tempdir();
    let m = t.path().join("model");
    std::fs::create_dir(&m).unwrap();
    std::fs::copy(fixture().join("config.json"), m.join("config.json")).unwrap();
    huge_config(&m, 4_194_304, 65_536);
    let plan = t.path().join("plan");
    fails(
        &["compile", s(&m), "-o", s(&plan), "--dummy-weights"],
        &[
            s(&m.join("config.json")),
            "vocab_size",
            "parameters, over the",
        ],
    );
    assert!(!plan.exists());
}

#[test]
fn plan_larger_than_the_machine_is_refused_at_load() {
    // 2^35 parameters (137 GB as f32): within the compiler's cap, beyond this machine's memory.
    let t = tempdir();
    let m = t.path().join("model");
    std::fs::create_dir(&m).unwrap();
    std::fs::copy(fixture().join("config.json"), m.join("config.json")).unwrap();
    huge_config(&m, 4_194_304, 8192);
    let plan = t.path().join("plan");
    common::zamba2c_ok(&["compile", s(&m), "-o", s(&plan), "--dummy-weights"]);
    let out = t.path().join("l.safetensors");
    fails(
        &["logits", s(&plan), "--tokens", "1,2", "--out", s(&out)],
        &[s(&plan), "the CPU engine needs", "memory available"],
    );
    fails(
        &[
            "bench",
            s(&plan),
            "--device",
            "cpu",
            "--prompt-len",
            "2",
            "--gen-len",
            "1",
        ],
        &[s(&plan), "the CPU engine needs"],
    );
    assert!(!out.exists());
    assert_no_temp_left(t.path());
}

#[test]
fn module_config_is_validated_again_at_load() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let f = p.join("module.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    v["config"]["vocab_size"] = Value::from(0);
    std::fs::write(&f, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    rehash(&p, "module.json");
    fails(
        &["inspect", s(&p)],
        &[s(&f), "config.vocab_size", "out of range"],
    );
    v["config"]["vocab_size"] = Value::from(128);
    v["config"]["rms_norm_eps"] = Value::from(1e39);
    std::fs::write(&f, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    rehash(&p, "module.json");
    fails(&["inspect", s(&p)], &[s(&f), "config.rms_norm_eps"]);
}

#[test]
fn module_weight_table_must_match_its_config() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let f = p.join("module.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    v["weights"][NORM]["shape"] = serde_json::json!([1u64 << 40]);
    std::fs::write(&f, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    rehash(&p, "module.json");
    fails(&["inspect", s(&p)], &[s(&f), NORM, "the config implies"]);
}

/// The shared blocks' projection dtype is read from module.json's first shared weight: a
/// 16-bit one beside f32 weights is refused, and so is a table whose shared weights disagree.
#[test]
fn module_shared_projection_dtype_must_be_one_compile_makes() {
    const Q: &str = "model.layers.1.shared_transformer.self_attn.q_proj.weight";
    const V: &str = "model.layers.3.shared_transformer.self_attn.v_proj.weight";
    let t = tempdir();
    let p = plan_copy(t.path());
    let f = p.join("module.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    assert_eq!(v["dtype"], "f32", "the good plan is an f32 plan");
    // Every shared projection in f16, as `--shared-dtype f16` would store them: refused
    // beside f32 weights (compile allows it only with --dtype bf16 or f16).
    let mut w = v.clone();
    for (name, spec) in w["weights"].as_object_mut().unwrap() {
        let matrix = spec["shape"].as_array().is_some_and(|d| d.len() == 2);
        let shared = name.contains(".shared_transformer.") || name.ends_with(".linear.weight");
        if matrix && shared {
            spec["dtype"] = Value::from("f16");
        }
    }
    assert_eq!(w["weights"][Q]["dtype"], "f16");
    std::fs::write(&f, serde_json::to_vec_pretty(&w).unwrap()).unwrap();
    rehash(&p, "module.json");
    fails(
        &["inspect", s(&p)],
        &[s(&f), "shared block projections in f16 beside f32"],
    );
    // A bf16 plan with f16 shared blocks, one of whose weights says bf16.
    let bf = t.path().join("bf16");
    common::zamba2c_ok(&["compile", s(&fixture()), "-o", s(&bf), "--dtype", "bf16"]);
    let f = bf.join("module.json");
    let mut w: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    assert_eq!(
        w["weights"][Q]["dtype"], "f16",
        "the default bf16 plan's shared blocks"
    );
    w["weights"][V]["dtype"] = Value::from("bf16");
    std::fs::write(&f, serde_json::to_vec_pretty(&w).unwrap()).unwrap();
    rehash(&bf, "module.json");
    fails(&["inspect", s(&bf)], &[s(&f), V, "the config implies"]);
}

#[test]
fn module_state_table_must_match_its_config() {
    let t = tempdir();
    let p = plan_copy(t.path());
    let f = p.join("module.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    let ssm: Vec<usize> = v["states"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, s)| s["kind"] == "ssm")
        .map(|(i, _)| i)
        .collect();
    assert!(ssm.len() >= 2, "{ssm:?}");
    // A state dtype that is not a float type, then SSM states of two dtypes.
    for (i, dtype, want) in [
        (ssm[0], "i32", "not a float type"),
        (ssm[1], "f16", "not the one the config implies"),
    ] {
        let mut w = v.clone();
        w["states"][i]["dtype"] = Value::from(dtype);
        std::fs::write(&f, serde_json::to_vec_pretty(&w).unwrap()).unwrap();
        rehash(&p, "module.json");
        fails(&["inspect", s(&p)], &[s(&f), "states", want]);
    }
}

// --- prompts and lengths

#[test]
fn prompt_of_nul_bytes_on_stdin_ends_quickly() {
    let zero = std::fs::File::open("/dev/zero").unwrap();
    fails_within(
        &["run", s(demo_plan()), "--max-new-tokens", "1"],
        Stdio::from(zero),
        20,
        &["stdin", "NUL byte"],
    );
    let t = tempdir();
    let f = t.path().join("p.txt");
    std::fs::write(&f, b"Hello\0world").unwrap();
    fails(
        &[
            "run",
            s(demo_plan()),
            "--prompt-file",
            s(&f),
            "--max-new-tokens",
            "1",
        ],
        &["--prompt-file", s(&f), "NUL byte (at byte 5)"],
    );
    fails_within(
        &[
            "run",
            s(demo_plan()),
            "--prompt-file",
            "/dev/zero",
            "--max-new-tokens",
            "1",
        ],
        Stdio::null(),
        20,
        &["/dev/zero", "NUL byte"],
    );
}

#[test]
fn endless_prompt_on_stdin_stops_at_the_cap() {
    // `yes` would never end: the read stops at the cap, one line, quickly.
    let mut child = Command::new(common::zamba2c_bin())
        .args(["run", s(demo_plan()), "--max-new-tokens", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let line = [b'y', b'\n'].repeat(32 << 10);
        // Ends when zamba2c closes its end.
        while stdin.write_all(&line).is_ok() {}
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("stdin: the prompt is longer than"),
        "{stderr}"
    );
}

/// Peak memory of every child this test process has waited for (ru_maxrss, bytes).
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage only fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    ru.ru_maxrss as u64 * 1024
}

#[test]
fn large_prompt_file_is_refused_before_it_is_read() {
    // 50 MB of text used to cost 3.8 GB before "too long".
    let t = tempdir();
    let f = t.path().join("big.txt");
    std::fs::write(&f, "word ".repeat(10 << 20)).unwrap();
    fails(
        &[
            "run",
            s(demo_plan()),
            "--prompt-file",
            s(&f),
            "--max-new-tokens",
            "1",
        ],
        &["--prompt-file", s(&f), "52428800 bytes", "context"],
    );
    let lines = t.path().join("many.txt");
    std::fs::write(&lines, format!("short\n{}\n", "word ".repeat(1 << 20))).unwrap();
    fails(
        &[
            "run",
            s(demo_plan()),
            "--prompts-file",
            s(&lines),
            "--max-new-tokens",
            "1",
        ],
        &["--prompts-file", "line 2", "bytes"],
    );
    // Every child of this test process so far (others' compiles included) stayed small.
    assert!(
        children_peak_rss() < 1 << 30,
        "{} bytes",
        children_peak_rss()
    );
}

#[test]
fn huge_lengths_are_refused_not_panicked_on() {
    let max = u64::MAX.to_string();
    fails(
        &[
            "bench",
            s(good_plan()),
            "--device",
            "cpu",
            "--prompt-len",
            &max,
        ],
        &["--prompt-len", &max, "512"],
    );
    fails(
        &[
            "bench",
            s(good_plan()),
            "--device",
            "cpu",
            "--prompt-len",
            "8",
            "--gen-len",
            &max,
        ],
        &["--gen-len", &max, "512"],
    );
    fails(
        &[
            "bench",
            s(good_plan()),
            "--device",
            "cpu",
            "--prompt-len",
            "500",
            "--gen-len",
            "13",
        ],
        &["--gen-len", "13", "512"],
    );
}

#[test]
fn huge_max_new_tokens_stops_at_the_context() {
    let out = common::zamba2c(&[
        "run",
        s(good_plan()),
        "--tokens",
        "1,2",
        "--max-new-tokens",
        &u64::MAX.to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the context is full"), "{stderr}");
    // The context (512) holds the 2 prompt tokens and every generated token but the last,
    // which is sampled from the logits of the 512th.
    let ids = String::from_utf8_lossy(&out.stdout);
    assert_eq!(ids.trim().split(',').count(), 512 - 2 + 1, "{ids}");
}

// --- closed pipes

/// Runs zamba2c with stdout a pipe whose reader is closed at once (`| head -c0`).
fn with_closed_stdout(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(common::zamba2c_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn closed_stdout_ends_quietly() {
    for args in [
        vec!["inspect", s(good_plan())],
        vec!["inspect", s(good_plan()), "--format", "json"],
        vec!["inspect", s(good_plan()), "--format", "dot"],
        vec![
            "bench",
            s(good_plan()),
            "--device",
            "cpu",
            "--prompt-len",
            "4",
            "--gen-len",
            "2",
            "--json",
        ],
        vec![
            "bench",
            s(good_plan()),
            "--device",
            "cpu",
            "--prompt-len",
            "4",
            "--gen-len",
            "2",
        ],
    ] {
        let out = with_closed_stdout(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?}, stderr: {stderr}",
            out.status
        );
        assert!(stderr.trim().is_empty(), "{args:?}: {stderr}");
    }
}
