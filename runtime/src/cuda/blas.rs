//! cuBLASLt for the launches a plan marks as library GEMMs (`zamba2c_ir::kernel::LibraryGemm`,
//! docs/KERNELS.md "Library GEMMs"): the same projection as the launch's `linear_mma_pipe`
//! kernel, computed by the library with bf16 or f16 inputs, f32 accumulation and the epilogue as its
//! `beta · C` term. The library is loaded at run time (cudarc's dynamic loading); without it,
//! or with `ZAMBA2C_NO_LIBRARY_GEMM=1`, every launch runs its kernel.
//!
//! Row-major to cuBLAS's column-major: `out[m, n] = Σ_k x[m, k] · w[n, k]` is
//! `Dᵀ (n × m) = op(A) · B` with `A` the weight as a `k × n` column-major matrix (`lda = w_ld`)
//! transposed, `B` the input as `k × m` (`ldb = x_ld`), and `D` the output as `n × m`
//! (`ldd = out_ld`): the "TN" GEMM.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use cudarc::cublaslt::{result, sys};
use zamba2c_ir::kernel::{GraphId, LibraryEpilogue, LibraryGemm};
use zamba2c_ir::DType;

use crate::RuntimeError;

/// Set to anything but `""` or `"0"`: run every launch's own kernel, never the library (A/B
/// measurements, and a way out should the library misbehave).
pub const NO_LIBRARY_ENV: &str = "ZAMBA2C_NO_LIBRARY_GEMM";

/// Set to N > 1: time the heuristic's first N algorithms of each GEMM shape on its first call
/// (outside graph capture) and keep the fastest, instead of taking the heuristic's first
/// (docs/KERNELS.md "Library GEMMs"). A measurement: the choice depends on timings, so two
/// processes may sum in different orders.
pub const TUNE_ENV: &str = "ZAMBA2C_BLAS_TUNE";

/// Timed runs of each candidate algorithm (after one untimed run).
const TUNE_RUNS: usize = 3;

/// What the profiler and `inspect` call launches the library runs.
pub const LIBRARY_FAMILY: &str = "cublaslt";

/// Device addresses of one call's operands.
pub struct GemmPtrs {
    pub x: u64,
    pub weight: u64,
    pub out: u64,
    /// The residual (`LibraryEpilogue::Residual`).
    pub res: Option<u64>,
}

/// Descriptors and the chosen algorithm of one launch at one row count.
struct Prepared {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        for layout in [self.a, self.b, self.d] {
            if !layout.is_null() {
                // SAFETY: made once by `prepare` (null when `prepare` failed before it) and
                // destroyed only here.
                let _ = unsafe { result::destroy_matrix_layout(layout) };
            }
        }
        // SAFETY: `prepare` makes the descriptor first, so it is always live here, and it is
        // destroyed only here.
        let _ = unsafe { result::destroy_matmul_desc(self.desc) };
    }
}

/// A launch of a table at a row count: what a prepared GEMM is keyed by (its operands'
/// addresses never change for an engine's lifetime, so neither does the algorithm).
type Key = (GraphId, usize, usize);

/// What a tuned algorithm is kept for: every launch of the same shape, strides, types and
/// operand alignments takes the same one (the 54 in_proj launches of a step tune once).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ShapeKey {
    /// Rows, output features, input features.
    mnk: [usize; 3],
    /// Leading dimensions of the weight, the input and the output.
    lds: [usize; 3],
    input: DType,
    output: DType,
    /// Alignments of the weight, the input, `C` and `D`.
    aligns: [u32; 4],
}

/// One cuBLASLt handle, its workspace, and the GEMMs prepared so far.
pub struct Blas {
    handle: sys::cublasLtHandle_t,
    workspace: u64,
    workspace_bytes: usize,
    /// Held for the whole of a call: the handle and the descriptors are used by one thread at
    /// a time.
    prepared: Mutex<HashMap<Key, Prepared>>,
    /// Candidates timed per shape ([`TUNE_ENV`]; 0 or 1: the heuristic's first).
    tune: usize,
    /// The algorithm timing chose for each shape tuned so far.
    tuned: Mutex<HashMap<ShapeKey, sys::cublasLtMatmulAlgo_t>>,
    /// `Some(r)`: `decode_rows`' GEMMs take, at every row count, the algorithm the heuristic
    /// gives for `r` rows ([`Blas::fix_rows_algorithms`], a batch-invariant engine).
    fixed_rows: Option<usize>,
}

// SAFETY: the cuBLASLt handle and descriptors are plain library handles, not bound to the
// thread that made them; every use goes through `prepared`'s lock (`gemm`) or `&mut self`
// (`drop`), so no two threads use them at once.
unsafe impl Send for Blas {}
// SAFETY: see above.
unsafe impl Sync for Blas {}

impl Drop for Blas {
    fn drop(&mut self) {
        self.prepared
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // SAFETY: the handle was created by `Blas::new` and every descriptor made with it is
        // destroyed above; launches that used it were stream-ordered before the engine's
        // buffers are freed (the engine synchronizes on drop through cudarc).
        unsafe {
            let _ = result::destroy_handle(self.handle);
        }
    }
}

/// The largest power of two (at most 256) that divides `addr`: the alignment cuBLASLt may
/// assume of an operand.
fn alignment(addr: u64) -> u32 {
    if addr == 0 {
        256
    } else {
        1u32 << addr.trailing_zeros().min(8)
    }
}

/// Address of the lo plane of a split input at `x` (templates/split_bf16.cu: `k` bf16 columns
/// after the hi plane, in the same row).
fn lo_plane(g: &LibraryGemm, x: u64) -> u64 {
    x + (g.k * std::mem::size_of::<u16>()) as u64
}

/// Whether timing runs may write `out = W·x` before the call: the call then writes the output
/// whole (no accumulation onto what it held) from inputs other than the output.
fn tunable(g: &LibraryGemm, ptrs: &GemmPtrs) -> bool {
    match (&g.epilogue, ptrs.res) {
        (LibraryEpilogue::None, _) => true,
        (LibraryEpilogue::Residual(_), Some(r)) => r != ptrs.out,
        _ => false,
    }
}

/// Whether `stream` is being captured into a graph (nothing may be waited for then).
fn capturing(stream: cudarc::driver::sys::CUstream) -> bool {
    use cudarc::driver::sys::CUstreamCaptureStatus as S;
    // SAFETY: the engine's live stream; the call only reads its state.
    match unsafe { cudarc::driver::result::stream::is_capturing(stream) } {
        Ok(S::CU_STREAM_CAPTURE_STATUS_NONE) => false,
        // Capturing, invalidated, or unknown: do not wait.
        _ => true,
    }
}

/// A column-major layout of `rows` × `cols` elements of `t`, columns `ld` apart.
fn matrix_layout(
    t: sys::cudaDataType,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<sys::cublasLtMatrixLayout_t, RuntimeError> {
    result::create_matrix_layout(t, rows as u64, cols as u64, ld as i64)
        .map_err(|e| lib_err("matrix layout", e))
}

fn lib_err(what: &str, e: result::CublasError) -> RuntimeError {
    RuntimeError::Device(format!("cuBLASLt {what}: {e:?}"))
}

impl Blas {
    /// Opens cuBLASLt with `workspace_bytes` of scratch at device address `workspace`, or says
    /// why not (the library is missing, or turned off by [`NO_LIBRARY_ENV`]).
    pub fn new(workspace: u64, workspace_bytes: usize) -> Result<Self, String> {
        if super::graph::env_flag(NO_LIBRARY_ENV) {
            return Err(format!("{NO_LIBRARY_ENV} is set"));
        }
        // SAFETY: only tries to dlopen libcublasLt by its known names; no symbol is called.
        if !unsafe { sys::is_culib_present() } {
            return Err("libcublasLt cannot be loaded".into());
        }
        let handle = result::create_handle().map_err(|e| format!("cublasLtCreate: {e:?}"))?;
        let tune = std::env::var(TUNE_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(Blas {
            handle,
            workspace,
            workspace_bytes,
            prepared: Mutex::new(HashMap::new()),
            tune,
            tuned: Mutex::new(HashMap::new()),
            fixed_rows: None,
        })
    }

    /// Every GEMM of the `decode_rows` table takes, whatever a step's row count, the algorithm
    /// the heuristic gives for `rows` rows (times the launch's stacked rows) and never a timed
    /// one: a batch-invariant engine (`zamba2c_ir::kernel::INVARIANT_ALGORITHM_ROWS`). With a
    /// split-K count fixed by the algorithm, each output element then sums its products in
    /// the same order whatever the other rows, so a sequence gets the same bits alone and in
    /// any batch (docs/KERNELS.md "Batch invariance").
    pub fn fix_rows_algorithms(&mut self, rows: usize) {
        self.fixed_rows = Some(rows.max(1));
    }

    /// Descriptors and an algorithm for `g` over `m` rows: the heuristic's first, or with
    /// [`TUNE_ENV`] the fastest of its first few timed on `stream`.
    fn prepare(
        &self,
        g: &LibraryGemm,
        m: usize,
        algo_m: Option<usize>,
        ptrs: &GemmPtrs,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<Prepared, RuntimeError> {
        let out_type = match g.out_dtype {
            DType::F32 => sys::cudaDataType::CUDA_R_32F,
            DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
            d => {
                return Err(RuntimeError::Device(format!(
                    "library GEMM with a {d} output"
                )))
            }
        };
        // The input planes and the weight share one element type (LibraryGemm::input).
        let in_type = match g.input {
            DType::F16 => sys::cudaDataType::CUDA_R_16F,
            _ => sys::cudaDataType::CUDA_R_16BF,
        };
        let desc = result::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType::CUDA_R_32F,
        )
        .map_err(|e| lib_err("matmul descriptor", e))?;
        let mut p = Prepared {
            desc,
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            d: std::ptr::null_mut(),
            algo: sys::cublasLtMatmulAlgo_t { data: [0; 8] },
        };
        // cublasOperation_t CUBLAS_OP_T (1): the weight is read transposed.
        let trans_a: i32 = 1;
        // SAFETY: `desc` is live; the attribute is an i32-sized enum read from a live value.
        unsafe {
            result::set_matmul_desc_attribute(
                p.desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&trans_a) as *const _ as *const c_void,
                std::mem::size_of_val(&trans_a),
            )
        }
        .map_err(|e| lib_err("transpose attribute", e))?;
        // The algorithm is asked for at `algo_m` rows where the rows fix it, and run at `m`.
        let heuristic_m = algo_m.unwrap_or(m);
        p.a = matrix_layout(in_type, g.k, g.n, g.w_ld)?;
        p.b = matrix_layout(in_type, g.k, heuristic_m, g.x_ld)?;
        p.d = matrix_layout(out_type, g.n, heuristic_m, g.out_ld)?;
        let pref = result::create_matmul_pref().map_err(|e| lib_err("preference", e))?;
        let lo = if g.split { lo_plane(g, ptrs.x) } else { ptrs.x };
        // What cuBLASLt may assume of A (the weight), B (both input planes), C and D.
        let aligns = [
            alignment(ptrs.weight),
            alignment(ptrs.x).min(alignment(lo)),
            alignment(ptrs.res.unwrap_or(ptrs.out)).min(alignment(ptrs.out)),
            alignment(ptrs.out),
        ];
        let prefs: [(sys::cublasLtMatmulPreferenceAttributes_t, u64); 5] = {
            use sys::cublasLtMatmulPreferenceAttributes_t as P;
            [
                (
                    P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    self.workspace_bytes as u64,
                ),
                (
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                    aligns[0] as u64,
                ),
                (
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    aligns[1] as u64,
                ),
                (
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    aligns[2] as u64,
                ),
                (
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                    aligns[3] as u64,
                ),
            ]
        };
        let shape = ShapeKey {
            mnk: [m, g.n, g.k],
            lds: [g.w_ld, g.x_ld, g.out_ld],
            input: g.input,
            output: g.out_dtype,
            aligns,
        };
        let mut chosen = Ok(());
        for (attr, value) in prefs {
            // Workspace bytes are a u64 attribute, alignments u32 ones.
            let (v64, v32) = (value, value as u32);
            let (ptr, size) = match attr {
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES => {
                    ((&v64) as *const u64 as *const c_void, 8)
                }
                _ => ((&v32) as *const u32 as *const c_void, 4),
            };
            // SAFETY: `pref` is live; `ptr` points to a live value of the attribute's size.
            if let Err(e) = unsafe { result::set_matmul_pref_attribute(pref, attr, ptr, size) } {
                chosen = Err(lib_err("preference attribute", e));
                break;
            }
        }
        let mut candidates = Vec::new();
        if chosen.is_ok() {
            chosen = self
                .heuristics(&p, pref, self.tune.max(1))
                .map(|c| candidates = c)
                .map_err(|e| lib_err(&format!("algorithm for {m}×{}×{}", g.n, g.k), e));
        }
        // SAFETY: `pref` was created above and is not used after this.
        unsafe {
            let _ = result::destroy_matmul_pref(pref);
        }
        chosen?;
        p.algo = candidates[0];
        if algo_m.is_some() {
            return self.at_rows(p, in_type, out_type, g, m);
        }
        let known = self
            .tuned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&shape)
            .copied();
        if let Some(algo) = known {
            p.algo = algo;
        } else if candidates.len() > 1 && tunable(g, ptrs) && !capturing(stream) {
            p.algo = self.fastest(&p, &candidates, g, m, ptrs, stream)?;
            self.tuned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(shape, p.algo);
        }
        Ok(p)
    }

    /// `p` with its input and output laid out for `m` rows, keeping its algorithm (chosen for
    /// other rows), or the library's refusal of that algorithm at `m` rows.
    fn at_rows(
        &self,
        mut p: Prepared,
        in_type: sys::cudaDataType,
        out_type: sys::cudaDataType,
        g: &LibraryGemm,
        m: usize,
    ) -> Result<Prepared, RuntimeError> {
        for layout in [&mut p.b, &mut p.d] {
            // SAFETY: made by `prepare`, replaced below and destroyed only once (here or in
            // `Prepared::drop`).
            let _ = unsafe { result::destroy_matrix_layout(*layout) };
            *layout = std::ptr::null_mut();
        }
        p.b = matrix_layout(in_type, g.k, m, g.x_ld)?;
        p.d = matrix_layout(out_type, g.n, m, g.out_ld)?;
        // SAFETY: zeroed heuristic result is plain data the library overwrites.
        let mut check: sys::cublasLtMatmulHeuristicResult_t = unsafe { std::mem::zeroed() };
        // SAFETY: every descriptor is live (C laid out as D, as in `heuristics`), `algo` came
        // from the heuristic for the same operation, and `check` is live.
        unsafe {
            sys::cublasLtMatmulAlgoCheck(
                self.handle,
                p.desc,
                p.a,
                p.b,
                p.d,
                p.d,
                &p.algo,
                &mut check,
            )
            .result()
        }
        .map_err(|e| lib_err(&format!("fixed algorithm at {m}×{}×{}", g.n, g.k), e))?;
        if check.workspaceSize > self.workspace_bytes {
            return Err(RuntimeError::Device(format!(
                "cuBLASLt fixed algorithm at {m}×{}×{} needs {} bytes of workspace",
                g.n, g.k, check.workspaceSize
            )));
        }
        Ok(p)
    }

    /// Up to `count` of the heuristic's algorithms for `p`, best first, those that fit the
    /// workspace (at least one, or the library's error).
    fn heuristics(
        &self,
        p: &Prepared,
        pref: sys::cublasLtMatmulPreference_t,
        count: usize,
    ) -> Result<Vec<sys::cublasLtMatmulAlgo_t>, result::CublasError> {
        let count = count.clamp(1, 64);
        // SAFETY: zeroed heuristic results are plain data the library overwrites.
        let mut found: Vec<sys::cublasLtMatmulHeuristicResult_t> =
            vec![unsafe { std::mem::zeroed() }; count];
        let mut returned: i32 = 0;
        // SAFETY: every descriptor is live (C has D's layout: `beta · C` reads the output or a
        // residual laid out like it); `found` holds `count` results and `returned` is live.
        unsafe {
            sys::cublasLtMatmulAlgoGetHeuristic(
                self.handle,
                p.desc,
                p.a,
                p.b,
                p.d,
                p.d,
                pref,
                count as i32,
                found.as_mut_ptr(),
                &mut returned,
            )
            .result()?;
        }
        let algos: Vec<_> = found
            .iter()
            .take(returned.max(0) as usize)
            .filter(|h| {
                h.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
                    && h.workspaceSize <= self.workspace_bytes
            })
            .map(|h| h.algo)
            .collect();
        if algos.is_empty() {
            return Err(result::CublasError(
                sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED,
            ));
        }
        Ok(algos)
    }

    /// The fastest of `candidates` for `g` over `m` rows, each run once and then timed over
    /// [`TUNE_RUNS`] runs with CUDA events on `stream` (waited for). The runs write
    /// `out = W·x` (β = 0), which the call that follows overwrites or adds to (`tunable`).
    fn fastest(
        &self,
        p: &Prepared,
        candidates: &[sys::cublasLtMatmulAlgo_t],
        g: &LibraryGemm,
        m: usize,
        ptrs: &GemmPtrs,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<sys::cublasLtMatmulAlgo_t, RuntimeError> {
        use cudarc::driver::result::{event, stream as cu_stream};
        let dev = |what: &str, e: cudarc::driver::DriverError| {
            RuntimeError::Device(format!("cuBLASLt tuning, {what}: {e:?}"))
        };
        let flags = cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        let start = event::create(flags).map_err(|e| dev("event", e))?;
        let end = match event::create(flags) {
            Ok(e) => e,
            Err(e) => {
                // SAFETY: made above, used by nothing yet.
                let _ = unsafe { event::destroy(start) };
                return Err(dev("event", e));
            }
        };
        let (one, zero) = (1.0f32, 0.0f32);
        let run = |algo: &sys::cublasLtMatmulAlgo_t| {
            // SAFETY: as in `gemm`, with β = 0 and C = D = the output: the descriptors describe
            // these operands and `algo` came from the heuristic for them.
            unsafe {
                result::matmul(
                    self.handle,
                    p.desc,
                    (&one) as *const f32 as *const c_void,
                    (&zero) as *const f32 as *const c_void,
                    ptrs.weight as *const c_void,
                    p.a,
                    ptrs.x as *const c_void,
                    p.b,
                    ptrs.out as *const c_void,
                    p.d,
                    ptrs.out as *mut c_void,
                    p.d,
                    algo,
                    self.workspace as *mut c_void,
                    self.workspace_bytes,
                    stream as sys::cudaStream_t,
                )
            }
        };
        let mut times = Vec::with_capacity(candidates.len());
        let mut failure = None;
        for algo in candidates {
            // A candidate the library refuses to run is skipped.
            if run(algo).is_err() {
                times.push(f32::INFINITY);
                continue;
            }
            // SAFETY: live events and the engine's live stream; the stream is waited for before
            // the events are read.
            let timed = unsafe {
                event::record(start, stream).and_then(|()| {
                    let ok = (0..TUNE_RUNS).all(|_| run(algo).is_ok());
                    event::record(end, stream)?;
                    cu_stream::synchronize(stream)?;
                    Ok(if ok {
                        event::elapsed(start, end)?
                    } else {
                        f32::INFINITY
                    })
                })
            };
            match timed {
                Ok(ms) => times.push(ms),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // SAFETY: both events were made above; the stream was waited for, nothing uses them.
        unsafe {
            let _ = event::destroy(start);
            let _ = event::destroy(end);
        }
        if let Some(e) = failure {
            return Err(dev("timing", e));
        }
        let best = (0..times.len())
            .min_by(|&a, &b| times[a].total_cmp(&times[b]))
            .unwrap_or(0);
        let us = |ms: f32| 1e3 * ms / TUNE_RUNS as f32;
        tracing::info!(
            "cuBLASLt {m}×{}×{}: algorithm {best} of {} timed at {:.1} µs (the heuristic's first: {:.1} µs)",
            g.n,
            g.k,
            times.len(),
            us(times[best]),
            us(times[0])
        );
        if !times[best].is_finite() {
            return Ok(candidates[0]);
        }
        Ok(candidates[best])
    }

    /// Enqueues `g` for `m` GEMM rows on `stream` (the call's rows times `g.row_stack`): one
    /// GEMM, or two with a split input (hi, then lo accumulated onto it).
    pub fn gemm(
        &self,
        key: (GraphId, usize),
        g: &LibraryGemm,
        m: usize,
        ptrs: &GemmPtrs,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<(), RuntimeError> {
        if m == 0 {
            return Ok(());
        }
        let full = (key.0, key.1, m);
        let algo_m = self
            .fixed_rows
            .filter(|_| key.0 == GraphId::DecodeRows)
            .map(|r| r * g.row_stack);
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        let p = match prepared.entry(full) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.prepare(g, m, algo_m, ptrs, stream)?),
        };
        let (one, zero) = (1.0f32, 0.0f32);
        let (c, beta) = match (&g.epilogue, ptrs.res) {
            (LibraryEpilogue::None, _) => (ptrs.out, &zero),
            (LibraryEpilogue::Accumulate, _) => (ptrs.out, &one),
            (LibraryEpilogue::Residual(_), Some(r)) => (r, &one),
            (LibraryEpilogue::Residual(_), None) => {
                return Err(RuntimeError::Device(
                    "library GEMM: no residual address".into(),
                ))
            }
        };
        let lo_pass = g.split.then(|| (lo_plane(g, ptrs.x), ptrs.out, &one));
        for (x, c, beta) in std::iter::once((ptrs.x, c, beta)).chain(lo_pass) {
            // SAFETY: the descriptors are live and describe these operands (codegen wrote them
            // from the kernel's own operands; `Program::validate` checked that each lies
            // inside its buffer for the rows the graph holds, and `m` is at most those rows
            // times the stacked rows each holds);
            // the workspace is this engine's, `workspace_bytes` long; alpha and beta outlive
            // the call (the library reads them while enqueueing, host pointer mode); the
            // stream belongs to the engine's context.
            unsafe {
                result::matmul(
                    self.handle,
                    p.desc,
                    (&one) as *const f32 as *const c_void,
                    beta as *const f32 as *const c_void,
                    ptrs.weight as *const c_void,
                    p.a,
                    x as *const c_void,
                    p.b,
                    c as *const c_void,
                    p.d,
                    ptrs.out as *mut c_void,
                    p.d,
                    &p.algo,
                    self.workspace as *mut c_void,
                    self.workspace_bytes,
                    stream as sys::cudaStream_t,
                )
            }
            .map_err(|e| lib_err(&format!("matmul {m}×{}×{}", g.n, g.k), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zamba2c_ir::kernel::Arg;

    fn gemm(epilogue: LibraryEpilogue) -> LibraryGemm {
        let value = |value| Arg::Value { value, offset: 0 };
        LibraryGemm {
            n: 8,
            k: 16,
            x: value(0),
            x_ld: 16,
            split: false,
            input: DType::BF16,
            weight: Arg::Weight {
                name: "w".into(),
                offset: 0,
            },
            w_ld: 16,
            out: value(1),
            out_ld: 8,
            out_dtype: DType::F32,
            epilogue,
            row_stack: 1,
        }
    }

    /// Timing runs write `out = W·x` before the call: only where the call then overwrites the
    /// output from other inputs.
    #[test]
    fn only_calls_that_overwrite_their_output_are_timed() {
        let ptrs = |res: Option<u64>| GemmPtrs {
            x: 0x1000,
            weight: 0x2000,
            out: 0x3000,
            res,
        };
        assert!(tunable(&gemm(LibraryEpilogue::None), &ptrs(None)));
        let residual = LibraryEpilogue::Residual(Arg::Value {
            value: 2,
            offset: 0,
        });
        assert!(tunable(&gemm(residual.clone()), &ptrs(Some(0x4000))));
        // An in-place residual reads what the timing runs would overwrite.
        assert!(!tunable(&gemm(residual), &ptrs(Some(0x3000))));
        assert!(!tunable(&gemm(LibraryEpilogue::Accumulate), &ptrs(None)));
    }

    #[test]
    fn alignment_is_the_largest_power_of_two_up_to_256() {
        assert_eq!(alignment(0), 256);
        assert_eq!(alignment(0x1000), 256);
        assert_eq!(alignment(0x1010), 16);
        assert_eq!(alignment(0x1002), 2);
    }
}
