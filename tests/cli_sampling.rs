//! Sampling defaults from the model (issue 17): `run` takes the plan's generation_config.json
//! settings as transformers' `generate()` does (greedy unless do_sample; then its temperature,
//! top_k (50 when unset), top_p, min_p; the repetition penalty always), flags override them,
//! and a flag that changes nothing under greedy decoding is warned about in one line.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_sampling");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo model with `generation` as its generation_config.json, compiled to a plan named
/// `name`.
fn plan_with_generation_config(name: &str, generation: &str) -> String {
    let plan = common::edited_demo_plan(&scratch(), name, |model| {
        std::fs::write(model.join("generation_config.json"), generation).unwrap();
    });
    plan.to_str().unwrap().to_string()
}

const PROMPT: &str = "Hello, my name is";

fn generated(plan: &str, extra: &[&str]) -> Vec<u64> {
    let mut args = vec![
        "run", plan, "-p", PROMPT, "-n", "12", "--json", "--device", "cpu",
    ];
    args.extend_from_slice(extra);
    let out = common::zamba2c_ok(&args);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    v["generated_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn warnings(plan: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "run", plan, "-p", PROMPT, "-n", "2", "-q", "--device", "cpu",
    ];
    args.extend_from_slice(extra);
    let out = common::zamba2c(&args);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("WARN"))
        .map(str::to_string)
        .collect()
}

#[test]
fn generation_config_sets_the_defaults_and_flags_override_them() {
    // The demo's own config sets no sampling: greedy.
    let plain = plan_with_generation_config("plain", r#"{"eos_token_id": 2}"#);
    let sampler = plan_with_generation_config(
        "sampler",
        r#"{"eos_token_id": 2, "do_sample": true, "temperature": 1.3, "top_p": 0.95}"#,
    );
    let penalty = plan_with_generation_config(
        "penalty",
        r#"{"eos_token_id": 2, "repetition_penalty": 0.05}"#,
    );

    let greedy = generated(&plain, &[]);
    assert_eq!(greedy, generated(&plain, &["-t", "0"]));

    // do_sample: the model's temperature and top_p, and transformers' top_k 50.
    let by_model = generated(&sampler, &["-s", "9"]);
    let by_flags = generated(
        &plain,
        &["-t", "1.3", "--top-p", "0.95", "--top-k", "50", "-s", "9"],
    );
    assert_eq!(by_model, by_flags);
    assert_ne!(
        by_model, greedy,
        "the model's sampling defaults were ignored"
    );
    // A flag overrides the model: -t 0 is greedy again.
    assert_eq!(generated(&sampler, &["-t", "0"]), greedy);

    // The repetition penalty applies to greedy decoding too (below 1 it favours tokens seen,
    // which the demo's random weights otherwise never repeat).
    let penalised = generated(&penalty, &[]);
    assert_eq!(
        penalised,
        generated(&plain, &["--repetition-penalty", "0.05"])
    );
    assert_ne!(
        penalised, greedy,
        "the model's repetition_penalty was ignored"
    );
    assert_eq!(generated(&penalty, &["--repetition-penalty", "1"]), greedy);

    // A bad value in the model's config names the file and the field.
    let bad = plan_with_generation_config(
        "bad",
        r#"{"eos_token_id": 2, "do_sample": true, "top_p": 7}"#,
    );
    let out = common::zamba2c(&["run", &bad, "-p", PROMPT, "--device", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("generation_config.json: --top-p"), "{err}");
    // ... which a flag overrides.
    generated(&bad, &["--top-p", "0.5", "-s", "1"]);
}

#[test]
fn flags_without_effect_are_warned_about_once() {
    let plain = plan_with_generation_config("warn", r#"{"eos_token_id": 2}"#);
    assert!(warnings(&plain, &[]).is_empty());
    assert!(warnings(&plain, &["-t", "0.7", "--top-k", "5", "-s", "1"]).is_empty());
    let w = warnings(&plain, &["--top-k", "5"]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("--top-k has no effect"), "{w:?}");
    let w = warnings(
        &plain,
        &["-t", "0", "--top-k", "5", "--top-p", "0.9", "-s", "3"],
    );
    assert_eq!(w.len(), 1, "one line for all of them: {w:?}");
    assert!(
        w[0].contains("--top-k, --top-p, --seed have no effect"),
        "{w:?}"
    );
}
