//! The cost model against the decode floor of GPU.md for Zamba2-2.7B (bf16): ~7.855 GB per
//! decoded token as lowered, ~7.305 GB once the shared block's embedding half is computed once
//! per block instead of once per invocation.

use std::path::Path;

use zamba2c_ir::{lower, DType, Module, Zamba2Config};
use zamba2c_passes::{module_cost, run_pipeline};

fn zamba2_2_7b(opt_level: u8) -> Module {
    let v = serde_json::json!({"n_mamba_heads": 80, "num_mem_blocks": 2});
    let c = Zamba2Config::from_value(Path::new("2.7b/config.json"), &v).expect("config");
    let mut m = lower(&c, DType::BF16);
    run_pipeline(&mut m, opt_level, None).expect("pipeline");
    m
}

fn assert_within(got: f64, want: f64, rel: f64) {
    assert!(
        ((got - want) / want).abs() <= rel,
        "got {got:.4e}, want {want:.4e} within {rel}"
    );
}

#[test]
fn decode_bytes_2_7b_unoptimised() {
    let c = module_cost(&zamba2_2_7b(0));
    assert_within(c.decode_bytes_per_token, 7.855e9, 0.02);
    // ≈7.7 GFLOP per token (spec §8).
    assert_within(c.prefill_flops_per_token, 7.7e9, 0.05);
}

#[test]
fn decode_bytes_2_7b_default_passes() {
    let m = zamba2_2_7b(1);
    let c = module_cost(&m);
    assert_within(c.decode_bytes_per_token, 7.305e9, 0.02);
    let saved = module_cost(&zamba2_2_7b(0)).decode_bytes_per_token - c.decode_bytes_per_token;
    // 7 of 9 embedding halves of q/k/v (3 × 5120 × 2560 bf16 each) are no longer read.
    assert_within(saved, 7.0 * 3.0 * 5120.0 * 2560.0 * 2.0, 0.01);
    let text = zamba2c_passes::cost::render_text(&m);
    assert!(text.contains("embed_half_proj") && text.contains("decode floor"));
}
