//! `zamba2c run` end to end on the CPU with the shipped demo model (random weights, the real
//! Mistral v0.1 vocabulary): text prompts, streaming, JSON, sampling seeds, stop strings, EOS,
//! many prompts, and the errors a user can make.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// The prompt of examples/demo-model/README.md and what transformers makes of it.
const PROMPT: &str = "Hello, my name is";
const PROMPT_IDS: [u64; 6] = [1, 22557, 28725, 586, 1141, 349];
/// transformers 5.24.0's greedy continuation of PROMPT (8 tokens), from the README.
const GREEDY_IDS: [u64; 8] = [11475, 948, 20046, 26321, 10552, 21540, 28321, 16122];

fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model")
}

fn scratch() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("run_cli")
}

/// Compiles `model_dir` into a plan named `name` under this test process's scratch directory.
fn compile(model_dir: &Path, name: &str) -> PathBuf {
    let dir = scratch();
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join(name);
    common::zamba2c_ok(&[
        "compile",
        model_dir.to_str().unwrap(),
        "-o",
        plan.to_str().unwrap(),
    ]);
    plan
}

/// The demo model's plan, compiled once per test process.
fn demo_plan() -> &'static str {
    static PLAN: OnceLock<PathBuf> = OnceLock::new();
    PLAN.get_or_init(|| compile(&demo_model(), "demo-plan"))
        .to_str()
        .unwrap()
}

/// A copy of the demo checkpoint changed by `edit`, compiled into a plan.
fn variant_plan(name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let src = demo_model();
    let dst = scratch().join(format!("{name}-model"));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    edit(&dst);
    compile(&dst, name)
}

fn run(args: &[&str]) -> Output {
    common::zamba2c(args)
}

fn run_ok(args: &[&str]) -> String {
    common::zamba2c_ok(args)
}

/// Runs zamba2c with `stdin` piped in.
fn run_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(common::zamba2c_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zamba2c");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The JSON object of a one-prompt `--json` run: stdout holds that one line and nothing else.
fn json_only(stdout: &str) -> Value {
    let body = stdout
        .strip_suffix('\n')
        .expect("output ends with a newline");
    assert!(!body.contains('\n'), "stdout is not only JSON: {stdout:?}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("stdout {body:?}: {e}"))
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Asserts a failed run with one line of stderr containing every one of `needles`.
fn assert_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success; stderr: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    for n in needles {
        assert!(line.contains(n), "{line:?} should mention {n:?}");
    }
}

#[test]
fn prompt_json_greedy_matches_transformers() {
    let plan = demo_plan();
    let out = run_ok(&[
        "run",
        plan,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "8",
        "--json",
    ]);
    let v = json_only(&out);
    assert_eq!(ids(&v["prompt_tokens"]), PROMPT_IDS);
    assert_eq!(ids(&v["generated_tokens"]), GREEDY_IDS, "{v}");
    let text = v["text"].as_str().expect("text");
    assert_eq!(text.trim_start(), "aircraft end Makгорowed Пи Ozвал");
    assert_eq!(v["stop_reason"], "length");
    for k in [
        "prompt_ms",
        "decode_ms",
        "prompt_tokens_per_s",
        "generated_tokens_per_s",
    ] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
}

#[test]
fn plain_output_streams_the_same_text() {
    let plan = demo_plan();
    let json = run_ok(&[
        "run",
        plan,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "12",
        "--json",
    ]);
    let v = json_only(&json);
    let out = run(&["run", plan, "--prompt", PROMPT, "--max-new-tokens", "12"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, format!("{}\n", v["text"].as_str().unwrap()));
    // The timing summary goes to stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tok/s") && err.contains("prompt:") && err.contains("generated:"),
        "{err}"
    );
    // --echo prints the prompt first.
    let echoed = run_ok(&[
        "run",
        plan,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "12",
        "--echo",
        "-q",
    ]);
    assert_eq!(echoed, format!("{PROMPT}{stdout}"));
}

#[test]
fn tokens_contract_is_kept() {
    let plan = demo_plan();
    let out = run_ok(&[
        "run",
        plan,
        "--tokens",
        "1,22557,28725,586,1141,349",
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
        "--json",
    ]);
    let v = json_only(&out);
    assert_eq!(ids(&v["prompt_tokens"]), PROMPT_IDS);
    assert_eq!(ids(&v["generated_tokens"]), GREEDY_IDS);
}

#[test]
fn seed_reproduces_and_sampling_differs() {
    let plan = demo_plan();
    let go = |seed: &str| {
        let out = run_ok(&[
            "run",
            plan,
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "16",
            "--temperature",
            "1.0",
            "--top-k",
            "100",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--json",
            "-q",
        ]);
        let v = json_only(&out);
        assert_eq!(v["seed"].as_u64(), Some(seed.parse().unwrap()));
        ids(&v["generated_tokens"])
    };
    let a = go("7");
    assert_eq!(a.len(), 16);
    assert_eq!(a, go("7"), "the same seed gave different tokens");
    assert_ne!(
        a,
        go("8"),
        "different seeds gave the same 16 sampled tokens"
    );
    assert_ne!(a, GREEDY_IDS[..].to_vec());
    // --top-k 1 samples greedily.
    let out = run_ok(&[
        "run",
        plan,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "8",
        "--temperature",
        "0.7",
        "--top-k",
        "1",
        "--seed",
        "3",
        "--json",
    ]);
    assert_eq!(ids(&json_only(&out)["generated_tokens"]), GREEDY_IDS);
}

#[test]
fn stop_string_ends_and_is_trimmed() {
    let plan = demo_plan();
    let out = run_ok(&[
        "run",
        plan,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "8",
        "--json",
    ]);
    let full = json_only(&out);
    let full_text = full["text"].as_str().unwrap().to_string();
    // Stop at the third word ("Mak..."): the text before it is kept.
    let at = full_text.find("Mak").expect("the greedy text has Mak");
    let out = run_ok(&[
        "run",
        plan,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "8",
        "--stop",
        "Mak",
        "--stop",
        "never-there",
        "--json",
    ]);
    let v = json_only(&out);
    assert_eq!(v["text"].as_str().unwrap(), &full_text[..at]);
    // Streamed, the text stops at the same place.
    let plain = run_ok(&["run", plan, "-p", PROMPT, "-n", "8", "--stop", "Mak", "-q"]);
    assert_eq!(plain, format!("{}\n", &full_text[..at]));
    assert_eq!(v["stop_reason"], "stop");
    let gen = ids(&v["generated_tokens"]);
    assert!(
        gen.len() < 8 && gen[..] == GREEDY_IDS[..gen.len()],
        "{gen:?}"
    );
}

#[test]
fn eos_stops_and_is_not_printed_unless_ignored() {
    // A copy of the demo model whose generation_config says the first greedy token is EOS.
    let plan = variant_plan("eos", |dir| {
        let p = dir.join("generation_config.json");
        let mut g: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        g["eos_token_id"] = serde_json::json!([2, GREEDY_IDS[0]]);
        std::fs::write(&p, g.to_string()).unwrap();
    });
    let plan = plan.to_str().unwrap();
    let out = run_ok(&[
        "run",
        plan,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "8",
        "--json",
    ]);
    let v = json_only(&out);
    assert_eq!(
        ids(&v["generated_tokens"]),
        [GREEDY_IDS[0]],
        "EOS is included in the tokens"
    );
    assert_eq!(v["text"], "");
    // Streamed, nothing is printed but the closing newline.
    assert_eq!(run_ok(&["run", plan, "-p", PROMPT, "-n", "8", "-q"]), "\n");
    assert_eq!(v["stop_reason"], "eos");
    let out = run_ok(&[
        "run",
        plan,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "8",
        "--ignore-eos",
        "--json",
    ]);
    let v = json_only(&out);
    assert_eq!(ids(&v["generated_tokens"]), GREEDY_IDS);
    assert_eq!(v["stop_reason"], "length");
    // Ids in, ids out (--tokens) stops at EOS too, as transformers' generate does; EOS is the
    // last generated id. --ignore-eos gives exactly --max-new-tokens tokens.
    let toks = [
        "run",
        plan,
        "--tokens",
        "1,22557,28725,586,1141,349",
        "--max-new-tokens",
        "8",
        "--json",
    ];
    let out = run_ok(&toks);
    assert_eq!(ids(&json_only(&out)["generated_tokens"]), [GREEDY_IDS[0]]);
    let out = run_ok(&[&toks[..], &["--ignore-eos"]].concat());
    assert_eq!(ids(&json_only(&out)["generated_tokens"]), GREEDY_IDS);
}

#[test]
fn stdin_and_prompt_file_are_prompts() {
    let plan = demo_plan();
    let out = run_stdin(
        &["run", plan, "--max-new-tokens", "4", "--json"],
        &format!("{PROMPT}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_only(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(ids(&v["prompt_tokens"]), PROMPT_IDS);
    assert_eq!(ids(&v["generated_tokens"]), GREEDY_IDS[..4]);

    let f = scratch().join("prompt.txt");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, format!("{PROMPT}\n")).unwrap();
    let out = run_ok(&[
        "run",
        plan,
        "--prompt-file",
        f.to_str().unwrap(),
        "--max-new-tokens",
        "4",
        "--json",
    ]);
    assert_eq!(ids(&json_only(&out)["prompt_tokens"]), PROMPT_IDS);
}

#[test]
fn prompts_file_gives_one_json_line_each() {
    let plan = demo_plan();
    let f = scratch().join("prompts.txt");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(
        &f,
        format!("{PROMPT}\nThe capital of France is\n{PROMPT}\n"),
    )
    .unwrap();
    let out = run_ok(&[
        "run",
        plan,
        "--prompts-file",
        f.to_str().unwrap(),
        "--max-new-tokens",
        "8",
    ]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["index"], i);
        assert!(v["text"].is_string());
    }
    assert_eq!(lines[0]["prompt"], PROMPT);
    assert_eq!(ids(&lines[0]["prompt_tokens"]), PROMPT_IDS);
    // The engine is reset between prompts: the repeated prompt gives the same continuation.
    assert_eq!(ids(&lines[0]["generated_tokens"]), GREEDY_IDS);
    assert_eq!(ids(&lines[2]["generated_tokens"]), GREEDY_IDS);
    assert_eq!(lines[0]["text"], lines[2]["text"]);
}

/// A `--prompts-file` result without its wall-clock fields.
fn without_timings(mut v: Value) -> Value {
    for k in [
        "prompt_ms",
        "decode_ms",
        "total_ms",
        "prompt_tokens_per_s",
        "generated_tokens_per_s",
    ] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn batched_prompts_equal_each_prompt_alone() {
    let plan = demo_plan();
    let prompts = [
        PROMPT,
        "The capital of France is",
        "a",
        "Once upon a time, in a land far away, there lived a",
        "1 2 3",
        "Hello",
        "naïve café 😀",
    ];
    let f = scratch().join("batch-prompts.txt");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, prompts.join("\n")).unwrap();
    let base = [
        "run",
        plan,
        "--prompts-file",
        f.to_str().unwrap(),
        "--max-new-tokens",
        "10",
        "-q",
    ];
    // Greedy; greedy with a stop string (sequences leave the batch at different steps, and
    // waiting prompts join mid-run); sampling with a seed (each prompt's generator is its own).
    let variants: [&[&str]; 3] = [
        &[],
        &["--stop", "e"],
        &["--temperature", "0.9", "--seed", "5"],
    ];
    for extra in variants {
        let one_by_one = json_lines(&run_ok(&[&base[..], extra].concat()));
        let batched = json_lines(&run_ok(&[&base[..], extra, &["--max-batch", "3"]].concat()));
        assert_eq!(one_by_one.len(), prompts.len());
        assert_eq!(batched.len(), prompts.len());
        for (i, (a, b)) in one_by_one.into_iter().zip(batched).enumerate() {
            assert_eq!(b["index"], i, "input order");
            assert_eq!(
                without_timings(a),
                without_timings(b),
                "{extra:?}: prompt {i}"
            );
        }
    }
    // And one of them against a plain single-prompt run.
    let batched = json_lines(&run_ok(&[&base[..], &["--max-batch", "4"]].concat()));
    let alone = json_only(&run_ok(&[
        "run",
        plan,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "10",
        "--json",
    ]));
    assert_eq!(
        ids(&batched[0]["generated_tokens"]),
        ids(&alone["generated_tokens"])
    );
    assert_eq!(ids(&batched[0]["generated_tokens"])[..8], GREEDY_IDS);
    assert_eq!(batched[0]["text"], alone["text"]);
    assert_eq!(batched[0]["stop_reason"], alone["stop_reason"]);
    // Flags that cannot work say so in one line.
    assert_error(
        &run(&[&base[..], &["--max-batch", "0"]].concat()),
        &["--max-batch", "1..="],
    );
    // Batched CUDA runs where a GPU is; without one it is one line naming the device.
    cuda_ok_or_one_line(&run(&[
        &base[..],
        &["--max-batch", "2", "--device", "cuda"],
    ]
    .concat()));
}

/// A `--device cuda` command either succeeds (a GPU is here) or fails with one clear line that
/// names the flags it was given.
fn cuda_ok_or_one_line(out: &Output) {
    if !out.status.success() {
        assert_error(out, &["--device cuda"]);
    }
}

#[test]
fn bench_batch_reports_throughput_on_the_cpu() {
    let plan = demo_plan();
    // Three sequences of 5 prompt tokens and 4 generated, `chunk` prompt tokens a step.
    let bench = |chunk: &str| -> Value {
        let out = run_ok(&[
            "bench",
            plan,
            "--device",
            "cpu",
            "--batch",
            "3",
            "--prompt-len",
            "5",
            "--gen-len",
            "4",
            "--prefill-chunk",
            chunk,
            "--json",
        ]);
        serde_json::from_str(out.trim()).unwrap()
    };
    let v = bench("4");
    assert_eq!(v["batch"], 3);
    assert_eq!(v["generated_tokens"], 12);
    assert_eq!(v["device"], "cpu");
    // 15 prompt tokens at 4 a step: 4 steps of prompt, then the decode steps.
    assert!(v["steps"].as_u64().unwrap() >= 4 + 3, "{v}");
    for k in [
        "generated_tokens_per_s",
        "ms_per_step",
        "ttft_ms_median",
        "ttft_ms_max",
    ] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    assert!(v["ttft_ms_max"].as_f64() >= v["ttft_ms_median"].as_f64());
    let rows = v["rows_per_step"].as_u64().unwrap();
    assert!((1..=3).contains(&rows), "{v}");
    // Every prompt prefilled in the first step (15 tokens of budget): each decode step then
    // runs all three sequences, until they finish together.
    let full = bench("15");
    assert_eq!(full["rows_per_step"], 3, "{full}");
    cuda_ok_or_one_line(&run(&["bench", plan, "--device", "cuda", "--batch", "2"]));
    assert_error(
        &run(&["bench", plan, "--device", "cpu", "--batch", "0"]),
        &["--batch"],
    );
}

#[test]
fn user_errors_are_one_clear_line() {
    let plan = demo_plan();
    assert_error(
        &run(&["run", plan, "--prompt", PROMPT, "--max-new-tokens", "0"]),
        &["--max-new-tokens"],
    );
    assert_error(&run_stdin(&["run", plan], ""), &["stdin", "empty"]);
    assert_error(
        &run(&["run", plan, "--prompt-file", "/nonexistent/prompt.txt"]),
        &["--prompt-file", "/nonexistent/prompt.txt"],
    );
    assert_error(
        &run(&["run", plan, "--prompt", PROMPT, "--top-p", "1.5"]),
        &["--top-p"],
    );
    assert_error(
        &run(&["run", plan, "--prompt", PROMPT, "--temperature", "-1"]),
        &["--temperature"],
    );
    assert_error(
        &run(&["run", plan, "--prompt", PROMPT, "--repetition-penalty", "0"]),
        &["--repetition-penalty"],
    );
    assert_error(
        &run(&["run", plan, "--tokens", "1,99999"]),
        &["--tokens", "99999"],
    );
    // Longer than max_position_embeddings (4096).
    let long = "a ".repeat(5000);
    assert_error(
        &run(&["run", plan, "--prompt", &long]),
        &["--prompt", "4096", "longer than the plan allows"],
    );
    // Two prompt sources at once: clap's usage error (exit 2).
    let out = run(&["run", plan, "--prompt", PROMPT, "--tokens", "1,2"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tokenizer_problems_name_the_plan_file() {
    // No tokenizer.json: text prompts fail, token ids still run and print ids.
    let plan = variant_plan("notok", |dir| {
        std::fs::remove_file(dir.join("tokenizer.json")).unwrap()
    });
    let p = plan.to_str().unwrap();
    let out = run(&["run", p, "--prompt", PROMPT]);
    assert_error(
        &out,
        &[
            &plan.join("tokenizer.json").display().to_string(),
            "--tokens",
        ],
    );
    let out = run_ok(&[
        "run",
        p,
        "--tokens",
        "1,22557,28725,586,1141,349",
        "--max-new-tokens",
        "3",
    ]);
    assert_eq!(
        out,
        format!(
            "{}\n",
            GREEDY_IDS[..3]
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    );
    let out = run_ok(&[
        "run",
        p,
        "--tokens",
        "1,22557,28725,586,1141,349",
        "--max-new-tokens",
        "3",
        "--json",
    ]);
    let v = json_only(&out);
    assert_eq!(ids(&v["generated_tokens"]), GREEDY_IDS[..3]);
    assert!(v["text"].is_null());
    assert_error(
        &run(&["run", p, "--tokens", "1,2", "--stop", "x"]),
        &["--stop"],
    );

    // A malformed tokenizer.json.
    let plan = variant_plan("badtok", |dir| {
        std::fs::write(dir.join("tokenizer.json"), "{\"not\": \"a tokenizer\"").unwrap()
    });
    let out = run(&["run", plan.to_str().unwrap(), "--prompt", PROMPT]);
    assert_error(&out, &[&plan.join("tokenizer.json").display().to_string()]);
}

#[test]
fn help_has_examples() {
    // Every subcommand `zamba2c --help` lists (but `help`).
    let top = run_ok(&["--help"]);
    let subs: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|s| s != "help")
        .collect();
    for want in ["compile", "inspect", "logits", "run"] {
        assert!(
            subs.iter().any(|s| s == want),
            "{want} is not in zamba2c --help: {subs:?}"
        );
    }
    for sub in &subs {
        let sub = sub.as_str();
        let out = run_ok(&[sub, "--help"]);
        assert!(
            out.contains("Examples:"),
            "zamba2c {sub} --help has no examples:\n{out}"
        );
    }
    let out = run_ok(&["run", "--help"]);
    for flag in [
        "--prompt",
        "--prompt-file",
        "--prompts-file",
        "--top-k",
        "--top-p",
        "--min-p",
        "--repetition-penalty",
        "--seed",
        "--stop",
        "--ignore-eos",
        "--json",
    ] {
        assert!(out.contains(flag), "run --help lacks {flag}");
    }
}
