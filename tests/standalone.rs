//! Issue 14: Zyphra's original standalone checkpoints (spec §5.2) — `config.json` in the
//! original's field names and a `torch.save` state dict — compile, and the plans give the
//! original code's logits; `convert` writes a Hugging Face checkpoint that gives the same; a bad
//! or hostile `torch.save` file is refused with one line.
//!
//! The fixtures are tests/fixtures/standalone/<variant>/, made by
//! scripts/make_standalone_fixtures.py with the original code itself (on the GPU machine, or
//! through Triton's CPU interpreter); meta.json's "backend" says which (tests/fixtures/README.md).
//! scripts/check_converted.py runs the converted checkpoints through transformers.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use common::*;
use zamba2c_ir::pickle::{read_state_dict, TensorRef};

/// The bar: max |ours - ref| / max |ref| at every position.
const TOL: f64 = 1e-4;

fn standalone_models() -> Vec<PathBuf> {
    let dir = fixtures().join("standalone");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("reference.safetensors").is_file())
        .collect();
    v.sort();
    assert!(
        v.len() >= 3,
        "standalone fixtures missing under {}",
        dir.display()
    );
    v
}

/// (prompt-path logits, decode-path logits) of a plan on the fixture's tokens.
fn plan_logits(plan: &Path, reference: &Path, tmp: &Path) -> (Vec<f64>, Vec<f64>) {
    let tokens = ids_arg(&read_tensor(reference, "tokens").data);
    let k = (read_tensor(reference, "decode_from").data[0] as usize).to_string();
    let out = tmp.join("logits.safetensors");
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    zamba2c_ok(&["logits", p, "--tokens", &tokens, "--out", o]);
    let prompt = read_tensor(&out, "logits").data;
    zamba2c_ok(&[
        "logits",
        p,
        "--tokens",
        &tokens,
        "--out",
        o,
        "--decode-from",
        &k,
    ]);
    (prompt, read_tensor(&out, "logits").data)
}

fn compile(model: &Path, plan: &Path) {
    zamba2c_ok(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        plan.to_str().unwrap(),
    ]);
}

fn backend(model: &Path) -> String {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("meta.json")).unwrap()).unwrap();
    meta["backend"].as_str().unwrap_or("?").to_string()
}

#[test]
fn standalone_checkpoints_give_the_original_codes_logits() {
    for model in standalone_models() {
        let name = model.file_name().unwrap().to_string_lossy().to_string();
        let tmp = tempfile::tempdir().unwrap();
        let plan = tmp.path().join("plan");
        compile(&model, &plan);
        let inspect = zamba2c_ok(&["inspect", plan.to_str().unwrap()]);
        assert!(inspect.contains("checkpoint layout: standalone"), "{name}");
        assert!(
            !inspect.contains("dt_min="),
            "{name}: the original has no dt clamp"
        );
        let reference = model.join("reference.safetensors");
        let (prompt, decode) = plan_logits(&plan, &reference, tmp.path());
        let ep = rel_err(&prompt, &read_tensor(&reference, "logits").data);
        let ed = rel_err(&decode, &read_tensor(&reference, "decode_logits").data);
        eprintln!(
            "{name} (references: {}): prompt {ep:.2e}, decode {ed:.2e}",
            backend(&model)
        );
        assert!(ep <= TOL, "{name}: prompt-path rel err {ep:e}");
        assert!(ed <= TOL, "{name}: decode-path rel err {ed:e}");
    }
}

#[test]
fn convert_writes_a_hugging_face_checkpoint_with_the_same_logits() {
    for model in standalone_models() {
        let name = model.file_name().unwrap().to_string_lossy().to_string();
        let tmp = tempfile::tempdir().unwrap();
        let hf = tmp.path().join("hf");
        zamba2c_ok(&[
            "convert",
            model.to_str().unwrap(),
            "-o",
            hf.to_str().unwrap(),
        ]);
        assert!(hf.join("model.safetensors").is_file() && hf.join("config.json").is_file());
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["model_type"], "zamba2");
        let tsm = config["time_step_min"].as_f64().unwrap();
        assert!(
            (tsm - 1e-30).abs() < 1e-40,
            "{name}: the clamp must be inert: {tsm}"
        );

        let (plan, plan_hf) = (tmp.path().join("plan"), tmp.path().join("plan-hf"));
        compile(&model, &plan);
        compile(&hf, &plan_hf);
        let layout = zamba2c_ok(&["inspect", plan_hf.to_str().unwrap()]);
        assert!(layout.contains("checkpoint layout: layers"), "{name}");
        let reference = model.join("reference.safetensors");
        let (p0, d0) = plan_logits(&plan, &reference, tmp.path());
        let (p1, d1) = plan_logits(&plan_hf, &reference, tmp.path());
        let (ep, ed) = (rel_err(&p1, &p0), rel_err(&d1, &d0));
        eprintln!("{name}: converted vs standalone plan: prompt {ep:.1e}, decode {ed:.1e}");
        assert!(ep <= 1e-6 && ed <= 1e-6, "{name}: {ep:e} {ed:e}");
        let e = rel_err(&p1, &read_tensor(&reference, "logits").data);
        assert!(e <= TOL, "{name}: converted prompt path {e:e}");

        // The converted config with transformers' own clamp (time_step_min 0.001) is what
        // transformers would run without convert's setting: in two_blocks_no_clamp it differs.
        if name == "two_blocks_no_clamp" {
            let clamped = tmp.path().join("hf-clamped");
            std::fs::create_dir(&clamped).unwrap();
            std::fs::copy(
                hf.join("model.safetensors"),
                clamped.join("model.safetensors"),
            )
            .unwrap();
            let mut c = config.clone();
            c["time_step_min"] = serde_json::json!(0.001);
            std::fs::write(clamped.join("config.json"), c.to_string()).unwrap();
            let plan_c = tmp.path().join("plan-clamped");
            compile(&clamped, &plan_c);
            let (pc, _) = plan_logits(&plan_c, &reference, tmp.path());
            let e = rel_err(&pc, &read_tensor(&reference, "logits").data);
            eprintln!("{name}: with transformers' dt clamp the prompt path is {e:.1e} away");
            assert!(e > 10.0 * TOL, "{name}: the clamp should bite here ({e:e})");
        }
    }
}

#[test]
fn convert_never_replaces_a_directory() {
    let model = &standalone_models()[0];
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("exists");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = one_line_error(&[
        "convert",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    // A failed conversion leaves nothing behind.
    let bad = tmp.path().join("bad");
    write_dir(
        &bad,
        model,
        &std::fs::read(model.join("pytorch_model.bin")).unwrap()[..100],
    );
    let out2 = tmp.path().join("new");
    one_line_error(&[
        "convert",
        bad.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert!(!out2.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        2,
        "a temporary directory was left"
    );
}

/// Runs zamba2c expecting exit status 1 and one line on stderr, which it returns.
fn one_line_error(args: &[&str]) -> String {
    let out = zamba2c(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

// ---------------------------------------------------------------------------------------------
// Hostile torch.save files
// ---------------------------------------------------------------------------------------------

/// The entries of a zip archive, in order.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().to_string(), data)
        })
        .collect()
}

/// A zip of uncompressed entries, 64-byte aligned as torch.save writes them.
fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn binunicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
}

fn binint(out: &mut Vec<u8>, v: u64) {
    out.push(b'J');
    out.extend((v as i32).to_le_bytes());
}

/// Tensors of a state dict: name, view, storage class (e.g. "FloatStorage").
type StateDict<'a> = Vec<(String, TensorRef, &'a str)>;

/// A protocol-2 state-dict pickle as `torch.save` writes one (OrderedDict of
/// `_rebuild_tensor_v2` calls on persistent storages); `class` is e.g. "FloatStorage".
fn state_dict_pickle(tensors: &[(String, TensorRef, &str)]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(b"ccollections\nOrderedDict\n)R(");
    for (name, t, class) in tensors {
        binunicode(&mut p, name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        binunicode(&mut p, "storage");
        p.extend(format!("ctorch\n{class}\n").as_bytes());
        binunicode(&mut p, &t.storage.key);
        binunicode(&mut p, "cpu");
        binint(&mut p, t.storage.numel);
        p.extend(b"tQ");
        binint(&mut p, t.offset);
        p.push(b'(');
        t.shape.iter().for_each(|&d| binint(&mut p, d));
        p.extend(b"t(");
        t.stride.iter().for_each(|&d| binint(&mut p, d));
        p.extend(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend(b"u.");
    p
}

fn write_dir(dir: &Path, model: &Path, bin: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(model.join("config.json"), dir.join("config.json")).unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), bin).unwrap();
}

#[test]
fn hostile_torch_files_are_refused_in_one_line() {
    let model = fixtures().join("standalone").join("two_blocks_no_clamp");
    let real = std::fs::read(model.join("pytorch_model.bin")).unwrap();
    let entries = unzip(&real);
    let pkl_name = entries
        .iter()
        .find(|(n, _)| n.ends_with("/data.pkl"))
        .unwrap()
        .0
        .clone();
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let pkl = &entries.iter().find(|(n, _)| *n == pkl_name).unwrap().1;
    let tensors: Vec<(String, TensorRef, &str)> = read_state_dict(pkl)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t, "FloatStorage"))
        .collect();
    // The generator reproduces the real file's tensors exactly.
    let regenerated: Vec<(String, TensorRef)> = tensors
        .iter()
        .map(|(n, t, _)| (n.clone(), t.clone()))
        .collect();
    assert_eq!(
        read_state_dict(&state_dict_pickle(&tensors)).unwrap(),
        regenerated
    );

    let with_pickle = |p: Vec<u8>| -> Vec<u8> {
        let mut e = entries.clone();
        e.iter_mut().find(|(n, _)| *n == pkl_name).unwrap().1 = p;
        zip_of(&e)
    };
    let with_storage = |key: &str, f: &dyn Fn(&mut Vec<u8>)| -> Vec<u8> {
        let mut e = entries.clone();
        let name = format!("{prefix}data/{key}");
        f(&mut e.iter_mut().find(|(n, _)| *n == name).unwrap().1);
        zip_of(&e)
    };
    let edited = |f: &dyn Fn(&mut StateDict)| -> Vec<u8> {
        let mut t = tensors.clone();
        f(&mut t);
        with_pickle(state_dict_pickle(&t))
    };
    let first_key = tensors[0].1.storage.key.clone();
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "unknown global",
            with_pickle(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.".to_vec()),
            "global os.system".into(),
        ),
        (
            "truncated storage",
            with_storage(&first_key, &|d| d.truncate(d.len() - 4)),
            "truncated or oversized".into(),
        ),
        (
            "oversized storage",
            with_storage(&first_key, &|d| d.extend([0; 4])),
            "truncated or oversized".into(),
        ),
        (
            "tensor past the end of its storage",
            edited(&|t| t[0].1.offset = 1),
            "reach past the end of storage".into(),
        ),
        ("truncated zip", real[..real.len() * 2 / 3].to_vec(), "zip archive".into()),
        ("not a zip", b"hello, not a zip".to_vec(), "zip archive".into()),
        (
            "legacy torch.save",
            b"\x80\x02\x8a\x0a".to_vec(),
            "legacy torch.save".into(),
        ),
        (
            "oddly shared storage",
            edited(&|t| {
                let first = t[0].1.storage.clone();
                let numel = t[1].1.shape.iter().product::<u64>();
                t[1].1.storage = first;
                t[1].1.offset = 1;
                assert!(numel < t[1].1.storage.numel, "pick a smaller tensor");
            }),
            "oddly shared storage".into(),
        ),
        (
            "non-contiguous tensor",
            edited(&|t| {
                let i = t.iter().position(|(_, x, _)| x.shape.len() == 2 && x.shape[0] > 1 && x.shape[1] > 1).unwrap();
                t[i].1.stride = vec![1, t[i].1.shape[0]];
            }),
            "only contiguous tensors".into(),
        ),
        (
            "storage entry missing",
            edited(&|t| t[0].1.storage.key = "999".into()),
            "not in the archive".into(),
        ),
        (
            "storage declared twice differently",
            edited(&|t| {
                let first = t[0].1.storage.key.clone();
                t[1].1.storage.key = first;
            }),
            "is declared as".into(),
        ),
        (
            "tensor name twice",
            edited(&|t| t[1].0 = t[0].0.clone()),
            "stored twice".into(),
        ),
        (
            "truncated pickle",
            with_pickle(pkl[..pkl.len() / 2].to_vec()),
            "truncated".into(),
        ),
        (
            "missing tensor",
            edited(&|t| t.retain(|(n, _, _)| n != "decoder.blocks.1.sa.mixer.linear_qkv.weight")),
            "decoder.blocks.1.sa.mixer.linear_qkv.weight (layers layout: model.layers.3.shared_transformer.self_attn.".into(),
        ),
        (
            "misshapen tensor",
            edited(&|t| {
                let x = &mut t.iter_mut().find(|(n, _, _)| n == "decoder.layers.2.mixer.out_proj.weight").unwrap().1;
                x.shape.reverse();
                x.stride = vec![x.shape[1], 1];
            }),
            "decoder.layers.2.mixer.out_proj.weight: shape".into(),
        ),
        (
            "unknown tensor",
            edited(&|t| {
                let mut extra = t[0].clone();
                extra.0 = "decoder.bogus.weight".into();
                t.push(extra);
            }),
            "decoder.bogus.weight: extra unknown tensor".into(),
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan");
    for (what, bytes, needle) in cases {
        let dir = tmp.path().join(what.replace(' ', "_"));
        write_dir(&dir, &model, &bytes);
        let err = one_line_error(&[
            "compile",
            dir.to_str().unwrap(),
            "-o",
            plan.to_str().unwrap(),
        ]);
        let file = dir.join("pytorch_model.bin");
        assert!(
            err.contains(file.to_str().unwrap()),
            "{what}: does not name the file: {err}"
        );
        assert!(
            err.contains(&needle),
            "{what}: does not say {needle:?}: {err}"
        );
        assert!(!plan.exists(), "{what}: a plan was written");
        eprintln!("{what}: {}", err.trim_end());
    }
}

#[test]
fn a_standalone_config_with_the_wrong_fields_is_named() {
    let model = fixtures().join("standalone").join("one_block_lora_rope");
    let tmp = tempfile::tempdir().unwrap();
    let bin = std::fs::read(model.join("pytorch_model.bin")).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    for (field, value) in [
        ("state_size", serde_json::Value::Null),
        ("ffn_hidden_size", serde_json::json!(7)),
        ("num_query_groups", serde_json::json!(1)),
    ] {
        let dir = tmp.path().join(field);
        write_dir(&dir, &model, &bin);
        let mut c = config.clone();
        c[field] = value;
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        let plan = tmp.path().join("plan");
        let err = one_line_error(&[
            "compile",
            dir.to_str().unwrap(),
            "-o",
            plan.to_str().unwrap(),
        ]);
        assert!(err.contains("config.json") && err.contains(field), "{err}");
    }
}
