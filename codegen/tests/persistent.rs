//! The persistent decode kernel (`BuildOptions::persistent_decode`, docs/KERNELS.md "Persistent
//! decode step"): one kernel holding the body of every kernel of the one-row `decode` table,
//! each in its namespace, for 256-thread blocks; the tables themselves are exactly what they
//! are without it, and a program without it does not mention it. An unfused (-O0) decode table
//! has kernels it cannot hold, and gets none.

mod common;
use common::config;

use std::collections::BTreeSet;

use serde_json::json;
use zamba2c_codegen::{build_program, build_program_with, BuildOptions, Program};
use zamba2c_ir::{lower, lower_with_kv, DType, Module};

fn modules() -> Vec<(&'static str, Module)> {
    let fused = |mut m: Module| {
        zamba2c_passes::pipeline::run_pipeline(&mut m, 1, None).expect("the passes run");
        m
    };
    let adapters = config(json!({
        "hidden_size": 64, "intermediate_size": 128, "n_mamba_heads": 4,
        "use_shared_attention_adapter": true, "use_mem_rope": true, "adapter_rank": 8
    }));
    vec![
        ("f32_O0", lower(&config(json!({})), DType::F32)),
        ("f32_O1", fused(lower(&config(json!({})), DType::F32))),
        (
            "gqa_bf16_O1",
            fused(lower(
                &config(json!({"num_key_value_heads": 2, "use_mem_rope": true})),
                DType::BF16,
            )),
        ),
        (
            "adapters_f16_O1",
            fused(lower_with_kv(&adapters, DType::F16, DType::F32, DType::F16)),
        ),
    ]
}

fn with_persistent(m: &Module) -> Program {
    build_program_with(
        m,
        &BuildOptions {
            persistent_decode: true,
        },
    )
    .expect("program")
}

#[test]
fn the_persistent_kernel_holds_every_decode_kernel_and_changes_no_table() {
    for (name, m) in modules() {
        let plain = build_program(&m).expect("program");
        assert!(plain.persistent_decode.is_none(), "{name}");
        let p = with_persistent(&m);
        if name.ends_with("_O0") {
            // Unfused ops have kernels of families it does not hold (norms, elementwise):
            // the program is the plain one.
            assert!(p.persistent_decode.is_none(), "{name}");
            assert_eq!(p.kernels.len(), plain.kernels.len(), "{name}");
            continue;
        }
        let pd = p
            .persistent_decode
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no persistent kernel"));
        // The tables and their kernels are the plain program's.
        assert_eq!(p.decode, plain.decode, "{name}");
        assert_eq!(p.prompt, plain.prompt, "{name}");
        assert_eq!(p.decode_rows, plain.decode_rows, "{name}");
        for (k, v) in &plain.kernels {
            assert_eq!(p.kernels[k].source, v.source, "{name}: {k}");
        }
        assert_eq!(p.kernels.len(), plain.kernels.len() + 1, "{name}");
        let used: BTreeSet<&String> = p.decode.launches.iter().map(|l| &l.kernel).collect();
        let members: BTreeSet<&String> = pd.members.iter().collect();
        assert_eq!(used, members, "{name}");
        assert_eq!(pd.block, 256, "{name}");
        // Projections of one weight matrix name it for the barrier's prefetch; others none.
        assert_eq!(pd.prefetch_param.len(), pd.members.len(), "{name}");
        for (m, pf) in pd.members.iter().zip(&pd.prefetch_param) {
            let k = &p.kernels[m];
            match pf {
                Some(i) => {
                    assert_eq!(k.family, "proj_gemv", "{name}: {m}");
                    assert_eq!(k.params[*i as usize].name, "w0", "{name}: {m}");
                }
                None => assert!(
                    k.family != "proj_gemv" || k.params.iter().any(|p| p.name == "w1"),
                    "{name}: {m}"
                ),
            }
        }
        assert!(pd.prefetch_param.iter().any(|p| p.is_some()), "{name}");
        let src = &p.kernels[&pd.kernel].source;
        for (i, m) in pd.members.iter().enumerate() {
            assert!(
                src.contains(&format!("namespace z2c_m{i} {{")),
                "{name}: {m}"
            );
            assert!(src.contains(&format!("{m}_body(t % gx")), "{name}: {m}");
            assert!(
                src.contains(&format!("case {i}: z2c_m{i}::tiles(")),
                "{name}: {m}"
            );
            // The member's own __global__ wrapper is not in it.
            assert!(!src.contains(&format!(" {m}(")), "{name}: {m}");
        }
        // The shared device header once, not once per member.
        assert_eq!(
            src.matches("struct __align__(2) bf16_t").count(),
            1,
            "{name}"
        );
        assert!(
            src.contains("__launch_bounds__(256, 3) z2c_persistent_decode("),
            "{name}"
        );
        // Attention bodies run with 8 warps (256 threads).
        if pd.members.iter().any(|m| m.contains("attention_decode")) {
            assert!(src.contains("NW = 8,"), "{name}");
        }
        // The launch table round-trips through program.json with the kernel named.
        let back: Program =
            serde_json::from_str(&serde_json::to_string(&p).expect("json")).expect("parse");
        assert_eq!(back.persistent_decode.as_ref(), Some(pd), "{name}");
        let plain_json = serde_json::to_string(&plain).expect("json");
        assert!(!plain_json.contains("persistent"), "{name}");
    }
}

/// A launch table read from disk is checked before the runtime builds the kernel's tables: a
/// persistent entry naming a kernel or member that is not there, a prefetch parameter that is
/// not a pointer of its member, or a table launch outside its members is refused.
#[test]
fn a_bad_persistent_entry_is_refused_by_validate() {
    let (_, m) = modules().pop().expect("a module");
    let p = with_persistent(&m);
    p.validate(&m).expect("the program is valid");
    let refused = |f: &dyn Fn(&mut Program), what: &str| {
        let mut q = p.clone();
        f(&mut q);
        let e = q.validate(&m).expect_err(what);
        assert!(e.starts_with("persistent decode kernel: "), "{what}: {e}");
    };
    let pd = |q: &mut Program| q.persistent_decode.as_mut().expect("persistent").clone();
    refused(
        &|q| q.persistent_decode.as_mut().expect("pd").kernel = "z2c_nothing".into(),
        "kernel",
    );
    refused(
        &|q| {
            let mut d = pd(q);
            d.members.pop();
            d.prefetch_param.pop();
            d.tile_scale.pop();
            q.persistent_decode = Some(d);
        },
        "a member missing",
    );
    refused(
        &|q| {
            let mut d = pd(q);
            let i = d
                .prefetch_param
                .iter()
                .position(|p| p.is_some())
                .expect("a prefetch");
            d.prefetch_param[i] = Some(999);
            q.persistent_decode = Some(d);
        },
        "prefetch parameter",
    );
    refused(
        &|q| q.persistent_decode.as_mut().expect("pd").block = 100,
        "block",
    );
    for bad in [0, zamba2c_ir::kernel::MAX_TILE_SCALE + 1] {
        refused(
            &|q| {
                let mut d = pd(q);
                d.tile_scale = vec![bad; d.members.len()];
                q.persistent_decode = Some(d);
            },
            "tile scale",
        );
    }
    refused(
        &|q| {
            let mut d = pd(q);
            d.tile_scale = vec![1];
            q.persistent_decode = Some(d);
        },
        "tile scales for one member",
    );
}
