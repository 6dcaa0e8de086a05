//! Kernel variants behind codegen tuning knobs (docs/KERNELS.md "Tuning knobs") render and
//! compile with NVRTC for sm_90 like the default kernels (nvrtc_compile.rs), so a variant
//! waiting for its GPU measurement cannot rot: the register-staged prompt attention and the
//! whole-head `mamba_step` of decode_rows. One test in this binary: the knobs are read from
//! the environment when a program is built, and this test sets them before anything else runs.

mod common;

use common::config;
use serde_json::json;
use zamba2c_codegen::build_program;
use zamba2c_ir::{lower_with_kv, DType};
use zamba2c_runtime::cuda::nvrtc;

#[test]
fn knob_variants_render_and_compile_with_nvrtc() {
    // The only test of this binary: nothing else reads the environment meanwhile.
    std::env::set_var("ZAMBA2C_TUNE_ATTN_KERNEL", "1");
    std::env::set_var("ZAMBA2C_TUNE_STEP_ROWS_BATCHED", "64");
    // Head sizes 64 and 160 (the 2.7B's), GQA and RoPE, a bf16 KV cache under f32 and bf16
    // activations: the prompt attention's register-staged kernel (the cp.async one is the
    // default, compiled by nvrtc_compile.rs).
    let cases = [
        (
            json!({"hidden_size": 64, "n_mamba_heads": 4, "num_attention_heads": 2,
                "num_key_value_heads": 1, "use_mem_rope": true}),
            DType::F32,
        ),
        (
            json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2,
                "num_key_value_heads": 2, "use_mem_rope": true}),
            DType::F32,
        ),
        (
            json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2,
                "num_key_value_heads": 2, "use_mem_rope": true}),
            DType::BF16,
        ),
    ];
    let mut jobs = Vec::new();
    for (i, (extra, act)) in cases.into_iter().enumerate() {
        let mut m = lower_with_kv(&config(extra), DType::BF16, act, DType::BF16);
        zamba2c_passes::pipeline::run_pipeline(&mut m, 1, None).expect("the passes run");
        let p = build_program(&m).unwrap_or_else(|e| panic!("case {i}: {e}"));
        let flash: Vec<_> = p
            .kernels
            .values()
            .filter(|k| k.family == "attention_flash")
            .collect();
        assert!(!flash.is_empty(), "case {i}: no attention_flash kernel");
        for k in flash {
            assert!(
                !k.source.contains("cp_async16(kd"),
                "case {i}: {} is the cp.async kernel, not the register-staged one",
                k.name
            );
            jobs.push((
                k.name.clone(),
                k.source.clone(),
                format!("case{i}/{}.cu", k.name),
            ));
        }
    }
    // A whole SSM head per `mamba_step` block in decode_rows, at the 2.7B's head (64 rows of 64
    // state columns: 4 threads a row, float4 groups interleaved over them).
    let mixer = config(json!({"hidden_size": 128, "n_mamba_heads": 4, "mamba_d_state": 64}));
    let mut m = lower_with_kv(&mixer, DType::BF16, DType::F32, DType::BF16);
    zamba2c_passes::pipeline::run_pipeline(&mut m, 1, None).expect("the passes run");
    let p = build_program(&m).expect("program");
    let rows = p.decode_rows.as_ref().expect("decode_rows");
    let steps: std::collections::BTreeSet<&str> = rows
        .launches
        .iter()
        .map(|l| l.kernel.as_str())
        .filter(|k| p.kernels[*k].family == "mamba_step")
        .collect();
    assert!(!steps.is_empty(), "decode_rows has no mamba_step");
    for name in steps {
        let k = &p.kernels[name];
        assert!(
            k.source.contains("(j / 4) * 16 + q * 4"),
            "{name} is not the whole-head block"
        );
        jobs.push((name.to_string(), k.source.clone(), format!("{name}.cu")));
    }
    if !nvrtc::available() {
        if std::env::var("ZAMBA2C_REQUIRE_NVRTC").as_deref() == Ok("1") {
            panic!("ZAMBA2C_REQUIRE_NVRTC=1 but NVRTC cannot be loaded");
        }
        eprintln!("note: NVRTC not found, skipping the compile part");
        return;
    }
    let ptxs = nvrtc::compile_many(&jobs, "sm_90").unwrap_or_else(|e| panic!("{e}"));
    for ((name, _, _), ptx) in jobs.iter().zip(&ptxs) {
        assert!(ptx.contains(&format!(".entry {name}(")), "{name}");
        assert!(ptx.contains("griddepcontrol.wait"), "{name}");
    }
}
