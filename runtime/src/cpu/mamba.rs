//! The Mamba2 mixer's stateful ops (spec §3.2): depthwise causal conv with its conv state, the
//! recurrent SSM scan with its SSM state, and the gated RMSNorm.

use crate::cpu::math;
use crate::cpu::ops::bad;
use crate::cpu::state::{ConvState, SsmState};
use crate::{RuntimeError, Tensor};
use zamba2c_ir::tensor::round_to;

/// `[B, T, W]` of a rank-3 activation.
pub(crate) fn btw(op: &str, x: &Tensor) -> Result<(usize, usize, usize), RuntimeError> {
    match x.shape[..] {
        [b, t, w] => Ok((b, t, w)),
        _ => Err(bad(
            op,
            format!("expected a [B,T,W] operand, got {:?}", x.shape),
        )),
    }
}

/// Depthwise causal conv over time with bias, no activation (spec §3.2):
/// `out_t[c] = bias[c] + Σ_j w[c,j] · in_{t-(K-1)+j}[c]`, where inputs before this call come
/// from the conv state (the last `K` pre-conv inputs, oldest first). Afterwards the state holds
/// the last `K` inputs of `state ‖ x`. `x: [B,T,CD]`, `weight: [CD,K]`, `bias: [CD]`.
pub fn causal_conv1d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    state: &mut ConvState,
) -> Result<Tensor, RuntimeError> {
    const OP: &str = "causal_conv1d";
    let (b, t, cd) = btw(OP, x)?;
    let k = state.kernel;
    if state.channels != cd || weight.data.len() != cd * k || bias.data.len() != cd {
        return Err(bad(
            OP,
            format!(
                "input width {cd}, weight {:?}, bias {:?} and state [{}, {}] disagree",
                weight.shape, bias.shape, state.channels, k
            ),
        ));
    }
    if state.data.len() != b * cd * k {
        return Err(bad(
            OP,
            format!(
                "the state holds {} rows, the input has {b}",
                state.data.len() / (cd * k).max(1)
            ),
        ));
    }
    let mut out = vec![0f32; b * t * cd];
    let mut seq = vec![0f32; k + t]; // one channel's history: state (K) then the new inputs (T)
    for bi in 0..b {
        for c in 0..cd {
            let st = &mut state.data[(bi * cd + c) * k..(bi * cd + c + 1) * k];
            seq[..k].copy_from_slice(st);
            for ti in 0..t {
                seq[k + ti] = x.data[(bi * t + ti) * cd + c];
            }
            let w = &weight.data[c * k..(c + 1) * k];
            for ti in 0..t {
                // the window ends at the current input, seq[k + ti]
                let win = &seq[ti + 1..ti + 1 + k];
                out[(bi * t + ti) * cd + c] = (bias.data[c] as f64 + math::dot32(w, win)) as f32;
            }
            st.copy_from_slice(&seq[t..t + k]);
        }
    }
    Ok(Tensor::new(vec![b, t, cd], out))
}

/// The SSM op's sizes and dt clamp (the fields of `Op::SsmScan`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanParams {
    pub heads: usize,
    pub head_dim: usize,
    pub d_state: usize,
    pub groups: usize,
    /// Lower clamp of dt after softplus (the prompt path of HF 5.24), if any.
    pub dt_min: Option<f32>,
}

/// The Mamba2 SSM, recurrent, token by token (spec §3.2), per batch row and head `h` with
/// group `g = h / (NH/G)`:
/// ```text
/// dt = softplus(dt_raw + dt_bias) (threshold 20), then max(dt, dt_min) when dt_min is set
/// A  = -exp(A_log) (f32);  S ← exp(dt·A)·S + dt·(x ⊗ B_g);  y = S·C_g + D·x
/// ```
/// Operands `x [B,T,NH*P]`, `dt_raw [B,T,NH]`, `b, c [B,T,G*N]`; returns `y [B,T,NH*P]`.
/// The state is read at the start and the final state written back (f32); within the call it
/// is carried in f64.
#[allow(clippy::too_many_arguments)]
pub fn ssm_scan(
    x: &Tensor,
    dt_raw: &Tensor,
    b: &Tensor,
    c: &Tensor,
    dt_bias: &Tensor,
    a_log: &Tensor,
    d: &Tensor,
    p: &ScanParams,
    state: &mut SsmState,
) -> Result<Tensor, RuntimeError> {
    const OP: &str = "ssm_scan";
    let (nh, hp, n, g) = (p.heads, p.head_dim, p.d_state, p.groups);
    let (bs, t, w) = btw(OP, x)?;
    if g == 0 || !nh.is_multiple_of(g) {
        return Err(bad(
            OP,
            format!("{nh} heads cannot be split into {g} groups"),
        ));
    }
    let shapes_ok = w == nh * hp
        && dt_raw.shape == [bs, t, nh]
        && b.shape == [bs, t, g * n]
        && c.shape == [bs, t, g * n]
        && dt_bias.data.len() == nh
        && a_log.data.len() == nh
        && d.data.len() == nh
        && (state.heads, state.head_dim, state.d_state) == (nh, hp, n)
        && state.data.len() == bs * nh * hp * n;
    if !shapes_ok {
        return Err(bad(
            OP,
            format!(
                "operand shapes x {:?}, dt {:?}, B {:?}, C {:?} do not fit heads={nh}, p={hp}, n={n}, g={g} and a state of {} values",
                x.shape, dt_raw.shape, b.shape, c.shape, state.data.len()
            ),
        ));
    }
    let heads_per_group = nh / g;
    let mut y = vec![0f32; bs * t * nh * hp];
    let mut s = vec![0f64; hp * n];
    for bi in 0..bs {
        for h in 0..nh {
            let gi = h / heads_per_group;
            let a = -((a_log.data[h] as f64).exp() as f32) as f64;
            let dh = d.data[h] as f64;
            let sh = &mut state.data[((bi * nh + h) * hp) * n..((bi * nh + h + 1) * hp) * n];
            s.iter_mut()
                .zip(sh.iter())
                .for_each(|(d, v)| *d = *v as f64);
            for ti in 0..t {
                let row = bi * t + ti;
                let mut dt = math::softplus((dt_raw.data[row * nh + h] + dt_bias.data[h]) as f64);
                if let Some(m) = p.dt_min {
                    dt = dt.max(m as f64);
                }
                let da = (dt * a).exp();
                let bv = &b.data[row * g * n + gi * n..row * g * n + (gi + 1) * n];
                let cv = &c.data[row * g * n + gi * n..row * g * n + (gi + 1) * n];
                let xh = &x.data[row * nh * hp + h * hp..row * nh * hp + (h + 1) * hp];
                let yh = &mut y[row * nh * hp + h * hp..row * nh * hp + (h + 1) * hp];
                for pi in 0..hp {
                    let xv = xh[pi] as f64;
                    let dtx = dt * xv;
                    let sp = &mut s[pi * n..(pi + 1) * n];
                    let mut acc = 0f64;
                    for ni in 0..n {
                        sp[ni] = da * sp[ni] + dtx * bv[ni] as f64;
                        acc += sp[ni] * cv[ni] as f64;
                    }
                    yh[pi] = (acc + dh * xv) as f32;
                }
            }
            // Stored in the state's dtype (`compile --state-dtype`); the steps above ran in
            // f64 from the stored values.
            sh.iter_mut()
                .zip(&s)
                .for_each(|(d, v)| *d = round_to(*v as f32, state.dtype));
        }
    }
    Ok(Tensor::new(vec![bs, t, nh * hp], y))
}

/// Gated RMSNorm, gate before norm (spec §3.2): `q = y ⊙ silu(z)`, each of `groups` contiguous
/// groups normalised by `sqrt(mean(q²) + eps)`, rounded to f32, then times the weight.
pub fn gated_rms_norm(
    y: &Tensor,
    z: &Tensor,
    weight: &Tensor,
    groups: usize,
    eps: f32,
) -> Result<Tensor, RuntimeError> {
    const OP: &str = "gated_rms_norm";
    let w = y.width();
    if y.shape != z.shape || weight.data.len() != w || groups == 0 || !w.is_multiple_of(groups) {
        return Err(bad(
            OP,
            format!(
                "y {:?}, z {:?}, weight of {} values and {groups} groups do not fit",
                y.shape,
                z.shape,
                weight.data.len()
            ),
        ));
    }
    let gs = w / groups;
    let mut out = Vec::with_capacity(y.data.len());
    let mut q = vec![0f64; gs];
    for (yr, zr) in y.data.chunks_exact(w).zip(z.data.chunks_exact(w)) {
        for gi in 0..groups {
            let r = gi * gs..(gi + 1) * gs;
            for ((qv, yv), zv) in q.iter_mut().zip(&yr[r.clone()]).zip(&zr[r.clone()]) {
                *qv = *yv as f64 * math::silu(*zv as f64);
            }
            let ms = q.iter().map(|v| v * v).sum::<f64>() / gs as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            out.extend(
                q.iter()
                    .zip(&weight.data[r])
                    .map(|(v, g)| g * ((v * inv) as f32)),
            );
        }
    }
    Ok(Tensor::new(y.shape.clone(), out))
}
