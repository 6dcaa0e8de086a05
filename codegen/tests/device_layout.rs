//! The device memory layout (`zamba2c_ir::device`) of generated launch tables, checked by
//! replaying every launch against the layout: each value a launch or the host reads must still
//! hold what was last written to it (no value placed over it was written in between), zeroed
//! values share memory with nothing, offsets are aligned, and reuse makes the arena smaller
//! than one buffer per value. Tiny modules and the 2.7B shape, -O0 and -O1.

mod common;
use common::config;

use std::collections::BTreeMap;

use serde_json::json;
use zamba2c_codegen::build_program;
use zamba2c_ir::device::{
    check_graph_layout, zeroed_values, DeviceLayout, DeviceShape, Region, Slot, DEVICE_ALIGN,
};
use zamba2c_ir::kernel::{Arg, CType, GraphProgram, Program, Storage};
use zamba2c_ir::{lower_mixed, lower_with_kv, DType, Module, Zamba2Config};

fn config_2p7b() -> Zamba2Config {
    config(json!({
        "vocab_size": 32000, "hidden_size": 2560, "num_hidden_layers": 54,
        "layers_block_type": serde_json::Value::Null, "mamba_d_state": 64, "n_mamba_heads": 80,
        "intermediate_size": 10240, "num_attention_heads": 32, "num_key_value_heads": 32,
        "num_mem_blocks": 2, "adapter_rank": 128, "max_position_embeddings": 4096
    }))
}

/// `m` and the same after the optimising passes.
fn both_levels(m: Module) -> [(Module, &'static str); 2] {
    let mut f = m.clone();
    zamba2c_passes::pipeline::run_pipeline(&mut f, 1, None).expect("the passes run");
    [(m, "-O0"), (f, "-O1")]
}

/// The slot of `v`'s storage root.
fn slot_of(gp: &GraphProgram, slots: &[Option<Slot>], v: usize) -> (usize, Slot) {
    let root = match gp.values[v].storage {
        Storage::Own => v,
        Storage::View { of, .. } => of,
    };
    (root, slots[root].expect("every buffer has a slot"))
}

/// Replays graph `gp`'s launches over its layout. A write (a `Ptr` parameter, or the host's
/// token copy before launch 0) records the time; a read (a `ConstPtr` parameter, the host's
/// read of the outputs after the last launch and of each node's value after its launches)
/// fails when another value overlapping the read one was written after the read one's last
/// write. Zeroed values must overlap nothing at all.
fn replay(gp: &GraphProgram, p: &Program, slots: &[Option<Slot>], what: &str) {
    let n = gp.launches.len() as i64;
    // Per root: write times, in order.
    let mut writes: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let (tok_root, _) = slot_of(gp, slots, gp.tokens);
    writes.entry(tok_root).or_default().push(-1);
    for (l, launch) in gp.launches.iter().enumerate() {
        let k = &p.kernels[&launch.kernel];
        for (param, a) in k.params.iter().zip(&launch.args) {
            if let (CType::Ptr(_), Arg::Value { value, .. }) = (param.ty, a) {
                let (r, _) = slot_of(gp, slots, *value);
                writes.entry(r).or_default().push(l as i64);
            }
        }
    }
    let overlaps = |a: &Slot, b: &Slot| {
        a.region == b.region && a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes
    };
    let check_read = |v: usize, at: i64, who: &str| {
        let (r, s) = slot_of(gp, slots, v);
        let Some(last) = writes
            .get(&r)
            .and_then(|w| w.iter().rev().find(|&&t| t < at).copied())
        else {
            return; // never written before: reading it is the kernel's own business
        };
        for (u, ws) in &writes {
            if *u == r {
                continue;
            }
            let su = slots[*u].expect("slot");
            if overlaps(&s, &su) && ws.iter().any(|&t| t > last && t <= at) {
                panic!(
                    "{what}: {who} reads value {v} (root {r}, written at {last}) at {at}, \
                     but value {u} over it was written in between"
                );
            }
        }
    };
    for (l, launch) in gp.launches.iter().enumerate() {
        let k = &p.kernels[&launch.kernel];
        for (param, a) in k.params.iter().zip(&launch.args) {
            if let (CType::ConstPtr(_), Arg::Value { value, .. }) = (param.ty, a) {
                check_read(*value, l as i64, &format!("launch {l} ({})", launch.kernel));
            }
        }
    }
    for &o in &gp.outputs {
        check_read(o, n, "the host (outputs)");
    }
    let mut done = 0usize;
    for (pos, &v) in gp.node_values.iter().enumerate() {
        while done < gp.launches.len() && gp.launches[done].node <= pos {
            done += 1;
        }
        // Read between launch done-1 and launch done.
        check_read(v, done as i64 - 1, &format!("validation of node {pos}"));
    }
    for z in zeroed_values(gp) {
        let (_, s) = slot_of(gp, slots, z);
        assert_eq!(s.region, Region::Workspace, "{what}: zeroed value {z}");
        for (i, o) in slots.iter().enumerate() {
            if let Some(o) = o {
                assert!(
                    i == z || !overlaps(&s, o),
                    "{what}: zeroed {z} overlaps {i}"
                );
            }
        }
    }
}

/// Every check on `m`'s layout for `shape`; returns it.
fn check(m: &Module, shape: DeviceShape, what: &str) -> DeviceLayout {
    let p = build_program(m).expect("program");
    let l = DeviceLayout::plan(m, &p, shape).expect("layout");
    let arena = l.table.activations as usize;
    let rows = p.decode_rows.as_ref().expect("a decode_rows table");
    let rows_l = l.decode_rows.as_ref().expect("a decode_rows layout");
    assert_eq!(
        rows_l.rows, shape.batch,
        "{what}: decode_rows holds max_batch rows"
    );
    assert!(
        rows_l.arena_bytes <= l.table.activations as usize,
        "{what}: the arena holds decode_rows"
    );
    for (gp, gl, g) in [
        (&p.prompt, &l.prompt, "prompt"),
        (&p.decode, &l.decode, "decode"),
        (rows, rows_l, "decode_rows"),
    ] {
        let w = format!("{what} {g}");
        check_graph_layout(gl, arena).unwrap_or_else(|e| panic!("{w}: {e}"));
        replay(gp, &p, &gl.slots, &w);
        assert!(
            gl.arena_bytes <= gl.unshared_bytes,
            "{w}: no worse than unshared"
        );
    }
    // The three tables' zeroed slots are distinct, after meta, inside the workspace.
    let ws: Vec<Slot> = [&l.prompt, &l.decode, rows_l]
        .iter()
        .flat_map(|g| g.slots.iter().flatten())
        .filter(|s| s.region == Region::Workspace)
        .copied()
        .collect();
    for (i, a) in ws.iter().enumerate() {
        assert!(a.offset >= DEVICE_ALIGN && a.offset + a.bytes <= l.table.workspace as usize);
        for b in &ws[i + 1..] {
            assert!(a.offset + a.bytes <= b.offset || b.offset + b.bytes <= a.offset);
        }
    }
    let t = l.table;
    assert_eq!(
        t.total,
        t.weights + t.states + t.kv_cache + t.activations + t.workspace
    );
    for x in [t.weights, t.states, t.kv_cache, t.activations, t.workspace] {
        assert_eq!(x % DEVICE_ALIGN as u64, 0, "{what}: {t:?}");
    }
    // Deterministic.
    assert_eq!(
        DeviceLayout::plan(m, &build_program(m).expect("program"), shape).expect("layout"),
        l
    );
    l
}

#[test]
fn tiny_layouts_keep_every_read_value_intact() {
    let cases = [
        json!({}),
        json!({"num_key_value_heads": 2, "use_mem_rope": true, "mamba_ngroups": 2}),
        json!({"use_shared_attention_adapter": true, "use_mem_rope": true, "num_mem_blocks": 1}),
    ];
    for (i, extra) in cases.into_iter().enumerate() {
        for dt in [DType::F32, DType::BF16] {
            for (m, lvl) in both_levels(lower_mixed(&config(extra.clone()), dt, DType::F32)) {
                for (ctx, batch, chunk) in [(1, 1, 1), (64, 1, 64), (64, 3, 7), (1000, 2, 512)] {
                    let shape = DeviceShape {
                        max_context: ctx,
                        batch,
                        prompt_chunk: chunk,
                    };
                    check(&m, shape, &format!("case {i} {dt} {lvl} {shape:?}"));
                }
            }
        }
    }
}

/// The 2.7B shape: the layout holds, reuse shrinks the arena well below one buffer per value,
/// and the states and KV cache are what the config implies, computed here from its numbers.
#[test]
fn zamba2_2p7b_layout() {
    for (kv, kv_size) in [(DType::F32, 4u64), (DType::BF16, 2)] {
        let base = lower_with_kv(&config_2p7b(), DType::BF16, DType::F32, kv);
        for (m, lvl) in both_levels(base) {
            let l = check(
                &m,
                DeviceShape::new(4096, 1),
                &format!("2.7B {lvl} kv {kv}"),
            );
            let t = l.table;
            // 54 layers: conv state [5120 + 2·64 channels, 4] f32, SSM [80, 64, 64] f32.
            assert_eq!(t.states, 54 * (5248 * 4 * 4 + 80 * 64 * 64 * 4));
            // 9 hybrid layers, K and V [32 heads, 4096, 160].
            assert_eq!(t.kv_cache, 9 * 2 * 32 * 4096 * 160 * kv_size);
            // bf16 weights: 2.7B parameters, within a few percent.
            assert!(
                t.weights > 5_000_000_000 && t.weights < 5_600_000_000,
                "{t:?}"
            );
            let p = l.prompt.unshared_bytes as f64 / l.prompt.arena_bytes as f64;
            eprintln!("2.7B {lvl} kv {kv}: {t:?}; prompt arena reuse {p:.1}x");
            assert!(
                p > 4.0,
                "{lvl}: the prompt arena barely reuses memory ({p:.1}x)"
            );
            assert!(t.activations < 400_000_000, "{lvl}: {t:?}");
        }
    }
}

/// A launch table written before the zeroed list existed treats every temporary as zeroed.
#[test]
fn an_old_launch_table_zeroes_every_temporary() {
    let mut m = lower_mixed(&config(json!({})), DType::F32, DType::F32);
    zamba2c_passes::pipeline::run_pipeline(&mut m, 1, None).expect("passes");
    let mut p = build_program(&m).expect("program");
    assert!(p.decode.zeroed.as_ref().is_some_and(|z| !z.is_empty()));
    p.decode.zeroed = None;
    let temps = p.decode.values.iter().filter(|v| v.node.is_none()).count();
    let l = DeviceLayout::plan(&m, &p, DeviceShape::new(64, 1)).expect("layout");
    let ws = l
        .decode
        .slots
        .iter()
        .flatten()
        .filter(|s| s.region == Region::Workspace)
        .count();
    assert_eq!(ws, temps);
    replay(&p.decode, &p, &l.decode.slots, "old table");
}

/// A graph whose chunked scan addresses whole 64-token chunks (GraphProgram::seq_align) gets
/// rows for whole chunks per sequence, while a call still takes at most the prompt chunk.
#[test]
fn chunked_scan_rows_cover_whole_chunks() {
    let [_, (m, lvl)] = both_levels(lower_mixed(&config(json!({})), DType::F32, DType::F32));
    let p = build_program(&m).expect("program");
    assert_eq!(p.prompt.seq_align, 64, "{lvl}: the prompt scan is chunked");
    assert_eq!(p.decode.seq_align, 1, "{lvl}: decode steps one token");
    // A prompt call runs one sequence whatever the batch (the slots take turns).
    for (batch, chunk, rows) in [(1, 7, 64), (3, 7, 64), (2, 64, 64), (1, 65, 128)] {
        let l = DeviceLayout::plan(
            &m,
            &p,
            DeviceShape {
                max_context: 256,
                batch,
                prompt_chunk: chunk,
            },
        )
        .expect("layout");
        assert_eq!((l.prompt.rows, l.prompt.seq_cap), (rows, chunk));
        assert_eq!((l.decode.rows, l.decode.seq_cap), (batch, 1));
    }
}

/// The prompt scan is chunked where a chunk fits in shared memory (2.7B: P = N = 64; its output
/// step on tensor cores in a bf16-weight plan, on CUDA cores in an f32 plan) and stays the
/// token loop where it does not (d_state 512), with rows then unaligned.
#[test]
fn the_scan_is_chunked_where_it_fits() {
    let families = |p: &Program| -> Vec<String> {
        p.prompt
            .launches
            .iter()
            .map(|l| p.kernels[&l.kernel].family.clone())
            .collect()
    };
    for (weights, out_family) in [
        (DType::BF16, "ssd_chunk_out_mma"),
        (DType::F32, "ssd_chunk_out"),
    ] {
        let [_, (big, _)] = both_levels(lower_mixed(&config_2p7b(), weights, DType::F32));
        let p = build_program(&big).expect("program");
        let f = families(&p);
        assert_eq!(f.iter().filter(|f| *f == out_family).count(), 54, "{f:?}");
        assert!(!f.iter().any(|f| f == "ssm_scan"));
        for l in &p.prompt.launches {
            if p.kernels[&l.kernel].family == out_family {
                assert!(l.smem > 48 * 1024 && l.smem <= zamba2c_ir::kernel::MAX_DYNAMIC_SMEM);
            }
        }
    }
    let [_, (wide, _)] = both_levels(lower_mixed(
        &config(json!({"mamba_d_state": 512})),
        DType::F32,
        DType::F32,
    ));
    let p = build_program(&wide).expect("program");
    let f = families(&p);
    assert!(f.iter().any(|f| f == "ssm_scan"), "{f:?}");
    assert!(!f.iter().any(|f| f.starts_with("ssd_")), "{f:?}");
    assert_eq!(p.prompt.seq_align, 1);
}
