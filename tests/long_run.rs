//! Long runs: 10,000 decode steps on the CPU with a tiny model must not grow memory beyond the
//! KV cache (which grows by design), and the last step's logits must still match a fresh prompt
//! pass over the same 10,001 tokens (the recurrent state does not drift).
//!
//! The model: a tiny config (hidden 16, 1 Mamba + 1 hybrid layer, vocab 32, context 16384)
//! compiled by the CLI with `--dummy-weights`, loaded through the runtime API.

mod common;

use std::path::Path;
use std::time::Instant;

use zamba2c_runtime::cpu::state::StateRegion;
use zamba2c_runtime::cpu::CpuEngine;
use zamba2c_runtime::Engine;

const STEPS: usize = 10_000;
const VOCAB: usize = 32;

const CONFIG: &str = r#"{
  "model_type": "zamba2",
  "vocab_size": 32,
  "hidden_size": 16,
  "num_hidden_layers": 2,
  "layers_block_type": ["mamba", "hybrid"],
  "mamba_d_state": 8,
  "mamba_d_conv": 4,
  "mamba_expand": 2,
  "mamba_ngroups": 1,
  "n_mamba_heads": 4,
  "chunk_size": 64,
  "intermediate_size": 32,
  "num_attention_heads": 2,
  "num_mem_blocks": 1,
  "use_shared_attention_adapter": true,
  "adapter_rank": 4,
  "use_mem_rope": true,
  "max_position_embeddings": 16384,
  "tie_word_embeddings": true
}"#;

/// Resident set size of this process in bytes (from /proc/self/statm).
fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Bytes the KV caches have allocated (capacity, not length: what the allocator holds).
fn kv_capacity_bytes(e: &CpuEngine) -> usize {
    e.state
        .regions
        .iter()
        .map(|r| match r {
            StateRegion::Kv(kv) => kv.k.iter().chain(&kv.v).map(|v| v.capacity() * 4).sum(),
            _ => 0,
        })
        .sum()
}

/// Bytes the KV caches hold (length).
fn kv_len_bytes(e: &CpuEngine) -> usize {
    e.state
        .regions
        .iter()
        .map(|r| match r {
            StateRegion::Kv(kv) => kv.k.iter().chain(&kv.v).map(|v| v.len() * 4).sum(),
            _ => 0,
        })
        .sum()
}

/// A fixed pseudo-random token sequence.
fn tokens(n: usize) -> Vec<u32> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % VOCAB as u64) as u32
        })
        .collect()
}

#[test]
fn ten_thousand_decode_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("config.json"), CONFIG).unwrap();
    let plan_dir = tmp.path().join("plan");
    common::zamba2c_ok(&["compile", model.to_str().unwrap(), "-o", plan_dir.to_str().unwrap(), "--dummy-weights", "--seed", "7"]);
    let plan = zamba2c_ir::Plan::open(Path::new(&plan_dir)).unwrap();
    let c = plan.module.config.clone();
    assert!(c.max_position_embeddings > STEPS, "the plan's context must hold {STEPS}+1 tokens");
    let toks = tokens(STEPS + 1);

    let mut e = CpuEngine::new(&plan).unwrap();
    let start = Instant::now();
    let mut last = e.prefill(&toks[..1]).unwrap();
    // Warm-up: the allocator's pools, every op's scratch buffers.
    const WARM: usize = 200;
    for &t in &toks[1..=WARM] {
        last = e.decode_step(t).unwrap();
    }
    let rss0 = rss_bytes();
    let kv0 = kv_capacity_bytes(&e);
    let mut rss_mid = 0;
    for (i, &t) in toks[WARM + 1..].iter().enumerate() {
        last = e.decode_step(t).unwrap();
        assert!(last.iter().all(|v| v.is_finite()), "non-finite logits at step {}", WARM + 1 + i);
        if i == (STEPS - WARM) / 2 {
            rss_mid = rss_bytes();
        }
    }
    let decode_s = start.elapsed().as_secs_f64();
    assert_eq!(e.position(), STEPS + 1);
    let rss1 = rss_bytes();
    let kv1 = kv_capacity_bytes(&e);

    // By design the KV cache holds every token: 2 (K and V) × kv_heads × head_dim × 4 bytes per
    // token per hybrid layer.
    let hybrid = c.hybrid_layer_ids().len();
    let per_token = 2 * c.num_key_value_heads * c.attention_head_dim * 4 * hybrid;
    assert_eq!(kv_len_bytes(&e), per_token * (STEPS + 1), "KV cache size");
    // What may grow: the KV caches' capacity (Vec doubling, measured), plus the buffers freed
    // by their reallocations (at most as much again), plus 4 MB of allocator noise.
    let allowed = 2 * (kv1 - kv0) + (4 << 20);
    let grown = rss1.saturating_sub(rss0);
    eprintln!(
        "{STEPS} decode steps in {decode_s:.1} s; RSS {:.1} MB -> {:.1} MB (mid {:.1} MB): grew {:.2} MB, allowed {:.2} MB; KV cache {:.2} MB ({per_token} B/token)",
        rss0 as f64 / 1e6,
        rss1 as f64 / 1e6,
        rss_mid as f64 / 1e6,
        grown as f64 / 1e6,
        allowed as f64 / 1e6,
        kv_len_bytes(&e) as f64 / 1e6
    );
    assert!(grown <= allowed, "memory grew by {grown} bytes over {STEPS} decode steps, more than the KV cache explains ({allowed})");

    // A fresh prompt pass over the same tokens: the last row must match the decoded logits.
    let start = Instant::now();
    let mut fresh = CpuEngine::new(&plan).unwrap();
    let all = fresh.prefill(&toks).unwrap();
    let prompt_s = start.elapsed().as_secs_f64();
    let row = &all[STEPS * VOCAB..];
    let num = row.iter().zip(&last).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let den = row.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let rel = num / den;
    eprintln!("prompt pass over {} tokens in {prompt_s:.1} s; last-position rel err decode vs prompt {rel:.2e} (max |logit| {den:.3})", STEPS + 1);
    assert!(den > 0.0);
    assert!(rel <= 1e-4, "after {STEPS} decode steps the logits drifted from the prompt pass: rel err {rel:.3e}");
}
