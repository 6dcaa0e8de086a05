//! plan-memory: lays out weights, recurrent state and KV cache in separate regions, and each
//! graph's activations in one arena reused by liveness (greedy first fit in topological
//! order). The result is `module.memory` (format: `zamba2c_ir::memory`).

use std::collections::BTreeMap;

use petgraph::stable_graph::NodeIndex;
use zamba2c_ir::memory::{align_up, Arena, Buffer, MemoryPlan, StateSlot, WeightSlot, ALIGN};
use zamba2c_ir::{Dim, Graph, Module, StateSpec};

/// Per-row alignment of activation buffers: scaled by `R = B·T` rows an offset stays a
/// multiple of 16 bytes (vector loads).
const ROW_ALIGN: usize = 16;

/// The pass.
pub fn plan_memory(m: &mut Module) {
    m.memory = Some(memory_plan(m));
}

/// Computes the memory plan of `m` (without storing it).
pub fn memory_plan(m: &Module) -> MemoryPlan {
    let mut weights = Vec::new();
    let mut off = 0;
    for (name, spec) in &m.weights {
        weights.push(WeightSlot {
            name: name.clone(),
            offset: off,
            bytes: spec.bytes(),
        });
        off = align_up(off + spec.bytes(), ALIGN);
    }
    let weights_bytes = off;
    let (mut recurrent, mut kv) = (Vec::new(), Vec::new());
    let (mut roff, mut koff) = (0, 0);
    for (id, s) in m.states.iter().enumerate() {
        let bytes = s.numel_per_seq() * s.dtype().size();
        match s {
            StateSpec::Kv { .. } => {
                kv.push(StateSlot {
                    state: id,
                    offset: koff,
                    bytes,
                });
                koff += bytes;
            }
            _ => {
                recurrent.push(StateSlot {
                    state: id,
                    offset: roff,
                    bytes,
                });
                roff = align_up(roff + bytes, ALIGN);
            }
        }
    }
    MemoryPlan {
        align: ALIGN,
        weights,
        weights_bytes,
        recurrent,
        recurrent_bytes_per_seq: roff,
        kv,
        kv_bytes_per_token: koff,
        prompt: arena(&m.prompt),
        decode: arena(&m.decode),
    }
}

/// Bytes per row (`R = B·T` rows) of a node's output: `[B,T,w]` -> `w·size`, `[B,T]` -> `size`.
fn row_bytes(g: &Graph, n: NodeIndex) -> usize {
    let node = &g.g[n];
    let per: usize = node
        .shape
        .iter()
        .skip(2)
        .map(|d| match d {
            Dim::Fixed(k) => *k,
            _ => 1,
        })
        .product();
    align_up(per * node.dtype.size(), ROW_ALIGN)
}

/// One graph's activation arena: each node's output lives from its step to its last reader's
/// step (outputs: to the end); a buffer reuses the lowest free range that fits.
pub fn arena(g: &Graph) -> Arena {
    let order = g.topo_order();
    let id: BTreeMap<NodeIndex, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let end = order.len();
    // (offset, size, last) of the buffers currently allocated, sorted by offset.
    let mut live: Vec<(usize, usize, usize)> = Vec::new();
    let mut buffers = Vec::with_capacity(order.len());
    let (mut high, mut unshared) = (0, 0);
    for (step, &n) in order.iter().enumerate() {
        // A buffer last read before this step is free; one read by this step is not.
        live.retain(|&(_, _, last)| last >= step);
        let size = row_bytes(g, n);
        let last = if g.outputs.contains(&n) {
            end
        } else {
            g.users(n).iter().map(|u| id[u]).max().unwrap_or(step)
        };
        let mut offset = 0;
        for &(o, s, _) in &live {
            if o >= offset + size {
                break;
            }
            offset = offset.max(o + s);
        }
        let at = live.partition_point(|&(o, _, _)| o < offset);
        live.insert(at, (offset, size, last));
        high = high.max(offset + size);
        unshared += size;
        buffers.push(Buffer {
            node: step,
            label: g.g[n].label.clone(),
            offset_per_row: offset,
            bytes_per_row: size,
            first: step,
            last,
        });
    }
    Arena {
        arena_bytes_per_row: high,
        unshared_bytes_per_row: unshared,
        buffers,
    }
}

/// Checks that no two buffers that are live at the same time overlap (for tests).
pub fn check_arena(a: &Arena) -> Result<(), String> {
    for (i, x) in a.buffers.iter().enumerate() {
        if x.offset_per_row + x.bytes_per_row > a.arena_bytes_per_row {
            return Err(format!("{} ends past the arena", x.label));
        }
        for y in &a.buffers[i + 1..] {
            let time = x.first <= y.last && y.first <= x.last;
            let space = x.offset_per_row < y.offset_per_row + y.bytes_per_row
                && y.offset_per_row < x.offset_per_row + x.bytes_per_row;
            if time && space && x.bytes_per_row > 0 && y.bytes_per_row > 0 {
                return Err(format!(
                    "{} and {} overlap while both live",
                    x.label, y.label
                ));
            }
        }
    }
    Ok(())
}
