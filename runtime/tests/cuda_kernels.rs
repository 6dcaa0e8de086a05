//! GPU tests (feature `gpu-tests`; without a GPU they fail, never skip): every kernel family
//! against the CPU interpreter, node by node, on tiny modules with odd sizes (rope on/off,
//! GQA, ngroups > 1, adapters, f32 and bf16, attention head sizes 12, 64 and 160), over a
//! prompt and several decode steps, and on the fixture configs under $ZAMBA2C_FIXTURES
//! (default: tests/fixtures of the repository); decode replayed from a CUDA graph against eager
//! decode, bitwise.
#![cfg(feature = "gpu-tests")]

use std::path::PathBuf;

mod common;

use common::config;
use serde_json::json;
use zamba2c_codegen::build_program;
use zamba2c_ir::{lower, lower_with_kv, DType, Module, WeightStore, Zamba2Config};
use zamba2c_runtime::cpu::{CpuEngine, CpuWeights};
use zamba2c_runtime::cuda::{validate_engines, CudaEngine, CudaOptions};
use zamba2c_runtime::Engine;

const SEED: u64 = 7;

/// Runs `tokens` + `steps` decode steps on CPU and GPU and fails naming the first node that
/// differs; also checks chunked prefill and reset give the same logits.
fn check(name: &str, m: &Module, tokens: &[u32], steps: usize) {
    let ctx = tokens.len() + steps + 1;
    let mut cpu = CpuEngine::from_parts(m.clone(), CpuWeights::dummy(m, SEED));
    cpu.set_max_context(ctx);
    let store = WeightStore::dummy(SEED, m);
    let mut gpu = CudaEngine::from_program(
        m,
        &store,
        build_program(m).expect("program"),
        CudaOptions::new(ctx).prompt_all(),
    )
    .unwrap_or_else(|e| panic!("{name}: loading on the GPU: {e}"));
    let report = validate_engines(&mut cpu, &mut gpu, tokens, steps, None)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("{name}: {report}");
    assert!(report.passed(), "{name}: {report}");

    // The same prompt in chunks of 3 tokens (prompt graph continuing from cached state).
    let mut opts = CudaOptions::new(ctx);
    opts.prompt_chunk = 3;
    let mut chunked = CudaEngine::from_program(m, &store, build_program(m).expect("program"), opts)
        .expect("load");
    let a = chunked.prefill(tokens).expect("chunked prefill");
    gpu.reset();
    let b = gpu.prefill(tokens).expect("prefill after reset");
    let scale = b.iter().fold(0f32, |s, x| s.max(x.abs())).max(1e-6);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |s, (x, y)| s.max((x - y).abs()));
    let tol = if m.act_dtype == DType::F32 && m.kv_dtype == DType::F32 {
        1e-4
    } else if m.act_dtype == DType::F32 {
        // A bf16 KV cache: chunks see the same bf16 keys and values; only the order of the
        // f32 work differs, and a value near a rounding boundary may land one bf16 step off.
        1e-2
    } else {
        5e-2
    };
    assert!(
        diff / scale <= tol,
        "{name}: chunked prefill differs by {diff} (scale {scale})"
    );
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 11) % vocab) as u32).collect()
}

#[test]
fn kernels_match_cpu_on_tiny_modules() {
    let cases = [
        ("mha_norope_f32", json!({}), DType::F32),
        ("mha_norope_bf16", json!({}), DType::BF16),
        (
            "gqa_rope_ngroups2_f32",
            json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2}),
            DType::F32,
        ),
        (
            "gqa_rope_ngroups2_bf16",
            json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2}),
            DType::BF16,
        ),
        (
            "adapters_rope_f32",
            json!({"use_shared_attention_adapter": true, "use_mem_rope": true, "num_mem_blocks": 1}),
            DType::F32,
        ),
        (
            "gqa_rope_ngroups2_adapters_f16",
            json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2, "use_shared_attention_adapter": true}),
            DType::F16,
        ),
        (
            "wide_f32",
            json!({"hidden_size": 64, "n_mamba_heads": 4, "mamba_d_state": 40, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 136}),
            DType::F32,
        ),
        (
            "wide_bf16",
            json!({"hidden_size": 64, "n_mamba_heads": 4, "mamba_d_state": 40, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 136}),
            DType::BF16,
        ),
        // The 2.7B's head size (160) through the tensor-core prompt attention: 70 tokens are
        // two query tiles, the chunked run continues after a cached prefix.
        (
            "attn160_rope_f32",
            json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2, "num_key_value_heads": 2, "use_mem_rope": true}),
            DType::F32,
        ),
        (
            "attn160_gqa_rope_bf16",
            json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2, "num_key_value_heads": 1, "use_mem_rope": true}),
            DType::BF16,
        ),
    ];
    // bf16 KV caches under f32 activations (`compile --kv-dtype bf16`), RoPE and GQA on,
    // unfused and after the passes.
    let kv = config(json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2}));
    let base = lower_with_kv(&kv, DType::BF16, DType::F32, DType::BF16);
    let mut fused = base.clone();
    zamba2c_passes::pipeline::run_pipeline(&mut fused, 1, None).expect("the passes run");
    // The default plan's dtypes (bf16 weights and KV cache, f32 activations) at the 2.7B's head
    // size: the tensor-core prompt attention on a bf16 cache (cp.async tiles; the
    // register-staged kernel with ZAMBA2C_TUNE_ATTN_KERNEL=1), the library GEMMs on split inputs.
    let kv160 = config(
        json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2,
        "num_key_value_heads": 1, "use_mem_rope": true}),
    );
    let mut fused160 = lower_with_kv(&kv160, DType::BF16, DType::F32, DType::BF16);
    zamba2c_passes::pipeline::run_pipeline(&mut fused160, 1, None).expect("the passes run");
    // `compile --dtype f16`: f16 weights, f32 activations, a bf16 cache; every tensor-core GEMM
    // reads one f16 plane (round_f16, norms writing f16, mma f16, the library in f16).
    let mut f16_160 = lower_with_kv(&kv160, DType::F16, DType::F32, DType::BF16);
    zamba2c_passes::pipeline::run_pipeline(&mut f16_160, 1, None).expect("the passes run");
    // With an f16 cache (its default): the prompt attention on f16 tiles (cp.async, f16 mma, q
    // split into f16 parts), decode attention reading f16; and under bf16 weights.
    let mut f16_160_kv16 = lower_with_kv(&kv160, DType::F16, DType::F32, DType::F16);
    zamba2c_passes::pipeline::run_pipeline(&mut f16_160_kv16, 1, None).expect("the passes run");
    let mut kv16 = lower_with_kv(&kv, DType::BF16, DType::F32, DType::F16);
    zamba2c_passes::pipeline::run_pipeline(&mut kv16, 1, None).expect("the passes run");
    let adapters = config(
        json!({"use_shared_attention_adapter": true, "use_mem_rope": true,
        "hidden_size": 64, "intermediate_size": 128, "n_mamba_heads": 4, "adapter_rank": 8}),
    );
    let mut f16_adapters = lower_with_kv(&adapters, DType::F16, DType::F32, DType::BF16);
    zamba2c_passes::pipeline::run_pipeline(&mut f16_adapters, 1, None).expect("the passes run");
    // `compile --dtype bf16 --shared-dtype f16`: the shared blocks' GEMMs (with their adapters)
    // and each hybrid's `linear` read one f16 plane, the mixers' two bf16 planes, in one plan.
    let mut shared_f16 = lower_with_kv(&adapters, DType::BF16, DType::F32, DType::BF16);
    shared_f16.set_shared_projection_dtype(DType::F16);
    zamba2c_passes::pipeline::run_pipeline(&mut shared_f16, 1, None).expect("the passes run");
    let mut shared_f16_160 = lower_with_kv(&kv160, DType::BF16, DType::F32, DType::BF16);
    shared_f16_160.set_shared_projection_dtype(DType::F16);
    zamba2c_passes::pipeline::run_pipeline(&mut shared_f16_160, 1, None).expect("the passes run");
    // Mamba heads of 32 with 32 state columns after the passes (the chunked scan): the shapes
    // its tensor-core steps take (the default of bf16-weight plans: head_dim a multiple of 32,
    // d_state of 16), under f32 and bf16 activations; 70 tokens are a whole chunk and a partial
    // one.
    let ssd = config(json!({"hidden_size": 64, "n_mamba_heads": 4, "mamba_d_state": 32}));
    let mut ssd_f32 = lower_with_kv(&ssd, DType::BF16, DType::F32, DType::BF16);
    zamba2c_passes::pipeline::run_pipeline(&mut ssd_f32, 1, None).expect("the passes run");
    let mut ssd_bf16 = lower_with_kv(&ssd, DType::BF16, DType::BF16, DType::BF16);
    zamba2c_passes::pipeline::run_pipeline(&mut ssd_bf16, 1, None).expect("the passes run");
    // 16-bit SSM states (`compile --state-dtype`), rounded when stored: f16 on the scan's
    // shapes (mamba_step's float4 path: 8-byte loads and stores) and bf16 on 12 state columns
    // (its scalar path), both with an f16 cache.
    let mut state_f16 = lower_with_kv(&ssd, DType::F16, DType::F32, DType::F16);
    state_f16.set_ssm_state_dtype(DType::F16);
    zamba2c_passes::pipeline::run_pipeline(&mut state_f16, 1, None).expect("the passes run");
    let mut state_bf16 = lower_with_kv(&kv, DType::BF16, DType::F32, DType::F16);
    state_bf16.set_ssm_state_dtype(DType::BF16);
    zamba2c_passes::pipeline::run_pipeline(&mut state_bf16, 1, None).expect("the passes run");
    for (name, m) in [
        ("ssd_shape_f16_kv_f16_state_f16_fused", &state_f16),
        ("gqa_rope_kv_f16_state_bf16_fused", &state_bf16),
        ("ssd_shape_kv_bf16_fused", &ssd_f32),
        ("ssd_shape_bf16_fused", &ssd_bf16),
        ("gqa_rope_kv_bf16", &base),
        ("gqa_rope_kv_bf16_fused", &fused),
        ("attn160_gqa_rope_kv_bf16_fused", &fused160),
        ("attn160_gqa_rope_f16_kv_bf16_fused", &f16_160),
        ("attn160_gqa_rope_f16_kv_f16_fused", &f16_160_kv16),
        ("gqa_rope_kv_f16_fused", &kv16),
        ("adapters_rope_f16_kv_bf16_fused", &f16_adapters),
        ("adapters_rope_shared_f16_kv_bf16_fused", &shared_f16),
        ("attn160_gqa_rope_shared_f16_kv_bf16_fused", &shared_f16_160),
    ] {
        check(name, m, &tokens(70, 67), 4);
        check(&format!("{name}_short"), m, &tokens(1, 67), 2);
    }
    for (name, extra, dtype) in cases {
        let m = lower(&config(extra), dtype);
        // 70 prompt tokens: more than one GEMM tile of rows, odd.
        check(name, &m, &tokens(70, 67), 4);
        check(&format!("{name}_short"), &m, &tokens(1, 67), 2);
    }
}

/// The fixture model configs (layouts the fixtures cover), with seeded weights.
#[test]
fn kernels_match_cpu_on_fixture_configs() {
    let root = std::env::var_os("ZAMBA2C_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures"));
    let models = root.join("models");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&models)
        .unwrap_or_else(|e| panic!("{}: {e} (set ZAMBA2C_FIXTURES)", models.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no fixture models under {}",
        models.display()
    );
    for d in dirs {
        let c = Zamba2Config::from_file(&d.join("config.json")).expect("fixture config");
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (dtype, act, kv) in [
            (DType::F32, DType::F32, DType::F32),
            (DType::BF16, DType::BF16, DType::BF16),
            (DType::BF16, DType::F32, DType::F32),
            // `compile --kv-dtype bf16` on the default bf16 plan.
            (DType::BF16, DType::F32, DType::BF16),
        ] {
            let m = lower_with_kv(&c, dtype, act, kv);
            check(
                &format!("{name}_{dtype}_act_{act}_kv_{kv}"),
                &m,
                &tokens(13, c.vocab_size),
                3,
            );
        }
    }
}

/// Resets `gpu`, prefills `prompt` and decodes `steps`, returning each step's logits.
fn decode_run(gpu: &mut CudaEngine, prompt: &[u32], steps: &[u32]) -> Vec<Vec<f32>> {
    gpu.reset();
    gpu.prefill(prompt).expect("prefill");
    steps
        .iter()
        .map(|&t| gpu.decode_step(t).expect("decode step"))
        .collect()
}

/// Fails unless `a` and `b` are the same bits, naming the first step and logit that differ.
fn assert_bitwise(name: &str, what: &str, a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_eq!(a.len(), b.len(), "{name}: {what}: step counts");
    for (s, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.len(), y.len(), "{name}: {what}: step {s}: logit counts");
        if let Some(i) = (0..x.len()).find(|&i| x[i].to_bits() != y[i].to_bits()) {
            panic!(
                "{name}: {what}: step {s}, logit {i}: {} vs {} (not bitwise equal)",
                x[i], y[i]
            );
        }
    }
}

/// Decode logits replayed from the captured CUDA graph are bitwise equal to eager launches
/// (same kernels, same order, same arguments), over 12 steps, also after a reset (the graph is
/// kept, not captured again).
#[test]
fn decode_cuda_graph_matches_eager_bitwise() {
    let cases = [
        (
            "gqa_rope_ngroups2_bf16",
            json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2}),
            DType::BF16,
        ),
        ("mha_norope_f32", json!({}), DType::F32),
    ];
    for (name, extra, dtype) in cases {
        let m = lower(&config(extra), dtype);
        let prompt = tokens(13, 67);
        let steps: Vec<u32> = (0..12).map(|i| ((i * 53 + 5) % 67) as u32).collect();
        let n = steps.len() as u64;
        let store = WeightStore::dummy(SEED, &m);
        let mut opts = CudaOptions::new(prompt.len() + steps.len() + 1);
        opts.cuda_graph = false;
        let mut gpu =
            CudaEngine::from_program(&m, &store, build_program(&m).expect("program"), opts)
                .expect("load");
        assert!(!gpu.cuda_graph_enabled(), "{name}: cuda_graph = false");

        let eager = decode_run(&mut gpu, &prompt, &steps);
        let eager2 = decode_run(&mut gpu, &prompt, &steps);
        assert_bitwise(
            name,
            "eager vs eager (kernels not deterministic?)",
            &eager,
            &eager2,
        );
        assert_eq!(gpu.cuda_graph_captures(), 0, "{name}: captured while off");

        gpu.set_cuda_graph(true);
        let graphed = decode_run(&mut gpu, &prompt, &steps);
        assert_eq!(gpu.cuda_graph_failure(), None, "{name}: capture failed");
        assert!(gpu.cuda_graph_enabled(), "{name}: graphs turned off");
        assert_eq!(gpu.cuda_graph_captures(), 1, "{name}: one capture");
        // Step 0 is the eager warm-up; step 1 is captured and launched; the rest replay.
        assert_eq!(gpu.cuda_graph_replays(), n - 1, "{name}: replays");
        assert_bitwise(name, "graph vs eager", &eager, &graphed);

        let again = decode_run(&mut gpu, &prompt, &steps);
        assert_eq!(
            gpu.cuda_graph_captures(),
            1,
            "{name}: captured again after reset"
        );
        assert_eq!(
            gpu.cuda_graph_replays(),
            2 * n - 1,
            "{name}: replays after reset"
        );
        assert_bitwise(name, "graph after reset vs eager", &eager, &again);

        // Back to eager on the same engine: the same logits again.
        gpu.set_cuda_graph(false);
        let off = decode_run(&mut gpu, &prompt, &steps);
        assert_eq!(
            gpu.cuda_graph_replays(),
            2 * n - 1,
            "{name}: replayed while off"
        );
        assert_bitwise(name, "eager after graphs vs eager", &eager, &off);
    }
}

/// `CudaOptions::new` turns graphs on unless ZAMBA2C_NO_CUDA_GRAPH says otherwise, and the
/// default engine replays from its third decode step on.
#[test]
fn decode_cuda_graph_is_the_default() {
    let m = lower(&config(json!({})), DType::BF16);
    let store = WeightStore::dummy(SEED, &m);
    let mut gpu = CudaEngine::from_program(
        &m,
        &store,
        build_program(&m).expect("program"),
        CudaOptions::new(8),
    )
    .expect("load");
    let env_off = zamba2c_runtime::cuda::graph::disabled_by_env();
    assert_eq!(gpu.cuda_graph_enabled(), !env_off);
    gpu.prefill(&tokens(2, 67)).expect("prefill");
    for t in 0..4 {
        gpu.decode_step(t).expect("decode step");
    }
    let want = if env_off { 0 } else { 3 };
    assert_eq!(
        gpu.cuda_graph_replays(),
        want,
        "{:?}",
        gpu.cuda_graph_failure()
    );
}
