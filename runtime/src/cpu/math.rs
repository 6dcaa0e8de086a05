//! Scalar math in f64 for the interpreter: erf/erfc, GELU, SiLU, softplus, and a dot product
//! that accumulates f32 × f64 products in f64.

use std::f64::consts::PI;

/// `2/√π`.
const TWO_OVER_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

/// Below this `|x|` erf uses its Maclaurin series, above it erfc uses its continued fraction.
const SERIES_LIMIT: f64 = 2.5;

/// erf by the Maclaurin series `2/√π Σ (-1)ⁿ x^(2n+1) / (n! (2n+1))`; for `|x| ≤ 2.5` the
/// largest term is ~16, so cancellation costs under 2 digits of f64's 16.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x; // (-1)^n x^(2n+1) / n!
    let mut sum = x;
    let mut n = 0.0;
    loop {
        n += 1.0;
        term *= -x2 / n;
        let add = term / (2.0 * n + 1.0);
        sum += add;
        if add.abs() <= 1e-17 * sum.abs() {
            break;
        }
    }
    TWO_OVER_SQRT_PI * sum
}

/// erfc for `x ≥ 2.5` by the continued fraction
/// `erfc(x) = e^(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))`, evaluated from the tail.
fn erfc_cf(x: f64) -> f64 {
    let mut f = x;
    for n in (1..=120).rev() {
        f = x + (n as f64 * 0.5) / f;
    }
    (-x * x).exp() / (PI.sqrt() * f)
}

/// The error function, accurate to ~1e-15 absolute.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x.abs() < SERIES_LIMIT {
        erf_series(x)
    } else if x > 0.0 {
        1.0 - erfc_cf(x)
    } else {
        erfc_cf(-x) - 1.0
    }
}

/// The complementary error function `1 - erf(x)`, accurate in relative terms for large `x`.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x >= SERIES_LIMIT {
        erfc_cf(x)
    } else if x <= -SERIES_LIMIT {
        2.0 - erfc_cf(-x)
    } else {
        1.0 - erf_series(x)
    }
}

/// Exact GELU `0.5·x·(1 + erf(x/√2))`, written with erfc so the negative tail keeps its digits.
pub fn gelu(x: f64) -> f64 {
    0.5 * x * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// `x·σ(x)`.
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// PyTorch's softplus (beta 1, threshold 20): `x` when `x > 20`, else `log(1 + eˣ)`.
pub fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// `Σ a[i]·b[i]` in f64 (four independent accumulators so the loop vectorizes).
pub fn dot(a: &[f32], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f64; 4];
    let (ac, ar) = a.split_at(a.len() / 4 * 4);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(4).zip(bc.chunks_exact(4)) {
        for k in 0..4 {
            acc[k] += x[k] as f64 * y[k];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ar.iter().zip(br) {
        s += *x as f64 * y;
    }
    s
}

/// `Σ a[i]·b[i]` of two f32 slices, accumulated in f64.
pub fn dot32(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Widens a slice to f64.
pub fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|v| *v as f64).collect()
}
