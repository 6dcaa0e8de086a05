//! Fidelity against transformers: every fixture model (made by scripts/make_fixtures.py with
//! transformers 5.24.0) is compiled, and its logits through the prompt graph and through
//! `--decode-from`, and its greedy continuation, must match the reference.

mod common;

use common::*;

/// The bar: max abs error over max abs reference logit, at every position.
const TOL: f64 = 1e-4;

/// The device the same test body runs on: `cpu` here and in CI, `cuda` on the GPU machine
/// (`ZAMBA2C_TEST_DEVICE=cuda`).
fn device() -> String {
    std::env::var("ZAMBA2C_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())
}

fn check_model(model: &std::path::Path, extra_compile: &[&str]) {
    let name = model.file_name().unwrap().to_string_lossy().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan");
    let plan_s = plan.to_str().unwrap();
    let mut args = vec!["compile", model.to_str().unwrap(), "-o", plan_s];
    args.extend_from_slice(extra_compile);
    zamba2c_ok(&args);
    let reference = model.join("reference.safetensors");
    let tokens = read_tensor(&reference, "tokens").data;
    let toks = ids_arg(&tokens);
    let out = tmp.path().join("logits.safetensors");
    let out_s = out.to_str().unwrap();

    let dev = device();
    zamba2c_ok(&[
        "logits", plan_s, "--tokens", &toks, "--out", out_s, "--device", &dev,
    ]);
    let ours = read_tensor(&out, "logits");
    let want = read_tensor(&reference, "logits");
    assert_eq!(ours.shape, want.shape, "{name}: logits shape");
    let e = rel_err(&ours.data, &want.data);
    eprintln!("{name} [{dev}]: prompt path rel err {e:.2e}");
    assert!(
        e <= TOL,
        "{name}: prompt-path logits rel err {e:.3e} > {TOL:e}"
    );

    let k = read_tensor(&reference, "decode_from").data[0] as usize;
    let k_s = k.to_string();
    zamba2c_ok(&[
        "logits",
        plan_s,
        "--tokens",
        &toks,
        "--out",
        out_s,
        "--decode-from",
        &k_s,
        "--device",
        &dev,
    ]);
    let ours = read_tensor(&out, "logits");
    let want = read_tensor(&reference, "decode_logits");
    let e = rel_err(&ours.data, &want.data);
    eprintln!("{name} [{dev}]: decode path (from {k}) rel err {e:.2e}");
    assert!(
        e <= TOL,
        "{name}: decode-path logits rel err {e:.3e} > {TOL:e}"
    );

    let prompt = read_tensor(&reference, "greedy_prompt").data;
    let want = read_tensor(&reference, "greedy_tokens").data;
    let n = want.len().to_string();
    // The fixtures' generate() never stops at EOS (meta.json: eos_handling), so neither do we.
    let stdout = zamba2c_ok(&[
        "run",
        plan_s,
        "--tokens",
        &ids_arg(&prompt),
        "--max-new-tokens",
        &n,
        "--ignore-eos",
        "--json",
        "--device",
        &dev,
    ]);
    let last = stdout.lines().last().expect("run prints a JSON line");
    let v: serde_json::Value = serde_json::from_str(last).expect("JSON");
    let got: Vec<f64> = v["generated_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(got, want, "{name}: greedy tokens differ");
}

#[test]
fn every_fixture_matches_transformers() {
    for model in fixture_models() {
        check_model(&model, &[]);
    }
}

#[test]
fn every_fixture_matches_transformers_unoptimised() {
    for model in fixture_models() {
        check_model(&model, &["-O0"]);
    }
}
