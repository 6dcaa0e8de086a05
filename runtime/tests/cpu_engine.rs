//! End-to-end tests of the CPU interpreter on lowered tiny models with dummy weights: prompt
//! vs prompt + decode, chunked prompts, batching, input checks, and loading from a plan.

use std::path::Path;

use zamba2c_ir::{lower, DType, Module, Op, Phase, Zamba2Config};
use zamba2c_runtime::cpu::{CpuEngine, CpuWeights};
use zamba2c_runtime::{Engine, RuntimeError};

/// A tiny hybrid config: GQA, two groups, RoPE, attention adapters, two shared blocks.
fn config(rope: bool, adapters: bool) -> Zamba2Config {
    let v = serde_json::json!({
        "vocab_size": 50,
        "hidden_size": 16,
        "num_hidden_layers": 5,
        "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid", "hybrid"],
        "mamba_d_state": 6,
        "mamba_d_conv": 3,
        "mamba_expand": 2,
        "mamba_ngroups": 2,
        "n_mamba_heads": 4,
        "intermediate_size": 24,
        "num_attention_heads": 4,
        "num_key_value_heads": if adapters { 4 } else { 2 },
        "num_mem_blocks": 2,
        "use_shared_attention_adapter": adapters,
        "adapter_rank": 3,
        "use_mem_rope": rope,
        "rope_theta": 1000.0,
        "max_position_embeddings": 64,
    });
    Zamba2Config::from_value(Path::new("config.json"), &v).expect("valid tiny config")
}

fn engine(rope: bool, adapters: bool) -> CpuEngine {
    let module = lower(&config(rope, adapters), DType::F32);
    let weights = CpuWeights::dummy(&module, 42);
    CpuEngine::from_parts(module, weights)
}

/// Removes the prompt graph's dt clamp, so that prompt and decode have the same meaning.
fn without_prompt_clamp(mut module: Module) -> Module {
    let g = &mut module.prompt.g;
    let ids: Vec<_> = g.node_indices().collect();
    for n in ids {
        if let Op::SsmScan { dt_min, .. } = &mut g[n].op {
            *dt_min = None;
        }
    }
    module
}

const PROMPT: [u32; 9] = [1, 7, 3, 49, 0, 22, 22, 5, 13];

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |d, (x, y)| d.max((x - y).abs())) / m
}

#[test]
fn prefill_equals_prefill_then_decode_without_clamp() {
    for (rope, adapters) in [(false, false), (true, false), (true, true)] {
        let e = engine(rope, adapters);
        let module = without_prompt_clamp(e.module.clone());
        let mut e = CpuEngine::from_parts(module, e.weights.clone());
        let v = e.vocab_size();
        let full = e.prefill(&PROMPT).unwrap();
        assert_eq!(full.len(), PROMPT.len() * v);
        assert!(full.iter().all(|x| x.is_finite()));
        assert_eq!(e.position(), PROMPT.len());
        for k in [1, 4] {
            e.reset();
            assert_eq!(e.position(), 0);
            let mut got = e.prefill(&PROMPT[..k]).unwrap();
            for &tok in &PROMPT[k..] {
                got.extend(e.decode_step(tok).unwrap());
            }
            assert_eq!(e.position(), PROMPT.len());
            let r = max_rel(&got, &full);
            assert!(r < 1e-5, "rope={rope} adapters={adapters} K={k}: rel {r}");
        }
    }
}

#[test]
fn chunked_prompt_equals_one_prompt_with_clamp() {
    let mut e = engine(true, true);
    let full = e.prefill(&PROMPT).unwrap();
    e.reset();
    let mut got = e.prefill(&PROMPT[..2]).unwrap();
    got.extend(e.prefill(&PROMPT[2..6]).unwrap());
    got.extend(e.prefill(&PROMPT[6..]).unwrap());
    let r = max_rel(&got, &full);
    assert!(r < 1e-5, "rel {r}");
    // and decode after a prompt differs from the prompt path only by the dt clamp
    e.reset();
    let mut dec = e.prefill(&PROMPT[..3]).unwrap();
    for &tok in &PROMPT[3..] {
        dec.extend(e.decode_step(tok).unwrap());
    }
    let r = max_rel(&dec, &full);
    assert!(r < 5e-2, "rel {r}");
}

#[test]
fn reset_repeats_results() {
    let mut e = engine(true, false);
    let a = e.prefill(&PROMPT[..4]).unwrap();
    let a2 = e.decode_step(9).unwrap();
    e.reset();
    assert_eq!(e.prefill(&PROMPT[..4]).unwrap(), a);
    assert_eq!(e.decode_step(9).unwrap(), a2);
}

#[test]
fn batch_rows_are_independent() {
    let mut e = engine(true, true);
    let rows = vec![PROMPT[..5].to_vec(), PROMPT[4..].to_vec()];
    let both = e.run_phase(Phase::Prompt, &rows, &mut |_, _| {}).unwrap();
    let v = e.vocab_size();
    assert_eq!(both.shape, vec![2, 5, v]);
    let step = e
        .run_phase(Phase::Decode, &[vec![3], vec![8]], &mut |_, _| {})
        .unwrap();
    assert_eq!(step.shape, vec![2, 1, v]);
    for (i, row) in rows.iter().enumerate() {
        let mut one = engine(true, true);
        let p = one.prefill(row).unwrap();
        assert_eq!(p, both.data[i * 5 * v..(i + 1) * 5 * v].to_vec(), "row {i}");
        let d = one.decode_step([3, 8][i]).unwrap();
        assert_eq!(d, step.data[i * v..(i + 1) * v].to_vec(), "row {i} decode");
    }
    // a batch of another size is refused mid-sequence
    let err = e.run_phase(Phase::Decode, &[vec![3]], &mut |_, _| {});
    assert!(matches!(err, Err(RuntimeError::Input(_))));
}

#[test]
fn observer_sees_every_node_once() {
    let mut e = engine(false, false);
    let n_prompt = e.module.prompt.len();
    let order = e.module.prompt.topo_order();
    let mut seen = Vec::new();
    let out = e
        .run_phase(Phase::Prompt, &[PROMPT.to_vec()], &mut |n, t| {
            seen.push((n, t.shape.clone()))
        })
        .unwrap();
    assert_eq!(seen.len(), n_prompt);
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), order);
    let last = seen.last().unwrap();
    assert_eq!(last.1, out.shape);
    assert_eq!(seen[0].1, vec![1, PROMPT.len()]); // the token ids
}

#[test]
fn bad_inputs_are_refused_before_any_state_changes() {
    let mut e = engine(false, false);
    let err = e.prefill(&[1, 50, 2]).unwrap_err().to_string();
    assert!(
        err.contains("token id 50") && err.contains("50 tokens"),
        "{err}"
    );
    assert_eq!(e.position(), 0);
    assert!(e.prefill(&[]).is_err());
    let err = e
        .run_phase(Phase::Decode, &[vec![1, 2]], &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("one token"), "{err}");
    let err = e
        .run_phase(Phase::Prompt, &[vec![1, 2], vec![3]], &mut |_, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("equally long"), "{err}");
    // context limit: max_position_embeddings unless set
    e.prefill(&[1; 60]).unwrap();
    let err = e.prefill(&[1; 5]).unwrap_err().to_string();
    assert!(err.contains("maximum context of 64"), "{err}");
    assert_eq!(e.position(), 60);
    e.set_max_context(61);
    e.decode_step(4).unwrap();
    assert!(e.decode_step(4).is_err());
    assert_eq!(e.position(), 61);
}

#[test]
fn engine_from_a_dummy_plan() {
    let module = lower(&config(true, false), DType::BF16);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("plan");
    let mut w = zamba2c_ir::PlanWriter::create(&target).unwrap();
    let json = module.to_json();
    w.write("module.json", json.as_bytes()).unwrap();
    w.finish(zamba2c_ir::PlanInfo {
        created_by: "test".into(),
        dtype: DType::BF16,
        weights: zamba2c_ir::WeightsSource::Dummy { seed: 42 },
        tokenizer: None,
        opt_level: 0,
        passes: vec![],
        arch: None,
    })
    .unwrap();
    let plan = zamba2c_ir::Plan::open(&target).unwrap();
    let mut e = CpuEngine::new(&plan).unwrap();
    // the plan's bf16 weights are what the engine sees, the same as CpuWeights::dummy
    assert_eq!(e.weights, CpuWeights::dummy(&plan.module, 42));
    let emb = &e.weights.tensors["model.embed_tokens.weight"];
    assert!(emb
        .data
        .iter()
        .all(|v| half::bf16::from_f32(*v).to_f32() == *v));
    let logits = e.prefill(&PROMPT).unwrap();
    assert_eq!(logits.len(), PROMPT.len() * 50);
    assert!(logits.iter().all(|v| v.is_finite()));
}

#[test]
fn large_vocab_decode_is_fast() {
    // a demo-sized model: H = 64, 32000-row lm_head
    let v = serde_json::json!({
        "vocab_size": 32000, "hidden_size": 64, "num_hidden_layers": 4,
        "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"],
        "mamba_d_state": 16, "n_mamba_heads": 8, "num_attention_heads": 4,
        "num_mem_blocks": 2, "adapter_rank": 8, "intermediate_size": 256,
    });
    let c = Zamba2Config::from_value(Path::new("config.json"), &v).unwrap();
    let module = lower(&c, DType::F32);
    let weights = CpuWeights::dummy(&module, 1);
    let mut e = CpuEngine::from_parts(module, weights);
    e.prefill(&[1, 2, 3, 4]).unwrap();
    let t0 = std::time::Instant::now();
    for i in 0..5 {
        e.decode_step(100 + i).unwrap();
    }
    let per_token = t0.elapsed() / 5;
    eprintln!("decode: {per_token:?} per token");
    assert!(per_token.as_millis() < 500, "{per_token:?} per token");
}
