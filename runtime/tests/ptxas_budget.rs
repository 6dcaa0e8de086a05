//! Register and spill budgets of the 2.7B plan's kernels, read from ptxas on the PTX NVRTC
//! makes, with no GPU. Why: a `proj_gemv` rendered with its chunk loop unrolled whole let the
//! compiler issue every load up front, 241 registers a thread and one block an SM, and decode
//! went from 2.50 to 2.95 ms a token on the H200 (docs/PERFORMANCE.md thirteenth session); a
//! register count is visible before a GPU call, a slow step only after one. Budgets: no kernel
//! spills; each one-row decode projection (`proj_gemv` in the decode program) stays within
//! `GEMV_MAX_REGISTERS`, two blocks of 256 threads an SM.
//!
//! Needs NVRTC (as nvrtc_compile.rs) and ptxas 13.0: `ZAMBA2C_PTXAS=<path>` or `ptxas` on
//! PATH (the pip wheel `nvidia-cuda-nvcc==13.0.88` carries it; .ci/run installs it). With
//! ZAMBA2C_REQUIRE_PTXAS=1 a missing ptxas is a failure, otherwise the test is skipped with a
//! note.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::config;
use serde_json::json;
use zamba2c_codegen::build_program;
use zamba2c_ir::{lower_with_kv, DType};
use zamba2c_runtime::cuda::nvrtc;

/// Registers a one-row `proj_gemv` thread may use: 65,536 registers an SM / (2 × 256 threads).
const GEMV_MAX_REGISTERS: u32 = 128;

/// The ptxas to run, if any: ZAMBA2C_PTXAS, else the first `ptxas` on PATH.
fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ZAMBA2C_PTXAS") {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("ptxas"))
        .find(|p| p.is_file())
}

/// (registers, spill store bytes) of the one kernel in `ptx`, from `ptxas -v`.
fn usage(ptxas: &PathBuf, dir: &std::path::Path, name: &str, ptx: &str) -> (u32, u32) {
    let src = dir.join(format!("{name}.ptx"));
    std::fs::write(&src, ptx).expect("write the PTX");
    let out = Command::new(ptxas)
        .args(["-arch=sm_90", "-O3", "-v", "-o"])
        .arg(dir.join(format!("{name}.cubin")))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", ptxas.display()));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ptxas failed on {name}: {log}");
    // "ptxas info    : Used 48 registers, used 0 barriers" and
    // "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads".
    let number_before = |what: &str| -> Option<u32> {
        let i = log.find(what)?;
        log[..i].split_whitespace().last()?.parse().ok()
    };
    let regs =
        number_before(" registers").unwrap_or_else(|| panic!("{name}: no register count in {log}"));
    let spills = number_before(" bytes spill stores")
        .unwrap_or_else(|| panic!("{name}: no spill count in {log}"));
    (regs, spills)
}

#[test]
fn kernels_of_the_27b_plan_stay_within_their_register_budgets() {
    let Some(ptxas) = ptxas() else {
        if std::env::var("ZAMBA2C_REQUIRE_PTXAS").as_deref() == Ok("1") {
            panic!("ZAMBA2C_REQUIRE_PTXAS=1 but no ptxas (set ZAMBA2C_PTXAS or PATH)");
        }
        eprintln!("note: ptxas not found, skipping the register budgets");
        return;
    };
    if !nvrtc::available() {
        if std::env::var("ZAMBA2C_REQUIRE_NVRTC").as_deref() == Ok("1") {
            panic!("ZAMBA2C_REQUIRE_NVRTC=1 but NVRTC cannot be loaded");
        }
        eprintln!("note: NVRTC not found, skipping the register budgets");
        return;
    }
    let big = config(json!({
        "vocab_size": 32000, "hidden_size": 2560, "num_hidden_layers": 54,
        "layers_block_type": serde_json::Value::Null, "mamba_d_state": 64, "n_mamba_heads": 80,
        "intermediate_size": 10240, "num_attention_heads": 32, "num_key_value_heads": 32,
        "num_mem_blocks": 2, "adapter_rank": 128, "max_position_embeddings": 4096
    }));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut checked = 0;
    // The default plan (`compile --dtype bf16`) and the f16 one (`--dtype f16 --kv-dtype f16`).
    for (weights, kv) in [(DType::BF16, DType::BF16), (DType::F16, DType::F16)] {
        let mut m = lower_with_kv(&big, weights, DType::F32, kv);
        zamba2c_passes::pipeline::run_pipeline(&mut m, 1, None).expect("the passes run");
        let p = build_program(&m).expect("2.7B program");
        let jobs: Vec<(String, String, String)> = p
            .kernels
            .iter()
            .map(|(name, k)| (name.clone(), k.source.clone(), format!("{name}.cu")))
            .collect();
        let ptxs = nvrtc::compile_many(&jobs, "sm_90").unwrap_or_else(|e| panic!("{e}"));
        let decode_gemvs: std::collections::BTreeSet<&str> = p
            .decode
            .launches
            .iter()
            .filter(|l| p.kernels[&l.kernel].family == "proj_gemv")
            .map(|l| l.kernel.as_str())
            .collect();
        assert!(
            !decode_gemvs.is_empty(),
            "{weights:?}: no proj_gemv in decode"
        );
        for ((name, _, _), ptx) in jobs.iter().zip(&ptxs) {
            let (regs, spills) = usage(&ptxas, dir.path(), name, ptx);
            assert_eq!(
                spills, 0,
                "{weights:?} plan: {name} spills {spills} bytes ({regs} registers)"
            );
            if decode_gemvs.contains(name.as_str()) {
                assert!(
                    regs <= GEMV_MAX_REGISTERS,
                    "{weights:?} plan: {name} uses {regs} registers a thread (budget {GEMV_MAX_REGISTERS}: two blocks an SM)"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} kernels checked");
}
