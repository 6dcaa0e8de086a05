//! Shared test helpers: tiny Zamba2 configs, and "interpret before == interpret after".

#![allow(dead_code)]

use std::path::Path;

use serde_json::{json, Value};
use zamba2c_ir::{lower, DType, Module, Zamba2Config};
use zamba2c_passes::PASSES;
use zamba2c_runtime::cpu::{CpuEngine, CpuWeights};
use zamba2c_runtime::Engine;

/// Relative tolerance of every equivalence check: max |after - before| / max |before|.
pub const TOL: f32 = 1e-5;

fn tiny(extra: Value) -> Zamba2Config {
    let mut v = json!({
        "vocab_size": 64, "hidden_size": 32, "mamba_d_state": 8, "mamba_d_conv": 4,
        "mamba_expand": 2, "n_mamba_heads": 8, "intermediate_size": 48,
        "num_attention_heads": 4, "adapter_rank": 4, "chunk_size": 4,
        "max_position_embeddings": 64,
    });
    for (k, x) in extra.as_object().expect("object") {
        v[k] = x.clone();
    }
    Zamba2Config::from_value(Path::new("tiny/config.json"), &v).expect("tiny config parses")
}

/// The tiny configurations every pass is checked on, with a name each.
pub fn configs() -> Vec<(&'static str, Zamba2Config)> {
    vec![
        (
            // Two blocks reused A,B,A (the embedding half is shared by block A), RoPE, adapters.
            "two_blocks_rope_adapters",
            tiny(json!({
                "num_hidden_layers": 6, "num_mem_blocks": 2,
                "layers_block_type": ["m", "g", "m", "g", "m", "g"],
                "use_mem_rope": true, "use_shared_attention_adapter": true,
            })),
        ),
        (
            // One block used three times, hybrid first and consecutive; no RoPE, no adapters.
            "one_block_plain",
            tiny(json!({
                "num_hidden_layers": 4, "num_mem_blocks": 1,
                "layers_block_type": ["g", "m", "g", "g"],
            })),
        ),
        (
            // ngroups 2, GQA, untied head, adapters, two blocks A,B,A,B.
            "ngroups_gqa_untied",
            tiny(json!({
                "num_hidden_layers": 6, "num_mem_blocks": 2, "mamba_ngroups": 2,
                "num_key_value_heads": 2, "tie_word_embeddings": false,
                "layers_block_type": ["m", "g", "g", "m", "g", "g"],
                "use_shared_attention_adapter": true,
            })),
        ),
        (
            // The 2.7B shape in miniature: two blocks, no RoPE, no attention adapters.
            "like_2_7b",
            tiny(json!({
                "num_hidden_layers": 7, "num_mem_blocks": 2,
                "layers_block_type": ["m", "g", "m", "g", "m", "g", "m"],
            })),
        ),
    ]
}

/// `config` lowered in f32 with the first `passes` passes of the pipeline applied.
pub fn compiled(config: &Zamba2Config, passes: usize) -> Module {
    let mut m = lower(config, DType::F32);
    for p in &PASSES[..passes] {
        (p.run)(&mut m);
        zamba2c_ir::verify_module(&m).unwrap_or_else(|e| panic!("after {}: {e}", p.name));
    }
    m
}

fn rel_err(after: &[f32], before: &[f32]) -> f32 {
    assert_eq!(after.len(), before.len(), "logit counts differ");
    let scale = before.iter().fold(0f32, |a, &b| a.max(b.abs()));
    let diff = after
        .iter()
        .zip(before)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    diff / scale
}

/// The logits of a fixed session: prompt from empty, two decode steps, a prompt from cached
/// state, one more decode step.
fn session(m: &Module) -> Vec<(String, Vec<f32>)> {
    let weights = CpuWeights::dummy(m, 7);
    let mut e = CpuEngine::from_parts(m.clone(), weights);
    let mut out = Vec::new();
    let mut run = |what: &str, r: Result<Vec<f32>, zamba2c_runtime::RuntimeError>| {
        out.push((
            what.to_string(),
            r.unwrap_or_else(|e| panic!("{what}: {e}")),
        ));
    };
    run("prompt from empty", e.prefill(&[1, 5, 9, 33, 2]));
    run("decode 1", e.decode_step(17));
    run("decode 2", e.decode_step(40));
    run("prompt from cache", e.prefill(&[3, 63, 8]));
    run("decode 3", e.decode_step(11));
    out
}

/// Checks that the first `passes` passes keep every configuration's logits, and returns the
/// compiled modules (for checking that the pass did something).
pub fn check_passes_keep_logits(passes: usize) -> Vec<(&'static str, Module)> {
    let mut mods = Vec::new();
    for (name, c) in configs() {
        let before = session(&lower(&c, DType::F32));
        let m = compiled(&c, passes);
        let after = session(&m);
        for ((what, a), (_, b)) in after.iter().zip(&before) {
            let err = rel_err(a, b);
            assert!(
                err <= TOL,
                "{name}, after {}: {what}: relative error {err:e}",
                PASSES[passes - 1].name
            );
        }
        mods.push((name, m));
    }
    mods
}

/// Number of nodes of `kind` in both graphs.
pub fn count(m: &Module, kind: zamba2c_ir::OpKind) -> usize {
    [&m.prompt, &m.decode]
        .iter()
        .map(|g| g.g.node_weights().filter(|n| n.op.kind() == kind).count())
        .sum()
}

/// Index of the pass `name` in the pipeline, plus one (the number of passes up to it).
pub fn upto(name: &str) -> usize {
    PASSES
        .iter()
        .position(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pass {name}"))
        + 1
}
