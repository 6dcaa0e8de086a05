//! NVRTC: compiles generated kernels to PTX, without a GPU. The library is loaded at run time
//! (`libnvrtc.so.13`, found on the loader path or `LD_LIBRARY_PATH`); PTX can be cached on
//! disk keyed by a hash of source, options, arch and NVRTC version.

use std::path::{Path, PathBuf};

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};

/// An NVRTC failure: the kernel, its path in the plan, and the compiler's log.
#[derive(Debug, thiserror::Error)]
pub enum NvrtcError {
    #[error("NVRTC (libnvrtc.so) cannot be loaded: install the CUDA 13.0 NVRTC library (e.g. `pip install nvidia-cuda-nvrtc==13.0.88`) and put its lib folder on LD_LIBRARY_PATH")]
    Unavailable,
    #[error("NVRTC failed to compile kernel {kernel} ({path}) with options {options:?}:\n{log}")]
    Compile {
        kernel: String,
        path: String,
        options: Vec<String>,
        log: String,
    },
}

/// The NVRTC found at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvrtcInfo {
    pub major: i32,
    pub minor: i32,
}

/// Whether NVRTC can be loaded.
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library by its known names; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The NVRTC version, when it can be loaded.
pub fn info() -> Result<NvrtcInfo, NvrtcError> {
    if !available() {
        return Err(NvrtcError::Unavailable);
    }
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: the library is present (checked above); nvrtcVersion writes two ints through
    // valid pointers to locals and has no other effect.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(NvrtcError::Unavailable);
    }
    Ok(NvrtcInfo { major, minor })
}

/// The options every kernel is compiled with (precise math: the numerics follow the spec).
pub fn options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "--fmad=true".into(),
    ]
}

/// Compiles one kernel source to PTX. `path` names the source in error messages.
pub fn compile(kernel: &str, source: &str, path: &str, arch: &str) -> Result<String, NvrtcError> {
    if !available() {
        return Err(NvrtcError::Unavailable);
    }
    let opts = CompileOptions {
        options: options(arch),
        name: Some(format!("{kernel}.cu")),
        ..Default::default()
    };
    match compile_ptx_with_opts(source, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(e) => {
            let log = match &e {
                CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
                other => format!("{other:?}"),
            };
            Err(NvrtcError::Compile {
                kernel: kernel.to_string(),
                path: path.to_string(),
                options: options(arch),
                log,
            })
        }
    }
}

/// Compiles `(kernel, source, path)` jobs on all cores; results in job order, or the first
/// error in job order.
pub fn compile_many(
    jobs: &[(String, String, String)],
    arch: &str,
) -> Result<Vec<String>, NvrtcError> {
    compile_many_with(jobs, |(k, s, p)| compile(k, s, p, arch))
}

/// Runs `f` over `jobs` on all cores, keeping the order.
fn compile_many_with<J: Sync>(
    jobs: &[J],
    f: impl Fn(&J) -> Result<String, NvrtcError> + Sync,
) -> Result<Vec<String>, NvrtcError> {
    if !available() {
        return Err(NvrtcError::Unavailable);
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let chunk = jobs.len().div_ceil(threads).max(1);
    let mut results: Vec<Result<String, NvrtcError>> = Vec::with_capacity(jobs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<_>>()))
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => results.extend(r),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
    });
    results.into_iter().collect()
}

/// The on-disk PTX cache: `$ZAMBA2C_CACHE_DIR/ptx`, else `$XDG_CACHE_HOME/zamba2c/ptx`, else
/// `~/.cache/zamba2c/ptx`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("ZAMBA2C_CACHE_DIR") {
        return Some(PathBuf::from(d).join("ptx"));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("zamba2c/ptx"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/zamba2c/ptx"))
}

/// The cache key of a kernel: BLAKE3 of source, options, arch and NVRTC version.
pub fn cache_key(source: &str, arch: &str, nv: NvrtcInfo) -> String {
    let mut h = blake3::Hasher::new();
    h.update(source.as_bytes());
    for o in options(arch) {
        h.update(b"\0");
        h.update(o.as_bytes());
    }
    h.update(format!("\0{arch}\0nvrtc {}.{}", nv.major, nv.minor).as_bytes());
    h.finalize().to_hex().to_string()
}

/// Compiles `(kernel, source, path)` jobs, reading and filling the PTX cache in `dir` (cache
/// write failures are ignored: the cache is only an optimisation).
pub fn compile_cached(
    jobs: &[(String, String, String)],
    arch: &str,
    dir: Option<&Path>,
) -> Result<Vec<String>, NvrtcError> {
    let nv = info()?;
    compile_many_with(jobs, |(k, s, p)| {
        let file = dir.map(|d| d.join(format!("{}.ptx", cache_key(s, arch, nv))));
        if let Some(f) = &file {
            if let Ok(ptx) = std::fs::read_to_string(f) {
                return Ok(ptx);
            }
        }
        let ptx = compile(k, s, p, arch)?;
        if let (Some(f), Some(d)) = (&file, dir) {
            if std::fs::create_dir_all(d).is_ok() {
                let tmp = f.with_extension(format!("tmp{}", std::process::id()));
                if std::fs::write(&tmp, &ptx).is_ok() {
                    let _ = std::fs::rename(&tmp, f);
                }
            }
        }
        Ok(ptx)
    })
}
