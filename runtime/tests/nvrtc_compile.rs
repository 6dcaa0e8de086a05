//! Every kernel of tiny modules (rope on/off, GQA, ngroups > 1, f32 and bf16, base and fused
//! graphs) renders and compiles with NVRTC for sm_90 into PTX the 13.0 driver accepts.
//! Needs `libnvrtc.so.13` on the loader path; with ZAMBA2C_REQUIRE_NVRTC=1 a missing NVRTC is
//! a failure, otherwise the NVRTC part is skipped with a note.

mod common;

use common::config;
use serde_json::json;
use zamba2c_codegen::{build_program, Kernel};
use zamba2c_ir::{lower, lower_mixed, lower_with_kv, DType, Module};
use zamba2c_runtime::cuda::nvrtc;

/// The tiny modules: base graphs and the same after the fusion passes.
fn modules() -> Vec<(String, Module)> {
    let cases = [
        ("mha_norope_f32", json!({}), DType::F32),
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
            "gqa_rope_ngroups2_f16",
            json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2, "use_shared_attention_adapter": true}),
            DType::F16,
        ),
        (
            "wide_bf16",
            json!({"hidden_size": 64, "n_mamba_heads": 4, "mamba_d_state": 40, "num_attention_heads": 2, "num_key_value_heads": 1}),
            DType::BF16,
        ),
    ];
    // Head sizes 64 and 160 (the 2.7B's) take the tensor-core prompt attention, whose hi/lo
    // splits depend on the activation dtype.
    let attn64 = json!({"hidden_size": 64, "n_mamba_heads": 4, "num_attention_heads": 2,
        "num_key_value_heads": 1, "use_mem_rope": true});
    let attn160 = json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2,
        "num_key_value_heads": 2, "use_mem_rope": true});
    let cases = cases.into_iter().chain([
        ("attn64_gqa_rope_f32", attn64.clone(), DType::F32),
        ("attn64_gqa_rope_f16", attn64, DType::F16),
        ("attn160_rope_bf16", attn160.clone(), DType::BF16),
    ]);
    let mut out = Vec::new();
    let mixed = [
        (
            "adapters_rope_bf16_act_f32",
            json!({"use_shared_attention_adapter": true, "use_mem_rope": true, "num_mem_blocks": 1}),
        ),
        ("attn160_rope_bf16_act_f32", attn160),
    ];
    // A bf16 KV cache under f32 activations (`compile --kv-dtype bf16`), GQA and RoPE on.
    let kv_bf16 = [(
        "gqa_rope_bf16_act_f32_kv_bf16",
        json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2}),
    )];
    let cases = cases
        .into_iter()
        .map(|(n, e, d)| (n, e, d, d, d))
        .chain(
            mixed
                .into_iter()
                .map(|(n, e)| (n, e, DType::BF16, DType::F32, DType::F32)),
        )
        .chain(
            kv_bf16
                .into_iter()
                .map(|(n, e)| (n, e, DType::BF16, DType::F32, DType::BF16)),
        )
        .chain(
            // f16 weights under f32 activations (`compile --dtype f16`): every GEMM reads one
            // f16 plane (round_f16, norms writing f16, mma f16), adapters and head size 160.
            [
                (
                    "adapters_rope_f16_act_f32_kv_bf16",
                    json!({"use_shared_attention_adapter": true, "use_mem_rope": true,
                        "num_mem_blocks": 1, "hidden_size": 64, "intermediate_size": 128,
                        "n_mamba_heads": 4, "adapter_rank": 8}),
                ),
                (
                    "attn160_rope_f16_act_f32_kv_bf16",
                    json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2,
                        "num_key_value_heads": 2, "use_mem_rope": true}),
                ),
            ]
            .into_iter()
            .map(|(n, e)| (n, e, DType::F16, DType::F32, DType::BF16)),
        )
        .chain(
            // An f16 cache (`compile --kv-dtype f16`, the f16 plan's default): the prompt
            // attention on f16 tiles, under f16 and bf16 weights.
            [
                (
                    "attn160_rope_f16_act_f32_kv_f16",
                    json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2,
                        "num_key_value_heads": 2, "use_mem_rope": true}),
                    DType::F16,
                ),
                (
                    "gqa_rope_bf16_act_f32_kv_f16",
                    json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2}),
                    DType::BF16,
                ),
            ]
            .into_iter()
            .map(|(n, e, w)| (n, e, w, DType::F32, DType::F16)),
        );
    // 16-bit SSM states (`compile --state-dtype`): mamba_step's float4 path (32 state
    // columns) and scalar path (12), the scan and the chunked scan's pass.
    let states = [
        (
            "ssd_shape_f16_state_f16",
            json!({"hidden_size": 64, "n_mamba_heads": 4, "mamba_d_state": 32}),
            DType::F16,
        ),
        (
            "gqa_rope_state_bf16",
            json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2}),
            DType::BF16,
        ),
    ];
    let cases = cases
        .map(|(n, e, w, a, k)| (n, e, w, a, k, DType::F32))
        .chain(
            states
                .into_iter()
                .map(|(n, e, s)| (n, e, s, DType::F32, s, s)),
        );
    for (name, extra, dtype, act, kv, state) in cases {
        let mut m = lower_with_kv(&config(extra), dtype, act, kv);
        m.set_ssm_state_dtype(state);
        let mut f = m.clone();
        zamba2c_passes::pipeline::run_pipeline(&mut f, 1, None).expect("the passes run");
        let fused = f
            .prompt
            .g
            .node_weights()
            .filter(|n| n.op.is_fused())
            .count();
        assert!(fused > 0, "{name}: the passes fused nothing");
        out.push((name.to_string(), m));
        out.push((format!("{name}_fused"), f));
    }
    // `compile --dtype bf16 --shared-dtype f16`: the shared blocks' GEMMs on one f16 plane,
    // the mixers' on two bf16 planes, in one plan (with adapters, and at head size 160).
    for (name, extra) in [
        (
            "adapters_rope_shared_f16_act_f32_kv_bf16",
            json!({"use_shared_attention_adapter": true, "use_mem_rope": true,
                "hidden_size": 64, "intermediate_size": 128, "n_mamba_heads": 4,
                "adapter_rank": 8}),
        ),
        (
            "attn160_rope_shared_f16_act_f32_kv_bf16",
            json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2,
                "num_key_value_heads": 2, "use_mem_rope": true}),
        ),
    ] {
        let mut m = lower_with_kv(&config(extra), DType::BF16, DType::F32, DType::BF16);
        assert!(
            m.set_shared_projection_dtype(DType::F16) > 0,
            "{name}: no shared weights"
        );
        let mut f = m.clone();
        zamba2c_passes::pipeline::run_pipeline(&mut f, 1, None).expect("the passes run");
        out.push((name.to_string(), m));
        out.push((format!("{name}_fused"), f));
    }
    out
}

#[test]
fn emit_is_deterministic_and_named() {
    for (name, m) in modules() {
        let a = build_program(&m).unwrap_or_else(|e| panic!("{name}: {e}"));
        let b = build_program(&m).expect("emit twice");
        assert_eq!(a, b, "{name}: emit is not deterministic");
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap(),
            "{name}: program.json is not deterministic"
        );
        assert!(!a.kernels.is_empty());
        for k in a.kernels.values() {
            assert!(k.name.starts_with("z2c_"), "{}", k.name);
            assert!(k.source.contains("void __launch_bounds__"), "{}", k.name);
            assert!(k.source.contains(&k.name));
            assert!(
                !k.source.contains("{{") && !k.source.contains("{%"),
                "{}: unrendered template",
                k.name
            );
        }
        // program.json round-trips to the same launch table (sources travel as .cu files).
        let mut back: zamba2c_codegen::Program =
            serde_json::from_str(&serde_json::to_string(&a).unwrap())
                .expect("program.json reads back");
        for k in back.kernels.values_mut() {
            k.source = a.kernels[&k.name].source.clone();
        }
        back.prompt.nodes = a.prompt.nodes.clone();
        back.decode.nodes = a.decode.nodes.clone();
        if let (Some(b), Some(r)) = (&mut back.decode_rows, &a.decode_rows) {
            b.nodes = r.nodes.clone();
        }
        assert_eq!(back, a, "{name}: program.json does not round-trip");
        let p = build_program(&m).expect("program");
        for (_, g) in p.tables() {
            for l in &g.launches {
                let k = &p.kernels[&l.kernel];
                assert_eq!(
                    k.params.len(),
                    l.args.len(),
                    "{}: params and args differ",
                    k.name
                );
            }
        }
    }
}

#[test]
fn every_kernel_compiles_with_nvrtc_for_sm_90() {
    if !nvrtc::available() {
        if std::env::var("ZAMBA2C_REQUIRE_NVRTC").as_deref() == Ok("1") {
            panic!(
                "ZAMBA2C_REQUIRE_NVRTC=1 but NVRTC cannot be loaded (LD_LIBRARY_PATH={:?})",
                std::env::var("LD_LIBRARY_PATH")
            );
        }
        eprintln!("note: NVRTC not found, skipping the NVRTC compile test (set ZAMBA2C_REQUIRE_NVRTC=1 to make this a failure)");
        return;
    }
    let info = nvrtc::info().expect("nvrtc version");
    eprintln!("NVRTC {}.{}", info.major, info.minor);
    let (mut total, mut pipe_steps) = (0, 0);
    for (name, m) in modules() {
        let p = build_program(&m).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ks: Vec<&Kernel> = p.kernels.values().collect();
        let jobs: Vec<(String, String, String)> = ks
            .iter()
            .map(|k| {
                (
                    k.name.clone(),
                    k.source.clone(),
                    format!("kernels/{}.cu", k.name),
                )
            })
            .collect();
        let ptxs = nvrtc::compile_many(&jobs, "sm_90").unwrap_or_else(|e| panic!("{name}: {e}"));
        for (k, ptx) in ks.iter().zip(&ptxs) {
            assert!(
                ptx.contains(".target sm_90"),
                "{}: PTX does not target sm_90",
                k.name
            );
            assert!(
                ptx.contains(".version 9.0"),
                "{}: PTX ISA is not 9.0:\n{}",
                k.name,
                &ptx[..ptx.len().min(400)]
            );
            assert!(
                ptx.contains(&format!(".entry {}(", k.name)),
                "{}: entry point missing",
                k.name
            );
            // The runtime launches every kernel overlapped on sm_90 (programmatic dependent
            // launch): each must wait for the previous launch before using its output.
            assert!(
                ptx.contains("griddepcontrol.wait"),
                "{}: no grid dependency wait (templates/z2c_common.cuh z2c_grid_wait)",
                k.name
            );
            // The SSM state tile a thread updates goes back in one 16-byte store (stg16): NVRTC
            // split the plain uint4 assignment into four 32-bit stores, 4x the L2 sectors
            // (docs/PERFORMANCE.md, twenty-first session).
            if k.family == "mamba_step_pipe" {
                assert!(
                    ptx.contains("st.global.v4.u32"),
                    "{name}/{}: the state tile is not stored as one vector",
                    k.name
                );
                pipe_steps += 1;
            }
            // An f16 cache's prompt attention: f16 tiles staged by cp.async, f16 mma.
            if k.family == "attention_flash" && m.kv_dtype == DType::F16 {
                assert!(
                    ptx.contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32")
                        && !ptx.contains(".bf16.bf16")
                        && ptx.contains("cp.async"),
                    "{name}/{}: not the f16 cp.async kernel",
                    k.name
                );
            }
        }
        total += ks.len();
    }
    assert!(pipe_steps > 0, "no module has a mamba_step_pipe kernel");
    eprintln!("compiled {total} kernels");
}

/// The 2.7B shape (spec §1.4) generates a small, deduplicated kernel set.
#[test]
fn zamba2_2p7b_shape_dedupes_kernels() {
    let c = config(json!({
        "vocab_size": 32000, "hidden_size": 2560, "num_hidden_layers": 54,
        "layers_block_type": serde_json::Value::Null, "mamba_d_state": 64, "n_mamba_heads": 80,
        "intermediate_size": 10240, "num_attention_heads": 32, "num_key_value_heads": 32,
        "num_mem_blocks": 2, "adapter_rank": 128, "max_position_embeddings": 4096
    }));
    let m = lower(&c, DType::BF16);
    let p = build_program(&m).expect("program");
    eprintln!(
        "2.7B: {} kernels, {} prompt launches, {} decode launches",
        p.kernels.len(),
        p.prompt.launches.len(),
        p.decode.launches.len()
    );
    assert!(p.kernels.len() < 80, "{} kernels", p.kernels.len());
}

/// The families the prompt graph's linears use, by kernel name.
fn prompt_linear_families(m: &Module) -> Vec<String> {
    let p = build_program(m).expect("program");
    p.prompt
        .launches
        .iter()
        .map(|l| p.kernels[&l.kernel].family.clone())
        .filter(|f| f.starts_with("linear_"))
        .collect()
}

/// Prompt linears with bf16 weights and 8-aligned shapes take the tensor-core GEMM; f32
/// weights and odd widths keep the FMA GEMM; decode keeps the GEMV.
#[test]
fn prompt_linears_pick_tensor_cores_when_aligned() {
    let big = config(json!({
        "vocab_size": 32000, "hidden_size": 2560, "num_hidden_layers": 54,
        "layers_block_type": serde_json::Value::Null, "mamba_d_state": 64, "n_mamba_heads": 80,
        "intermediate_size": 10240, "num_attention_heads": 32, "num_key_value_heads": 32,
        "num_mem_blocks": 2, "adapter_rank": 128, "max_position_embeddings": 4096,
        "use_shared_attention_adapter": true, "use_mem_rope": true
    }));
    for act in [DType::F32, DType::BF16] {
        let m = lower_mixed(&big, DType::BF16, act);
        let fams = prompt_linear_families(&m);
        assert!(!fams.is_empty());
        assert!(
            fams.iter().all(|f| *f == "linear_mma_pipe"),
            "2.7B, act {act}: {fams:?}"
        );
        let p = build_program(&m).expect("program");
        // f32 activations keep ~16 bits through the GEMM: split per fragment, or beforehand
        // by split_bf16 (every projection of a fused op's input); in decode_rows the split
        // planes are stacked as bf16 rows of one GEMM (`Arg::RowsTimes`), its products summed
        // by pair_sum.
        let split = act == DType::F32;
        let stacked: std::collections::BTreeSet<&str> = p
            .tables()
            .into_iter()
            .flat_map(|(_, gp)| gp.launches.iter())
            .filter(|l| l.args.contains(&zamba2c_ir::kernel::Arg::RowsTimes(2)))
            .map(|l| l.kernel.as_str())
            .collect();
        assert_eq!(!stacked.is_empty(), split, "act {act}: stacked GEMMs");
        for k in p.kernels.values().filter(|k| k.family == "linear_mma_pipe") {
            let kept = k.source.contains("split as\n  // x = hi + lo")
                || k.source.contains("split\n  // beforehand");
            let stacked = stacked.contains(k.name.as_str());
            assert_eq!(kept, split && !stacked, "{}", k.name);
        }

        assert!(p
            .decode
            .launches
            .iter()
            .all(|l| !p.kernels[&l.kernel].family.starts_with("linear_mma")));
    }
    let f32 = lower(&big, DType::F32);
    assert!(prompt_linear_families(&f32)
        .iter()
        .all(|f| *f == "linear_gemm"));
    // Tiny odd shapes: hidden 24 is 8-aligned, adapter rank 3 is not (K = 3 falls back).
    let tiny = lower(
        &config(json!({"use_shared_attention_adapter": true, "num_mem_blocks": 1})),
        DType::BF16,
    );
    let fams = prompt_linear_families(&tiny);
    assert!(fams.iter().any(|f| f == "linear_mma_pipe"), "{fams:?}");
    assert!(fams.iter().any(|f| f == "linear_gemm"), "{fams:?}");
}

/// The families of the prompt graph's attention launches, by kernel name.
fn prompt_attention_families(m: &Module) -> Vec<String> {
    let p = build_program(m).expect("program");
    p.prompt
        .launches
        .iter()
        .map(|l| p.kernels[&l.kernel].family.clone())
        .filter(|f| f.starts_with("attention"))
        .collect()
}

/// Prompt attention takes the tensor-core kernel for head sizes that are multiples of 16 up to
/// 256 (1.2B: 128, 2.7B: 160, 7B: 224), splitting its operands hi + lo unless they are bf16,
/// with its shared memory declared; other head sizes (the tiny test config's 12) keep the
/// one-block-per-query kernel, and decode never uses it.
#[test]
fn prompt_attention_picks_flash_when_aligned() {
    // (hidden, attention heads, mamba heads of 64 channels, flash expected)
    for (hidden, heads, mamba_heads, flash) in [
        (2560, 32, 80, true),
        (2048, 32, 64, true),
        (3584, 32, 112, true),
        (24, 4, 6, false),
    ] {
        let c = config(json!({"hidden_size": hidden, "num_attention_heads": heads,
            "num_key_value_heads": heads, "n_mamba_heads": mamba_heads,
            "use_mem_rope": true}));
        for (dtype, act) in [
            (DType::F32, DType::F32),
            (DType::BF16, DType::BF16),
            (DType::BF16, DType::F32),
        ] {
            let m = lower_mixed(&c, dtype, act);
            let fams = prompt_attention_families(&m);
            assert!(!fams.is_empty());
            let want = if flash {
                "attention_flash"
            } else {
                "attention"
            };
            assert!(
                fams.iter().all(|f| f == want),
                "hidden {hidden}, act {act}: {fams:?}"
            );
            let p = build_program(&m).expect("program");
            for l in &p.prompt.launches {
                let k = &p.kernels[&l.kernel];
                if k.family == "attention_flash" {
                    assert!(l.smem > 0, "{}: no shared memory declared", k.name);
                    let split = act != DType::BF16;
                    assert!(
                        k.source.contains(&format!("SPLIT_Q = {split}")),
                        "{}",
                        k.name
                    );
                }
            }
            assert!(p
                .decode
                .launches
                .iter()
                .all(|l| p.kernels[&l.kernel].family != "attention_flash"));
        }
    }
}

/// A kernel that does not compile fails with the NVRTC log and the kernel's source path
/// (issue 6: a failed NVRTC compile shows the log and the source path).
#[test]
fn a_broken_kernel_reports_the_log_and_the_source_path() {
    if !nvrtc::available() {
        assert!(
            std::env::var("ZAMBA2C_REQUIRE_NVRTC").as_deref() != Ok("1"),
            "ZAMBA2C_REQUIRE_NVRTC=1 but NVRTC cannot be loaded"
        );
        eprintln!("note: NVRTC not found, skipping");
        return;
    }
    let src = "extern \"C\" __global__ void z2c_broken_d0(float* out) { out[0] = not_declared; }";
    let err = nvrtc::compile(
        "z2c_broken_d0",
        src,
        "plans/x/kernels/z2c_broken_d0.cu",
        "sm_90",
    )
    .expect_err("must not compile")
    .to_string();
    assert!(
        err.contains("z2c_broken_d0") && err.contains("plans/x/kernels/z2c_broken_d0.cu"),
        "{err}"
    );
    assert!(
        err.contains("not_declared"),
        "the NVRTC log is missing: {err}"
    );
}

/// The 2.7B config (spec §1.4) as `compile` sees it.
fn config_2p7b() -> zamba2c_ir::Zamba2Config {
    config(json!({
        "vocab_size": 32000, "hidden_size": 2560, "num_hidden_layers": 54,
        "layers_block_type": serde_json::Value::Null, "mamba_d_state": 64, "n_mamba_heads": 80,
        "intermediate_size": 10240, "num_attention_heads": 32, "num_key_value_heads": 32,
        "num_mem_blocks": 2, "adapter_rank": 128, "max_position_embeddings": 4096
    }))
}

/// Issue 15's budget for what runs: the default 2.7B plan (bf16 weights, f32 activations)
/// decodes in at most 300 launches and 7.40e9 bytes per token (the IR's own figure is 7.31e9),
/// with no fused op of the decode graph left to its decomposition; and -O1 never launches more
/// than -O0, in either graph.
#[test]
fn zamba2_2p7b_program_meets_the_fused_budget() {
    let base = lower_mixed(&config_2p7b(), DType::BF16, DType::F32);
    let mut fused = base.clone();
    zamba2c_passes::pipeline::run_pipeline(&mut fused, 1, None).expect("the passes run");
    let p1 = build_program(&fused).expect("program");
    let p0 = build_program(&base).expect("program at -O0");
    let c1 = p1.cost(512, 64);
    let c0 = p0.cost(512, 64);
    eprintln!(
        "-O1: decode {} launches, {:.4e} B/token; prompt {} launches. -O0: decode {}, prompt {}",
        c1.decode.launches,
        c1.decode.bytes_per_token,
        c1.prompt.launches,
        c0.decode.launches,
        c0.prompt.launches
    );
    assert!(c1.decode.launches <= 300, "{} launches", c1.decode.launches);
    assert!(
        c1.decode.bytes_per_token <= 7.40e9,
        "{:e} bytes per token",
        c1.decode.bytes_per_token
    );
    assert_eq!(c1.decode.decomposed, 0, "{:?}", p1.decode.decomposed);
    assert!(c1.decode.launches <= c0.decode.launches);
    // The prompt graph at -O1 adds launches on purpose (the chunked scan's extra steps, one
    // bf16 split per GEMM input: docs/KERNELS.md); apart from those it launches no more.
    let extra = p1
        .prompt
        .launches
        .iter()
        .filter(|l| {
            let f = &p1.kernels[&l.kernel].family;
            f == "split_bf16" || f == "ssd_state_pass" || f.starts_with("ssd_chunk_out")
        })
        .count();
    assert!(
        c1.prompt.launches - extra <= c0.prompt.launches,
        "prompt: -O1 {} launches ({extra} splits and scan steps), -O0 {}",
        c1.prompt.launches,
        c0.prompt.launches
    );
    assert_eq!(p1.validate(&fused), Ok(()));
    // The decode_rows table (docs/KERNELS.md "decode_rows"): nothing decomposed, every
    // projection on the tensor-core GEMM (adapters included: rank 128 is aligned), the state
    // kernels those of decode but the mixer's step, pipelined over whole heads.
    let rows = p1.decode_rows.as_ref().expect("decode_rows");
    let r = c1.decode_rows.as_ref().expect("decode_rows cost");
    eprintln!(
        "-O1 decode_rows: {} launches, {:.4e} B per 64-row step (decode's accounting {:.4e})",
        r.launches, r.bytes_per_step, r.decode_bytes_per_step
    );
    assert_eq!(r.decomposed, 0, "{:?}", rows.decomposed);
    assert_eq!(r.rows, 64);
    let fams: std::collections::BTreeSet<&str> = rows
        .launches
        .iter()
        .map(|l| p1.kernels[&l.kernel].family.as_str())
        .collect();
    for f in &fams {
        assert!(
            [
                "embedding",
                "rms_norm",
                "concat",
                "split_bf16",
                "linear_mma_pipe",
                "pair_sum",
                "argmax_rows",
                "elementwise",
                "gelu_mul",
                "mamba_step_pipe",
                "group_rms_norm",
                "attention_decode"
            ]
            .contains(f),
            "decode_rows runs {f}"
        );
    }
    let gemms = rows
        .launches
        .iter()
        .filter(|l| p1.kernels[&l.kernel].family == "linear_mma_pipe")
        .count();
    let gemvs = p1
        .decode
        .launches
        .iter()
        .filter(|l| p1.kernels[&l.kernel].family == "proj_gemv")
        .count();
    assert!(gemms >= gemvs, "{gemms} GEMMs for {gemvs} GEMVs");
    // Each weight once per step (the GEMM reads a weight tile once per 64- or 128-row tile, so
    // a step of up to 64 rows reads every weight once), as decode does, except that the shared
    // blocks' q/k/v read both halves of their weight columns: decode's split norm reads only
    // the hidden half and adds the embedding half computed once per block (docs/KERNELS.md);
    // decode_rows lowers `SplitNormLinear` as a prompt does (concat, norm, GEMM). On the 2.7B
    // shape that is 9 invocations × 3 × [5120, 2560] bf16 = 708 MB more (the two blocks'
    // embedding halves are computed too, 2 × 3 × [5120, 2560] bf16 = 157 MB, as in decode).
    let weights = |gp: &zamba2c_ir::kernel::GraphProgram| -> f64 {
        gp.launches.iter().map(|l| l.cost.weight_bytes as f64).sum()
    };
    let (wr, wd) = (weights(rows), weights(&p1.decode));
    eprintln!("weights per step: decode_rows {wr:e}, decode {wd:e}");
    let halves = 9.0 * 3.0 * 5120.0 * 2560.0 * 2.0;
    assert!(
        (wr - wd - halves).abs() <= 1e-3 * wd,
        "decode_rows reads {wr:e} bytes of weights a step, decode {wd:e}"
    );
}

/// A launch table that does not fit its module is refused naming what is wrong, before any
/// kernel could read a null or stray pointer (issue 15: `Program::validate`).
#[test]
fn a_crafted_launch_table_is_refused() {
    let m = lower(&config(json!({})), DType::F32);
    let good = build_program(&m).expect("program");
    assert_eq!(good.validate(&m), Ok(()));
    let mutate = |f: &dyn Fn(&mut zamba2c_codegen::Program)| {
        let mut p = good.clone();
        f(&mut p);
        p.validate(&m).expect_err("a crafted table must be refused")
    };
    let e = mutate(&|p| {
        p.decode.launches[0].args.pop();
    });
    assert!(e.contains("arguments for"), "{e}");
    let e = mutate(&|p| {
        for a in &mut p.decode.launches[1].args {
            if let zamba2c_codegen::Arg::Value { value, .. } = a {
                *value = 1_000_000;
            }
        }
    });
    assert!(e.contains("value 1000000"), "{e}");
    let e = mutate(&|p| {
        p.prompt.launches[0].kernel = "z2c_nope".into();
    });
    assert!(e.contains("no such kernel"), "{e}");
    let e = mutate(&|p| {
        let n = p.decode.values.len();
        p.decode.values[1].storage = zamba2c_codegen::Storage::View {
            of: n - 1,
            offset: 0,
        };
    });
    assert!(e.contains("not an earlier buffer"), "{e}");
    let e = mutate(&|p| {
        p.decode.launches[0].grid[0] = zamba2c_codegen::Extent::Const(0);
    });
    assert!(e.contains("grid extent"), "{e}");
    let e = mutate(&|p| {
        for a in &mut p.decode.launches.iter_mut().flat_map(|l| l.args.iter_mut()) {
            if let zamba2c_codegen::Arg::Weight { name, .. } = a {
                *name = "../../etc/passwd".into();
            }
        }
    });
    assert!(e.contains("not in the table"), "{e}");
}

/// `attention_decode`'s variants (docs/KERNELS.md "attention_decode"): 16 splits in `decode`,
/// 2 in `decode_rows`; in `decode`, at head size 160 (20 dims a lane) 8-byte loads of a bf16
/// cache and 16-byte loads of an f32 one, scalar loads at the tiny config's head size 12 (3 dims
/// a lane); in `decode_rows` the cache copied into the warps' cp.async rings.
/// Each kernel renders the same twice, compiles with NVRTC, and loads its cache as planned.
#[test]
fn attention_decode_variants_split_per_table_and_load_vectors() {
    let attn160 = json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2,
        "num_key_value_heads": 2, "use_mem_rope": true});
    // (config, weights, activations, KV cache, elements per load, the load in the PTX: one
    // 8-byte load of four bf16 bit patterns, one 16-byte load of four floats, scalar floats)
    let cases = [
        (
            attn160.clone(),
            DType::BF16,
            DType::F32,
            DType::BF16,
            4,
            "ld.global.v4.u16",
        ),
        (
            attn160,
            DType::F32,
            DType::F32,
            DType::F32,
            4,
            "ld.global.v4.f32",
        ),
        (
            json!({}),
            DType::F32,
            DType::F32,
            DType::F32,
            1,
            "ld.global.f32",
        ),
    ];
    let nvrtc_on = nvrtc::available();
    for (extra, dtype, act, kv, vec, ptx_load) in cases {
        let m = lower_with_kv(&config(extra), dtype, act, kv);
        let p = build_program(&m).expect("program");
        assert_eq!(p, build_program(&m).expect("program"), "not deterministic");
        let rows = p.decode_rows.as_ref().expect("decode_rows");
        // 16 and 2 unless ZAMBA2C_TUNE_ATTN_ROWS_SPLITS says otherwise; decode_rows' kernel
        // copies the cache into its warps' rings (cp.async), the one-row kernel loads it.
        let splits_of = zamba2c_codegen::fused::attn_splits;
        for (gp, splits, ring) in [
            (&p.decode, splits_of(false), false),
            (rows, splits_of(true), true),
        ] {
            let ks: Vec<&Kernel> = gp
                .launches
                .iter()
                .map(|l| &p.kernels[&l.kernel])
                .filter(|k| k.family == "attention_decode")
                .collect();
            assert!(!ks.is_empty(), "kv {kv}: no attention_decode");
            for k in ks {
                assert!(
                    k.source
                        .contains(&format!("SPLITS = {splits}, VEC = {vec};")),
                    "{}: want {splits} splits and {vec}-element loads",
                    k.name
                );
                if !nvrtc_on {
                    continue;
                }
                let ptx = nvrtc::compile(
                    &k.name,
                    &k.source,
                    &format!("kernels/{}.cu", k.name),
                    "sm_90",
                )
                .unwrap_or_else(|e| panic!("{}: {e}", k.name));
                if ring {
                    assert!(
                        ptx.contains("cp.async.cg.shared.global"),
                        "{}: the cache not streamed through the ring",
                        k.name
                    );
                    continue;
                }
                assert!(
                    ptx.contains(ptx_load),
                    "{}: no {ptx_load} in the PTX",
                    k.name
                );
                if vec == 1 {
                    assert!(!ptx.contains("ld.global.v"), "{}: vector loads", k.name);
                }
            }
        }
    }
}
