//! `--device auto` (issue 17): every command picks CUDA when a usable GPU is there and the CPU
//! otherwise, says which in one info line, and gives the same results as naming that device;
//! logs carry no colour codes when stderr is not a terminal; clap's exit code 2 for a device
//! it does not know.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn scratch() -> PathBuf {
    common::scratch("cli_device")
}

/// The demo model's plan, compiled once per test process.
fn demo_plan() -> &'static str {
    common::demo_plan("cli_device")
}

/// zamba2c with `RUST_LOG=info` (and colour allowed by the environment).
fn with_info_log(args: &[&str]) -> Output {
    Command::new(common::zamba2c_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .expect("spawn zamba2c")
}

/// The device `auto` chose, from its one info line.
fn chosen_device(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("--device auto: "))
        .collect();
    assert_eq!(lines.len(), 1, "one line saying which device: {stderr}");
    let rest = lines[0].split("--device auto: ").nth(1).unwrap();
    let device = rest.split_whitespace().next().unwrap().to_string();
    assert!(device == "cpu" || device == "cuda", "{}", lines[0]);
    // The reason (or the GPU's name) follows in parentheses.
    assert!(rest.contains('('), "{}", lines[0]);
    device
}

fn json_line(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn auto_is_the_default_says_which_and_matches_the_named_device() {
    let plan = demo_plan();
    let args = ["run", plan, "-p", "Hello, my name is", "-n", "6", "--json"];
    let auto = with_info_log(&args);
    let err = String::from_utf8_lossy(&auto.stderr).into_owned();
    let device = chosen_device(&err);
    // Piped stderr: no ANSI escape codes in the log.
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let named = with_info_log(&[&args[..], &["--device", &device]].concat());
    // A named device is not probed: no auto line.
    assert!(!String::from_utf8_lossy(&named.stderr).contains("--device auto"));
    let (a, n) = (json_line(&auto), json_line(&named));
    assert_eq!(a["prompt_tokens"], n["prompt_tokens"]);
    assert_eq!(a["generated_tokens"], n["generated_tokens"]);
    assert_eq!(a["text"], n["text"]);

    // bench defaults to auto too (it used to default to cuda and fail without a GPU), and
    // reports the device it chose.
    let bench = with_info_log(&[
        "bench",
        plan,
        "--prompt-len",
        "4",
        "--gen-len",
        "2",
        "--json",
    ]);
    let bench_device = chosen_device(&String::from_utf8_lossy(&bench.stderr));
    assert_eq!(bench_device, device);
    assert_eq!(json_line(&bench)["device"], Value::from(device.as_str()));

    // logits too: the same bytes as naming the device.
    let (x, y) = (scratch().join("auto.st"), scratch().join("named.st"));
    let out = with_info_log(&[
        "logits",
        plan,
        "--tokens",
        "1,22557",
        "--out",
        x.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(chosen_device(&String::from_utf8_lossy(&out.stderr)), device);
    common::zamba2c_ok(&[
        "logits",
        plan,
        "--tokens",
        "1,22557",
        "--device",
        &device,
        "--out",
        y.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&x).unwrap(), std::fs::read(&y).unwrap());
}

/// README: a value clap does not know is clap's usage error, exit code 2, listing the values.
#[test]
fn unknown_device_is_a_usage_error() {
    let plan = demo_plan();
    for cmd in ["run", "bench", "logits", "serve"] {
        let out = common::zamba2c(&[cmd, plan, "--device", "gpu"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("invalid value 'gpu'"), "{cmd}: {err}");
        assert!(err.contains("auto, cpu, cuda"), "{cmd}: {err}");
    }
}
