//! The device memory of a plan on one GPU, computed on the CPU so that `inspect` predicts
//! exactly what the CUDA engine allocates (issue 11). Four buffers:
//!
//! - **weights**: every weight of the table, in name order, each at a 256-byte aligned offset;
//! - **states**: conv and SSM states, then the K and V caches sized for the requested context
//!   (never a fixed maximum), each region aligned, `batch` sequence slots (slot `s` of a region
//!   is its `s`-th `1/batch` part: [`DeviceLayout::slot_ranges`]);
//! - **arena**: every activation value of both launch tables (`kernels/program.json`). A value
//!   is live from the first launch that touches it to the last one (the token ids from before
//!   the first launch, the graph outputs until after the last, a node's value until the host
//!   may read it between launches in validation runs; a view keeps its root alive, since
//!   launches address roots only). Values live at the same time never overlap; the prompt and
//!   decode graphs (and the decode graph's tensor-core variant `decode_rows`) share the arena
//!   because they never run at the same time. The prompt graph runs one sequence (one slot)
//!   per call, so its values hold one sequence's prompt chunk; the decode programs' hold one
//!   row per slot;
//! - **workspace**: the per-call `meta` array ([`meta_bytes`]), then one slot of its own per value a kernel
//!   expects zero at launch and leaves zero (`GraphProgram::zeroed`: attention_decode's split
//!   counters), never shared with anything else; and when some launch may run as a library GEMM
//!   (`crate::kernel::LibraryGemm`), the library's scratch space ([`LIBRARY_WORKSPACE_BYTES`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::graph::{Module, StateSpec};
use crate::kernel::{Arg, GraphId, GraphProgram, Program, Storage};

/// Alignment of every buffer, region and value offset (what `cuMemAlloc` gives, and more than
/// any kernel's vector load needs).
pub const DEVICE_ALIGN: usize = 256;

/// Rounds `n` up to a multiple of `a`.
pub fn align_up(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

/// Most tokens one prompt launch of a one-sequence engine processes by default; longer prompts
/// run in chunks. Larger launches keep the GEMMs and the scan busier: on the H200 a 2048-token
/// prompt of the 2.7B takes 73.4 ms in launches of 1024 against 77.5 ms in launches of 512
/// (70.0 in one of 2048). 1024, not 2048: the activation arena grows with the chunk (~144 KB a
/// token on the 2.7B; its peak is now a mixer's in_proj output, conv output and scan buffers),
/// and 2048 would take the 2.7B at 4096 tokens of bf16 cache past 6 GiB (docs/PERFORMANCE.md,
/// sixteenth and seventeenth sessions).
pub const DEFAULT_PROMPT_CHUNK: usize = 1024;
/// The same for an engine of several sequence slots: a prompt chunk runs between two decode
/// steps of the other sequences, so its length bounds their inter-token latency (~18 ms for
/// 512 tokens of the 2.7B on the H200).
pub const DEFAULT_BATCH_PROMPT_CHUNK: usize = 512;
/// The largest prompt chunk a caller may ask for (`--prompt-chunk`): the activation arena
/// grows linearly with it (79 MB per 512 tokens for Zamba2-2.7B).
pub const MAX_PROMPT_CHUNK: usize = 16384;

/// Scratch bytes given to the GEMM library (cuBLASLt) when a launch table has library GEMMs:
/// 32 MiB, what NVIDIA's cuBLAS documentation recommends on Hopper.
pub const LIBRARY_WORKSPACE_BYTES: usize = 32 << 20;

/// `i32`s of `meta` per row of a call: the row's position, then its state slot
/// (`crate::kernel::Arg::Meta`).
pub const META_INTS_PER_ROW: usize = 2;

/// Bytes of the per-call `meta` array (`Arg::Meta`) at the start of the workspace for calls
/// of up to `batch` rows: `[position, slot]` per row, at least 16 bytes.
pub fn meta_bytes(batch: usize) -> usize {
    (batch.saturating_mul(META_INTS_PER_ROW * 4)).max(16)
}

/// The prompt launch size an engine of `max_context` tokens takes unless told otherwise:
/// [`DEFAULT_BATCH_PROMPT_CHUNK`] for an engine of sequence slots a batcher drives (`batched`),
/// [`DEFAULT_PROMPT_CHUNK`] for one sequence, never more than the context.
pub fn default_prompt_chunk(max_context: usize, batched: bool) -> usize {
    let chunk = if batched {
        DEFAULT_BATCH_PROMPT_CHUNK
    } else {
        DEFAULT_PROMPT_CHUNK
    };
    max_context.clamp(1, chunk)
}

/// What the device buffers are sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceShape {
    /// Tokens each sequence's KV cache holds (prompt and generated).
    pub max_context: usize,
    /// Sequences held at once (state slots; rows of a decode step).
    pub batch: usize,
    /// Most tokens of one sequence one prompt launch processes.
    pub prompt_chunk: usize,
}

impl DeviceShape {
    /// `batch` sequences of `max_context` tokens, prompt chunks of at most
    /// [`DEFAULT_PROMPT_CHUNK`] tokens for one sequence, [`DEFAULT_BATCH_PROMPT_CHUNK`] for
    /// several (never more than the context).
    pub fn new(max_context: usize, batch: usize) -> Self {
        DeviceShape {
            max_context,
            batch,
            prompt_chunk: default_prompt_chunk(max_context, batch > 1),
        }
    }

    /// This shape with prompt launches of at most `chunk` tokens (never more than the context;
    /// callers check `chunk` against [`MAX_PROMPT_CHUNK`]).
    pub fn with_prompt_chunk(self, chunk: usize) -> Self {
        DeviceShape {
            prompt_chunk: chunk.clamp(1, self.max_context.max(1)),
            ..self
        }
    }
}

/// Bytes of each part of the device memory, as `inspect` prints it and the engine allocates
/// it: `total` is the sum of the other five, the four buffers' sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryTable {
    pub weights: u64,
    /// Conv and SSM states.
    pub states: u64,
    pub kv_cache: u64,
    /// The activation arena of both graphs.
    pub activations: u64,
    /// `meta` and the zeroed values.
    pub workspace: u64,
    pub total: u64,
}

/// A size that does not fit this machine's address space (a context or batch far too large).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device memory layout: {0}")]
pub struct LayoutError(pub String);

/// Which buffer a value lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Region {
    Arena,
    Workspace,
}

/// Where one value that owns storage lives, and when it is live (launch indices; the graph's
/// launch count stands for "after the last launch").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub region: Region,
    pub offset: usize,
    pub bytes: usize,
    pub first: usize,
    pub last: usize,
}

/// The values of one graph for `rows` rows (`batch · tokens`, tokens rounded up to the
/// graph's `seq_align`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphLayout {
    pub rows: usize,
    /// Most tokens per sequence one call may take.
    pub seq_cap: usize,
    /// Per value: its slot when it owns storage, `None` for views (they use their root's).
    pub slots: Vec<Option<Slot>>,
    /// End of the highest arena slot.
    pub arena_bytes: usize,
    /// Sum of every arena slot: the arena without reuse, for comparison.
    pub unshared_bytes: usize,
}

impl GraphLayout {
    /// The slot of value `v`'s storage root and `v`'s column offset in it.
    pub fn root_slot(&self, gp: &GraphProgram, v: usize) -> Option<(Slot, usize)> {
        let (root, col) = match gp.values.get(v)?.storage {
            Storage::Own => (v, 0),
            Storage::View { of, offset } => (of, offset),
        };
        Some(((*self.slots.get(root)?)?, col))
    }
}

/// Every byte the CUDA engine allocates for a module and its launch table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceLayout {
    pub shape: DeviceShape,
    /// Offset of each weight in the weights buffer.
    pub weights: BTreeMap<String, usize>,
    /// Offsets of each state region's parts in the states buffer, by state id (part 1, the V
    /// cache, only for KV regions; otherwise equal to part 0).
    pub states: Vec<[usize; 2]>,
    pub prompt: GraphLayout,
    pub decode: GraphLayout,
    /// The layout of `Program::decode_rows`, when the program has it (`max_batch` rows).
    pub decode_rows: Option<GraphLayout>,
    /// Offset in the workspace of the GEMM library's scratch space
    /// ([`LIBRARY_WORKSPACE_BYTES`]), when the launch table has library GEMMs.
    pub library_workspace: Option<usize>,
    pub table: MemoryTable,
}

fn overflow(what: &str) -> LayoutError {
    LayoutError(format!("{what} does not fit in the address space"))
}

/// `align_up(n, DEVICE_ALIGN)`, checked.
fn aligned(n: usize, what: &str) -> Result<usize, LayoutError> {
    n.checked_next_multiple_of(DEVICE_ALIGN)
        .ok_or_else(|| overflow(what))
}

/// Bytes of state region `s` for `batch` sequences of `max_context` tokens (unaligned).
pub fn state_region_bytes(
    s: &StateSpec,
    batch: usize,
    max_context: usize,
) -> Result<usize, LayoutError> {
    let per_seq = s.numel_per_seq().checked_mul(s.dtype().size());
    let per_seq = match s {
        StateSpec::Kv { .. } => per_seq.and_then(|b| b.checked_mul(max_context)),
        _ => per_seq,
    };
    per_seq
        .and_then(|b| b.checked_mul(batch))
        .ok_or_else(|| overflow("a state region"))
}

impl DeviceLayout {
    /// Lays out `module` with launch table `program` for `shape`. Deterministic: the same
    /// inputs give the same offsets. A launch table that does not fit the module is refused
    /// (`Program::validate`), so nothing here indexes out of range.
    pub fn plan(
        module: &Module,
        program: &Program,
        shape: DeviceShape,
    ) -> Result<Self, LayoutError> {
        program
            .validate(module)
            .map_err(|e| LayoutError(format!("launch table: {e}")))?;
        if shape.max_context == 0 || shape.batch == 0 || shape.prompt_chunk == 0 {
            return Err(LayoutError(format!(
                "context {}, batch {} and prompt chunk {} must all be at least 1",
                shape.max_context, shape.batch, shape.prompt_chunk
            )));
        }
        let mut weights = BTreeMap::new();
        let mut off = 0usize;
        for (name, w) in &module.weights {
            weights.insert(name.clone(), off);
            off = aligned(
                off.checked_add(w.bytes())
                    .ok_or_else(|| overflow("weights"))?,
                "weights",
            )?;
        }
        let weights_bytes = off;

        // Conv and SSM regions first, then the KV caches, so the table splits at one offset.
        let mut states = vec![[0usize; 2]; module.states.len()];
        let (mut recurrent, mut kv) = (0usize, 0usize);
        for s in &module.states {
            let b = aligned(
                state_region_bytes(s, shape.batch, shape.max_context)?,
                "a state region",
            )?;
            match s {
                StateSpec::Kv { .. } => kv = kv.checked_add(b).ok_or_else(|| overflow("KV"))?,
                _ => recurrent += b,
            }
        }
        let (mut r_off, mut k_off) = (0usize, recurrent);
        for (id, s) in module.states.iter().enumerate() {
            let bytes = state_region_bytes(s, shape.batch, shape.max_context)?;
            states[id] = match s {
                // K then V, each half of the region ([B, kv_heads, cap, d] each).
                StateSpec::Kv { .. } => {
                    let at = k_off;
                    k_off += aligned(bytes, "KV")?;
                    [at, at + bytes / 2]
                }
                _ => {
                    let at = r_off;
                    r_off += aligned(bytes, "a state region")?;
                    [at, at]
                }
            };
        }

        let mut ws_next = aligned(meta_bytes(shape.batch), "meta")?;
        // A prompt call runs one sequence in one slot (the others wait or decode between its
        // chunks), so the prompt graph's buffers hold one sequence's chunk whatever the batch.
        let prompt = plan_graph(&program.prompt, (1, shape.prompt_chunk), &mut ws_next)?;
        let decode = plan_graph(&program.decode, (shape.batch, 1), &mut ws_next)?;
        let decode_rows = program
            .decode_rows
            .as_ref()
            .map(|gp| plan_graph(gp, (shape.batch, 1), &mut ws_next))
            .transpose()?;
        let library = program
            .tables()
            .into_iter()
            .any(|(_, gp)| gp.launches.iter().any(|l| l.library.is_some()));
        let library_workspace = if library {
            let at = ws_next;
            ws_next = aligned(
                ws_next
                    .checked_add(LIBRARY_WORKSPACE_BYTES)
                    .ok_or_else(|| overflow("the workspace"))?,
                "the workspace",
            )?;
            Some(at)
        } else {
            None
        };
        let rows_arena = decode_rows.as_ref().map_or(0, |g| g.arena_bytes);
        let arena = aligned(
            prompt
                .arena_bytes
                .max(decode.arena_bytes)
                .max(rows_arena)
                .max(1),
            "the arena",
        )?;
        let weights_u = aligned(weights_bytes.max(1), "weights")?;
        let (states_u, kv_u) = if recurrent + kv == 0 {
            (DEVICE_ALIGN, 0)
        } else {
            (recurrent, kv)
        };
        let table = MemoryTable {
            weights: weights_u as u64,
            states: states_u as u64,
            kv_cache: kv_u as u64,
            activations: arena as u64,
            workspace: ws_next as u64,
            total: [weights_u, states_u, kv_u, arena, ws_next]
                .iter()
                .try_fold(0usize, |a, &b| a.checked_add(b))
                .ok_or_else(|| overflow("the total"))? as u64,
        };
        Ok(DeviceLayout {
            shape,
            weights,
            states,
            prompt,
            decode,
            decode_rows,
            library_workspace,
            table,
        })
    }

    /// The byte ranges, in the states buffer, of slot `slot`'s part of every state region (a
    /// KV region gives two: its K and its V part): what resetting one sequence zeroes. `None`
    /// for a slot past the batch.
    /// `specs` is the module's state table (`Module::states`) the layout was planned for.
    pub fn slot_ranges(
        &self,
        specs: &[StateSpec],
        slot: usize,
    ) -> Option<Vec<std::ops::Range<usize>>> {
        if slot >= self.shape.batch || specs.len() != self.states.len() {
            return None;
        }
        let mut out = Vec::new();
        for (s, at) in specs.iter().zip(&self.states) {
            // Sizes were checked when the layout was planned.
            let one = state_region_bytes(s, 1, self.shape.max_context).ok()?;
            let parts: &[usize] = match s {
                StateSpec::Kv { .. } => &at[..],
                _ => &at[..1],
            };
            let per_part = one / parts.len();
            for &p in parts {
                let start = p + slot * per_part;
                out.push(start..start + per_part);
            }
        }
        Some(out)
    }

    /// Bytes of the states buffer (conv, SSM and KV regions).
    pub fn states_buffer_bytes(&self) -> usize {
        (self.table.states + self.table.kv_cache) as usize
    }

    /// The layout of graph `phase`.
    pub fn graph(&self, phase: crate::Phase) -> &GraphLayout {
        match phase {
            crate::Phase::Prompt => &self.prompt,
            crate::Phase::Decode => &self.decode,
        }
    }

    /// The layout of launch table `id`, when the program has it.
    pub fn table_layout(&self, id: GraphId) -> Option<&GraphLayout> {
        match id {
            GraphId::Prompt => Some(&self.prompt),
            GraphId::Decode => Some(&self.decode),
            GraphId::DecodeRows => self.decode_rows.as_ref(),
        }
    }
}

/// The values a graph expects zeroed: its list, or for a launch table written before the list
/// existed, every temporary (`node: None`; zero is harmless for the others, and the counters
/// of attention_decode are temporaries).
pub fn zeroed_values(gp: &GraphProgram) -> Vec<usize> {
    match &gp.zeroed {
        Some(z) => z.clone(),
        None => gp
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.node.is_none() && matches!(v.storage, Storage::Own))
            .map(|(i, _)| i)
            .collect(),
    }
}

/// Places the values of one graph for `rows` rows: zeroed ones at `*ws_next` onwards in the
/// workspace, the rest in the arena by greedy placement, largest first, each at the lowest
/// offset where it overlaps no value live at the same time.
fn plan_graph(
    gp: &GraphProgram,
    (batch, seq_cap): (usize, usize),
    ws_next: &mut usize,
) -> Result<GraphLayout, LayoutError> {
    // Chunked kernels address rows up to round_up(T, seq_align) per sequence.
    let align = gp.seq_align.max(1);
    let rows = seq_cap
        .checked_next_multiple_of(align)
        .and_then(|t| t.checked_mul(batch))
        .ok_or_else(|| overflow("the graph's rows"))?;
    let nv = gp.values.len();
    let n = gp.launches.len();
    let root = |v: usize| match gp.values[v].storage {
        Storage::Own => v,
        Storage::View { of, .. } => of,
    };
    let mut live: Vec<Option<(usize, usize)>> = vec![None; nv];
    let mut touch = |v: usize, t: usize| {
        if v < nv {
            let r = root(v);
            live[r] = Some(match live[r] {
                None => (t, t),
                Some((a, b)) => (a.min(t), b.max(t)),
            });
        }
    };
    for (l, launch) in gp.launches.iter().enumerate() {
        for a in &launch.args {
            if let Arg::Value { value, .. } = a {
                touch(*value, l);
            }
        }
    }
    // The host writes the token ids before the first launch and reads the outputs after the
    // last one.
    touch(gp.tokens, 0);
    for &o in gp.outputs.iter().chain(&gp.greedy) {
        touch(o, n);
    }
    // A validation run reads node `pos`'s value after the launches of nodes up to `pos`.
    let mut done = 0usize;
    for (pos, &v) in gp.node_values.iter().enumerate() {
        while done < n && gp.launches[done].node <= pos {
            done += 1;
        }
        touch(v, done.saturating_sub(1));
    }

    let zeroed: std::collections::BTreeSet<usize> = zeroed_values(gp).into_iter().collect();
    let mut slots: Vec<Option<Slot>> = vec![None; nv];
    let mut order = Vec::new();
    for (i, v) in gp.values.iter().enumerate() {
        if !matches!(v.storage, Storage::Own) {
            continue;
        }
        let bytes = rows
            .checked_mul(v.row_stride)
            .and_then(|b| b.checked_mul(v.dtype.size()))
            .ok_or_else(|| overflow("an activation"))?;
        let bytes = aligned(bytes.max(1), "an activation")?;
        let (first, last) = live[i].unwrap_or((0, 0));
        if zeroed.contains(&i) {
            slots[i] = Some(Slot {
                region: Region::Workspace,
                offset: *ws_next,
                bytes,
                first,
                last,
            });
            *ws_next = ws_next
                .checked_add(bytes)
                .ok_or_else(|| overflow("the workspace"))?;
        } else {
            order.push((bytes, first, last, i));
        }
    }
    // Largest first (ties: earliest, then value index): big buffers get low offsets and the
    // small ones fill the gaps between them.
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.3.cmp(&b.3)));
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (offset, bytes, first, last)
    let (mut high, mut unshared) = (0usize, 0usize);
    for (bytes, first, last, i) in order {
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|p| p.2 <= last && first <= p.3)
            .map(|p| (p.0, p.0 + p.1))
            .collect();
        busy.sort_unstable();
        let mut offset = 0usize;
        for (s, e) in busy {
            if s >= offset + bytes {
                break;
            }
            offset = offset.max(e);
        }
        let end = offset
            .checked_add(bytes)
            .ok_or_else(|| overflow("the arena"))?;
        high = high.max(end);
        unshared = unshared.saturating_add(bytes);
        placed.push((offset, bytes, first, last));
        slots[i] = Some(Slot {
            region: Region::Arena,
            offset,
            bytes,
            first,
            last,
        });
    }
    Ok(GraphLayout {
        rows,
        seq_cap,
        slots,
        arena_bytes: align_up(high, DEVICE_ALIGN),
        unshared_bytes: unshared,
    })
}

/// Checks a graph layout: every slot aligned, inside its region, and no two slots of the same
/// region overlap while both are live (zeroed slots never overlap at all). For tests and
/// `debug_assert`s; returns the first problem.
pub fn check_graph_layout(g: &GraphLayout, arena_bytes: usize) -> Result<(), String> {
    let slots: Vec<(usize, Slot)> = g
        .slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i, s)))
        .collect();
    for (i, s) in &slots {
        if s.offset % DEVICE_ALIGN != 0 || s.bytes % DEVICE_ALIGN != 0 {
            return Err(format!("value {i}: offset {} is not aligned", s.offset));
        }
        if s.region == Region::Arena && s.offset + s.bytes > arena_bytes {
            return Err(format!("value {i}: ends past the arena"));
        }
    }
    for (a, (i, x)) in slots.iter().enumerate() {
        for (j, y) in &slots[a + 1..] {
            let time = x.first <= y.last && y.first <= x.last;
            let space = x.offset < y.offset + y.bytes && y.offset < x.offset + x.bytes;
            if x.region == y.region && space && (time || x.region == Region::Workspace) {
                return Err(format!("values {i} and {j} overlap while both live"));
            }
        }
    }
    Ok(())
}
