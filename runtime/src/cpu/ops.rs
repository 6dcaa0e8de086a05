//! The stateless ops as pure functions on [`Tensor`]s: embedding, RMSNorm, linear, add, mul,
//! concat, slice, GELU, SiLU. Reductions accumulate in f64; results are stored as f32.

use crate::cpu::math;
use crate::{RuntimeError, Tensor};

/// An op-level error (the graph runner prefixes the node's label).
pub(crate) fn bad(op: &str, msg: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Input(format!("{op}: {msg}"))
}

/// `weight[ids]`: ids `[B,T]` (integral values) -> `[B,T,H]`, weight `[V,H]`.
pub fn embedding(ids: &Tensor, weight: &Tensor) -> Result<Tensor, RuntimeError> {
    let [v, h] = weight.shape[..] else {
        return Err(bad(
            "embedding",
            format!("weight shape {:?} is not [V,H]", weight.shape),
        ));
    };
    let mut out = Vec::with_capacity(ids.data.len() * h);
    for &id in &ids.data {
        if id < 0.0 || id.fract() != 0.0 || id as usize >= v {
            return Err(RuntimeError::Input(format!(
                "token id {id} is out of range: the vocabulary has {v} tokens (ids 0..{})",
                v.saturating_sub(1)
            )));
        }
        let r = id as usize;
        out.extend_from_slice(&weight.data[r * h..(r + 1) * h]);
    }
    let mut shape = ids.shape.clone();
    shape.push(h);
    Ok(Tensor::new(shape, out))
}

/// `w ⊙ x / sqrt(mean(x²) + eps)` over the last axis (spec §2.6): normalise in f64, round to
/// f32, then multiply by the weight (HF casts before the weight multiply).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor, RuntimeError> {
    let w = x.width();
    if weight.data.len() != w {
        return Err(bad(
            "rms_norm",
            format!(
                "weight has {} values, the input width is {w}",
                weight.data.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(x.data.len());
    for row in x.data.chunks_exact(w) {
        let ms = row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / w as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        out.extend(
            row.iter()
                .zip(&weight.data)
                .map(|(v, g)| g * ((*v as f64 * inv) as f32)),
        );
    }
    Ok(Tensor::new(x.shape.clone(), out))
}

/// Multiply-adds above which [`linear`] spreads its output rows over the CPU's threads.
const PARALLEL_MACS: usize = 1 << 22;

/// `x · Wᵀ`, W stored `[out, in]`: `[..., in]` -> `[..., out]`, each dot product in f64.
pub fn linear(x: &Tensor, weight: &Tensor) -> Result<Tensor, RuntimeError> {
    let [n_out, n_in] = weight.shape[..] else {
        return Err(bad(
            "linear",
            format!("weight shape {:?} is not [out,in]", weight.shape),
        ));
    };
    if x.width() != n_in {
        return Err(bad(
            "linear",
            format!(
                "input width {} does not match weight [{n_out}, {n_in}]",
                x.width()
            ),
        ));
    }
    let rows = x.rows();
    let xs: Vec<Vec<f64>> = x.data.chunks_exact(n_in.max(1)).map(math::widen).collect();
    // out_t[o][r] = W[o]·x[r]; large products are split over threads by blocks of W's rows.
    let mut out_t = vec![0f32; n_out * rows];
    let threads = if n_out * n_in * rows >= PARALLEL_MACS {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    let block = n_out.div_ceil(threads).max(1);
    let work = |(bi, dst): (usize, &mut [f32])| {
        for (i, o) in dst.chunks_exact_mut(rows.max(1)).enumerate() {
            let wr = &weight.data[(bi * block + i) * n_in..(bi * block + i + 1) * n_in];
            for (v, xr) in o.iter_mut().zip(&xs) {
                *v = math::dot(wr, xr) as f32;
            }
        }
    };
    if threads == 1 {
        out_t
            .chunks_mut(block * rows.max(1))
            .enumerate()
            .for_each(work);
    } else {
        std::thread::scope(|s| {
            for chunk in out_t.chunks_mut(block * rows.max(1)).enumerate() {
                s.spawn(move || work(chunk));
            }
        });
    }
    let mut out = vec![0f32; rows * n_out];
    for (o, col) in out_t.chunks_exact(rows.max(1)).enumerate() {
        for (r, v) in col.iter().enumerate() {
            out[r * n_out + o] = *v;
        }
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("linear input has a shape") = n_out;
    Ok(Tensor::new(shape, out))
}

fn elementwise(
    name: &str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32,
) -> Result<Tensor, RuntimeError> {
    if a.shape != b.shape {
        return Err(bad(
            name,
            format!("operand shapes differ: {:?} vs {:?}", a.shape, b.shape),
        ));
    }
    let data = a.data.iter().zip(&b.data).map(|(x, y)| f(*x, *y)).collect();
    Ok(Tensor::new(a.shape.clone(), data))
}

/// Elementwise `a + b`.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor, RuntimeError> {
    elementwise("add", a, b, |x, y| x + y)
}

/// Elementwise `a ⊙ b`.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor, RuntimeError> {
    elementwise("mul", a, b, |x, y| x * y)
}

/// Concatenation along the last axis; all operands share the leading axes.
pub fn concat(xs: &[&Tensor]) -> Result<Tensor, RuntimeError> {
    let Some(first) = xs.first() else {
        return Err(bad("concat", "no operands"));
    };
    let lead = &first.shape[..first.shape.len().saturating_sub(1)];
    for x in xs {
        if &x.shape[..x.shape.len().saturating_sub(1)] != lead {
            return Err(bad(
                "concat",
                format!("leading axes differ: {:?} vs {:?}", first.shape, x.shape),
            ));
        }
    }
    let total: usize = xs.iter().map(|x| x.width()).sum();
    let rows = first.rows();
    let mut out = Vec::with_capacity(rows * total);
    for r in 0..rows {
        for x in xs {
            let w = x.width();
            out.extend_from_slice(&x.data[r * w..(r + 1) * w]);
        }
    }
    let mut shape = lead.to_vec();
    shape.push(total);
    Ok(Tensor::new(shape, out))
}

/// `x[..., start .. start+len]`.
pub fn slice(x: &Tensor, start: usize, len: usize) -> Result<Tensor, RuntimeError> {
    let w = x.width();
    if start + len > w {
        return Err(bad(
            "slice",
            format!("{start}..{} is outside the input width {w}", start + len),
        ));
    }
    let mut out = Vec::with_capacity(x.rows() * len);
    for row in x.data.chunks_exact(w) {
        out.extend_from_slice(&row[start..start + len]);
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("slice input has a shape") = len;
    Ok(Tensor::new(shape, out))
}

/// Exact erf GELU, elementwise.
pub fn gelu(x: &Tensor) -> Tensor {
    let data = x
        .data
        .iter()
        .map(|v| math::gelu(*v as f64) as f32)
        .collect();
    Tensor::new(x.shape.clone(), data)
}

/// `x·σ(x)`, elementwise.
pub fn silu(x: &Tensor) -> Tensor {
    let data = x
        .data
        .iter()
        .map(|v| math::silu(*v as f64) as f32)
        .collect();
    Tensor::new(x.shape.clone(), data)
}
