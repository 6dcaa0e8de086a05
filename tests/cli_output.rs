//! Output for people and for scripts (issue 17), through the binary on the demo model: inspect
//! prints FLOPs and bytes with SI prefixes while its JSON keeps raw numbers; bench repeats runs,
//! takes a list of prompt lengths, prints a llama-bench-style table, and keeps a single run's
//! JSON fields (adding the list form only for a list); `inspect --format dot` draws one graph
//! clustered per layer.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn scratch() -> PathBuf {
    common::scratch("cli_output")
}

/// The demo model's plan, compiled once per test process.
fn demo_plan() -> &'static str {
    common::demo_plan("cli_output")
}

/// The text line of `inspect` that starts (after spaces) with `key`.
fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("no line {key:?} in {text}"))
}

#[test]
fn inspect_formats_numbers_for_people_and_json_keeps_them_raw() {
    let plan = demo_plan();
    let text = common::zamba2c_ok(&["inspect", plan]);
    let json: Value =
        serde_json::from_str(&common::zamba2c_ok(&["inspect", plan, "--format", "json"])).unwrap();
    let flops = json["cost"]["decode_flops_per_token"].as_f64().unwrap();
    let bytes = json["cost"]["decode_bytes_per_token"].as_f64().unwrap();
    // The text shows the JSON's numbers to three significant digits with a prefix: the demo's
    // ~4.74e6 FLOP and ~9.44e6 bytes per token.
    let shown_flops = line(&text, "decode FLOPs per token");
    let shown_bytes = line(&text, "decode bytes per token");
    let parse = |l: &str, unit: &str| -> f64 {
        let v: Vec<&str> = l.split_whitespace().collect();
        let (num, u) = (v[v.len() - 2], v[v.len() - 1]);
        let scale = match u.strip_suffix(unit).unwrap() {
            "" => 1.0,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            p => panic!("prefix {p}"),
        };
        num.parse::<f64>().unwrap() * scale
    };
    assert!(shown_flops.ends_with("MFLOP"), "{shown_flops}");
    assert!(shown_bytes.ends_with(" MB"), "{shown_bytes}");
    assert!(
        (parse(shown_flops, "FLOP") - flops).abs() / flops < 5e-3,
        "{shown_flops} vs {flops}"
    );
    assert!(
        (parse(shown_bytes, "B") - bytes).abs() / bytes < 5e-3,
        "{shown_bytes} vs {bytes}"
    );
    // No e-notation left in the cost table and the program summary.
    let program_end = text.find("== prompt graph ==").unwrap();
    assert!(
        !text[..program_end].contains("e6"),
        "{}",
        &text[..program_end]
    );
    assert!(
        line(&text, "model.layers.0.mamba.in_proj").contains(" kFLOP"),
        "{text}"
    );
}

/// `inspect` names the kernels each op runs on: launches per family per graph, and per node the
/// families of its launches (issue 10: which GEMM, scan and attention kernels were chosen).
#[test]
fn inspect_names_the_kernels_of_each_op() {
    let plan = demo_plan();
    let v: Value =
        serde_json::from_str(&common::zamba2c_ok(&["inspect", plan, "--format", "json"])).unwrap();
    for g in ["prompt", "decode"] {
        let fams = v["program"]["families"][g].as_object().expect("families");
        let launches: u64 = fams.values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(
            launches,
            v["program"][g]["launches"].as_u64().unwrap(),
            "{g}: every launch counted once"
        );
        let ops = v["program"]["op_kernels"][g]
            .as_object()
            .expect("op_kernels");
        assert!(!ops.is_empty());
        for (node, f) in ops {
            for name in f.as_array().unwrap() {
                let name = name.as_str().unwrap();
                assert!(fams.contains_key(name), "{g} node {node}: {name}");
            }
        }
    }
    assert!(
        v["program"]["families"]["decode"]["proj_gemv"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        v["program"]["families"]["prompt"]["ssd_chunk_out"]
            .as_u64()
            .unwrap()
            > 0
    );
    let text = common::zamba2c_ok(&["inspect", plan]);
    assert!(line(&text, "prompt kernels by family:").contains("ssd_chunk_out"));
}

fn bench_json(args: &[&str]) -> Value {
    let mut all = vec!["bench", demo_plan(), "--device", "cpu", "--json"];
    all.extend_from_slice(args);
    let out = common::zamba2c_ok(&all);
    assert_eq!(out.lines().count(), 1, "{out}");
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn bench_repeats_lists_and_tables() {
    // One length: one object with the fields a single run always had, plus the statistics.
    let one = bench_json(&["--prompt-len", "8", "--gen-len", "4"]);
    for k in [
        "device",
        "prompt_len",
        "gen_len",
        "ttft_ms",
        "decode_ms_per_token",
        "repeat",
        "decode_ms_per_token_mean",
        "decode_ms_per_token_stddev",
        "decode_tokens_per_s",
    ] {
        assert!(one.get(k).is_some(), "{k} missing: {one}");
    }
    assert_eq!(one["prompt_len"], 8);
    assert_eq!(one["repeat"], 1);
    assert_eq!(one["decode_ms_per_token_stddev"], 0.0);

    // --repeat 3: the median run's fields, the mean and spread over three.
    let rep = bench_json(&["--prompt-len", "8", "--gen-len", "4", "--repeat", "3"]);
    assert_eq!(rep["repeat"], 3);
    let mean = rep["decode_ms_per_token_mean"].as_f64().unwrap();
    assert!(mean > 0.0);
    assert!((rep["decode_tokens_per_s"].as_f64().unwrap() - 1e3 / mean).abs() < 1e-6 * 1e3 / mean);

    // A list: an array, one object per length, in order.
    let list = bench_json(&["--prompt-len", "4,8,16", "--gen-len", "2"]);
    let rows = list.as_array().expect("an array for a list");
    let lens: Vec<u64> = rows
        .iter()
        .map(|r| r["prompt_len"].as_u64().unwrap())
        .collect();
    assert_eq!(lens, [4, 8, 16]);
    assert!(rows.iter().all(|r| r["gen_len"] == 2));

    // The table: a header, a rule, one row per length with the columns llama-bench users read.
    let out = common::zamba2c_ok(&[
        "bench",
        demo_plan(),
        "--device",
        "cpu",
        "--prompt-len",
        "4,8",
        "--gen-len",
        "2",
        "--repeat",
        "2",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for col in [
        "model",
        "dtype",
        "device",
        "prompt",
        "gen",
        "TTFT ms",
        "decode ms/token",
        "tokens/s",
        "peak memory",
        "runs",
    ] {
        assert!(lines[0].contains(col), "{col}: {out}");
    }
    let cells = |l: &str| -> Vec<String> {
        l.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let header = cells(lines[0]);
    let row = cells(lines[3]);
    let col = |name: &str| row[header.iter().position(|h| h == name).unwrap()].clone();
    assert_eq!(col("model"), "demo-plan");
    assert_eq!(col("dtype"), "f32");
    assert_eq!(col("device"), "cpu");
    assert_eq!(col("prompt"), "8");
    assert_eq!(col("runs"), "2");
    assert!(col("decode ms/token").contains(" ± "), "{out}");
    assert!(col("peak memory").ends_with("MB"), "{out}");

    // Bad values: clap's error for text, exit 1 naming the flag for a zero.
    let bad = common::zamba2c(&["bench", demo_plan(), "--prompt-len", "8,x"]);
    assert_eq!(bad.status.code(), Some(2));
    let zero = common::zamba2c(&["bench", demo_plan(), "--device", "cpu", "--repeat", "0"]);
    assert_eq!(zero.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--repeat"));
    // --prompt-chunk sizes the CUDA engine's prompt launches: out of range, or on the CPU, it is
    // refused in one line naming it.
    for args in [
        &["--device", "cpu", "--prompt-chunk", "0"][..],
        &["--device", "cpu", "--prompt-chunk", "100000"],
        &["--device", "cpu", "--prompt-chunk", "64"],
    ] {
        let mut all = vec!["bench", demo_plan()];
        all.extend_from_slice(args);
        let out = common::zamba2c(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("--prompt-chunk"), "{args:?}: {err}");
    }
    // --profile times GPU kernels, one sequence or (--batch B) one batched decode step: on the
    // CPU it is refused in one line naming it, before any work.
    for args in [&["--profile"][..], &["--profile", "--batch", "4"]] {
        let mut all = vec!["bench", demo_plan(), "--device", "cpu"];
        all.extend_from_slice(args);
        let out = common::zamba2c(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("--profile"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

/// Progress bars (compile, loading weights for the CPU) are drawn on a terminal only: under a
/// pseudo-terminal (util-linux `script`) they show, with stderr piped nothing of them does.
#[test]
fn progress_bars_only_on_a_terminal() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model");
    let piped_plan = scratch().join("progress-piped");
    let _ = std::fs::remove_dir_all(&piped_plan);
    let out = common::zamba2c(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        piped_plan.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains('\r') && !err.contains("converting weights"),
        "{err:?}"
    );
    let out = common::zamba2c(&["run", demo_plan(), "-p", "Hi", "-n", "2", "--device", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("loading weights"), "{err:?}");

    let tty_plan = scratch().join("progress-tty");
    let _ = std::fs::remove_dir_all(&tty_plan);
    let bin = common::zamba2c_bin();
    let under_tty = |cmd: String| -> String {
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .expect("util-linux script, to run zamba2c under a pseudo-terminal");
        assert!(out.status.success(), "{cmd}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = under_tty(format!(
        "{} compile {} -o {}",
        bin.display(),
        model.display(),
        tty_plan.display()
    ));
    assert!(shown.contains("converting weights"), "{shown:?}");
    let shown = under_tty(format!(
        "{} run {} -p Hi -n 2 --device cpu",
        bin.display(),
        demo_plan()
    ));
    assert!(shown.contains("loading weights for the CPU"), "{shown:?}");
}

/// `inspect --format dot --graph prompt|decode`: one digraph, a cluster per decoder layer of
/// the model, nodes coloured by op kind and labelled by op and shape (no weight names), the
/// same bytes every time.
#[test]
fn dot_draws_one_graph_clustered_per_layer() {
    let plan = demo_plan();
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model/config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let layers = config["num_hidden_layers"].as_u64().unwrap();
    for graph in ["prompt", "decode"] {
        let dot = common::zamba2c_ok(&["inspect", plan, "--format", "dot", "--graph", graph]);
        assert_eq!(
            dot,
            common::zamba2c_ok(&["inspect", plan, "--format", "dot", "--graph", graph]),
            "not deterministic"
        );
        assert_eq!(dot.matches("digraph ").count(), 1, "{dot}");
        assert!(dot.starts_with(&format!("digraph \"{graph}\" {{")), "{dot}");
        for l in 0..layers {
            assert_eq!(
                dot.matches(&format!("subgraph cluster_layer_{l} {{"))
                    .count(),
                1,
                "layer {l}: {dot}"
            );
        }
        assert!(!dot.contains(&format!("cluster_layer_{layers} ")));
        // Labels name ops and shapes, never weights.
        assert!(
            !dot.contains(".weight") && !dot.contains("model.layers."),
            "{dot}"
        );
        let t = if graph == "prompt" { "T" } else { "1" };
        assert!(
            dot.contains(&format!("residual(mamba_mixer)\\n[B,{t},")),
            "{dot}"
        );
        // One colour per op family: every mixer the same, attention another.
        let fill = |needle: &str| -> Vec<String> {
            dot.lines()
                .filter(|l| l.contains(needle))
                .map(|l| l.rsplit("fillcolor=").next().unwrap().to_string())
                .collect()
        };
        let mixers = fill("residual(mamba_mixer)");
        let attention = fill("\"attention\\n");
        assert!(!mixers.is_empty() && !attention.is_empty(), "{dot}");
        assert!(mixers.iter().all(|c| *c == mixers[0]));
        assert!(attention.iter().all(|c| *c == attention[0]));
        assert_ne!(mixers[0], attention[0]);
        // Every edge joins nodes that exist.
        let nodes = dot.lines().filter(|l| l.contains("[label=")).count();
        for e in dot.lines().filter(|l| l.contains("->")) {
            for end in e.trim().trim_end_matches(';').split(" -> ") {
                let i: usize = end.trim_start_matches('n').parse().unwrap();
                assert!(i < nodes, "{e}");
            }
        }
    }
    // The default graph is decode; --graph with another format is refused in one line.
    assert_eq!(
        common::zamba2c_ok(&["inspect", plan, "--format", "dot"]),
        common::zamba2c_ok(&["inspect", plan, "--format", "dot", "--graph", "decode"])
    );
    let out = common::zamba2c(&["inspect", plan, "--graph", "prompt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--graph"));
}
