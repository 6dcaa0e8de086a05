//! Library GEMMs (ir/src/kernel.rs `LibraryGemm`, docs/KERNELS.md "Library GEMMs"): a
//! `linear_mma_pipe` launch whose projection cuBLASLt can compute exactly carries a description
//! of it made from the kernel's own operands; the launch table refuses one that reaches past
//! its buffers; the device layout gives the library its scratch space only when some launch
//! can use it.

mod common;
use common::config;

use serde_json::json;
use zamba2c_codegen::build_program;
use zamba2c_ir::device::{DeviceLayout, DeviceShape, LIBRARY_WORKSPACE_BYTES};
use zamba2c_ir::kernel::{Arg, GraphId, LibraryEpilogue, Program};
use zamba2c_ir::{lower_mixed, DType, Module};

/// The tiny config with 8-aligned widths (the tensor-core GEMM's condition), fused, with
/// `weights` and f32 activations.
fn module(weights: DType) -> Module {
    let c = config(json!({
        "hidden_size": 32, "intermediate_size": 64, "n_mamba_heads": 8, "mamba_d_state": 16,
        "use_shared_attention_adapter": true, "adapter_rank": 8
    }));
    let mut m = lower_mixed(&c, weights, DType::F32);
    zamba2c_passes::pipeline::run_pipeline(&mut m, 1, None).expect("the passes run");
    m
}

fn libraries(p: &Program) -> usize {
    p.tables()
        .into_iter()
        .flat_map(|(_, gp)| gp.launches.iter())
        .filter(|l| l.library.is_some())
        .count()
}

#[test]
fn library_gemms_describe_the_kernels_own_operands() {
    let m = module(DType::BF16);
    let p = build_program(&m).expect("program");
    assert!(
        p.prompt.launches.iter().any(|l| l.library.is_some()),
        "bf16 weights put prompt projections on the library"
    );
    for (id, gp) in p.tables() {
        for l in &gp.launches {
            let Some(g) = &l.library else { continue };
            let k = &p.kernels[&l.kernel];
            assert_eq!(k.family, "linear_mma_pipe", "{id:?} {}", l.kernel);
            // The kernel's parameters: x, weight, [res], out, rows.
            assert_eq!(g.x, l.args[0], "{id:?} {}", l.kernel);
            assert_eq!(g.weight, l.args[1], "{id:?} {}", l.kernel);
            let out = &l.args[l.args.len() - 2];
            assert_eq!(&g.out, out, "{id:?} {}", l.kernel);
            match &g.epilogue {
                LibraryEpilogue::Residual(r) => {
                    assert_eq!(l.args.len(), 5);
                    assert_eq!(r, &l.args[2]);
                }
                _ => assert_eq!(l.args.len(), 4),
            }
            // f32 activations reach the library only as split planes, into an f32 output:
            // presplit (hi and lo in one row of the call), or in `decode_rows` stacked (hi and
            // lo as GEMM rows of their own, two per buffer row, the products summed next).
            assert_eq!(g.out_dtype, DType::F32);
            let Arg::Value { value, .. } = g.x else {
                panic!("input is a value")
            };
            assert_eq!(gp.values[value].dtype, DType::BF16);
            let stacked = id == GraphId::DecodeRows;
            assert_eq!(g.split, !stacked, "{id:?} {}", l.kernel);
            assert_eq!(g.row_stack, if stacked { 2 } else { 1 });
            assert_eq!(gp.values[value].row_stride, g.row_stack * g.x_ld);
            let w = &m.weights[match &g.weight {
                Arg::Weight { name, .. } => name,
                a => panic!("{a:?}"),
            }];
            assert_eq!(w.dtype, DType::BF16);
            assert_eq!(*w.shape.last().expect("matrix"), g.w_ld);
        }
    }
    let l = DeviceLayout::plan(&m, &p, DeviceShape::new(64, 2)).expect("layout");
    let at = l.library_workspace.expect("scratch space for the library");
    assert!(at as u64 + LIBRARY_WORKSPACE_BYTES as u64 <= l.table.workspace);
}

#[test]
fn decode_rows_stacks_the_split_planes_and_sums_the_products() {
    let m = module(DType::BF16);
    let p = build_program(&m).expect("program");
    let gp = p.decode_rows.as_ref().expect("a decode_rows table");
    let mut stacked = 0;
    for (i, l) in gp.launches.iter().enumerate() {
        let Some(g) = &l.library else { continue };
        stacked += 1;
        // One GEMM of 2·B·T rows into an f32 temporary, then `pair_sum` reading exactly it, or
        // (a mixer's in_proj: the pair fold) the mixer's step summing the pair as it reads it.
        assert_eq!(g.row_stack, 2);
        assert!(matches!(g.epilogue, LibraryEpilogue::None));
        assert!(l.args.contains(&Arg::RowsTimes(2)), "{}", l.kernel);
        let next = &gp.launches[i + 1];
        let family = p.kernels[&next.kernel].family.as_str();
        assert!(
            ["pair_sum", "mamba_step", "mamba_step_pipe"].contains(&family),
            "{family} after {}",
            l.kernel
        );
        assert_eq!(next.args[0], g.out, "{family} reads the products");
        let Arg::Value { value, offset } = g.out else {
            panic!("output is a value")
        };
        assert_eq!(offset, 0);
        assert_eq!(gp.values[value].width, 2 * g.n);
    }
    assert!(stacked > 0, "decode_rows projections run as library GEMMs");
    // The prompt keeps one presplit GEMM per projection.
    assert!(p
        .prompt
        .launches
        .iter()
        .filter_map(|l| l.library.as_ref())
        .all(|g| g.row_stack == 1 && g.split));
}

/// f16 weights (docs/KERNELS.md "GEMM inputs"): every tensor-core GEMM of f32 activations reads
/// one f16 plane, rounded once by the norm that writes it or by `round_f16`: one library GEMM
/// per projection in the prompt and in `decode_rows` alike, with no bf16 planes, no stacked rows
/// and no `pair_sum`.
#[test]
fn f16_weights_feed_every_gemm_one_f16_plane() {
    let m = module(DType::F16);
    let p = build_program(&m).expect("program");
    let mut gemms = 0;
    for (id, gp) in p.tables() {
        for l in &gp.launches {
            let family = p.kernels[&l.kernel].family.as_str();
            assert!(
                !matches!(family, "split_bf16" | "pair_sum"),
                "{id:?}: {family} in an f16-weight plan"
            );
            let Some(g) = &l.library else { continue };
            gemms += 1;
            assert_eq!(g.input, DType::F16, "{id:?} {}", l.kernel);
            assert!(!g.split && g.row_stack == 1, "{id:?} {}", l.kernel);
            let Arg::Value { value, .. } = g.x else {
                panic!("input is a value")
            };
            assert_eq!(gp.values[value].dtype, DType::F16);
            let name = match &g.weight {
                Arg::Weight { name, .. } => name,
                a => panic!("{a:?}"),
            };
            assert_eq!(m.weights[name].dtype, DType::F16);
        }
    }
    let in_prompt = p
        .prompt
        .launches
        .iter()
        .filter(|l| l.library.is_some())
        .count();
    let rows = p.decode_rows.as_ref().expect("a decode_rows table");
    assert!(in_prompt > 0 && rows.launches.iter().any(|l| l.library.is_some()));
    assert_eq!(gemms, libraries(&p));
    // Norms write the f16 plane their GEMMs read; other f32 inputs are rounded by round_f16.
    let families: Vec<&str> = p
        .prompt
        .launches
        .iter()
        .map(|l| p.kernels[&l.kernel].family.as_str())
        .collect();
    assert!(families.contains(&"round_f16"), "{families:?}");
    let kernel_source = |family: &str| {
        p.kernels
            .values()
            .filter(|k| k.family == family)
            .map(|k| k.source.clone())
            .collect::<Vec<_>>()
    };
    assert!(kernel_source("rms_norm")
        .iter()
        .any(|s| s.contains("store_gemm_input(o + c") && s.contains("half_t* __restrict__ out")));
    // The GEMM's own products (`acc[i][j]`; the shared header's 3xBF16 helper has its own).
    assert!(kernel_source("linear_mma_pipe")
        .iter()
        .all(|s| s.contains("mma_f16_16816(acc[i][j]") && !s.contains("mma_bf16_16816(acc[i][j]")));
}

#[test]
fn f32_weights_have_no_library_gemm_and_no_scratch() {
    let m = module(DType::F32);
    let p = build_program(&m).expect("program");
    assert_eq!(libraries(&p), 0);
    let l = DeviceLayout::plan(&m, &p, DeviceShape::new(64, 2)).expect("layout");
    assert!(l.library_workspace.is_none());
}

/// What a broken descriptor should be refused for, and how to break it.
type Breakage = (&'static str, fn(&mut zamba2c_ir::kernel::LibraryGemm));

/// Each breakage of the first library GEMM of table `id` is refused, naming what is wrong.
fn refused(m: &Module, p: &Program, id: GraphId, cases: &[Breakage]) {
    let first = |p: &Program| {
        p.tables()
            .into_iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, gp)| gp.launches.iter().position(|l| l.library.is_some()))
    };
    let at = first(p).expect("a library GEMM");
    for (what, break_it) in cases {
        let mut bad = p.clone();
        let table = match id {
            GraphId::Prompt => &mut bad.prompt,
            GraphId::Decode => &mut bad.decode,
            GraphId::DecodeRows => bad.decode_rows.as_mut().expect("decode_rows"),
        };
        break_it(table.launches[at].library.as_mut().expect("library"));
        let e = bad.validate(m).expect_err("refused");
        assert!(
            e.contains("library GEMM") && e.contains(what),
            "{id:?} {what}: {e}"
        );
    }
}

#[test]
fn a_library_gemm_past_its_buffers_is_refused() {
    let m = module(DType::BF16);
    let p = build_program(&m).expect("program");
    p.validate(&m).expect("as built, the table is valid");
    let cases: [Breakage; 4] = [
        ("input", |g| g.k += 8),
        ("output", |g| g.n += 1),
        ("weight", |g| g.w_ld += 64),
        ("input", |g| g.x_ld += 1),
    ];
    refused(&m, &p, GraphId::Prompt, &cases);
    // Stacked rows: a GEMM row wider than its half of the buffer row, a stack the buffers do
    // not hold, or a split input stacked again.
    let stacked: [Breakage; 4] = [
        ("input", |g| g.k += 8),
        ("output", |g| g.n += 1),
        ("input", |g| g.row_stack = 1),
        ("stacked rows", |g| g.split = true),
    ];
    refused(&m, &p, GraphId::DecodeRows, &stacked);
}
