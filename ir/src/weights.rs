//! The plan's weights: a memory-mapped safetensors file, or seeded random weights
//! (`--dummy-weights`, as vLLM's dummy load format) made on demand with the same shapes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rand::{Rng, SeedableRng};

use crate::graph::{DType, Module, WeightSpec};
use crate::plan::PlanError;
use crate::tensor::{from_f32, from_safetensors, to_f32};

/// Weights of a loaded plan.
pub enum WeightStore {
    File {
        path: PathBuf,
        map: Mmap,
        /// name -> (dtype, byte range in `map`)
        index: BTreeMap<String, (DType, Range<usize>)>,
    },
    Dummy {
        seed: u64,
        specs: BTreeMap<String, WeightSpec>,
    },
}

impl WeightStore {
    /// Maps `path` and checks that it holds every weight of `module` with the right dtype and
    /// shape.
    pub fn open_file(path: &Path, module: &Module) -> Result<Self, PlanError> {
        let (file, _) = crate::fsread::open_regular(path, crate::fsread::Links::Refuse)
            .map_err(|e| PlanError::new(path, e))?;
        // SAFETY: the plan's files are not modified while it is loaded (their checksums were
        // verified just before); a concurrent writer would be a user error like for any mmap.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| PlanError::new(path, e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&map)
            .map_err(|e| PlanError::new(path, format!("not a valid safetensors file: {e}")))?;
        let base = map.as_ptr() as usize;
        let mut index = BTreeMap::new();
        for (name, view) in st.tensors() {
            let dtype = from_safetensors(view.dtype()).ok_or_else(|| {
                PlanError::new(
                    path,
                    format!("tensor {name}: unsupported dtype {:?}", view.dtype()),
                )
            })?;
            let start = view.data().as_ptr() as usize - base;
            index.insert(name, (dtype, start..start + view.data().len()));
        }
        for (name, spec) in &module.weights {
            let (dtype, range) = index
                .get(name)
                .ok_or_else(|| PlanError::new(path, format!("tensor {name} is missing")))?;
            if *dtype != spec.dtype || range.len() != spec.bytes() {
                return Err(PlanError::new(
                    path,
                    format!(
                        "tensor {name}: stored as {dtype} ({} bytes), the IR wants {} {:?}",
                        range.len(),
                        spec.dtype,
                        spec.shape
                    ),
                ));
            }
        }
        drop(st);
        Ok(WeightStore::File {
            path: path.to_path_buf(),
            map,
            index,
        })
    }

    /// Seeded random weights for every weight of `module`.
    pub fn dummy(seed: u64, module: &Module) -> Self {
        WeightStore::Dummy {
            seed,
            specs: module.weights.clone(),
        }
    }

    /// The weight's bytes in its stored dtype.
    pub fn raw(&self, name: &str) -> Result<(DType, Cow<'_, [u8]>), PlanError> {
        match self {
            WeightStore::File { path, map, index } => {
                let (dtype, r) = index
                    .get(name)
                    .ok_or_else(|| PlanError::new(path, format!("tensor {name} is missing")))?;
                Ok((*dtype, Cow::Borrowed(&map[r.clone()])))
            }
            WeightStore::Dummy { specs, .. } => {
                let spec = specs.get(name).ok_or_else(|| {
                    PlanError::new("(dummy weights)", format!("tensor {name} is not in the IR"))
                })?;
                Ok((
                    spec.dtype,
                    Cow::Owned(from_f32(&self.f32(name)?, spec.dtype)),
                ))
            }
        }
    }

    /// The weight as f32 values.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, PlanError> {
        match self {
            WeightStore::File { .. } => {
                let (dtype, bytes) = self.raw(name)?;
                Ok(to_f32(&bytes, dtype))
            }
            WeightStore::Dummy { seed, specs } => {
                let spec = specs.get(name).ok_or_else(|| {
                    PlanError::new("(dummy weights)", format!("tensor {name} is not in the IR"))
                })?;
                Ok(dummy_values(*seed, name, spec))
            }
        }
    }
}

/// Deterministic random values for one weight, in ranges like those of trained Zamba2 models
/// so that activations stay well scaled through every layer.
pub fn dummy_values(seed: u64, name: &str, spec: &WeightSpec) -> Vec<f32> {
    let h = blake3::hash(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ u64::from_le_bytes(b));
    let n = spec.numel();
    let mut uni =
        |lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..hi)).collect() };
    // uniform(-a, a) has std a/sqrt(3): a = 0.0346 gives the 0.02 std of HF's initializer.
    let a = 0.02 * 3f32.sqrt();
    if name.ends_with("layernorm.weight") || name.ends_with("norm.weight") {
        uni(0.8, 1.2)
    } else if name.ends_with("A_log") {
        uni(1f32.ln(), 16f32.ln())
    } else if name.ends_with("dt_bias") {
        // softplus⁻¹ of dt drawn log-uniformly in [1e-3, 1e-1], as Mamba2's initializer does.
        uni(1e-3f32.ln(), 1e-1f32.ln())
            .into_iter()
            .map(|l| {
                let dt = l.exp();
                dt + (-(-dt).exp_m1()).ln()
            })
            .collect()
    } else if name.ends_with(".D") {
        uni(0.5, 1.5)
    } else if name.ends_with("conv1d.weight") {
        uni(-0.5, 0.5)
    } else if name.ends_with("conv1d.bias") {
        uni(-0.1, 0.1)
    } else {
        uni(-a, a)
    }
}
