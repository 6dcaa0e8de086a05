//! Sequence slots in generated programs (issue 12; ir/src/kernel.rs `Arg::Meta`): every launch
//! that touches a state region also takes `meta` (so it can find its row's slot and position),
//! every template that indexes a state does so through `META_SLOT`, the device layout gives each
//! slot a disjoint, sequence-sized part of every state region and room for `[pos, slot]` per
//! row, and decode projections carry a batched variant with the same parameters.

mod common;
use common::config;

use serde_json::json;
use zamba2c_codegen::build_program;
use zamba2c_ir::device::{meta_bytes, state_region_bytes, DeviceLayout, DeviceShape, Region};
use zamba2c_ir::kernel::{Arg, Program};
use zamba2c_ir::{lower_mixed, DType, Module};

/// Tiny modules at -O0 (decomposed kernels) and -O1 (fused families), with and without RoPE,
/// adapters and grouped heads.
fn modules() -> Vec<(Module, String)> {
    let mut out = Vec::new();
    for (i, extra) in [
        json!({}),
        json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2}),
        json!({"use_shared_attention_adapter": true, "use_mem_rope": true}),
    ]
    .into_iter()
    .enumerate()
    {
        for dt in [DType::F32, DType::BF16] {
            let m = lower_mixed(&config(extra.clone()), dt, DType::F32);
            let mut f = m.clone();
            zamba2c_passes::pipeline::run_pipeline(&mut f, 1, None).expect("the passes run");
            out.push((m, format!("case {i} {dt} -O0")));
            out.push((f, format!("case {i} {dt} -O1")));
        }
    }
    out
}

fn programs() -> Vec<(Module, Program, String)> {
    modules()
        .into_iter()
        .map(|(m, what)| {
            let p = build_program(&m).expect("program");
            (m, p, what)
        })
        .collect()
}

#[test]
fn every_state_launch_takes_meta_and_addresses_its_slot() {
    for (_, p, what) in programs() {
        let mut state_kernels = 0;
        for (_, gp) in p.tables() {
            for l in &gp.launches {
                if !l.args.iter().any(|a| matches!(a, Arg::State { .. })) {
                    continue;
                }
                state_kernels += 1;
                assert!(
                    l.args.iter().any(|a| matches!(a, Arg::Meta)),
                    "{what}: {} touches a state without meta",
                    l.kernel
                );
                // The body addresses states through the row's slot, never by the row alone.
                let src = &p.kernels[&l.kernel].source;
                let body = &src[src.find("_body(").expect("a body")..];
                assert!(
                    body.contains("META_SLOT("),
                    "{what}: {} never reads its slot",
                    l.kernel
                );
            }
        }
        assert!(state_kernels >= 4, "{what}: {state_kernels} state launches");
    }
}

#[test]
fn the_prelude_defines_the_meta_layout_of_the_ir() {
    let (_, p, _) = programs().remove(0);
    let src = &p.kernels.values().next().expect("a kernel").source;
    // [position, slot] per row: ir/src/device.rs META_INTS_PER_ROW.
    assert_eq!(zamba2c_ir::device::META_INTS_PER_ROW, 2);
    assert!(src.contains("#define META_POS(b) (meta[2 * (b)])"), "{src}");
    assert!(
        src.contains("#define META_SLOT(b) (meta[2 * (b) + 1])"),
        "{src}"
    );
    for b in [1, 2, 7, 64, 1024] {
        assert!(meta_bytes(b) >= 8 * b && meta_bytes(b) >= 16);
    }
}

#[test]
fn each_slot_owns_a_disjoint_sequence_sized_part_of_every_region() {
    for (m, p, what) in programs() {
        for (batch, ctx) in [(1, 64), (3, 17), (8, 64)] {
            let l = DeviceLayout::plan(&m, &p, DeviceShape::new(ctx, batch)).expect("layout");
            let buf = l.states_buffer_bytes();
            let mut all = Vec::new();
            for slot in 0..batch {
                let ranges = l.slot_ranges(&m.states, slot).expect("ranges");
                // One range per region part: K and V for a cache, one for conv and SSM.
                let parts: usize = m
                    .states
                    .iter()
                    .map(|s| 1 + usize::from(matches!(s, zamba2c_ir::StateSpec::Kv { .. })))
                    .sum();
                assert_eq!(ranges.len(), parts, "{what}");
                let total: usize = ranges.iter().map(|r| r.len()).sum();
                let want: usize = m
                    .states
                    .iter()
                    .map(|s| state_region_bytes(s, 1, ctx).expect("size"))
                    .sum();
                assert_eq!(total, want, "{what}: slot {slot} holds one sequence");
                all.extend(ranges);
            }
            all.sort_by_key(|r| r.start);
            for w in all.windows(2) {
                assert!(
                    w[0].end <= w[1].start,
                    "{what}: {:?} overlaps {:?}",
                    w[0],
                    w[1]
                );
            }
            assert!(all.last().is_some_and(|r| r.end <= buf), "{what}");
            assert!(l.slot_ranges(&m.states, batch).is_none(), "{what}");
            // Every row's [pos, slot] fits before the first zeroed value of the workspace.
            let first_ws = [&l.prompt, &l.decode]
                .into_iter()
                .chain(&l.decode_rows)
                .flat_map(|g| g.slots.iter().flatten())
                .filter(|s| s.region == Region::Workspace)
                .map(|s| s.offset)
                .min();
            if let Some(o) = first_ws {
                assert!(o >= meta_bytes(batch), "{what}: meta of {batch} rows");
            }
            // The prompt runs one sequence per call whatever the batch; decode a row per slot.
            assert_eq!(l.decode.rows, batch, "{what}");
            assert_eq!(
                l.decode_rows.as_ref().map(|g| g.rows),
                Some(batch),
                "{what}"
            );
            assert!(l.prompt.rows < 2 * ctx.max(64), "{what}");
        }
    }
}

#[test]
fn decode_projections_have_a_batched_variant_with_the_same_parameters() {
    for (m, p, what) in programs() {
        let mut n = 0;
        for l in &p.decode.launches {
            let k = &p.kernels[&l.kernel];
            if k.family != "proj_gemv" {
                assert!(l.batched.is_none(), "{what}: {} is batched", l.kernel);
                continue;
            }
            n += 1;
            let b = l.batched.as_ref().expect("a batched variant");
            let v = &p.kernels[b];
            assert_eq!(v.params, k.params, "{what}: {b}");
            assert_eq!(v.family, "proj_gemv");
            assert!(k.source.contains("constexpr int R = 1;"), "{what}");
            assert!(v.source.contains("constexpr int R = 8;"), "{what}");
            assert_eq!(l.kernel_for(1, 1), l.kernel);
            assert_eq!(l.kernel_for(2, 1), b.as_str());
        }
        assert!(n > 0, "{what}: no decode projection");
        // A launch table with a batched kernel of other parameters is refused.
        let mut bad = p.clone();
        let l = bad
            .decode
            .launches
            .iter_mut()
            .find(|l| l.batched.is_some())
            .expect("one");
        let other = bad
            .kernels
            .keys()
            .find(|k| bad.kernels[*k].params != bad.kernels[&l.kernel].params)
            .expect("a kernel of other parameters")
            .clone();
        l.batched = Some(other);
        let e = bad.validate(&m).expect_err("other parameters");
        assert!(e.contains("takes other parameters"), "{what}: {e}");
        let mut missing = p.clone();
        if let Some(l) = missing
            .decode
            .launches
            .iter_mut()
            .find(|l| l.batched.is_some())
        {
            l.batched = Some("z2c_nothing".into());
        }
        let e = missing.validate(&m).expect_err("a missing kernel");
        assert!(e.contains("no such batched kernel"), "{what}: {e}");
    }
}

/// The `decode_rows` table (docs/KERNELS.md "decode_rows"): the decode graph's nodes, each node's
/// state kernels of the same families as in `decode` (the same templates, so the same per-row
/// META_POS / META_SLOT addressing; only their tiling differs, blocks enough coming from the
/// rows), every node `decode` serves with `proj_gemv` served by the GEMMs
/// instead (the tensor-core `linear_mma_pipe` with bf16 weights; the FMA GEMM only for shapes
/// the tensor-core kernel refuses, as in a prompt), no launch with a batched variant, and every
/// grid a function of the rows (any step up to `max_batch`).
#[test]
fn decode_rows_keeps_the_state_kernels_and_puts_projections_on_the_gemm() {
    for (m, p, what) in programs() {
        let rows = p.decode_rows.as_ref().expect("a decode_rows table");
        assert_eq!(rows.phase, zamba2c_ir::Phase::Decode, "{what}");
        assert_eq!(rows.node_values.len(), p.decode.node_values.len(), "{what}");
        let fused = what.ends_with("-O1");
        let by_node = |gp: &zamba2c_ir::kernel::GraphProgram, state: bool| {
            let mut out: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
            for l in &gp.launches {
                let touches = l.args.iter().any(|a| matches!(a, Arg::State { .. }));
                if touches == state {
                    let k = &p.kernels[&l.kernel];
                    // State kernels compare by family (their tiling follows the table).
                    let name = if state { &k.family } else { &l.kernel };
                    out.entry(l.node).or_default().push(name.clone());
                }
            }
            out
        };
        assert_eq!(
            by_node(rows, true),
            by_node(&p.decode, true),
            "{what}: the state kernels differ"
        );
        let mut mma = 0;
        for (node, kernels) in by_node(&p.decode, false) {
            let fams: Vec<&str> = kernels
                .iter()
                .map(|k| p.kernels[k].family.as_str())
                .collect();
            if !fams.contains(&"proj_gemv") {
                continue;
            }
            let row_fams: Vec<&str> = rows
                .launches
                .iter()
                .filter(|l| l.node == node)
                .map(|l| p.kernels[&l.kernel].family.as_str())
                .collect();
            assert!(
                !row_fams.contains(&"proj_gemv") && !row_fams.contains(&"linear_gemv"),
                "{what}: node {node} streams weights in decode_rows: {row_fams:?}"
            );
            let on_gemm = row_fams
                .iter()
                .any(|f| matches!(*f, "linear_mma_pipe" | "linear_gemm"));
            assert!(on_gemm, "{what}: node {node}: {row_fams:?}");
            if row_fams.contains(&"linear_mma_pipe") {
                mma += 1;
            }
        }
        // bf16 weights (aligned shapes) put every projection group on the tensor cores.
        if fused && m.dtype == DType::BF16 {
            assert!(mma > 0, "{what}: no projection on linear_mma_pipe");
            for l in &rows.launches {
                let f = p.kernels[&l.kernel].family.as_str();
                if f == "linear_mma_pipe" {
                    assert!(
                        l.smem > 0,
                        "{what}: {} without its pipeline stages",
                        l.kernel
                    );
                }
            }
        }
        for l in &rows.launches {
            assert!(
                l.batched.is_none(),
                "{what}: {} has a batched variant",
                l.kernel
            );
            for e in l.grid {
                // A step's rows come from the call (B = rows, T = 1), never a chunk count.
                assert!(
                    !matches!(e, zamba2c_ir::kernel::Extent::SeqDiv { .. }),
                    "{what}: {} has a per-chunk grid",
                    l.kernel
                );
            }
            let (x16, x64) = (l.grid(16, 1), l.grid(64, 1));
            assert!(x64.0 * x64.1 * x64.2 >= x16.0 * x16.1 * x16.2, "{what}");
        }
        // The mixer's gated norm runs as its own kernel in front of out_proj's GEMM.
        if fused {
            let norms = rows
                .launches
                .iter()
                .filter(|l| p.kernels[&l.kernel].family == "group_rms_norm")
                .count();
            let steps = rows
                .launches
                .iter()
                .filter(|l| p.kernels[&l.kernel].family.starts_with("mamba_step"))
                .count();
            assert_eq!(norms, steps, "{what}");
            assert!(steps > 0, "{what}");
        }
        assert_eq!(rows.seq_align, 1, "{what}");
        p.validate(&m).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// A launch table without `decode_rows` (written before it existed) still reads and lays out,
/// and a broken `decode_rows` is refused by name.
#[test]
fn decode_rows_is_optional_and_checked() {
    let (m, p, _) = programs().remove(1);
    let json = serde_json::to_value(&p).expect("json");
    assert!(json.get("decode_rows").is_some());
    let mut old = json.clone();
    old.as_object_mut().expect("object").remove("decode_rows");
    let old: Program = serde_json::from_value(old).expect("an old table reads");
    assert!(old.decode_rows.is_none());
    let l = DeviceLayout::plan(&m, &old, DeviceShape::new(64, 4)).expect("layout");
    assert!(l.decode_rows.is_none());
    let mut bad = p.clone();
    let rows = bad.decode_rows.as_mut().expect("rows");
    rows.launches[0].args.pop();
    let e = bad.validate(&m).expect_err("a missing argument");
    assert!(e.starts_with("DecodeRows graph:"), "{e}");
}

/// The `decode_rows` table ends with the greedy pick of every row (`GraphProgram::greedy`,
/// templates/argmax_rows.cu): one launch reading the logits output into an i32 value of width 1
/// that lives to the end of the step; the other tables have none. A launch table naming a
/// greedy value that is not such a buffer is refused.
#[test]
fn decode_rows_picks_greedy_tokens_last() {
    for (m, p, what) in programs() {
        assert!(
            p.prompt.greedy.is_none() && p.decode.greedy.is_none(),
            "{what}"
        );
        let rows = p.decode_rows.as_ref().expect("decode_rows");
        let g = rows.greedy.expect("a greedy value");
        let last = rows.launches.last().expect("launches");
        assert_eq!(p.kernels[&last.kernel].family, "argmax_rows", "{what}");
        let logits = rows.outputs[0];
        assert!(matches!(last.args[0], Arg::Value { value, offset: 0 } if value == logits));
        assert!(matches!(last.args[1], Arg::Value { value, offset: 0 } if value == g));
        assert_eq!(rows.values[g].dtype, DType::I32);
        assert_eq!(rows.values[g].width, 1);
        // Its buffer is not reused by any other value (it is read after the last launch).
        let l = DeviceLayout::plan(&m, &p, DeviceShape::new(32, 4)).expect("layout");
        let rl = l.decode_rows.as_ref().expect("decode_rows layout");
        let (gs, _) = rl.root_slot(rows, g).expect("a slot");
        let (ls, _) = rl.root_slot(rows, logits).expect("a slot");
        let overlap = gs.region == ls.region
            && gs.offset < ls.offset + ls.bytes
            && ls.offset < gs.offset + gs.bytes;
        assert!(!overlap, "{what}: greedy ids overlap the logits");
        let mut bad = p.clone();
        bad.decode_rows.as_mut().expect("decode_rows").greedy = Some(logits);
        let e = bad.validate(&m).expect_err("refused");
        assert!(e.contains("greedy-token value"), "{what}: {e}");
    }
}
