//! Every committed fuzz input — the seed corpora under `fuzz/corpus/<target>/` and the crash
//! reproducers under `fuzz/artifacts/<target>/` — run through the very harness the libFuzzer
//! targets use (`fuzz/src/lib.rs`, included here), on stable, in the normal test suite.
//! A reproducer that panics again fails the test; see fuzz/README.md for the fuzzing itself.
//!
//! `ZAMBA2C_WRITE_SEEDS=1 cargo test --release --test fuzz_regressions write_seed_corpora -- --ignored`
//! regenerates the seed corpora.

use std::path::{Path, PathBuf};

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn replay(target: &str, f: fn(&[u8])) {
    let inputs = harness::committed_inputs(&fuzz_dir(), target);
    assert!(
        !inputs.is_empty(),
        "no committed inputs for fuzz target {target}"
    );
    for p in &inputs {
        let data = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        eprintln!("{target}: {}", p.display());
        f(&data);
    }
}

#[test]
fn config_inputs() {
    replay("config", harness::fuzz_config);
}

#[test]
fn checkpoint_inputs() {
    replay("checkpoint", harness::fuzz_checkpoint);
}

#[test]
fn plan_inputs() {
    replay("plan", harness::fuzz_plan);
}

#[test]
fn tokens_inputs() {
    replay("tokens", harness::fuzz_tokens);
}

#[test]
fn manifest_inputs() {
    replay("manifest", harness::fuzz_manifest);
}

#[test]
fn outputs_inputs() {
    replay("outputs", harness::fuzz_outputs);
}

#[test]
fn torch_checkpoint_inputs() {
    replay("torch_checkpoint", harness::fuzz_torch_checkpoint);
}

/// The torch_checkpoint seed is a valid tiny standalone checkpoint: it must open and check.
#[test]
fn tiny_torch_checkpoint_is_valid() {
    let seed = fuzz_dir().join("corpus/torch_checkpoint/seed-standalone");
    let bytes = std::fs::read(&seed).unwrap();
    assert_eq!(bytes[0] % 2, 0, "mode byte: a whole file");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        harness::TINY_STANDALONE_CONFIG,
    )
    .unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), &bytes[1..]).unwrap();
    let ck = zamba2c_ir::Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.layout(), zamba2c_ir::layout::Layout::Standalone);
    let module = zamba2c_ir::lower(ck.config(), zamba2c_ir::DType::F32);
    ck.check(&module).unwrap();
}

/// The seeds are valid inputs: the valid tiny checkpoint must open, check and convert.
#[test]
fn tiny_checkpoint_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), harness::TINY_CONFIG).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        harness::tiny_checkpoint_bytes(),
    )
    .unwrap();
    let ck = zamba2c_ir::Checkpoint::open(dir.path()).unwrap();
    let m = zamba2c_ir::lower(ck.config(), zamba2c_ir::DType::F32);
    ck.check(&m).unwrap();
    assert!(!harness::tiny_plan_files().is_empty());
}

/// Writes the seed corpora (small valid inputs) into fuzz/corpus/<target>/seed-*.
#[test]
#[ignore]
fn write_seed_corpora() {
    if std::env::var_os("ZAMBA2C_WRITE_SEEDS").is_none() {
        return;
    }
    let corpus = fuzz_dir().join("corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let d = corpus.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("seed-{}", name.replace('/', "-"))), bytes).unwrap();
    };
    // config: every fixture's config.json, the tiny one, and a few edge shapes.
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    for e in std::fs::read_dir(&models).unwrap() {
        let p = e.unwrap().path().join("config.json");
        if p.is_file() {
            let name = p
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            // Compact the JSON: smaller inputs mutate faster.
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            put(
                "config",
                &name,
                serde_json::to_string(&v).unwrap().as_bytes(),
            );
        }
    }
    let tiny: serde_json::Value = serde_json::from_str(harness::TINY_CONFIG).unwrap();
    put(
        "config",
        "tiny",
        serde_json::to_string(&tiny).unwrap().as_bytes(),
    );
    put("config", "empty-object", b"{}");
    put("config", "legacy", br#"{"num_hidden_layers":2,"layers_block_type":["m","g"],"hidden_size":8,"n_mamba_heads":2,"num_attention_heads":2,"mamba_d_state":4,"vocab_size":8}"#);

    // checkpoint: the tiny single-file checkpoint (mode 0) and the sharded form (mode 1).
    let mut single = vec![0u8];
    single.extend_from_slice(&harness::tiny_checkpoint_bytes());
    put("checkpoint", "single", &single);
    put("checkpoint", "sharded", &harness::tiny_sharded_input());

    // plan: each file of the tiny plan, unchanged.
    let files = harness::tiny_plan_files();
    for (i, f) in harness::PLAN_FILES.iter().enumerate() {
        let mut v = vec![i as u8];
        v.extend_from_slice(&files[*f]);
        put("plan", f, &v);
    }

    // manifest: the tiny plan's, resealed (mode 0) and as it is (mode 1).
    for (mode, name) in [(0u8, "sealed"), (1, "raw")] {
        let mut v = vec![mode];
        v.extend_from_slice(&files["manifest.json"]);
        put("manifest", name, &v);
    }

    // outputs: byte 0 = operation (0: compile -o, 1: --out, 2: compile -o from a file of the
    // plan), then path components, one byte each, from OUTPUT_NAMES.
    let name = |n: &str| harness::OUTPUT_NAMES.iter().position(|x| *x == n).unwrap() as u8;
    for (op, path) in [
        (0u8, &["new"][..]),
        (0, &["plan"]),
        (0, &["model"]),
        (0, &["empty"]),
        (0, &["foreign"]),
        (0, &["link-plan"]),
        (0, &["link-outside", "new"]),
        (2, &["plan"]),
        (2, &["link-plan"]),
        (1, &["file"]),
        (1, &["new"]),
        (1, &["link-file"]),
        (1, &["fifo"]),
        (1, &["plan", "x"]),
        (1, &["link-plan", "kernels", "x"]),
        (1, &["link-outside", "x"]),
    ] {
        let mut v = vec![op];
        v.extend(path.iter().map(|n| name(n)));
        let label = format!(
            "{}-{}",
            ["plan", "out", "plan-from-plan"][op as usize],
            path.join("-")
        );
        put("outputs", &label, &v);
    }

    // tokens: byte 0 = vocab selector (0: the tiny model, run through the engine).
    put("tokens", "tiny", b"\x001,2,3");
    put("tokens", "spaces", b"\x00 5, 15 ,0");
    put("tokens", "full-context", b"\x001,2,3,4,5,6,7,8");
    put("tokens", "vocab-200", b"\xc8199,0,18446744073709551615");
}
