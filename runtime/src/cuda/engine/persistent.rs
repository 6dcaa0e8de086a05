//! The one-row decode step as one persistent kernel (docs/KERNELS.md "Persistent decode step";
//! templates/persistent_decode.cu): the `decode` table's launches become rows of an op table
//! and their arguments one argument table, uploaded once (no address of a step changes for the
//! engine's lifetime); a step is then one cooperative launch of the plan's persistent kernel.

use std::ffi::c_void;

use cudarc::driver::sys;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, DriverError};
use zamba2c_ir::kernel::GraphProgram;

use super::{dev, ArgValue, CudaEngine};
use crate::RuntimeError;

/// The environment variable that runs the `decode` table launch by launch even when the plan
/// has a persistent kernel (for A/B measurements): anything but `""` or `"0"`.
pub const NO_PERSISTENT_ENV: &str = "ZAMBA2C_NO_PERSISTENT";

/// Words of one op: member, grid x, y, z, index of its first argument, the parameter of the
/// weight its tiles stream (`u32::MAX`: none) and that weight's bytes a tile.
const OP_WORDS: usize = 7;

/// A plan's persistent decode kernel, loaded with its tables.
pub(super) struct PersistentStep {
    f: CudaFunction,
    args: CudaSlice<u64>,
    ops: CudaSlice<u32>,
    nops: i32,
    /// The grid barrier's arrival count and generation (zero at start, count zero after a step).
    barrier: CudaSlice<u32>,
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
        let gp: &GraphProgram = &self.program.decode;
        let mut args: Vec<u64> = Vec::new();
        let mut ops: Vec<u32> = Vec::with_capacity(gp.launches.len() * OP_WORDS);
        for l in &gp.launches {
            let member = pd
                .members
                .iter()
                .position(|m| *m == l.kernel)
                .ok_or_else(|| bad(format!("{} is not one of its members", l.kernel)))?;
            let kernel = self
                .program
                .kernels
                .get(&l.kernel)
                .ok_or_else(|| bad(format!("kernel {} is not in the program", l.kernel)))?;
            if kernel.params.len() != l.args.len() {
                return Err(bad(format!("launch of {}: argument count", l.kernel)));
            }
            let first = u32::try_from(args.len()).map_err(|_| bad("too many arguments".into()))?;
            for a in &l.args {
                args.push(match self.arg_value(gp, &self.decode, a, 1, 1)? {
                    ArgValue::Ptr(p) => p,
                    // The kernel reads the low 32 bits back as an i32.
                    ArgValue::Int(x) => u64::from(x as u32),
                });
            }
            let (gx, gy, gz) = l.grid(1, 1);
            let prefetch = pd.prefetch_param.get(member).copied().flatten();
            let tile_bytes =
                (l.cost.weight_bytes / u64::from((gx * gy * gz).max(1))).min(u64::from(u32::MAX));
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
        let args_d = self.stream.clone_htod(&args).map_err(dev)?;
        let ops_d = self.stream.clone_htod(&ops).map_err(dev)?;
        let barrier = self.stream.alloc_zeros::<u32>(2).map_err(dev)?;
        tracing::info!(
            "persistent decode kernel: {} launches, {} blocks of {} ({} an SM)",
            nops,
            sms * per_sm,
            pd.block,
            per_sm
        );
        Ok(Some(PersistentStep {
            f,
            args: args_d,
            ops: ops_d,
            nops,
            barrier,
            grid: sms * per_sm,
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
            launch_cooperative(
                &p.f,
                (p.grid, p.block),
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| RuntimeError::Device(format!("launching the persistent decode kernel: {e:?}")))
    }
}

/// Launches `f` as a cooperative kernel (`CU_LAUNCH_ATTRIBUTE_COOPERATIVE`: the driver checks
/// that every block can be resident at once, which the kernel's grid barrier needs).
///
/// # Safety
/// As `cuLaunchKernel`: `params` holds one pointer per parameter of `f`'s C signature to a
/// value of that type, and the device addresses in them stay valid until the launch completes.
unsafe fn launch_cooperative(
    f: &CudaFunction,
    (grid, block): (u32, u32),
    stream: sys::CUstream,
    params: &mut [*mut c_void],
) -> Result<(), DriverError> {
    // SAFETY: an all-zero CUlaunchAttribute is a valid attribute of plain data.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
    attr.value.cooperative = 1;
    let config = sys::CUlaunchConfig {
        gridDimX: grid,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: block,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: 0,
        hStream: stream,
        attrs: &mut attr,
        numAttrs: 1,
    };
    // SAFETY: `config` and `attr` outlive the call (the driver copies them); the caller upholds
    // the rest.
    unsafe {
        sys::cuLaunchKernelEx(
            &config,
            f.cu_function(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()
}
