//! The one-row decode step as one persistent kernel (docs/KERNELS.md "Persistent decode step";
//! templates/persistent_decode.cu): the `decode` table's launches become rows of an op table
//! and their arguments one argument table, uploaded once (no address of a step changes for the
//! engine's lifetime); a step is then one cooperative launch of the plan's persistent kernel.

use std::ffi::c_void;

use cudarc::driver::sys;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr};

use super::{dev, launch_kernel, ArgValue, CudaEngine, LaunchMode};
use crate::RuntimeError;

/// The environment variable that runs the `decode` table launch by launch even when the plan
/// has a persistent kernel (for A/B measurements): anything but `""` or `"0"`.
pub const NO_PERSISTENT_ENV: &str = "ZAMBA2C_NO_PERSISTENT";

/// The environment variable naming a JSON file that receives the trace of the last persistent
/// step (each launch's work, its spread over the blocks and the grid barrier's cost, from the
/// GPU's nanosecond clock; every step then waits for the GPU: for measurements only).
pub const PERSISTENT_TRACE_ENV: &str = "ZAMBA2C_PERSISTENT_TRACE";

/// u32 words ahead of the trace in the barrier buffer: arrivals, generation, the trace flag and
/// padding to 8 bytes (templates/persistent_decode.cu).
const BARRIER_WORDS: usize = 4;

/// u32 words of the trace of a step of `launches` launches: a u64 start, then three u64 a
/// launch (first arrival, last arrival, block 0's exit).
fn trace_words(launches: usize) -> usize {
    2 * (1 + 3 * launches)
}

/// Words of one op: member, grid x, y, z, index of its first argument, the parameter of the
/// weight its tiles stream (`u32::MAX`: none) and that weight's bytes a tile.
const OP_WORDS: usize = 7;

/// A plan's persistent decode kernel, loaded with its tables.
pub(super) struct PersistentStep {
    f: CudaFunction,
    args: CudaSlice<u64>,
    ops: CudaSlice<u32>,
    nops: i32,
    /// The grid barrier's arrival count and generation (zero at start, count zero after a step),
    /// the trace flag, then the trace: u64 start, and (first arrival, last arrival, block 0's
    /// exit) a launch; then each launch's tile counter (`ZAMBA2C_TUNE_PERSISTENT_DYNAMIC`).
    barrier: CudaSlice<u32>,
    /// Where the trace of the last step goes (`ZAMBA2C_PERSISTENT_TRACE`), with each launch's
    /// kernel name and tiles.
    trace: Option<(std::path::PathBuf, Vec<(String, u64)>)>,
    grid: u32,
    block: u32,
}

impl CudaEngine {
    /// The persistent step of the plan, when it has one, the environment does not turn it off
    /// and the GPU holds its blocks at once; `None` otherwise (steps then run launch by launch).
    pub(super) fn persistent_step(&self) -> Result<Option<PersistentStep>, RuntimeError> {
        let Some(pd) = &self.program.persistent_decode else {
            return Ok(None);
        };
        if super::super::graph::env_flag(NO_PERSISTENT_ENV) {
            return Ok(None);
        }
        let bad = |what: String| RuntimeError::Input(format!("persistent decode kernel: {what}"));
        let f = self
            .functions
            .get(&pd.kernel)
            .ok_or_else(|| bad(format!("kernel {} is not loaded", pd.kernel)))?
            .clone();
        // `Program::validate` (at load) has checked that every launch's kernel is a member and
        // its arguments fit the kernel's parameters.
        let gp = &self.program.decode;
        let mut args: Vec<u64> = Vec::new();
        let mut ops: Vec<u32> = Vec::with_capacity(gp.launches.len() * OP_WORDS);
        // (tiles, weight bytes) of each launch, for the block count.
        let mut work: Vec<(u64, u64)> = Vec::with_capacity(gp.launches.len());
        for l in &gp.launches {
            let member = pd
                .members
                .iter()
                .position(|m| *m == l.kernel)
                .ok_or_else(|| bad(format!("{} is not one of its members", l.kernel)))?;
            let first = u32::try_from(args.len()).map_err(|_| bad("too many arguments".into()))?;
            for a in &l.args {
                args.push(match self.arg_value(gp, &self.decode, a, 1, 1)? {
                    ArgValue::Ptr(p) => p,
                    // The kernel reads the low 32 bits back as an i32.
                    ArgValue::Int(x) => u64::from(x as u32),
                });
            }
            let (gx, gy, gz) = l.grid(1, 1);
            // A member rendered with smaller tiles runs `scale` of them for each of its kernel's.
            let scale = pd.tile_scale.get(member).copied().unwrap_or(1);
            let gx = gx
                .checked_mul(scale)
                .ok_or_else(|| bad(format!("launch of {}: grid {gx} x {scale}", l.kernel)))?;
            // The kernel counts a launch's tiles in 32 bits.
            let tiles = u64::from(gx) * u64::from(gy) * u64::from(gz);
            if tiles > u64::from(u32::MAX) {
                return Err(bad(format!("launch of {}: grid {gx}x{gy}x{gz}", l.kernel)));
            }
            work.push((tiles, l.cost.weight_bytes));
            let prefetch = pd.prefetch_param.get(member).copied().flatten();
            let tile_bytes = (l.cost.weight_bytes / tiles.max(1)).min(u64::from(u32::MAX));
            ops.extend([
                member as u32,
                gx,
                gy,
                gz,
                first,
                prefetch.unwrap_or(u32::MAX),
                tile_bytes as u32,
            ]);
        }
        let nops = i32::try_from(gp.launches.len()).map_err(|_| bad("too many launches".into()))?;
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(pd.block, 0, None)
            .map_err(dev)?;
        let sms = self
            .ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(dev)? as u32;
        if per_sm == 0 || sms == 0 {
            tracing::warn!(
                "persistent decode kernel: no block fits an SM; decoding launch by launch"
            );
            return Ok(None);
        }
        let grid = persistent_grid(&work, sms * per_sm);
        let args_d = self.stream.clone_htod(&args).map_err(dev)?;
        let ops_d = self.stream.clone_htod(&ops).map_err(dev)?;
        let trace = std::env::var_os(PERSISTENT_TRACE_ENV)
            .filter(|p| !p.is_empty())
            .map(|p| {
                let names = gp.launches.iter().zip(&work);
                (
                    p.into(),
                    names.map(|(l, w)| (l.kernel.clone(), w.0)).collect(),
                )
            });
        // Header, trace, then one tile counter a launch (templates/persistent_decode.cu).
        let n = gp.launches.len();
        let mut words = vec![0u32; BARRIER_WORDS + trace_words(n) + n];
        words[2] = u32::from(trace.is_some());
        let barrier = self.stream.clone_htod(&words).map_err(dev)?;
        // The host tables are dropped on return: the copies must have read them.
        self.stream.synchronize().map_err(dev)?;
        tracing::info!(
            "persistent decode kernel: {} launches, {} blocks of {} (up to {} an SM)",
            nops,
            grid,
            pd.block,
            per_sm
        );
        Ok(Some(PersistentStep {
            f,
            args: args_d,
            ops: ops_d,
            nops,
            barrier,
            trace,
            grid,
            block: pd.block,
        }))
    }

    /// One decode step of one row through the persistent kernel (token and `meta` already
    /// copied, stream-ordered before it).
    pub(super) fn run_persistent(&self, p: &PersistentStep) -> Result<(), RuntimeError> {
        let (mut a, _) = p.args.device_ptr(&self.stream);
        let (mut o, _) = p.ops.device_ptr(&self.stream);
        let (mut b, _) = p.barrier.device_ptr(&self.stream);
        let mut n = p.nops;
        let mut params: [*mut c_void; 4] = [
            (&mut a) as *mut u64 as *mut c_void,
            (&mut o) as *mut u64 as *mut c_void,
            (&mut n) as *mut i32 as *mut c_void,
            (&mut b) as *mut u64 as *mut c_void,
        ];
        // SAFETY: the kernel's C signature is (const u64*, const u32*, int, u32*) (templates/
        // persistent_decode.cu) and `params` points at values of those types; the tables hold
        // addresses into this engine's buffers (resolved as `launch` resolves them) and live as
        // long as the engine; the grid is the blocks the GPU holds at once (occupancy × SMs), so
        // the cooperative launch keeps every block resident for the grid barrier.
        unsafe {
            launch_kernel(
                p.f.cu_function(),
                ((p.grid, 1, 1), (p.block, 1, 1), 0),
                self.stream.cu_stream(),
                &mut params,
                LaunchMode::Cooperative,
            )
        }
        .map_err(|e| {
            RuntimeError::Device(format!("launching the persistent decode kernel: {e:?}"))
        })?;
        if let Some((path, launches)) = &p.trace {
            self.write_persistent_trace(p, path, launches)?;
        }
        Ok(())
    }

    /// Waits for the step and writes its trace (see [`PERSISTENT_TRACE_ENV`]): per launch, in
    /// µs, `work` from block 0 leaving the previous barrier to the last block's arrival,
    /// `spread` between the first and the last arrival, `barrier` from the last arrival to block
    /// 0 leaving.
    fn write_persistent_trace(
        &self,
        p: &PersistentStep,
        path: &std::path::Path,
        launches: &[(String, u64)],
    ) -> Result<(), RuntimeError> {
        let words = self.stream.clone_dtoh(&p.barrier).map_err(dev)?;
        let t: Vec<u64> = words[BARRIER_WORDS..BARRIER_WORDS + trace_words(launches.len())]
            .chunks_exact(2)
            .map(|w| u64::from(w[0]) | (u64::from(w[1]) << 32))
            .collect();
        let us = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e3;
        let mut prev = t[0];
        let ops: Vec<serde_json::Value> = launches
            .iter()
            .enumerate()
            .map(|(i, (kernel, tiles))| {
                let (first, last, exit) = (t[1 + 3 * i], t[2 + 3 * i], t[3 + 3 * i]);
                let op = serde_json::json!({
                    "kernel": kernel, "tiles": tiles, "work_us": us(prev, last),
                    "spread_us": us(first, last), "barrier_us": us(last, exit),
                });
                prev = exit;
                op
            })
            .collect();
        let step = serde_json::json!({
            "grid": p.grid, "block": p.block, "step_us": us(t[0], prev), "launches": ops,
        });
        std::fs::write(path, step.to_string()).map_err(|e| {
            RuntimeError::Input(format!(
                "{}: writing the persistent trace: {e}",
                path.display()
            ))
        })
    }
}

/// The environment variable that fixes the persistent kernel's block count (for measurements;
/// at most what the GPU holds at once).
pub const PERSISTENT_GRID_ENV: &str = "ZAMBA2C_PERSISTENT_GRID";

/// A round of tiles that stream nothing still costs their latency: ~4 µs for `mamba_step`'s
/// (docs/PERFORMANCE.md), what HBM moves in that time at 4.28 TB/s.
const ROUND_LATENCY_BYTES: u64 = 16 << 20;

/// Blocks of the persistent kernel: at most `resident` (what the GPU holds at once), at least
/// half of it. A block runs a launch's tiles round robin, so a launch of T tiles takes
/// ceil(T / G) rounds of one tile's time; with min(T, G) blocks sharing HBM a round of a
/// projection moves that many tiles' weights, so its time goes as ceil(T / G) · min(T, G) / T of
/// its bytes, and every round adds a tile's latency: the G with the least of that summed over
/// the step is taken. (With 2 blocks an SM of an H200, 264 blocks would run the 653 tiles of
/// in_proj in 3 rounds where 2.47 would do, and `mamba_step`'s 320 tiles in 2.)
fn persistent_grid(work: &[(u64, u64)], resident: u32) -> u32 {
    if let Some(g) = std::env::var(PERSISTENT_GRID_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&g| g > 0)
    {
        return g.min(resident);
    }
    pick_grid(work, resident)
}

/// [`persistent_grid`]'s choice for launches of (tiles, weight bytes) without the override.
fn pick_grid(launches: &[(u64, u64)], resident: u32) -> u32 {
    let cost = |g: u32| -> f64 {
        launches
            .iter()
            .filter(|&&(tiles, _)| tiles > 0)
            .map(|&(tiles, bytes)| {
                let rounds = tiles.div_ceil(u64::from(g));
                let active = tiles.min(u64::from(g));
                bytes as f64 * (rounds * active) as f64 / tiles as f64
                    + (rounds * ROUND_LATENCY_BYTES) as f64
            })
            .sum()
    };
    let lo = (resident / 2).max(1);
    (lo..=resident.max(1))
        .rev()
        .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
        .unwrap_or(resident.max(1))
}

#[cfg(test)]
mod tests {
    use super::pick_grid;

    /// Rounds of `tiles` over `g` blocks, against the fraction a perfect split would take.
    fn waste(tiles: u64, g: u32) -> f64 {
        (tiles.div_ceil(u64::from(g)) * tiles.min(u64::from(g))) as f64 / tiles as f64
    }

    #[test]
    fn the_grid_avoids_a_last_round_of_few_tiles() {
        // in_proj of the 2.7B shape: 653 tiles of 82 KB; 264 blocks would take 3 rounds.
        let g = pick_grid(&[(653, 53_600_000)], 264);
        assert!((132..=264).contains(&g), "{g}");
        assert!(waste(653, g) < 1.05, "{g}: {}", waste(653, g));
        assert!(waste(653, 264) > 1.15);
        // mamba_step's 320 latency-bound tiles: one round when the GPU holds them all.
        assert!(pick_grid(&[(320, 0)], 396) >= 320);
        // Nothing to split: every resident block.
        assert_eq!(pick_grid(&[], 396), 396);
        assert_eq!(pick_grid(&[(0, 5)], 0), 1);
    }
}
