//! `compile --batch-invariant` (ir `Module::batch_invariant`, docs/KERNELS.md "Library GEMMs"):
//! the plan runs every decode step on `decode_rows` (`plan_rows_mma_min` = 1), whose library
//! GEMMs the runtime keeps on one algorithm at every row count; its kernels and launch tables
//! are the default plan's. Without the flag the program is exactly what it was.

mod common;
use common::config;

use serde_json::json;
use zamba2c_codegen::build_program;
use zamba2c_ir::kernel::{plan_rows_mma_min, GraphId};
use zamba2c_ir::serial::ModuleFile;
use zamba2c_ir::{lower_with_kv, DType, Module};

/// The 8-aligned tiny config with adapters, fused, with `weights`, f32 activations and a bf16
/// cache.
fn module(weights: DType, invariant: bool) -> Module {
    let c = config(json!({
        "hidden_size": 64, "intermediate_size": 128, "n_mamba_heads": 4,
        "use_shared_attention_adapter": true, "use_mem_rope": true, "adapter_rank": 8
    }));
    let mut m = lower_with_kv(&c, weights, DType::F32, DType::BF16);
    m.batch_invariant = invariant;
    zamba2c_passes::pipeline::run_pipeline(&mut m, 1, None).expect("the passes run");
    m
}

#[test]
fn a_batch_invariant_plan_runs_every_step_on_the_default_tables() {
    for weights in [DType::BF16, DType::F16] {
        let m = module(weights, true);
        let p = build_program(&m).expect("program");
        assert_eq!(plan_rows_mma_min(&m), Some(1), "{weights}");
        let default = module(weights, false);
        assert_eq!(plan_rows_mma_min(&default), None);
        let d = build_program(&default).expect("program");
        // The flag is the runtime's (every step on decode_rows, its library GEMMs on one
        // algorithm at every row count): the kernels and launches are the default plan's.
        for id in [GraphId::Prompt, GraphId::Decode, GraphId::DecodeRows] {
            let (a, b) = (p.table(id).expect("table"), d.table(id).expect("table"));
            let launches = |t: &zamba2c_ir::kernel::GraphProgram| {
                t.launches
                    .iter()
                    .map(|l| (l.kernel.clone(), l.library.is_some()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(launches(a), launches(b), "{weights} {id:?}");
        }
        let rows = p.decode_rows.as_ref().expect("decode_rows");
        assert!(
            rows.launches.iter().any(|l| l.library.is_some()),
            "{weights}: decode_rows has library GEMMs to fix"
        );
        assert!(
            !rows
                .launches
                .iter()
                .any(|l| p.kernels[&l.kernel].family == "linear_rows"),
            "{weights}: linear_rows only with ZAMBA2C_TUNE_ROWS_GEMM=3"
        );
    }
}

#[test]
fn the_flag_round_trips_through_module_json_and_is_absent_when_off() {
    let on = module(DType::BF16, true);
    let text = on.to_json();
    assert!(text.contains("\"batch_invariant\": true"));
    let back = serde_json::from_str::<ModuleFile>(&text)
        .expect("module.json")
        .to_module()
        .expect("module");
    assert!(back.batch_invariant);
    let off = module(DType::BF16, false).to_json();
    assert!(
        !off.contains("batch_invariant"),
        "default plans are unchanged"
    );
    let back = serde_json::from_str::<ModuleFile>(&off)
        .expect("module.json")
        .to_module()
        .expect("module");
    assert!(!back.batch_invariant);
}
