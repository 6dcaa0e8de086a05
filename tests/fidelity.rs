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

/// A bf16 KV cache (`compile --kv-dtype bf16`) rounds every cached K and V to 8 significant
/// bits (relative error up to 2^-9 ≈ 2e-3 per element). On these tiny random-weight fixtures
/// that moves the logits by 8e-3 .. 5.8e-2 of the largest one (two_blocks_gqa_mha_mix, CPU);
/// issue 9's 2e-2 bar is for the 2.7B shape and is measured there (scripts/gpu_check_27b.py).
const KV_BF16_TOL: f64 = 8e-2;

/// An f16 KV cache (`compile --kv-dtype f16`) keeps 11 significant bits (2^-12 relative per
/// element, 8× closer than bf16): the fixtures' logits moved by 8.4e-4 .. 4.3e-3 (dt_clamp;
/// a bf16 cache 8.1e-3 .. 5.8e-2, CPU, 2026-12-02): held to ~3× the worst.
const KV_F16_TOL: f64 = 1.5e-2;

/// A 16-bit SSM state (`compile --state-dtype`), rounded whenever stored: the fixtures' logits
/// moved by 9.7e-5 .. 1.2e-3 with f16 and 6.5e-4 .. 9.8e-3 with bf16 (CPU, 2026-12-02): held to
/// ~3× the worst of each.
const STATE_F16_TOL: f64 = 4e-3;
const STATE_BF16_TOL: f64 = 3e-2;

/// f16 weights against transformers f32 on the fixtures: ~3× the worst measured, 1.74e-2
/// (see `every_fixture_with_f16_weights_stays_close`).
const F16_TOL: f64 = 5e-2;

fn check_model(model: &std::path::Path, extra_compile: &[&str]) {
    check_model_within(model, extra_compile, TOL, true);
}

/// Compiles `model` with `extra_compile` and compares the prompt-path and decode-path logits
/// with transformers' within `tol`, and (when `greedy`) the greedy continuation token for token.
/// Returns the larger of the two relative errors.
fn check_model_within(
    model: &std::path::Path,
    extra_compile: &[&str],
    tol: f64,
    greedy: bool,
) -> f64 {
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
    let worst = e;
    eprintln!("{name} [{dev}]: prompt path rel err {e:.2e}");
    assert!(
        e <= tol,
        "{name}: prompt-path logits rel err {e:.3e} > {tol:e}"
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
        e <= tol,
        "{name}: decode-path logits rel err {e:.3e} > {tol:e}"
    );
    let worst = worst.max(e);
    if !greedy {
        return worst;
    }

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
    worst
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

/// f16 weights (`compile --dtype f16`, the cache and the SSM state kept f32 to isolate them). The CPU multiplies
/// the f32 activations as they are (the GPU's one f16 rounding of GEMM inputs is measured on
/// the 2.7B shape, docs/KERNELS.md "GEMM inputs"), so this is the plan's weights against
/// transformers'. A bf16 checkpoint converts to f16 exactly (bf16 has 8 significant bits, f16
/// 11; values below 2^-17 aside), so `bf16_hub_style` stays within [`TOL`]; the other fixtures'
/// f32 weights are rounded to f16 (2^-11 relative each), which moved their logits by 4.4e-3 ..
/// 1.74e-2 of the largest one (CPU, 2026-12-02): held to [`F16_TOL`].
#[test]
fn every_fixture_with_f16_weights_stays_close() {
    let mut worst = 0f64;
    let mut exact = 0;
    for model in fixture_models() {
        let e = check_model_within(
            &model,
            &[
                "--dtype",
                "f16",
                "--kv-dtype",
                "f32",
                "--state-dtype",
                "f32",
            ],
            F16_TOL,
            false,
        );
        if model.ends_with("bf16_hub_style") {
            // On the GPU the GEMMs also round their inputs to f16: within F16_TOL only.
            assert!(
                device() != "cpu" || e <= TOL,
                "a bf16 checkpoint through f16 weights: {e:.3e} > {TOL:e}"
            );
            exact += 1;
        }
        worst = worst.max(e);
    }
    assert_eq!(exact, 1, "the bf16 checkpoint fixture was not found");
    // The weights really are f16: f32 weights stay within TOL everywhere.
    assert!(
        worst > TOL,
        "no fixture moved beyond {TOL:e}: worst {worst:.2e}"
    );
}

/// The largest error against transformers f32 of any fixture compiled with `args`, each held
/// to `tol`.
fn worst_over_fixtures(args: &[&str], tol: f64) -> f64 {
    fixture_models()
        .iter()
        .map(|model| check_model_within(model, args, tol, false))
        .fold(0f64, f64::max)
}

/// 16-bit KV caches: the logits stay within [`KV_BF16_TOL`] (bf16) or [`KV_F16_TOL`] (f16) of
/// transformers f32 (greedy tokens may flip where two logits are that close, so they are not
/// compared).
#[test]
fn every_fixture_with_a_16_bit_kv_cache_stays_close() {
    let worst_bf16 = worst_over_fixtures(&["--kv-dtype", "bf16"], KV_BF16_TOL);
    let worst_f16 = worst_over_fixtures(&["--kv-dtype", "f16"], KV_F16_TOL);
    // The caches really are 16-bit (an f32 cache stays within TOL everywhere), and f16 is the
    // closer of the two.
    assert!(
        worst_bf16 > TOL,
        "no fixture moved beyond {TOL:e}: worst {worst_bf16:.2e}"
    );
    assert!(
        worst_f16 > TOL && worst_f16 < worst_bf16,
        "f16 cache worst {worst_f16:.2e}, bf16 cache worst {worst_bf16:.2e}"
    );
}

/// A 16-bit SSM state (`compile --state-dtype`): the logits stay within [`STATE_F16_TOL`] or
/// [`STATE_BF16_TOL`] of transformers f32; f16 closer than bf16.
#[test]
fn every_fixture_with_a_16_bit_ssm_state_stays_close() {
    let worst_f16 = worst_over_fixtures(&["--state-dtype", "f16"], STATE_F16_TOL);
    let worst_bf16 = worst_over_fixtures(&["--state-dtype", "bf16"], STATE_BF16_TOL);
    assert!(
        worst_f16 > TOL && worst_f16 < worst_bf16,
        "f16 state worst {worst_f16:.2e}, bf16 state worst {worst_bf16:.2e}"
    );
}

/// The fixture made from a bf16 checkpoint (`bf16_hub_style`).
fn bf16_fixture() -> std::path::PathBuf {
    fixture_models()
        .into_iter()
        .find(|m| m.ends_with("bf16_hub_style"))
        .expect("the bf16 checkpoint fixture")
}

/// The first line `inspect` prints of `model` compiled with `flags` (its dtypes).
fn inspect_line(model: &std::path::Path, flags: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan");
    let mut compile = vec![
        "compile",
        model.to_str().unwrap(),
        "-o",
        plan.to_str().unwrap(),
    ];
    compile.extend_from_slice(flags);
    zamba2c_ok(&compile);
    let out = zamba2c_ok(&["inspect", plan.to_str().unwrap()]);
    out.lines().next().unwrap_or_default().to_string()
}

/// `compile --dtype bf16` stores the shared blocks' projections in f16 (`--shared-dtype f16`,
/// the default; docs/KERNELS.md "GEMM inputs"). A bf16 checkpoint's values are exact in both
/// 16-bit types (bf16 has 8 significant bits, f16 11; values below 2^-17 aside), so on the CPU
/// (which multiplies the f32 activations as they are) the bf16 fixture compiled so, with an f32
/// cache and SSM state to isolate the weights, stays within [`TOL`] of transformers f32, and so does
/// `--shared-dtype bf16`; `inspect` names the f16 shared blocks only in the first plan.
#[test]
fn a_bf16_checkpoint_through_the_mixed_default_plan_stays_exact() {
    let model = bf16_fixture();
    // On the GPU the GEMMs also round their inputs (one f16 plane in the shared blocks).
    let tol = if device() == "cpu" { TOL } else { F16_TOL };
    for (shared, named) in [(None, true), (Some("bf16"), false), (Some("f16"), true)] {
        let mut args = vec![
            "--dtype",
            "bf16",
            "--kv-dtype",
            "f32",
            "--state-dtype",
            "f32",
        ];
        if let Some(d) = shared {
            args.extend(["--shared-dtype", d]);
        }
        check_model_within(&model, &args, tol, false);
        let first = inspect_line(&model, &args);
        assert_eq!(
            first.contains("shared blocks' projections f16"),
            named,
            "--shared-dtype {shared:?}: {first}"
        );
    }
}

/// Plans with 16-bit weights keep an f16 SSM state unless `--state-dtype` says otherwise
/// (docs/KERNELS.md "mamba_step"; the drift check in docs/PERFORMANCE.md, eighteenth session);
/// f32 plans keep f32. `inspect` names a 16-bit state; the default bf16 plan with an f32 cache
/// (to isolate the state) stays within [`STATE_F16_TOL`] of transformers on the bf16 fixture,
/// prompt and decode paths.
#[test]
fn sixteen_bit_weights_default_to_an_f16_state() {
    let model = bf16_fixture();
    let tol = if device() == "cpu" {
        STATE_F16_TOL
    } else {
        F16_TOL
    };
    check_model_within(
        &model,
        &["--dtype", "bf16", "--kv-dtype", "f32"],
        tol,
        false,
    );
    for (flags, state) in [
        (&["--dtype", "bf16"][..], Some("f16")),
        (&["--dtype", "f16"][..], Some("f16")),
        (&["--dtype", "bf16", "--state-dtype", "f32"][..], None),
        (
            &["--dtype", "bf16", "--state-dtype", "bf16"][..],
            Some("bf16"),
        ),
        (&["--dtype", "f32"][..], None),
    ] {
        let first = inspect_line(&model, flags);
        match state {
            Some(d) => assert!(
                first.contains(&format!("SSM state {d},"))
                    || first.ends_with(&format!("SSM state {d})")),
                "{flags:?}: {first}"
            ),
            None => assert!(!first.contains("SSM state"), "{flags:?}: {first}"),
        }
    }
}
