//! Kernel variants behind codegen tuning knobs (docs/KERNELS.md "Tuning knobs") render and
//! compile with NVRTC for sm_90 like the default kernels (nvrtc_compile.rs), so a variant
//! waiting for its GPU measurement cannot rot: the register-staged prompt attention, the
//! whole-head `mamba_step` of decode_rows and decode_rows' split-K GEMM (thread-block
//! clusters), the chunked scan on tensor cores (3xBF16) and its state pass's load groups,
//! decode_rows' linears on `linear_rows` (weights straight into tensor-core fragments). One
//! test in this binary: the knobs are read from the environment when a program is built, and
//! this test sets them before anything else runs.

mod common;

use common::config;
use serde_json::json;
use zamba2c_codegen::build_program;
use zamba2c_ir::kernel::{Kernel, Program};
use zamba2c_ir::{lower_with_kv, DType, Module, Zamba2Config};
use zamba2c_runtime::cuda::nvrtc;

/// `p`'s kernels of `family`, at least one (`what` names the case in the failure).
fn kernels_of<'a>(p: &'a Program, family: &str, what: &str) -> Vec<&'a Kernel> {
    let ks: Vec<_> = p.kernels.values().filter(|k| k.family == family).collect();
    assert!(!ks.is_empty(), "{what}: no {family} kernel");
    ks
}

/// The kernel family of each launch of `p`'s prompt table, in order.
fn prompt_families(p: &Program) -> Vec<&str> {
    p.prompt
        .launches
        .iter()
        .map(|l| p.kernels[&l.kernel].family.as_str())
        .collect()
}

/// `cfg` lowered with `weights` and `act` dtypes and a bf16 KV cache, through the -O1 passes,
/// built into a program with the knobs the environment holds now.
fn program(cfg: &Zamba2Config, weights: DType, act: DType, what: &str) -> Program {
    built(lower_with_kv(cfg, weights, act, DType::BF16), what)
}

/// `m` through the -O1 passes, built into a program with the knobs the environment holds now.
fn built(mut m: Module, what: &str) -> Program {
    zamba2c_passes::pipeline::run_pipeline(&mut m, 1, None).expect("the passes run");
    build_program(&m).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// How many launches of `p`'s `decode_rows` table run kernels of `family`.
fn rows_launches(p: &Program, family: &str) -> usize {
    p.decode_rows
        .as_ref()
        .expect("decode_rows")
        .launches
        .iter()
        .filter(|l| p.kernels[&l.kernel].family == family)
        .count()
}

/// The NVRTC job of kernel `k` of case `tag`: its name, source and the file name errors give.
fn job(tag: impl std::fmt::Display, k: &Kernel) -> (String, String, String) {
    (
        k.name.clone(),
        k.source.clone(),
        format!("{tag}/{}.cu", k.name),
    )
}

#[test]
fn knob_variants_render_and_compile_with_nvrtc() {
    // The only test of this binary: nothing else reads the environment meanwhile.
    std::env::set_var("ZAMBA2C_TUNE_ATTN_KERNEL", "1");
    // decode_rows' `mamba_step` (its pipelined form is the default, compiled below): its
    // whole-head and several-head shapes are the variants here.
    std::env::set_var("ZAMBA2C_TUNE_STEP_PIPE", "0");
    std::env::set_var("ZAMBA2C_TUNE_STEP_ROWS_BATCHED", "64");
    std::env::set_var("ZAMBA2C_TUNE_ROWS_GEMM", "2");
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
        let p = program(&config(extra), DType::BF16, act, &format!("case {i}"));
        for k in kernels_of(&p, "attention_flash", &format!("case {i}")) {
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
    let p = program(&mixer, DType::BF16, DType::F32, "mixer");
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
    // decode_rows' linears as the split-K GEMM of a few rows on the 2.7B shape: f32 activations
    // split into planes, clusters of up to 8 blocks, no library GEMM and no stacked planes.
    let big = config(json!({
        "vocab_size": 32000, "hidden_size": 2560, "num_hidden_layers": 54,
        "layers_block_type": serde_json::Value::Null, "mamba_d_state": 64, "n_mamba_heads": 80,
        "intermediate_size": 10240, "num_attention_heads": 32, "num_key_value_heads": 32,
        "num_mem_blocks": 2, "adapter_rank": 128, "max_position_embeddings": 4096
    }));
    let m = lower_with_kv(&big, DType::BF16, DType::F32, DType::BF16);
    // As built by default, then with k-tiles of 64 and separate lo-plane accumulators.
    for (tag, bk, dual) in [("rows", "32", "1"), ("rows-bk64-dual", "64", "2")] {
        std::env::set_var("ZAMBA2C_TUNE_ROWS_BK", bk);
        std::env::set_var("ZAMBA2C_TUNE_ROWS_DUAL", dual);
        let p = build_program(&m).expect("2.7B program");
        let rows = p.decode_rows.as_ref().expect("decode_rows");
        let gemms: std::collections::BTreeSet<&str> = rows
            .launches
            .iter()
            .filter(|l| p.kernels[&l.kernel].family == "linear_mma_pipe")
            .inspect(|l| {
                assert!(l.library.is_none(), "{}: a library GEMM", l.kernel);
                assert!(!l.args.contains(&zamba2c_ir::kernel::Arg::RowsTimes(2)));
            })
            .map(|l| l.kernel.as_str())
            .collect();
        assert!(gemms
            .iter()
            .any(|k| p.kernels[*k].source.contains("Z2C_CLUSTER(8)")));
        for name in gemms {
            let k = &p.kernels[name];
            assert!(k.source.contains("Split-K for steps"), "{name}");
            assert!(
                k.source.contains("split\n  // beforehand"),
                "{name}: planes"
            );
            assert!(k.source.contains(&format!("BK = {bk},")), "{name}: BK {bk}");
            assert_eq!(
                k.source.contains("acc_lo"),
                dual == "2",
                "{name}: lo accumulators"
            );
            jobs.push((
                name.to_string(),
                k.source.clone(),
                format!("{tag}/{name}.cu"),
            ));
        }
    }
    // The chunked scan's first and last steps on tensor cores (3xBF16), on the 2.7B shape
    // (head_dim = d_state = 64) under f32 and bf16 activations, and on a small one (32 × 16).
    std::env::set_var("ZAMBA2C_TUNE_SSD_MMA", "1");
    let small = config(json!({"hidden_size": 64, "n_mamba_heads": 4, "mamba_d_state": 16}));
    // SSD_OUT_PAIRS=1: the output step's x and y two adjacent columns an access.
    for pairs in [false, true] {
        std::env::set_var("ZAMBA2C_TUNE_SSD_OUT_PAIRS", if pairs { "1" } else { "0" });
        for (tag, cfg, act) in [
            ("ssd-mma-f32", &big, DType::F32),
            ("ssd-mma-bf16", &big, DType::BF16),
            ("ssd-mma-small", &small, DType::F32),
        ] {
            let tag = format!("{tag}-pairs-{pairs}");
            let p = program(cfg, DType::BF16, act, &tag);
            let ssd: std::collections::BTreeSet<&str> = p
                .prompt
                .launches
                .iter()
                .map(|l| l.kernel.as_str())
                .filter(|k| p.kernels[*k].family.starts_with("ssd_chunk"))
                .collect();
            assert_eq!(ssd.len(), 2, "{tag}: {ssd:?}");
            for name in ssd {
                let k = &p.kernels[name];
                assert!(k.family.ends_with("_mma"), "{tag}: {name} is {}", k.family);
                assert!(k.source.contains("warp_mma_3xbf16<"), "{tag}: {name}");
                if k.family == "ssd_chunk_out_mma" {
                    assert_eq!(k.source.contains("st2(out"), pairs, "{tag}: {name}");
                }
                jobs.push((
                    name.to_string(),
                    k.source.clone(),
                    format!("{tag}/{name}.cu"),
                ));
            }
        }
    }
    std::env::remove_var("ZAMBA2C_TUNE_SSD_OUT_PAIRS");
    // The scan's state pass with every chunk of a 2048-token launch in one group of loads
    // (SSD_PASS_GROUP=32), on the 2.7B shape with an f32 and an f16 state.
    std::env::set_var("ZAMBA2C_TUNE_SSD_PASS_GROUP", "32");
    for (tag, state) in [("pass-g32-f32", DType::F32), ("pass-g32-f16", DType::F16)] {
        let mut m = lower_with_kv(&big, DType::BF16, DType::F32, DType::BF16);
        m.set_ssm_state_dtype(state);
        let p = built(m, tag);
        let k = p
            .kernels
            .iter()
            .find(|(_, k)| k.family == "ssd_state_pass")
            .map(|(name, k)| (name.clone(), k.source.clone()))
            .expect("a state pass");
        assert!(k.1.contains("constexpr int G = 32;"), "{tag}");
        jobs.push((k.0.clone(), k.1, format!("{tag}/{}.cu", k.0)));
    }
    std::env::remove_var("ZAMBA2C_TUNE_SSD_PASS_GROUP");
    // decode_rows' linears on `linear_rows` (ROWS_GEMM=3: weights straight into tensor-core
    // fragments, a fixed summation order per row): the 2.7B shape with bf16 weights (two bf16
    // planes) and f16 weights (one f16 plane), and a small model whose adapters' rank is not a
    // whole 32-wide chunk. Every projection of the table is on it: no other GEMM, no library
    // GEMM, no stacked planes or `pair_sum`.
    std::env::set_var("ZAMBA2C_TUNE_ROWS_GEMM", "3");
    let adapters = config(json!({"hidden_size": 64, "n_mamba_heads": 4, "adapter_rank": 8}));
    // The last also with two x stages instead of three and two blocks an SM (128 registers).
    for (tag, cfg, wdt, ahead, xstages, occ) in [
        ("rows-direct-bf16", &big, DType::BF16, "1", "3", "1"),
        ("rows-direct-f16", &big, DType::F16, "1", "3", "1"),
        ("rows-direct-small", &adapters, DType::BF16, "1", "3", "1"),
        ("rows-direct-ahead2", &adapters, DType::F16, "2", "2", "2"),
    ] {
        std::env::set_var("ZAMBA2C_TUNE_ROWS_AHEAD", ahead);
        std::env::set_var("ZAMBA2C_TUNE_ROWS_XSTAGES", xstages);
        std::env::set_var("ZAMBA2C_TUNE_ROWS_OCC", occ);
        let p = program(cfg, wdt, DType::F32, tag);
        let rows = p.decode_rows.as_ref().expect("decode_rows");
        let mut names = std::collections::BTreeSet::new();
        for l in &rows.launches {
            let f = p.kernels[&l.kernel].family.as_str();
            assert!(l.library.is_none(), "{tag}: {} on the library", l.kernel);
            assert!(
                !matches!(f, "linear_mma_pipe" | "linear_gemm" | "pair_sum"),
                "{tag}: {} is {f}",
                l.kernel
            );
            if f == "linear_rows" {
                names.insert(l.kernel.clone());
            }
        }
        assert!(!names.is_empty(), "{tag}: no linear_rows");
        let planes = if wdt == DType::F16 { 1 } else { 2 };
        for name in names {
            let k = &p.kernels[&name];
            assert!(
                k.source.contains(&format!("PL = {planes};")),
                "{tag}: {name}"
            );
            assert!(
                k.source.contains(&format!("AH = {ahead};")),
                "{tag}: {name}"
            );
            assert!(
                k.source.contains(&format!("XST = {xstages};")),
                "{tag}: {name}"
            );
            let bounds = if occ == "1" {
                "__launch_bounds__(256) ".to_string()
            } else {
                format!("__launch_bounds__(256, {occ})")
            };
            assert!(k.source.contains(&bounds), "{tag}: {name}: {bounds}");
            jobs.push((name.clone(), k.source.clone(), format!("{tag}/{name}.cu")));
        }
    }
    // The default bf16 plan's mix (`compile --shared-dtype f16`, `--batch-invariant` plans
    // included): the shared blocks' `linear_rows` read one f16 plane, the mixers' two bf16
    // planes, in one program.
    std::env::set_var("ZAMBA2C_TUNE_ROWS_AHEAD", "1");
    std::env::set_var("ZAMBA2C_TUNE_ROWS_XSTAGES", "3");
    std::env::set_var("ZAMBA2C_TUNE_ROWS_OCC", "1");
    let mut m = lower_with_kv(&big, DType::BF16, DType::F32, DType::BF16);
    m.set_shared_projection_dtype(DType::F16);
    let p = built(m, "rows-direct-shared-f16");
    let rows = p.decode_rows.as_ref().expect("decode_rows");
    let mut planes = std::collections::BTreeMap::new();
    for l in &rows.launches {
        let k = &p.kernels[&l.kernel];
        if k.family == "linear_rows" {
            let pl = if k.source.contains("PL = 1;") { 1 } else { 2 };
            planes.entry(pl).or_insert_with(|| l.kernel.clone());
        }
    }
    assert_eq!(
        planes.keys().copied().collect::<Vec<_>>(),
        [1, 2],
        "rows-direct-shared-f16: linear_rows of one and two planes"
    );
    for name in planes.into_values() {
        let k = &p.kernels[&name];
        jobs.push((
            name.clone(),
            k.source.clone(),
            format!("rows-direct-shared-f16/{name}.cu"),
        ));
    }
    std::env::remove_var("ZAMBA2C_TUNE_ROWS_GEMM");
    // The pair fold (the default; ROWS_PAIR_FOLD=0 turns it off): each mixer's in_proj leaves
    // its two stacked products for `mamba_step` to sum as it reads them (the 2.7B's 54 in_proj
    // `pair_sum` launches gone; the default mixed plan, library GEMMs on stacked rows).
    let base = {
        let mut m = lower_with_kv(&big, DType::BF16, DType::F32, DType::BF16);
        m.set_shared_projection_dtype(DType::F16);
        zamba2c_passes::pipeline::run_pipeline(&mut m, 1, None).expect("the passes run");
        m
    };
    std::env::set_var("ZAMBA2C_TUNE_ROWS_PAIR_FOLD", "0");
    let before = build_program(&base).expect("pair-fold off");
    std::env::remove_var("ZAMBA2C_TUNE_ROWS_PAIR_FOLD");
    let p = build_program(&base).expect("pair-fold");
    assert_eq!(
        rows_launches(&before, "pair_sum") - rows_launches(&p, "pair_sum"),
        big.layers_block_type.len(),
        "pair-fold: one pair_sum fewer a mixer"
    );
    assert_eq!(
        rows_launches(&before, "mamba_step"),
        rows_launches(&p, "mamba_step")
    );
    let rows = p.decode_rows.as_ref().expect("decode_rows");
    let folded: std::collections::BTreeSet<&String> = rows
        .launches
        .iter()
        .map(|l| &l.kernel)
        .filter(|k| {
            p.kernels[*k].family == "mamba_step" && p.kernels[*k].source.contains("i + 10448]")
        })
        .collect();
    assert!(
        !folded.is_empty(),
        "pair-fold: no mamba_step summing a pair"
    );
    for name in folded {
        jobs.push((
            name.clone(),
            p.kernels[name].source.clone(),
            format!("pair-fold/{name}.cu"),
        ));
    }
    std::env::set_var("ZAMBA2C_TUNE_ROWS_GEMM", "3");
    // A cluster size that is not a power of two (ROWS_CLUSTER=3: the last rank finishes fewer
    // columns of the block's tile).
    std::env::set_var("ZAMBA2C_TUNE_ROWS_CLUSTER", "3");
    let p = program(&big, DType::F16, DType::F32, "rows-cluster3");
    let rows = p.decode_rows.as_ref().expect("decode_rows");
    let names: std::collections::BTreeSet<String> = rows
        .launches
        .iter()
        .filter(|l| p.kernels[&l.kernel].family == "linear_rows")
        .map(|l| l.kernel.clone())
        .collect();
    assert!(!names.is_empty(), "rows-cluster3: no linear_rows");
    for name in names {
        let k = &p.kernels[&name];
        assert!(k.source.contains("S = 3,"), "rows-cluster3: {name}");
        jobs.push((
            name.clone(),
            k.source.clone(),
            format!("rows-cluster3/{name}.cu"),
        ));
    }
    for knob in [
        "ROWS_GEMM",
        "ROWS_AHEAD",
        "ROWS_XSTAGES",
        "ROWS_OCC",
        "ROWS_CLUSTER",
    ] {
        std::env::remove_var(format!("ZAMBA2C_TUNE_{knob}"));
    }
    // The measurement knobs of the decode step: out_proj's weights asked into L2 while
    // mamba_step runs (GEMV_PREFETCH bytes a row), and 64-row steps' mamba_step over whole heads
    // (STEP_HEADS heads a block) with six blocks an SM (STEP_MIN_BLOCKS).
    std::env::set_var("ZAMBA2C_TUNE_GEMV_PREFETCH", "4096");
    std::env::set_var("ZAMBA2C_TUNE_STEP_HEADS", "4");
    std::env::set_var("ZAMBA2C_TUNE_STEP_MIN_BLOCKS", "6");
    let p = program(&big, DType::BF16, DType::F32, "decode-knobs");
    let rows = p.decode_rows.as_ref().expect("decode_rows");
    let mut found = (0, 0);
    for l in p.decode.launches.iter().chain(&rows.launches) {
        let k = &p.kernels[&l.kernel];
        let pf = k.source.contains("prefetch_l2(reinterpret_cast");
        let heads = k.source.contains("HPB = 4,") && k.source.contains("__launch_bounds__(256, 6)");
        if pf || heads {
            found.0 += usize::from(pf);
            found.1 += usize::from(heads);
            let job = (
                l.kernel.clone(),
                k.source.clone(),
                format!("decode-knobs/{}.cu", l.kernel),
            );
            if !jobs.contains(&job) {
                jobs.push(job);
            }
        }
    }
    assert!(found.0 > 0 && found.1 > 0, "decode-knobs: {found:?}");
    std::env::remove_var("ZAMBA2C_TUNE_GEMV_PREFETCH");
    std::env::remove_var("ZAMBA2C_TUNE_STEP_HEADS");
    std::env::remove_var("ZAMBA2C_TUNE_STEP_MIN_BLOCKS");
    // decode_rows' pipelined mamba_step (the default, STEP_PIPE=1) with 16-byte state chunks
    // of f32, f16 and bf16 states through the cp.async ring, on the 2.7B shape and a small one
    // of two groups (the block's heads within one group); the decode table keeps mamba_step.
    std::env::set_var("ZAMBA2C_TUNE_STEP_PIPE", "1");
    let groups = config(
        json!({"hidden_size": 64, "n_mamba_heads": 4, "mamba_ngroups": 2,
        "mamba_d_state": 16}),
    );
    for (shape, cfg) in [("big", &big), ("groups", &groups)] {
        for state in [DType::F32, DType::F16, DType::BF16] {
            let tag = format!("step-pipe-{shape}-{state:?}");
            let mut m = lower_with_kv(cfg, DType::BF16, DType::F32, DType::BF16);
            m.set_ssm_state_dtype(state);
            let p = built(m, &tag);
            assert!(
                rows_launches(&p, "mamba_step_pipe") > 0,
                "{tag}: no pipelined step"
            );
            assert!(
                p.decode
                    .launches
                    .iter()
                    .all(|l| p.kernels[&l.kernel].family != "mamba_step_pipe"),
                "{tag}: the decode table took the pipelined step"
            );
            for k in kernels_of(&p, "mamba_step_pipe", &tag) {
                assert!(k.source.contains("cp_async16(&ring"), "{tag}: {}", k.name);
                jobs.push(job(&tag, k));
            }
        }
    }
    // The gated group norm split around out_proj (the default; STEP_NORM_AFTER=0 turns it
    // off, checked below): on the 2.7B shape with
    // bf16 weights (one norm group, two bf16 planes) no group_rms_norm launch is left in
    // decode_rows, the step writes out_proj's planes of w ⊙ v and the pair_sum after it scales
    // the row; two groups, or f16 weights' one plane, keep group_rms_norm.
    for (shape, cfg) in [("big", &big), ("groups", &groups)] {
        for weights in [DType::BF16, DType::F16] {
            let tag = format!("step-norm-after-{shape}-{weights:?}");
            let mut m = lower_with_kv(cfg, weights, DType::F32, DType::BF16);
            m.set_ssm_state_dtype(DType::F16);
            let p = built(m, &tag);
            let applies = shape == "big" && weights == DType::BF16;
            assert_eq!(
                rows_launches(&p, "group_rms_norm") == 0,
                applies,
                "{tag}: group_rms_norm launches"
            );
            if !applies {
                continue;
            }
            for k in kernels_of(&p, "mamba_step_pipe", &tag) {
                assert!(k.source.contains("normw[vr] * v"), "{tag}: {}", k.name);
                jobs.push(job(&tag, k));
            }
            let scaled: Vec<_> = kernels_of(&p, "pair_sum", &tag)
                .into_iter()
                .filter(|k| k.source.contains("norm_ws + row"))
                .collect();
            assert!(!scaled.is_empty(), "{tag}: no scaled pair_sum");
            for k in scaled {
                jobs.push(job(&tag, k));
            }
        }
    }
    std::env::set_var("ZAMBA2C_TUNE_STEP_NORM_AFTER", "0");
    let mut m = lower_with_kv(&big, DType::BF16, DType::F32, DType::BF16);
    m.set_ssm_state_dtype(DType::F16);
    let p = built(m, "step-norm-after-off");
    assert_eq!(
        rows_launches(&p, "group_rms_norm"),
        big.layers_block_type.len(),
        "step-norm-after-off: a group_rms_norm a mixer"
    );
    std::env::remove_var("ZAMBA2C_TUNE_STEP_NORM_AFTER");
    std::env::set_var("ZAMBA2C_TUNE_STEP_PIPE", "0");
    // proj_gemv with compile-time trip counts, unrolled whole, through plain pointers
    // (GEMV_PLAIN=1: every operand; =2: the input and norm weight), on both shapes: every
    // projection family (norms, split norm, adapters, GELU·up, residual) and the batched
    // variants, ragged passes included on the small shape; bf16, f16 and f32 weights (the norm
    // weight's own type), f32 and bf16 activations.
    let dtypes = [
        (DType::BF16, DType::F32),
        (DType::F16, DType::F32),
        (DType::F32, DType::F32),
        (DType::BF16, DType::BF16),
    ];
    for (mode, weights_plain) in [("1", true), ("2", false)] {
        std::env::set_var("ZAMBA2C_TUNE_GEMV_PLAIN", mode);
        let mut plain = 0;
        for ((module, shape), (w, act)) in [(&big, "big"), (&small, "small")]
            .into_iter()
            .flat_map(|m| dtypes.iter().map(move |d| (m, *d)))
        {
            let tag = format!("gemv-plain{mode}-{shape}-{w:?}-{act:?}");
            let p = program(module, w, act, &tag);
            for (name, k) in &p.kernels {
                if k.source.contains("Z2C_PLAIN(xs[r]") {
                    assert_eq!(
                        k.source.contains("Z2C_PLAIN(wrow[i]"),
                        weights_plain,
                        "{tag}: {name}"
                    );
                    plain += 1;
                    jobs.push((name.clone(), k.source.clone(), format!("{tag}/{name}.cu")));
                }
            }
        }
        assert!(
            plain > 0,
            "GEMV_PLAIN={mode}: no proj_gemv kernel rendered plain"
        );
    }
    std::env::remove_var("ZAMBA2C_TUNE_GEMV_PLAIN");
    // The prompt attention's Q·Kᵀ fragments by 32-bit shared loads (ATTN_LDSM=0; ldmatrix is
    // the default): the cp.async kernel on bf16 and f16 caches, the register-staged one
    // (ATTN_KERNEL=1) on a bf16 cache and on an f32 cache (keys split into parts), head sizes
    // 64 (GQA, RoPE) and 160, f32 activations.
    std::env::set_var("ZAMBA2C_TUNE_ATTN_LDSM", "0");
    let heads = [
        json!({"hidden_size": 64, "n_mamba_heads": 4, "num_attention_heads": 2,
            "num_key_value_heads": 1, "use_mem_rope": true}),
        json!({"hidden_size": 160, "n_mamba_heads": 4, "num_attention_heads": 2,
            "num_key_value_heads": 2, "use_mem_rope": true}),
    ];
    for (kernel, cache) in [
        ("2", DType::BF16),
        ("2", DType::F16),
        ("1", DType::BF16),
        ("1", DType::F32),
    ] {
        std::env::set_var("ZAMBA2C_TUNE_ATTN_KERNEL", kernel);
        for (i, extra) in heads.iter().enumerate() {
            let tag = format!("attn-ldsm-k{kernel}-{cache:?}-{i}");
            let p = built(
                lower_with_kv(&config(extra.clone()), DType::BF16, DType::F32, cache),
                &tag,
            );
            for k in kernels_of(&p, "attention_flash", &tag) {
                assert!(
                    !k.source.contains("Fragments by ldmatrix"),
                    "{tag}: {}",
                    k.name
                );
                assert_eq!(
                    k.source.contains("cp_async16(kd"),
                    kernel == "2",
                    "{tag}: {}",
                    k.name
                );
                jobs.push(job(&tag, k));
            }
        }
    }
    std::env::remove_var("ZAMBA2C_TUNE_ATTN_LDSM");
    // Every attention operand rounded once to the tiles' type (ATTN_SPLIT=2: one product for
    // Q·Kᵀ and one for P·V instead of two each): the cp.async kernel on a bf16 cache (q and P
    // in bf16) and on an f16 cache (q and P in f16), head sizes 64 and 160.
    std::env::set_var("ZAMBA2C_TUNE_ATTN_KERNEL", "2");
    std::env::set_var("ZAMBA2C_TUNE_ATTN_SPLIT", "2");
    for cache in [DType::BF16, DType::F16] {
        for (i, extra) in heads.iter().enumerate() {
            let tag = format!("attn-split2-{cache:?}-{i}");
            let mut m = lower_with_kv(&config(extra.clone()), DType::BF16, DType::F32, cache);
            zamba2c_passes::pipeline::run_pipeline(&mut m, 1, None).expect("the passes run");
            let p = build_program(&m).unwrap_or_else(|e| panic!("{tag}: {e}"));
            std::env::remove_var("ZAMBA2C_TUNE_ATTN_SPLIT");
            let base = build_program(&m).unwrap_or_else(|e| panic!("{tag}: {e}"));
            std::env::set_var("ZAMBA2C_TUNE_ATTN_SPLIT", "2");
            let flash = kernels_of(&p, "attention_flash", &tag);
            let split_flash = kernels_of(&base, "attention_flash", &tag);
            assert!(
                !flash.is_empty()
                    && flash
                        .iter()
                        .zip(&split_flash)
                        .all(|(a, b)| a.source != b.source),
                "{tag}: ATTN_SPLIT=2 renders the same attention"
            );
            for k in flash {
                jobs.push(job(&tag, k));
            }
        }
    }
    std::env::remove_var("ZAMBA2C_TUNE_ATTN_SPLIT");
    // Decode attention streaming the cache through per-warp cp.async rings (ATTN_RING=3, six
    // blocks an SM): bf16, f16 and f32 caches (an f32 stage is twice the bytes: two stages),
    // head sizes 64 and 160, every table's kernel (one row and decode_rows).
    std::env::set_var("ZAMBA2C_TUNE_ATTN_RING", "3");
    std::env::set_var("ZAMBA2C_TUNE_ATTN_MIN_BLOCKS", "6");
    for cache in [DType::BF16, DType::F16, DType::F32] {
        for (i, extra) in heads.iter().enumerate() {
            let tag = format!("attn-ring-{cache:?}-{i}");
            let p = built(
                lower_with_kv(&config(extra.clone()), DType::BF16, DType::F32, cache),
                &tag,
            );
            for k in kernels_of(&p, "attention_decode", &tag) {
                assert!(
                    k.source.contains("cp_async16(st")
                        && k.source.contains("__launch_bounds__(128, 6)"),
                    "{tag}: {} is not the ring kernel",
                    k.name
                );
                jobs.push(job(&tag, k));
            }
        }
    }
    std::env::remove_var("ZAMBA2C_TUNE_ATTN_RING");
    std::env::remove_var("ZAMBA2C_TUNE_ATTN_MIN_BLOCKS");
    // The shared blocks' split norm reads [hidden, embeddings] from both inputs by default: no
    // `concat` launch in any table of the 2.7B plan (bf16 and f16 weights: two bf16 planes or
    // one f16 plane written) or of a small f32 one, and the norm kernels that read two inputs
    // compile. SPLIT_NORM_TWO_INPUTS=0 (the concat, then a one-input norm) after.
    for (weights, act, cfg, tag) in [
        (DType::BF16, DType::F32, &big, "two-input-norm-bf16"),
        (DType::F16, DType::F32, &big, "two-input-norm-f16"),
        (
            DType::F32,
            DType::F32,
            &config(heads[1].clone()),
            "two-input-norm-f32",
        ),
    ] {
        let p = program(cfg, weights, act, tag);
        assert!(
            p.kernels.values().all(|k| k.family != "concat"),
            "{tag}: a concat kernel is left"
        );
        let two: Vec<_> = kernels_of(&p, "rms_norm", tag)
            .into_iter()
            .filter(|k| k.source.contains("src_at(c)"))
            .collect();
        assert!(!two.is_empty(), "{tag}: no norm reads two inputs");
        for k in two {
            jobs.push(job(tag, k));
        }
    }
    std::env::set_var("ZAMBA2C_TUNE_SPLIT_NORM_TWO_INPUTS", "0");
    let p = program(&big, DType::BF16, DType::F32, "concat-norm-bf16");
    for k in kernels_of(&p, "concat", "SPLIT_NORM_TWO_INPUTS=0") {
        jobs.push(job("concat-norm-bf16", k));
    }
    std::env::remove_var("ZAMBA2C_TUNE_SPLIT_NORM_TWO_INPUTS");
    // smem_addr by inline PTX (SMEM_CVTA=0; the compiler's builtin is the default): every
    // family of the 2.7B bf16 plan that converts shared addresses (cp.async, ldmatrix), with
    // the cp.async attention.
    std::env::set_var("ZAMBA2C_TUNE_ATTN_KERNEL", "2");
    std::env::set_var("ZAMBA2C_TUNE_SMEM_CVTA", "0");
    std::env::remove_var("ZAMBA2C_TUNE_STEP_ROWS_BATCHED");
    std::env::remove_var("ZAMBA2C_TUNE_STEP_PIPE");
    std::env::remove_var("ZAMBA2C_TUNE_ROWS_GEMM");
    let p = program(&big, DType::BF16, DType::F32, "smem-cvta");
    let mut cvta = 0;
    for (name, k) in &p.kernels {
        assert!(k.source.contains("cvta.to.shared.u64"), "{name}");
        if [
            "linear_mma_pipe",
            "attention_flash",
            "ssd_chunk_out_mma",
            "ssd_chunk_state_mma",
        ]
        .contains(&k.family.as_str())
        {
            cvta += 1;
            jobs.push((
                name.clone(),
                k.source.clone(),
                format!("smem-cvta/{name}.cu"),
            ));
        }
    }
    assert!(cvta >= 4, "{cvta} kernels");
    std::env::remove_var("ZAMBA2C_TUNE_SMEM_CVTA");
    // The prompt MLP's GELU·up in one launch (the default): bf16 planes (bf16 weights), an f16
    // plane (f16 weights), f32 values (f32 weights) and bf16 activations; the 2.7B shape and a
    // small one with adapters. No `gelu`/`mul` elementwise kernel is left in the prompt; with
    // PROMPT_GELU_MUL=0 they are back and `gelu_mul` is gone.
    std::env::remove_var("ZAMBA2C_TUNE_PROMPT_GELU_MUL");
    let adapters = config(
        json!({"use_shared_attention_adapter": true, "hidden_size": 64,
        "intermediate_size": 128, "n_mamba_heads": 4, "adapter_rank": 8}),
    );
    for (shape, cfg) in [("big", &big), ("adapters", &adapters)] {
        for (w, act, mode) in [
            (DType::BF16, DType::F32, "// bf16 hi and lo planes"),
            (DType::F16, DType::F32, "// one f16 plane"),
            (DType::F32, DType::F32, "// act_t values"),
            (DType::BF16, DType::BF16, "// act_t values"),
        ] {
            let tag = format!("gelu-mul-{shape}-{w:?}-{act:?}");
            let p = program(cfg, w, act, &tag);
            let prompt = prompt_families(&p);
            assert!(!prompt.contains(&"elementwise"), "{tag}: {prompt:?}");
            let k = p
                .kernels
                .iter()
                .find(|(_, k)| k.family == "gelu_mul")
                .unwrap_or_else(|| panic!("{tag}: no gelu_mul"));
            assert!(k.1.source.contains(mode), "{tag}: not {mode}");
            jobs.push((k.0.clone(), k.1.source.clone(), format!("{tag}/{}.cu", k.0)));
        }
    }
    std::env::set_var("ZAMBA2C_TUNE_PROMPT_GELU_MUL", "0");
    let p = program(&big, DType::BF16, DType::F32, "gelu-mul-off");
    let prompt = prompt_families(&p);
    assert!(prompt.contains(&"elementwise"), "gelu-mul-off: {prompt:?}");
    assert!(!prompt.contains(&"gelu_mul"), "gelu-mul-off: {prompt:?}");
    std::env::remove_var("ZAMBA2C_TUNE_PROMPT_GELU_MUL");
    // decode_rows' projections of one input into one product buffer and one pair_sum
    // (SHARED_PAIR_SUM=1; library GEMMs on stacked planes, the default): on the 2.7B shape, the
    // q/k/v of every hybrid layer and the shared blocks' embedding halves. Fewer pair_sum
    // launches, the same GEMMs, a table that validates, kernels that compile.
    let mut fused = lower_with_kv(&big, DType::BF16, DType::F32, DType::BF16);
    zamba2c_passes::pipeline::run_pipeline(&mut fused, 1, None).expect("the passes run");
    let base = build_program(&fused).expect("2.7B program");
    std::env::set_var("ZAMBA2C_TUNE_SHARED_PAIR_SUM", "1");
    let shared = build_program(&fused).expect("2.7B program, shared pair_sum");
    std::env::remove_var("ZAMBA2C_TUNE_SHARED_PAIR_SUM");
    assert_eq!(shared.validate(&fused), Ok(()));
    let (before, after) = (
        rows_launches(&base, "pair_sum"),
        rows_launches(&shared, "pair_sum"),
    );
    eprintln!("SHARED_PAIR_SUM=1: decode_rows pair_sum launches {before} -> {after}");
    // 9 hybrid layers' q/k/v (3 -> 1) and 2 shared blocks' embedding halves (3 -> 1).
    assert_eq!(after + 2 * 9 + 2 * 2, before);
    assert_eq!(
        rows_launches(&shared, "linear_mma_pipe"),
        rows_launches(&base, "linear_mma_pipe")
    );
    for (name, k) in &shared.kernels {
        if ["pair_sum", "linear_mma_pipe"].contains(&k.family.as_str()) {
            jobs.push((
                name.clone(),
                k.source.clone(),
                format!("shared-pair-sum/{name}.cu"),
            ));
        }
    }
    std::env::set_var("ZAMBA2C_TUNE_ATTN_KERNEL", "1");
    if !nvrtc::available() {
        if std::env::var("ZAMBA2C_REQUIRE_NVRTC").as_deref() == Ok("1") {
            panic!("ZAMBA2C_REQUIRE_NVRTC=1 but NVRTC cannot be loaded");
        }
        eprintln!("note: NVRTC not found, skipping the compile part");
        return;
    }
    let ptxs = nvrtc::compile_many(&jobs, "sm_90").unwrap_or_else(|e| panic!("{e}"));
    for ((name, source, _), ptx) in jobs.iter().zip(&ptxs) {
        assert!(ptx.contains(&format!(".entry {name}(")), "{name}");
        if source.contains("warp_mma_3xbf16<") {
            assert!(
                ptx.contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
                    && ptx.contains("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"),
                "{name}"
            );
        }
        assert!(ptx.contains("griddepcontrol.wait"), "{name}");
        if source.contains("prefetch_l2(reinterpret_cast") {
            assert!(ptx.contains("prefetch.global.L2"), "{name}");
        }
        if name.contains("linear_rows") {
            assert!(
                ptx.contains("mma.sync.aligned.m16n8k16.row.col.f32")
                    && ptx.contains("ld.global.nc.L1::no_allocate.v4.u32"),
                "{name}"
            );
        }
        if (name.contains("linear_mma_pipe") || name.contains("linear_rows"))
            && ptx.contains(".reqnctapercluster")
        {
            assert!(
                ptx.contains("barrier.cluster") && ptx.contains("mapa"),
                "{name}"
            );
        }
    }
}
