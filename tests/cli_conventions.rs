//! The command line as users of llama.cpp, vLLM and transformers type it (issue 17): short
//! flags and aliases, `--version`, clap's exit code for a command line it cannot parse, on the
//! CPU with the shipped demo model (random weights, the real Mistral v0.1 vocabulary).

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The prompt of examples/demo-model/README.md and what transformers makes of it.
const PROMPT: &str = "Hello, my name is";
const PROMPT_IDS: [u64; 6] = [1, 22557, 28725, 586, 1141, 349];
/// transformers 5.24.0's greedy continuation of PROMPT, from examples/demo-model/README.md.
const GREEDY_IDS: [u64; 8] = [11475, 948, 20046, 26321, 10552, 21540, 28321, 16122];

fn scratch() -> PathBuf {
    common::scratch("cli_conventions")
}

/// The demo model's plan, compiled once per test process.
fn demo_plan() -> &'static str {
    common::demo_plan("cli_conventions")
}

/// The one JSON object `run --json` prints, with stdout checked to hold nothing else.
fn run_json(args: &[&str]) -> Value {
    let out = common::zamba2c_ok(args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout should be one JSON line: {out:?}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{out:?}: {e}"))
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id"))
        .collect()
}

/// The fields of a run's result that do not depend on timing.
fn outcome(v: &Value) -> (Vec<u64>, Vec<u64>, String, Value) {
    (
        ids(&v["prompt_tokens"]),
        ids(&v["generated_tokens"]),
        v["text"].as_str().expect("text").to_string(),
        v["seed"].clone(),
    )
}

#[test]
fn short_flags_and_aliases_mean_the_long_ones() {
    let plan = demo_plan();
    let long = run_json(&[
        "run",
        plan,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "8",
        "--json",
    ]);
    assert_eq!(ids(&long["prompt_tokens"]), PROMPT_IDS);
    assert_eq!(ids(&long["generated_tokens"]), GREEDY_IDS);
    let short = run_json(&["run", plan, "-p", PROMPT, "-n", "8", "--json"]);
    assert_eq!(outcome(&short), outcome(&long));
    let vllm = run_json(&["run", plan, "-p", PROMPT, "--max-tokens", "8", "--json"]);
    assert_eq!(outcome(&vllm), outcome(&long));

    let file = scratch().join("prompt.txt");
    std::fs::write(&file, format!("{PROMPT}\n")).unwrap();
    let from_file = run_json(&[
        "run",
        plan,
        "-f",
        file.to_str().unwrap(),
        "-n",
        "8",
        "--json",
    ]);
    assert_eq!(outcome(&from_file), outcome(&long));

    // Sampling: -t and -s are --temperature and --seed (the same draw), and the draw is not
    // the greedy one (else the flags could be ignored unnoticed).
    let sampled_long = run_json(&[
        "run",
        plan,
        "-p",
        PROMPT,
        "-n",
        "8",
        "--temperature",
        "1.5",
        "--seed",
        "11",
        "--json",
    ]);
    let sampled_short = run_json(&[
        "run", plan, "-p", PROMPT, "-n", "8", "-t", "1.5", "-s", "11", "--json",
    ]);
    assert_eq!(outcome(&sampled_short), outcome(&sampled_long));
    assert_eq!(sampled_short["seed"], 11);
    assert_ne!(ids(&sampled_short["generated_tokens"]), GREEDY_IDS);

    // compile's --dummy-weights seed takes -s too: the plan records it.
    let dummy = scratch().join("dummy-plan");
    let _ = std::fs::remove_dir_all(&dummy);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model");
    common::zamba2c_ok(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        dummy.to_str().unwrap(),
        "--dummy-weights",
        "-s",
        "42",
    ]);
    let shown = common::zamba2c_ok(&["inspect", dummy.to_str().unwrap()]);
    assert!(shown.contains("seed 42"), "{shown}");
}

#[test]
fn version_names_the_package_version() {
    let out = common::zamba2c_ok(&["--version"]);
    assert_eq!(out.trim(), format!("zamba2c {}", env!("CARGO_PKG_VERSION")));
}

/// README: a command line clap cannot parse gets clap's message and exit code 2.
#[test]
fn unparsable_command_lines_exit_2_with_clap_message() {
    let plan = demo_plan();
    for (args, needle) in [
        (
            vec!["run", plan, "--no-such-flag"],
            "unexpected argument '--no-such-flag'",
        ),
        (vec!["run", plan, "-n", "many"], "invalid value 'many'"),
        (vec!["run", plan, "-p"], "a value is required"),
        (vec!["no-such-command"], "unrecognized subcommand"),
    ] {
        let out = common::zamba2c(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains("--help"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// `run --json | jq .text`: with --json every line of stdout is a JSON object, whatever the
/// input and even with --echo; the text is in the object, not streamed before it.
#[test]
fn json_stdout_is_only_json_lines() {
    let plan = demo_plan();
    let prompts = scratch().join("two-prompts.txt");
    std::fs::write(&prompts, format!("{PROMPT}\nOnce upon a time\n")).unwrap();
    let tokens = PROMPT_IDS.map(|i| i.to_string()).join(",");
    for (args, objects) in [
        (vec!["run", plan, "-p", PROMPT, "-n", "8", "--json"], 1),
        (
            vec!["run", plan, "-p", PROMPT, "-n", "8", "--json", "--echo"],
            1,
        ),
        (
            vec!["run", plan, "--tokens", &tokens, "-n", "8", "--json"],
            1,
        ),
        (
            vec![
                "run",
                plan,
                "--prompts-file",
                prompts.to_str().unwrap(),
                "-n",
                "4",
                "--json",
            ],
            2,
        ),
    ] {
        let out = common::zamba2c_ok(&args);
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: {l:?}: {e}")))
            .collect();
        assert_eq!(lines.len(), objects, "{args:?}: {out:?}");
        for v in &lines {
            assert!(v["text"].is_string(), "{args:?}: {v}");
        }
        if objects == 1 {
            assert_eq!(ids(&lines[0]["generated_tokens"]), GREEDY_IDS, "{args:?}");
        }
    }
}

/// A blank line of a prompts file is no prompt: skipped, and the indices count prompts.
#[test]
fn blank_lines_of_a_prompts_file_are_skipped() {
    let plan = demo_plan();
    let with_blanks = scratch().join("blanks.txt");
    std::fs::write(
        &with_blanks,
        format!("\n{PROMPT}\n\n  \r\nOnce upon a time\n\n"),
    )
    .unwrap();
    let plain = scratch().join("no-blanks.txt");
    std::fs::write(&plain, format!("{PROMPT}\nOnce upon a time\n")).unwrap();
    let go = |f: &Path| -> Vec<(Vec<u64>, Vec<u64>, String, Value)> {
        common::zamba2c_ok(&[
            "run",
            plan,
            "--prompts-file",
            f.to_str().unwrap(),
            "-n",
            "4",
            "-q",
        ])
        .lines()
        .map(|l| outcome(&serde_json::from_str(l).unwrap()))
        .collect()
    };
    let got = go(&with_blanks);
    assert_eq!(got.len(), 2);
    assert_eq!(got, go(&plain));
    assert_eq!(got[0].0, PROMPT_IDS);
    // Only blank lines: no prompts, one clear error.
    let empty = scratch().join("only-blanks.txt");
    std::fs::write(&empty, "\n \n\n").unwrap();
    let out = common::zamba2c(&["run", plan, "--prompts-file", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no prompts"));
}

/// `--prompt ""` is BOS alone, as transformers' generate starts from BOS: the same as
/// `--tokens 1` (the Mistral tokenizer's BOS id).
#[test]
fn empty_prompt_generates_from_bos() {
    let plan = demo_plan();
    let empty = run_json(&["run", plan, "-p", "", "-n", "6", "--json"]);
    assert_eq!(ids(&empty["prompt_tokens"]), [1]);
    let bos = run_json(&["run", plan, "--tokens", "1", "-n", "6", "--json"]);
    assert_eq!(outcome(&empty), outcome(&bos));
    assert_eq!(ids(&empty["generated_tokens"]).len(), 6);
}

/// The timing summary says "1 token", and prints no tokens/s over a time too short to mean one.
#[test]
fn timing_summary_counts_in_words() {
    let plan = demo_plan();
    let out = common::zamba2c(&["run", plan, "-p", "", "-n", "1"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().expect("a summary line");
    assert!(line.starts_with("prompt: 1 token in "), "{line}");
    // One token is no rate (the generated one comes from the prompt's logits).
    assert!(!line.contains("tok/s"), "{line}");
    let generated = line.split("generated: ").nth(1).expect("generated part");
    assert!(generated.starts_with("1 token in "), "{line}");
    assert!(!generated.contains("tok/s"), "{line}");
    let v = run_json(&["run", plan, "-p", "", "-n", "1", "--json"]);
    assert!(v["generated_tokens_per_s"].is_null(), "{v}");
    assert!(v["prompt_tokens_per_s"].is_null(), "{v}");
    // Longer runs keep their rates.
    let err =
        String::from_utf8_lossy(&common::zamba2c(&["run", plan, "-p", PROMPT, "-n", "8"]).stderr)
            .into_owned();
    assert_eq!(err.matches("tok/s").count(), 2, "{err}");
    assert!(!line.contains("1 tokens"), "{line}");
}

/// `compile` warns (one line) when the checkpoint has no tokenizer.json, and still compiles.
#[test]
fn compile_warns_without_a_tokenizer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model");
    let model = scratch().join("no-tokenizer-model");
    let _ = std::fs::remove_dir_all(&model);
    std::fs::create_dir_all(&model).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if !e.file_name().to_string_lossy().starts_with("tokenizer") {
            std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
        }
    }
    let plan = scratch().join("no-tokenizer-plan");
    let _ = std::fs::remove_dir_all(&plan);
    let out = common::zamba2c(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        plan.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("no tokenizer.json"), "{err}");
    // With the tokenizer, no warning.
    let plan2 = scratch().join("with-tokenizer-plan");
    let _ = std::fs::remove_dir_all(&plan2);
    let out = common::zamba2c(&[
        "compile",
        src.to_str().unwrap(),
        "-o",
        plan2.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("WARN"));
}

/// `tokenize` prints the ids `run --prompt` feeds the model (transformers' ids for PROMPT), and
/// `logits --prompt` computes the same logits as `logits --tokens` with those ids.
#[test]
fn tokenize_and_logits_prompt_agree_with_run() {
    let plan = demo_plan();
    let want = PROMPT_IDS.map(|i| i.to_string()).join(",");
    assert_eq!(
        common::zamba2c_ok(&["tokenize", plan, "-p", PROMPT]),
        format!("{want}\n")
    );
    let v: Value = serde_json::from_str(&common::zamba2c_ok(&[
        "tokenize", plan, "--prompt", PROMPT, "--json",
    ]))
    .unwrap();
    assert_eq!(ids(&v["ids"]), PROMPT_IDS);
    assert_eq!(
        ids(&v["ids"]),
        ids(&run_json(&["run", plan, "-p", PROMPT, "-n", "1", "--json"])["prompt_tokens"])
    );
    assert_eq!(common::zamba2c_ok(&["tokenize", plan, "-p", ""]), "1\n");

    let from_text = scratch().join("logits-text.safetensors");
    let from_ids = scratch().join("logits-ids.safetensors");
    common::zamba2c_ok(&[
        "logits",
        plan,
        "-p",
        PROMPT,
        "--out",
        from_text.to_str().unwrap(),
    ]);
    common::zamba2c_ok(&[
        "logits",
        plan,
        "--tokens",
        &want,
        "--out",
        from_ids.to_str().unwrap(),
    ]);
    let (a, b) = (
        std::fs::read(&from_text).unwrap(),
        std::fs::read(&from_ids).unwrap(),
    );
    // The same ids through the same deterministic CPU interpreter: the same bytes.
    assert_eq!(a, b);
    assert!(a.len() > PROMPT_IDS.len() * 4);
    // Neither input: clap's usage error.
    let out = common::zamba2c(&["logits", plan, "--out", from_ids.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}
