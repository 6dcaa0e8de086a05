//! Unit tests of the CPU interpreter's ops against hand-computed values and independent,
//! naive formulas (spec §2–§3).

use std::collections::BTreeMap;

use zamba2c_ir::fused::{weight_view, Norm, Proj};
use zamba2c_ir::{Op, StateSpec};
use zamba2c_runtime::cpu::attention::{attention, AttentionParams};
use zamba2c_runtime::cpu::mamba::{causal_conv1d, gated_rms_norm, ssm_scan, ScanParams};
use zamba2c_runtime::cpu::state::{ConvState, KvCache, SsmState};
use zamba2c_runtime::cpu::{eval_node, math, ops, CpuWeights, InferenceState};
use zamba2c_runtime::{RuntimeError, Tensor};

/// A small deterministic generator (xorshift), values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(
            shape.to_vec(),
            (0..n).map(|_| self.next() * scale).collect(),
        )
    }
}

fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::new(shape.to_vec(), data.to_vec())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max |diff| {d} > {tol}");
}

/// Concatenates `[B,T,W]` tensors along T.
fn cat_time(parts: &[Tensor]) -> Tensor {
    let b = parts[0].shape[0];
    let w = parts[0].shape[2];
    let t: usize = parts.iter().map(|p| p.shape[1]).sum();
    let mut data = Vec::new();
    for bi in 0..b {
        for p in parts {
            let pt = p.shape[1];
            data.extend_from_slice(&p.data[bi * pt * w..(bi + 1) * pt * w]);
        }
    }
    Tensor::new(vec![b, t, w], data)
}

/// `x[:, t0..t1, :]`.
fn time_slice(x: &Tensor, t0: usize, t1: usize) -> Tensor {
    let (b, t, w) = (x.shape[0], x.shape[1], x.shape[2]);
    let mut data = Vec::new();
    for bi in 0..b {
        data.extend_from_slice(&x.data[(bi * t + t0) * w..(bi * t + t1) * w]);
    }
    Tensor::new(vec![b, t1 - t0, w], data)
}

// ---------------------------------------------------------------- scalar math

#[test]
fn erf_and_erfc_match_reference_values() {
    // Python's math.erf / math.erfc.
    let erf_ref = [
        (-6.0, -1.0),
        (-3.0, -0.9999779095030014),
        (-2.5, -0.999593047982555),
        (-2.4999, -0.9995928300996666),
        (-1.0, -0.8427007929497149),
        (-0.5, -0.5204998778130465),
        (0.001, 0.0011283787909692365),
        (0.1, 0.1124629160182849),
        (1.0, 0.8427007929497149),
        (2.0, 0.9953222650189527),
        (2.4999, 0.9995928300996666),
        (2.5, 0.999593047982555),
        (3.0, 0.9999779095030014),
        (4.0, 0.9999999845827421),
        (5.5, 0.9999999999999927),
    ];
    for (x, want) in erf_ref {
        let got = math::erf(x);
        assert!((got - want).abs() < 1e-14, "erf({x}) = {got}, want {want}");
    }
    let erfc_ref = [
        (-1.0, 1.842700792949715),
        (0.3, 0.6713732405408726),
        (2.5, 0.0004069520174449589),
        (3.0, 2.2090496998585438e-05),
        (5.0, 1.5374597944280351e-12),
        (10.0, 2.088487583762545e-45),
        (20.0, 5.3958656116079005e-176),
    ];
    for (x, want) in erfc_ref {
        let got = math::erfc(x);
        assert!(
            ((got - want) / want).abs() < 1e-12,
            "erfc({x}) = {got}, want {want}"
        );
    }
    assert_eq!(math::erf(0.0), 0.0);
}

#[test]
fn gelu_silu_softplus_values() {
    assert!((math::gelu(1.0) - 0.8413447460685429).abs() < 1e-15);
    assert!((math::gelu(-1.0) - -0.15865525393145707).abs() < 1e-15);
    // the far negative tail keeps its relative precision (Python: 0.5·x·erfc(-x/√2))
    assert!((math::gelu(-5.0) - -1.4332578593959731e-06).abs() < 1e-18);
    assert_eq!(math::gelu(0.0), 0.0);
    let g = ops::gelu(&t(&[3], &[1.0, -1.0, 2.0]));
    assert_close(
        &g.data,
        &[0.841_344_7, -0.158_655_25, 1.954_499_7],
        1e-7,
        "gelu",
    );
    assert!((math::silu(1.0) - 0.7310585786300049).abs() < 1e-15);
    assert!((math::silu(-2.0) - -0.2384058440442351).abs() < 1e-15);
    assert!((math::softplus(0.0) - std::f64::consts::LN_2).abs() < 1e-15);
    assert_eq!(math::softplus(25.0), 25.0); // PyTorch's threshold 20
    assert!((math::softplus(-10.0) - 4.539889921686465e-05).abs() < 1e-18);
}

// ---------------------------------------------------------------- stateless ops

#[test]
fn rms_norm_hand_values() {
    // x = [3, 4]: mean(x²) = 12.5, rms = 3.5355339; eps = 0.
    let y = ops::rms_norm(&t(&[1, 1, 2], &[3.0, 4.0]), &t(&[2], &[1.0, 2.0]), 0.0).unwrap();
    assert_close(&y.data, &[0.848_528_1, 2.262_741_7], 1e-7, "rms_norm");
    // eps enters under the root: x = [1,1,1,1], eps = 1 → x/√2.
    let y = ops::rms_norm(&t(&[4], &[1.0; 4]), &t(&[4], &[1.0; 4]), 1.0).unwrap();
    assert_close(&y.data, &[std::f32::consts::FRAC_1_SQRT_2; 4], 1e-7, "eps");
    // rows are independent
    let y = ops::rms_norm(
        &t(&[2, 2], &[3.0, 4.0, 0.0, 2.0]),
        &t(&[2], &[1.0, 1.0]),
        0.0,
    )
    .unwrap();
    assert_close(
        &y.data,
        &[0.848_528_1, 1.131_370_9, 0.0, std::f32::consts::SQRT_2],
        1e-7,
        "rows",
    );
}

#[test]
fn linear_is_x_times_w_transposed() {
    // W [3 out, 2 in]
    let w = t(&[3, 2], &[1.0, 2.0, 3.0, 4.0, -1.0, 0.5]);
    let x = t(&[2, 1, 2], &[1.0, 1.0, 2.0, -1.0]);
    let y = ops::linear(&x, &w).unwrap();
    assert_eq!(y.shape, vec![2, 1, 3]);
    assert_eq!(y.data, vec![3.0, 7.0, -0.5, 0.0, 2.0, -2.5]);
    // long rows (exercise the 4-way accumulation and its remainder)
    let mut r = Rng(7);
    let x = r.tensor(&[3, 37], 1.0);
    let w = r.tensor(&[5, 37], 1.0);
    let y = ops::linear(&x, &w).unwrap();
    for i in 0..3 {
        for o in 0..5 {
            let want: f64 = (0..37)
                .map(|k| x.data[i * 37 + k] as f64 * w.data[o * 37 + k] as f64)
                .sum();
            assert!((y.data[i * 5 + o] as f64 - want).abs() < 1e-6);
        }
    }
    assert!(ops::linear(&t(&[1, 3], &[0.0; 3]), &w).is_err());
    // large enough to be split over threads: same values as row by row
    let x = r.tensor(&[3, 512], 1.0);
    let w = r.tensor(&[3001, 512], 1.0);
    let y = ops::linear(&x, &w).unwrap();
    assert_eq!(y.shape, vec![3, 3001]);
    for i in 0..3 {
        let xi = t(&[512], &x.data[i * 512..(i + 1) * 512]);
        let yi = ops::linear(&xi, &w).unwrap();
        assert_eq!(yi.data, y.data[i * 3001..(i + 1) * 3001].to_vec());
    }
}

#[test]
fn add_mul_concat_slice_embedding() {
    let a = t(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[1, 2, 2], &[10.0, 20.0, 30.0, 40.0]);
    assert_eq!(ops::add(&a, &b).unwrap().data, vec![11.0, 22.0, 33.0, 44.0]);
    assert_eq!(
        ops::mul(&a, &b).unwrap().data,
        vec![10.0, 40.0, 90.0, 160.0]
    );
    assert!(ops::add(&a, &t(&[4], &[0.0; 4])).is_err());
    let c = ops::concat(&[&a, &t(&[1, 2, 1], &[5.0, 6.0]), &b]).unwrap();
    assert_eq!(c.shape, vec![1, 2, 5]);
    assert_eq!(
        c.data,
        vec![1.0, 2.0, 5.0, 10.0, 20.0, 3.0, 4.0, 6.0, 30.0, 40.0]
    );
    let s = ops::slice(&c, 2, 2).unwrap();
    assert_eq!(s.shape, vec![1, 2, 2]);
    assert_eq!(s.data, vec![5.0, 10.0, 6.0, 30.0]);
    assert!(ops::slice(&c, 4, 2).is_err());
    let emb = t(&[3, 2], &[0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    let e = ops::embedding(&t(&[1, 3], &[2.0, 0.0, 2.0]), &emb).unwrap();
    assert_eq!(e.shape, vec![1, 3, 2]);
    assert_eq!(e.data, vec![2.0, 2.5, 0.0, 0.5, 2.0, 2.5]);
    let err = ops::embedding(&t(&[1, 1], &[3.0]), &emb).unwrap_err();
    assert!(err.to_string().contains("token id 3") && err.to_string().contains("3 tokens"));
}

// ---------------------------------------------------------------- causal conv

fn conv_state(b: usize, cd: usize, k: usize) -> ConvState {
    ConvState {
        channels: cd,
        kernel: k,
        data: vec![0.0; b * cd * k],
    }
}

#[test]
fn causal_conv_matches_direct_formula_and_chunks() {
    let (b, t_len, cd, k) = (2, 7, 3, 4);
    let mut r = Rng(11);
    let x = r.tensor(&[b, t_len, cd], 1.0);
    let w = r.tensor(&[cd, k], 0.5);
    let bias = r.tensor(&[cd], 0.1);
    let mut st = conv_state(b, cd, k);
    let y = causal_conv1d(&x, &w, &bias, &mut st).unwrap();
    // out_t[c] = bias[c] + Σ_j w[c,j]·x_{t-(K-1)+j}[c], zeros before t = 0
    for bi in 0..b {
        for ti in 0..t_len {
            for c in 0..cd {
                let mut want = bias.data[c] as f64;
                for j in 0..k {
                    let src = ti as isize - (k as isize - 1) + j as isize;
                    if src >= 0 {
                        want += w.data[c * k + j] as f64
                            * x.data[(bi * t_len + src as usize) * cd + c] as f64;
                    }
                }
                let got = y.data[(bi * t_len + ti) * cd + c];
                assert!((got as f64 - want).abs() < 1e-6, "b{bi} t{ti} c{c}");
            }
        }
    }
    // the state holds the last K inputs, oldest first
    for bi in 0..b {
        for c in 0..cd {
            for j in 0..k {
                let src = t_len - k + j;
                assert_eq!(
                    st.data[(bi * cd + c) * k + j],
                    x.data[(bi * t_len + src) * cd + c]
                );
            }
        }
    }
    // any chunking (including single tokens, shorter than the kernel) gives the same outputs
    for splits in [vec![3, 4], vec![1; 7], vec![2, 1, 4]] {
        let mut st = conv_state(b, cd, k);
        let mut outs = Vec::new();
        let mut t0 = 0;
        for n in splits {
            outs.push(causal_conv1d(&time_slice(&x, t0, t0 + n), &w, &bias, &mut st).unwrap());
            t0 += n;
        }
        assert_close(&cat_time(&outs).data, &y.data, 1e-6, "chunked conv");
    }
}

// ---------------------------------------------------------------- SSM scan

struct ScanCase {
    x: Tensor,
    dt: Tensor,
    b: Tensor,
    c: Tensor,
    dt_bias: Tensor,
    a_log: Tensor,
    d: Tensor,
    p: ScanParams,
}

fn scan_case(batch: usize, t_len: usize, dt_min: Option<f32>) -> ScanCase {
    let (nh, hp, n, g) = (4, 3, 5, 2);
    let mut r = Rng(23);
    ScanCase {
        x: r.tensor(&[batch, t_len, nh * hp], 1.0),
        dt: r.tensor(&[batch, t_len, nh], 2.0),
        b: r.tensor(&[batch, t_len, g * n], 1.0),
        c: r.tensor(&[batch, t_len, g * n], 1.0),
        dt_bias: r.tensor(&[nh], 1.0),
        a_log: Tensor::new(vec![nh], (0..nh).map(|h| (h as f32 + 1.0).ln()).collect()),
        d: r.tensor(&[nh], 1.0),
        p: ScanParams {
            heads: nh,
            head_dim: hp,
            d_state: n,
            groups: g,
            dt_min,
        },
    }
}

fn ssm_state(batch: usize, p: &ScanParams) -> SsmState {
    SsmState {
        heads: p.heads,
        head_dim: p.head_dim,
        d_state: p.d_state,
        dtype: zamba2c_ir::DType::F32,
        data: vec![0.0; batch * p.heads * p.head_dim * p.d_state],
    }
}

fn run_scan(cs: &ScanCase, t0: usize, t1: usize, st: &mut SsmState) -> Tensor {
    let s = |x: &Tensor| time_slice(x, t0, t1);
    ssm_scan(
        &s(&cs.x),
        &s(&cs.dt),
        &s(&cs.b),
        &s(&cs.c),
        &cs.dt_bias,
        &cs.a_log,
        &cs.d,
        &cs.p,
        st,
    )
    .unwrap()
}

/// The unrolled form of spec §3.3 from a zero state:
/// `y_t = Σ_{s≤t} exp(Σ_{r=s+1..t} a_r)·(C_t·B_s)·dt_s·x_s + D·x_t`, `a_r = dt_r·A`.
fn naive_scan(cs: &ScanCase) -> Vec<f32> {
    let (batch, t_len) = (cs.x.shape[0], cs.x.shape[1]);
    let ScanParams {
        heads: nh,
        head_dim: hp,
        d_state: n,
        groups: g,
        dt_min,
    } = cs.p;
    let mut y = vec![0f32; batch * t_len * nh * hp];
    for bi in 0..batch {
        for h in 0..nh {
            let gi = h / (nh / g);
            let a = -(cs.a_log.data[h] as f64).exp();
            let dt: Vec<f64> = (0..t_len)
                .map(|ti| {
                    let v = (cs.dt.data[(bi * t_len + ti) * nh + h] + cs.dt_bias.data[h]) as f64;
                    let sp = (1.0 + v.exp()).ln();
                    dt_min.map_or(sp, |m| sp.max(m as f64))
                })
                .collect();
            let bc = |m: &Tensor, ti: usize, k: usize| {
                m.data[(bi * t_len + ti) * g * n + gi * n + k] as f64
            };
            for ti in 0..t_len {
                for pi in 0..hp {
                    let xv = |s: usize| cs.x.data[(bi * t_len + s) * nh * hp + h * hp + pi] as f64;
                    let mut acc = cs.d.data[h] as f64 * xv(ti);
                    for s in 0..=ti {
                        let decay: f64 = ((s + 1)..=ti).map(|r| dt[r] * a).sum::<f64>().exp();
                        let cb: f64 = (0..n).map(|k| bc(&cs.c, ti, k) * bc(&cs.b, s, k)).sum();
                        acc += decay * cb * dt[s] * xv(s);
                    }
                    y[(bi * t_len + ti) * nh * hp + h * hp + pi] = acc as f32;
                }
            }
        }
    }
    y
}

#[test]
fn ssm_scan_matches_unrolled_formula() {
    for dt_min in [None, Some(0.3)] {
        let cs = scan_case(2, 9, dt_min);
        let mut st = ssm_state(2, &cs.p);
        let y = run_scan(&cs, 0, 9, &mut st);
        assert_close(&y.data, &naive_scan(&cs), 2e-5, "scan vs unrolled");
    }
}

#[test]
fn ssm_scan_is_chunk_independent_and_single_steps_agree() {
    let cs = scan_case(2, 10, None);
    let mut st_full = ssm_state(2, &cs.p);
    let full = run_scan(&cs, 0, 10, &mut st_full);
    for splits in [vec![1; 10], vec![4, 6], vec![3, 3, 1, 3]] {
        let mut st = ssm_state(2, &cs.p);
        let mut outs = Vec::new();
        let mut t0 = 0;
        for n in splits {
            outs.push(run_scan(&cs, t0, t0 + n, &mut st));
            t0 += n;
        }
        assert_close(&cat_time(&outs).data, &full.data, 1e-5, "chunked scan");
        assert_close(&st.data, &st_full.data, 1e-5, "final state");
    }
}

#[test]
fn ssm_dt_clamp_applies_only_with_dt_min() {
    // dt_raw + dt_bias = -30: softplus ≈ 9e-14, far below the clamp.
    let mut cs = scan_case(1, 3, None);
    cs.dt.data.iter_mut().for_each(|v| *v = -30.0);
    cs.dt_bias.data.iter_mut().for_each(|v| *v = 0.0);
    let mut st = ssm_state(1, &cs.p);
    let unclamped = run_scan(&cs, 0, 3, &mut st);
    // no clamp: the state update is negligible, y ≈ D·x
    let (nh, hp) = (cs.p.heads, cs.p.head_dim);
    for (i, yv) in unclamped.data.iter().enumerate() {
        let h = (i % (nh * hp)) / hp;
        assert!((yv - cs.d.data[h] * cs.x.data[i]).abs() < 1e-6);
    }
    cs.p.dt_min = Some(1e-3);
    let mut st = ssm_state(1, &cs.p);
    let clamped = run_scan(&cs, 0, 3, &mut st);
    assert_close(&clamped.data, &naive_scan(&cs), 1e-6, "clamped vs unrolled");
    assert!(max_abs_diff(&clamped.data, &unclamped.data) > 1e-5);
}

#[test]
fn ssm_softplus_threshold() {
    // above 20 softplus is the identity: dt = 25 exactly, so exp(dt·A)·S vanishes and
    // y = dt·(C·B)·x + D·x for a single token.
    let mut cs = scan_case(1, 1, None);
    cs.dt.data.iter_mut().for_each(|v| *v = 25.0);
    cs.dt_bias.data.iter_mut().for_each(|v| *v = 0.0);
    let mut st = ssm_state(1, &cs.p);
    let y = run_scan(&cs, 0, 1, &mut st);
    assert_close(&y.data, &naive_scan(&cs), 1e-4, "dt = 25");
}

// ---------------------------------------------------------------- gated norm

#[test]
fn gated_rms_norm_gates_before_norm_per_group() {
    let y = t(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let z = t(&[1, 1, 4], &[0.5, -1.0, 2.0, 0.0]);
    let w = t(&[4], &[1.0, 2.0, 0.5, 1.0]);
    let out = gated_rms_norm(&y, &z, &w, 2, 1e-5).unwrap();
    let mut want = Vec::new();
    for gi in 0..2 {
        let q: Vec<f64> = (0..2)
            .map(|i| {
                let k = gi * 2 + i;
                y.data[k] as f64 * math::silu(z.data[k] as f64)
            })
            .collect();
        let ms = (q[0] * q[0] + q[1] * q[1]) / 2.0;
        for (i, qi) in q.iter().enumerate() {
            want.push((w.data[gi * 2 + i] as f64 * qi / (ms + 1e-5).sqrt()) as f32);
        }
    }
    assert_close(&out.data, &want, 1e-6, "gated norm");
    // one group: an ordinary RMSNorm of y·silu(z)
    let one = gated_rms_norm(&y, &z, &w, 1, 1e-5).unwrap();
    let q = Tensor::new(
        vec![1, 1, 4],
        (0..4)
            .map(|k| (y.data[k] as f64 * math::silu(z.data[k] as f64)) as f32)
            .collect(),
    );
    let rms = ops::rms_norm(&q, &w, 1e-5).unwrap();
    assert_close(&one.data, &rms.data, 1e-6, "G=1");
    assert!(gated_rms_norm(&y, &z, &w, 3, 1e-5).is_err());
}

// ---------------------------------------------------------------- attention

fn kv_cache(b: usize, hkv: usize, d: usize) -> KvCache {
    KvCache {
        kv_heads: hkv,
        head_dim: d,
        dtype: zamba2c_ir::DType::F32,
        k: vec![Vec::new(); b],
        v: vec![Vec::new(); b],
        len: vec![0; b],
    }
}

/// Naive attention from scratch (f64): RoPE with inv_freq = theta^(-2j/d), causal softmax.
fn naive_attention(q: &Tensor, k: &Tensor, v: &Tensor, p: &AttentionParams) -> Vec<f32> {
    let (b, t_len) = (q.shape[0], q.shape[1]);
    let (ha, hkv, d) = (p.heads, p.kv_heads, p.head_dim);
    let rope = |x: &[f32], pos: usize| -> Vec<f64> {
        let Some(th) = p.rope_theta else {
            return x.iter().map(|v| *v as f64).collect();
        };
        let half = d / 2;
        let mut o = vec![0f64; d];
        for j in 0..half {
            let ang = pos as f64 * (th as f64).powf(-(2.0 * j as f64) / d as f64);
            let (x1, x2) = (x[j] as f64, x[j + half] as f64);
            o[j] = x1 * ang.cos() - x2 * ang.sin();
            o[j + half] = x2 * ang.cos() + x1 * ang.sin();
        }
        o
    };
    let mut out = vec![0f32; b * t_len * ha * d];
    for bi in 0..b {
        for h in 0..ha {
            let kvh = h * hkv / ha;
            for ti in 0..t_len {
                let row = |m: &Tensor, s: usize, hh: usize, w: usize| -> Vec<f32> {
                    m.data[(bi * t_len + s) * w + hh * d..(bi * t_len + s) * w + (hh + 1) * d]
                        .to_vec()
                };
                let qv = rope(&row(q, ti, h, ha * d), ti);
                let scores: Vec<f64> = (0..=ti)
                    .map(|s| {
                        let kv = rope(&row(k, s, kvh, hkv * d), s);
                        qv.iter().zip(&kv).map(|(a, b)| a * b).sum::<f64>() * p.scale as f64
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for di in 0..d {
                    let o: f64 = (0..=ti)
                        .map(|s| e[s] / z * row(v, s, kvh, hkv * d)[di] as f64)
                        .sum();
                    out[(bi * t_len + ti) * ha * d + h * d + di] = o as f32;
                }
            }
        }
    }
    out
}

#[test]
fn attention_gqa_rope_matches_naive_in_any_chunking() {
    for rope_theta in [None, Some(100.0)] {
        let p = AttentionParams {
            heads: 4,
            kv_heads: 2,
            head_dim: 6,
            scale: 1.0 / 3f32.sqrt(),
            rope_theta,
        };
        let (b, t_len) = (2, 7);
        let mut r = Rng(5);
        let q = r.tensor(&[b, t_len, 24], 1.5);
        let k = r.tensor(&[b, t_len, 12], 1.5);
        let v = r.tensor(&[b, t_len, 12], 1.0);
        let want = naive_attention(&q, &k, &v, &p);
        for splits in [vec![7], vec![1; 7], vec![3, 4], vec![2, 1, 4]] {
            let mut cache = kv_cache(b, 2, 6);
            let mut outs = Vec::new();
            let mut t0 = 0;
            for n in splits {
                let s = |x: &Tensor| time_slice(x, t0, t0 + n);
                outs.push(attention(&s(&q), &s(&k), &s(&v), &p, &mut cache).unwrap());
                t0 += n;
            }
            assert_close(&cat_time(&outs).data, &want, 2e-6, "attention");
            assert_eq!(cache.len, vec![7, 7]);
            assert_eq!(cache.k[0].len(), 7 * 12);
        }
    }
}

#[test]
fn attention_hand_values() {
    // One head, d = 2, no RoPE. First token: output = v0. Second: softmax over two scores.
    let p = AttentionParams {
        heads: 1,
        kv_heads: 1,
        head_dim: 2,
        scale: 0.5,
        rope_theta: None,
    };
    let q = t(&[1, 2, 2], &[1.0, 0.0, 0.0, 2.0]);
    let k = t(&[1, 2, 2], &[2.0, 0.0, 0.0, 1.0]);
    let v = t(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let mut cache = kv_cache(1, 1, 2);
    let o = attention(&q, &k, &v, &p, &mut cache).unwrap();
    // t=1: scores q1·k0 = 0, q1·k1 = 2, scaled: 0, 1 → weights 1/(1+e), e/(1+e)
    let e = std::f32::consts::E;
    let (w0, w1) = (1.0 / (1.0 + e), e / (1.0 + e));
    assert_close(
        &o.data,
        &[1.0, 2.0, w0 * 1.0 + w1 * 3.0, w0 * 2.0 + w1 * 4.0],
        1e-6,
        "attention",
    );
    // RoPE at position 0 is the identity; the cache holds rotated keys
    let mut cache = kv_cache(1, 1, 2);
    let pr = AttentionParams {
        rope_theta: Some(10000.0),
        ..p
    };
    attention(&q, &k, &v, &pr, &mut cache).unwrap();
    let (s1, c1) = 1f32.sin_cos(); // position 1, inv_freq[0] = 1
    assert_close(&cache.k[0], &[2.0, 0.0, -s1, c1], 1e-6, "rotated keys");
}

// ---------------------------------------------------------------- eval_node, fused ops

fn weights(entries: &[(&str, Tensor)]) -> CpuWeights {
    CpuWeights::from_tensors(
        entries
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect::<BTreeMap<_, _>>(),
    )
}

#[test]
fn eval_node_dispatches_and_reports_errors() {
    let mut r = Rng(3);
    let w = weights(&[("w", r.tensor(&[3, 4], 1.0)), ("g", t(&[4], &[1.0; 4]))]);
    let mut st = InferenceState::new(&[], 1, 16);
    let x = r.tensor(&[1, 2, 4], 1.0);
    let y = eval_node(&Op::Linear { weight: "w".into() }, &[&x], &w, &mut st).unwrap();
    assert_eq!(y, ops::linear(&x, w.get("w").unwrap().as_ref()).unwrap());
    let e = eval_node(
        &Op::Linear {
            weight: "nope".into(),
        },
        &[&x],
        &w,
        &mut st,
    )
    .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let e = eval_node(&Op::Add, &[&x], &w, &mut st).unwrap_err();
    assert!(e.to_string().contains("2 operands"), "{e}");
    // a state id of the wrong kind
    let specs = [StateSpec::Ssm {
        layer: 0,
        heads: 1,
        head_dim: 1,
        d_state: 1,
        dtype: zamba2c_ir::DType::F32,
    }];
    let mut st = InferenceState::new(&specs, 1, 16);
    let conv = Op::CausalConv1d {
        weight: "w".into(),
        bias: "g".into(),
        state: 0,
    };
    assert!(matches!(
        eval_node(&conv, &[&x], &w, &mut st),
        Err(RuntimeError::Input(m)) if m.contains("not a conv")
    ));
}

#[test]
fn fused_ops_mean_their_decomposition_with_weight_views() {
    let mut r = Rng(9);
    let h = 4;
    let w = weights(&[
        ("g", r.tensor(&[2 * h], 1.0)),
        ("q", r.tensor(&[6, 2 * h], 1.0)),
        ("k", r.tensor(&[3, 2 * h], 1.0)),
    ]);
    let mut st = InferenceState::new(&[], 1, 16);
    let e = r.tensor(&[1, 2, h], 1.0);
    let norm = Norm {
        weight: "g".into(),
        eps: 1e-5,
    };
    let op = Op::EmbedHalfProj {
        norm: norm.clone(),
        weights: vec!["q".into(), "k".into()],
        hidden: h,
    };
    let got = eval_node(&op, &[&e], &w, &mut st).unwrap();
    // by hand: RMSNorm_H(e; g[H..2H]) then W[:, H..2H] for q and k, concatenated
    let gh = w.get(&weight_view("g", h, h)).unwrap();
    assert_eq!(gh.data, w.get("g").unwrap().data[h..].to_vec());
    let en = ops::rms_norm(&e, &gh, 1e-5).unwrap();
    let qh = ops::linear(&en, &w.get(&weight_view("q", h, h)).unwrap()).unwrap();
    let kh = ops::linear(&en, &w.get(&weight_view("k", h, h)).unwrap()).unwrap();
    assert_eq!(got, ops::concat(&[&qh, &kh]).unwrap());
    // NormLinear == RmsNorm then the projections
    let x = r.tensor(&[1, 2, 2 * h], 1.0);
    let op = Op::NormLinear {
        norm,
        projs: vec![Proj {
            weight: "q".into(),
            adapter: None,
        }],
    };
    let got = eval_node(&op, &[&x], &w, &mut st).unwrap();
    let xn = ops::rms_norm(&x, &w.get("g").unwrap(), 1e-5).unwrap();
    assert_eq!(got, ops::linear(&xn, &w.get("q").unwrap()).unwrap());
}
