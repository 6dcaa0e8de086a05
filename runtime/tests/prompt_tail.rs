//! The prompt table's row-wise tail (runtime/src/cuda/engine.rs `prompt_row_wise_tail`): the
//! launches a prompt chunk whose logits nobody reads skips, and that a prompt's last row can
//! run alone. Checked on the emitted programs (no GPU): the tail ends with `lm_head`, holds
//! the final norm, touches no state, and the launch before it is not row-wise, for f32, bf16
//! and f16 weights, f32 and bf16 activations, base and fused graphs.

mod common;

use common::config;
use serde_json::json;
use zamba2c_codegen::build_program;
use zamba2c_ir::kernel::Arg;
use zamba2c_ir::{lower_with_kv, DType};
use zamba2c_runtime::cuda::engine::{prompt_row_wise_tail, ROW_WISE_FAMILIES};

#[test]
fn the_prompt_tail_is_the_final_norm_and_lm_head_and_nothing_stateful() {
    let cases = [
        (json!({}), DType::F32, DType::F32),
        (
            json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2}),
            DType::BF16,
            DType::F32,
        ),
        (
            json!({"use_shared_attention_adapter": true, "hidden_size": 64, "n_mamba_heads": 4}),
            DType::BF16,
            DType::BF16,
        ),
        (json!({"use_mem_rope": true}), DType::F16, DType::F32),
    ];
    for (i, (extra, w, act)) in cases.into_iter().enumerate() {
        for level in [0, 1] {
            let tag = format!("case {i} ({w:?} weights, {act:?} activations) at -O{level}");
            let mut m = lower_with_kv(&config(extra.clone()), w, act, act);
            zamba2c_passes::pipeline::run_pipeline(&mut m, level, None).expect("the passes run");
            let p = build_program(&m).unwrap_or_else(|e| panic!("{tag}: {e}"));
            let gp = &p.prompt;
            let tail = prompt_row_wise_tail(&p);
            let n = gp.launches.len();
            assert!(tail < n && tail > 0, "{tag}: tail at {tail} of {n}");
            let family = |l: usize| p.kernels[&gp.launches[l].kernel].family.as_str();
            let fams: Vec<&str> = (tail..n).map(family).collect();
            // The logits' launch last, the final norm before it (fused into the projection's
            // norm at -O1 or a kernel of its own); only row-wise families.
            let logits = gp.outputs[0];
            assert_eq!(
                gp.node_values[gp.launches[n - 1].node],
                logits,
                "{tag}: {fams:?}"
            );
            assert!(
                fams.iter().all(|f| ROW_WISE_FAMILIES.contains(f)),
                "{tag}: {fams:?}"
            );
            assert!(fams.contains(&"rms_norm"), "{tag}: {fams:?}");
            for l in tail..n {
                assert!(
                    gp.launches[l].args.iter().all(|a| !matches!(
                        a,
                        Arg::State { .. } | Arg::Meta | Arg::Seq | Arg::Capacity
                    )),
                    "{tag}: launch {l} ({}) reads a state or the call's positions",
                    family(l)
                );
            }
            assert!(
                !ROW_WISE_FAMILIES.contains(&family(tail - 1)),
                "{tag}: the launch before the tail ({}) is row-wise: the tail stops early",
                family(tail - 1)
            );
        }
    }
}
