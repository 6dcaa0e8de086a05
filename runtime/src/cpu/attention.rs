//! Causal multi-head attention with GQA, optional RoPE and a growing KV cache (spec §2.4).

use crate::cpu::mamba::btw;
use crate::cpu::math;
use crate::cpu::ops::bad;
use crate::cpu::state::KvCache;
use crate::{RuntimeError, Tensor};
use zamba2c_ir::tensor::round_to;

/// The attention op's sizes (the fields of `Op::Attention`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionParams {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub rope_theta: Option<f32>,
}

/// RoPE inverse frequencies `inv_freq[j] = 1 / theta^(2j/d)`, `j < d/2`, in f32 as HF computes.
pub fn rope_inv_freq(theta: f32, d: usize) -> Vec<f32> {
    (0..d / 2)
        .map(|j| 1.0 / theta.powf((2 * j) as f32 / d as f32))
        .collect()
}

/// Rotates one head vector in place for absolute position `pos`, half-split ("rotate_half"):
/// `x' = x·cos + rot(x)·sin`, `rot([x1, x2]) = [-x2, x1]`, angle `pos·inv_freq[j]` in f32.
pub fn rope_rotate(x: &mut [f32], pos: usize, inv_freq: &[f32]) {
    let half = inv_freq.len();
    debug_assert_eq!(x.len(), 2 * half);
    for j in 0..half {
        let ang = (pos as f32 * inv_freq[j]) as f64;
        let (sin, cos) = (ang.sin() as f32 as f64, ang.cos() as f32 as f64);
        let (x1, x2) = (x[j] as f64, x[j + half] as f64);
        x[j] = (x1 * cos - x2 * sin) as f32;
        x[j + half] = (x2 * cos + x1 * sin) as f32;
    }
}

/// Attention over `q [B,T,HA*d]`, `k, v [B,T,HKV*d]`: applies RoPE (when set) to q and k at
/// absolute positions `T0 + t` (`T0` = tokens already cached in that row), appends k and v to
/// the cache (rounded to its element dtype), and lets query `t` attend to cached positions `0 ..= T0 + t`. Query head `h`
/// uses kv head `h / (HA/HKV)`; scores `q·k·scale`, softmax and `Pr·V` in f64.
/// Returns `[B,T,HA*d]` with the heads concatenated in order.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: &AttentionParams,
    cache: &mut KvCache,
) -> Result<Tensor, RuntimeError> {
    const OP: &str = "attention";
    let (ha, hkv, d) = (p.heads, p.kv_heads, p.head_dim);
    let (b, t, w) = btw(OP, q)?;
    let ok = w == ha * d
        && k.shape == [b, t, hkv * d]
        && v.shape == [b, t, hkv * d]
        && hkv > 0
        && ha.is_multiple_of(hkv)
        && (cache.kv_heads, cache.head_dim) == (hkv, d)
        && cache.len.len() == b;
    if !ok {
        return Err(bad(
            OP,
            format!(
                "q {:?}, k {:?}, v {:?} do not fit heads={ha}, kv_heads={hkv}, d={d}, a cache of {} rows",
                q.shape, k.shape, v.shape, cache.len.len()
            ),
        ));
    }
    if p.rope_theta.is_some() && !d.is_multiple_of(2) {
        return Err(bad(OP, format!("RoPE needs an even head dim, got {d}")));
    }
    let inv_freq = p.rope_theta.map(|th| rope_inv_freq(th, d));
    let group = ha / hkv;
    let kw = hkv * d;
    let mut out = vec![0f32; b * t * ha * d];
    for bi in 0..b {
        let t0 = cache.len[bi];
        // Append this call's keys (rotated) and values.
        for ti in 0..t {
            let row = bi * t + ti;
            let mut kr = k.data[row * kw..(row + 1) * kw].to_vec();
            if let Some(f) = &inv_freq {
                kr.chunks_exact_mut(d)
                    .for_each(|hd| rope_rotate(hd, t0 + ti, f));
            }
            let dt = cache.dtype;
            cache.k[bi].extend(kr.iter().map(|&x| round_to(x, dt)));
            cache.v[bi].extend(
                v.data[row * kw..(row + 1) * kw]
                    .iter()
                    .map(|&x| round_to(x, dt)),
            );
        }
        cache.len[bi] = t0 + t;
        let (kc, vc) = (&cache.k[bi], &cache.v[bi]);
        let mut scores = vec![0f64; t0 + t];
        for ti in 0..t {
            let row = bi * t + ti;
            let last = t0 + ti; // absolute position of this query: attends to 0..=last
            for h in 0..ha {
                let kvh = h / group;
                let mut qh = q.data[row * ha * d + h * d..row * ha * d + (h + 1) * d].to_vec();
                if let Some(f) = &inv_freq {
                    rope_rotate(&mut qh, last, f);
                }
                let qh = math::widen(&qh);
                let mut max = f64::NEG_INFINITY;
                for (j, s) in scores[..=last].iter_mut().enumerate() {
                    let kj = &kc[j * kw + kvh * d..j * kw + (kvh + 1) * d];
                    *s = math::dot(kj, &qh) * p.scale as f64;
                    max = max.max(*s);
                }
                let mut sum = 0f64;
                for s in &mut scores[..=last] {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let mut acc = vec![0f64; d];
                for (j, s) in scores[..=last].iter().enumerate() {
                    let pr = s / sum;
                    let vj = &vc[j * kw + kvh * d..j * kw + (kvh + 1) * d];
                    acc.iter_mut()
                        .zip(vj)
                        .for_each(|(a, x)| *a += pr * *x as f64);
                }
                let o = &mut out[row * ha * d + h * d..row * ha * d + (h + 1) * d];
                o.iter_mut().zip(&acc).for_each(|(o, a)| *o = *a as f32);
            }
        }
    }
    Ok(Tensor::new(vec![b, t, ha * d], out))
}
