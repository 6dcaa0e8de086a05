//! Choosing the next token from a row of logits: greedy, or sampling with temperature, top-k,
//! top-p (nucleus), min-p, and a repetition penalty, with Hugging Face `generate` semantics.
//!
//! The order is the one `generate` uses: the repetition penalty changes the raw logits (it also
//! applies to greedy decoding), then temperature, top-k, top-p and min-p filter, and one token
//! is drawn from the softmax of what is left. [`sample`] is a pure function of the logits, the
//! tokens seen so far, the parameters, and the random generator's state; [`Sampler`] carries
//! those for one sequence. (Moved from the CLI, so the server uses the same code.)

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sampling parameters; [`SamplingParams::default`] is greedy decoding with no penalty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the softmax; 0 is greedy (argmax, the first index on ties).
    pub temperature: f32,
    /// Keep only the `top_k` largest logits (ties with the k-th are kept, as in HF); 0 is off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probabilities add up to at least
    /// `top_p`; 1 is off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the largest one; 0 is off.
    pub min_p: f32,
    /// HF's repetition penalty over every token seen (prompt included): a positive logit is
    /// divided by it, a negative one multiplied; 1 is off.
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
        }
    }
}

impl SamplingParams {
    /// Checks every field's range; the error names the CLI flag.
    pub fn validate(&self) -> Result<(), String> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(format!(
                "--temperature: must be a finite number >= 0 (0 is greedy), got {t}"
            ));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(format!(
                "--top-p: must be in (0, 1] (1 turns it off), got {p}"
            ));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(format!(
                "--min-p: must be in [0, 1] (0 turns it off), got {m}"
            ));
        }
        let r = self.repetition_penalty;
        if !r.is_finite() || r <= 0.0 {
            return Err(format!(
                "--repetition-penalty: must be a finite number > 0 (1 turns it off), got {r}"
            ));
        }
        Ok(())
    }

    /// Whether this is greedy decoding (no random draw is made).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Whether the next token is exactly [`argmax`] of the logits: greedy with no penalty.
    pub fn is_argmax(&self) -> bool {
        self.is_greedy() && self.repetition_penalty == 1.0
    }
}

/// Index of the largest logit (the first on ties, as `torch.argmax`); NaNs are never chosen
/// unless every value is NaN.
pub fn argmax(row: &[f32]) -> u32 {
    // Two passes the compiler vectorises (the one-pass compare-and-branch loop took ~41 µs per
    // 32000-logit row, 2.7 ms for a 64-row decode step; docs/PERFORMANCE.md): the largest
    // value, NaN ignored (`f32::max` returns the other operand), then the first index holding
    // it. A row of NaN only gives 0, as before.
    const LANES: usize = 16;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    let m = tail
        .iter()
        .chain(acc.iter())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    const BLOCK: usize = 64;
    for (b, c) in row.chunks(BLOCK).enumerate() {
        if c.iter().fold(false, |found, &x| found | (x == m)) {
            if let Some(i) = c.iter().position(|&x| x == m) {
                return (b * BLOCK + i) as u32;
            }
        }
    }
    0
}

/// HF's `RepetitionPenaltyLogitsProcessor`: every distinct token of `seen` has its logit divided
/// by `penalty` when positive and multiplied by it when negative (once, however often it was
/// seen). Ids outside the row are ignored.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = vec![false; logits.len()];
    for &id in seen {
        let i = id as usize;
        if i < logits.len() && !done[i] {
            done[i] = true;
            let v = logits[i];
            logits[i] = if v < 0.0 { v * penalty } else { v / penalty };
        }
    }
}

/// The probability of every token after temperature, top-k, top-p and min-p (zero for the
/// filtered ones; the rest sum to 1), for a row the repetition penalty was already applied to.
/// `temperature` must be > 0. Falls back to all mass on the argmax when the row has no finite
/// value.
pub fn filtered_probs(logits: &[f32], p: &SamplingParams) -> Vec<f64> {
    let n = logits.len();
    let t = p.temperature as f64;
    let scaled: Vec<f64> = logits
        .iter()
        .map(|&v| {
            if v.is_nan() {
                f64::NEG_INFINITY
            } else {
                v as f64 / t
            }
        })
        .collect();
    let mut keep: Vec<bool> = scaled.iter().map(|v| *v > f64::NEG_INFINITY).collect();
    // Indices by descending scaled logit; ties by ascending index (a stable order).
    let needs_order = (p.top_k > 0 && p.top_k < n) || p.top_p < 1.0;
    let order: Vec<usize> = if needs_order {
        let mut o: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
        o.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]).then(a.cmp(&b)));
        o
    } else {
        Vec::new()
    };
    // top-k: drop everything below the k-th largest value (ties with it stay, as in HF).
    if p.top_k > 0 && p.top_k < order.len() {
        let kth = scaled[order[p.top_k - 1]];
        for (i, k) in keep.iter_mut().enumerate() {
            if scaled[i] < kth {
                *k = false;
            }
        }
    }
    let softmax = |keep: &[bool]| -> Vec<f64> {
        let max = (0..n)
            .filter(|&i| keep[i])
            .map(|i| scaled[i])
            .fold(f64::NEG_INFINITY, f64::max);
        let mut probs: Vec<f64> = (0..n)
            .map(|i| {
                if keep[i] {
                    (scaled[i] - max).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let sum: f64 = probs.iter().sum();
        if sum > 0.0 && sum.is_finite() {
            probs.iter_mut().for_each(|q| *q /= sum);
        }
        probs
    };
    // top-p: walk the order; a token stays while the mass of the tokens before it is < top_p
    // (HF drops tokens whose ascending cumulative mass is <= 1 - top_p; at least one stays).
    if p.top_p < 1.0 {
        let probs = softmax(&keep);
        let mut before = 0.0;
        for &i in &order {
            if !keep[i] {
                continue;
            }
            if before >= p.top_p as f64 {
                keep[i] = false;
            }
            before += probs[i];
        }
    }
    // min-p: drop tokens below min_p * (largest probability).
    if p.min_p > 0.0 {
        let probs = softmax(&keep);
        let top = probs.iter().cloned().fold(0.0, f64::max);
        let threshold = p.min_p as f64 * top;
        for i in 0..n {
            if keep[i] && probs[i] < threshold {
                keep[i] = false;
            }
        }
    }
    let probs = softmax(&keep);
    let sum: f64 = probs.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        let mut one = vec![0.0; n];
        if n > 0 {
            one[argmax(logits) as usize] = 1.0;
        }
        return one;
    }
    probs
}

/// Picks the next token: applies the repetition penalty over `seen` (prompt and generated so
/// far), then argmax when `temperature` is 0, else draws from [`filtered_probs`] with `rng`
/// (exactly one `f64` is drawn per sampled token).
pub fn sample<R: Rng + ?Sized>(
    logits: &[f32],
    seen: &[u32],
    p: &SamplingParams,
    rng: &mut R,
) -> u32 {
    let penalized;
    let row: &[f32] = if p.repetition_penalty != 1.0 {
        let mut v = logits.to_vec();
        apply_repetition_penalty(&mut v, seen, p.repetition_penalty);
        penalized = v;
        &penalized
    } else {
        logits
    };
    if p.is_greedy() {
        return argmax(row);
    }
    let probs = filtered_probs(row, p);
    let u: f64 = rng.random::<f64>();
    let mut acc = 0.0;
    let mut last = None;
    for (i, &q) in probs.iter().enumerate() {
        if q > 0.0 {
            acc += q;
            last = Some(i);
            if u < acc {
                return i as u32;
            }
        }
    }
    // Rounding left `acc` just below 1 and `u` above it: the last token with mass.
    last.map(|i| i as u32).unwrap_or_else(|| argmax(row))
}

/// One sequence's sampling: its parameters, its random generator (seeded once), and every
/// token seen so far (the prompt, then each token it chose) for the repetition penalty.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub params: SamplingParams,
    rng: StdRng,
    seen: Vec<u32>,
}

impl Sampler {
    /// A sampler for a sequence that starts with `prompt`.
    pub fn new(params: SamplingParams, seed: u64, prompt: &[u32]) -> Self {
        Sampler {
            params,
            rng: StdRng::seed_from_u64(seed),
            seen: prompt.to_vec(),
        }
    }

    /// Remembers `token`, chosen elsewhere (the device's greedy pick when
    /// [`SamplingParams::is_argmax`]), as seen.
    pub fn accept(&mut self, token: u32) {
        self.seen.push(token);
    }

    /// Chooses the next token from `logits` ([`sample`]) and remembers it as seen.
    pub fn next(&mut self, logits: &[f32]) -> u32 {
        let t = sample(logits, &self.seen, &self.params, &mut self.rng);
        self.seen.push(t);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            ..Default::default()
        }
    }

    /// A row of `n` distinct logits in a scrambled order.
    fn row(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-5.0f32..5.0)).collect()
    }

    fn ranked(logits: &[f32]) -> Vec<usize> {
        let mut o: Vec<usize> = (0..logits.len()).collect();
        o.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        o
    }

    fn softmax(logits: &[f32], t: f64) -> Vec<f64> {
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = logits.iter().map(|&v| ((v as f64 - m) / t).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn sampler_is_sample_over_the_tokens_seen() {
        let p = SamplingParams {
            repetition_penalty: 1.3,
            top_k: 20,
            ..params(0.9)
        };
        let prompt = [3u32, 8, 8];
        let mut sampler = Sampler::new(p, 11, &prompt);
        let mut rng = StdRng::seed_from_u64(11);
        let mut seen = prompt.to_vec();
        for i in 0..50 {
            let l = row(64, i);
            let want = sample(&l, &seen, &p, &mut rng);
            seen.push(want);
            assert_eq!(sampler.next(&l), want, "token {i}");
        }
    }

    #[test]
    fn argmax_takes_first_on_ties_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 0.5]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[]), 0);
    }

    /// The scan that defines argmax: the first largest value, NaN skipped.
    fn argmax_by_scan(row: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &v) in row.iter().enumerate() {
            if v > row[best] || (row[best].is_nan() && !v.is_nan()) {
                best = i;
            }
        }
        best as u32
    }

    #[test]
    fn argmax_matches_the_scan_on_rows_with_ties_nan_and_infinities() {
        let mut rng = StdRng::seed_from_u64(7);
        for case in 0..400 {
            let n = rng.random_range(0..300);
            // Few distinct values, so ties are common; NaN and infinities mixed in.
            let row: Vec<f32> = (0..n)
                .map(|_| match rng.random_range(0..20) {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    _ => rng.random_range(-3i32..4) as f32,
                })
                .collect();
            assert_eq!(argmax(&row), argmax_by_scan(&row), "case {case}: {row:?}");
        }
        let all_nan = vec![f32::NAN; 100];
        assert_eq!(argmax(&all_nan), argmax_by_scan(&all_nan));
    }

    #[test]
    fn temperature_zero_is_greedy_whatever_the_rng() {
        for seed in 0..20 {
            let l = row(100, seed);
            let mut rng = StdRng::seed_from_u64(seed);
            let p = SamplingParams {
                top_k: 5,
                top_p: 0.5,
                min_p: 0.1,
                ..params(0.0)
            };
            assert_eq!(sample(&l, &[], &p, &mut rng), argmax(&l));
        }
        // Ties: the first index.
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(sample(&[0.0, 7.0, 7.0], &[], &params(0.0), &mut rng), 1);
    }

    #[test]
    fn greedy_uses_the_repetition_penalty() {
        let l = [2.0, 1.9, -1.0];
        let mut rng = StdRng::seed_from_u64(0);
        let p = SamplingParams {
            repetition_penalty: 1.5,
            ..params(0.0)
        };
        assert_eq!(sample(&l, &[], &p, &mut rng), 0);
        assert_eq!(sample(&l, &[0], &p, &mut rng), 1);
    }

    #[test]
    fn repetition_penalty_matches_hf() {
        let mut l = vec![2.0, -2.0, 4.0, 0.0, 1.0];
        // Token 0 twice: penalised once. Out-of-range ids are ignored.
        apply_repetition_penalty(&mut l, &[0, 1, 0, 3, 99], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 4.0, 0.0, 1.0]);
        let mut l = vec![3.0, -3.0];
        apply_repetition_penalty(&mut l, &[0, 1], 0.5);
        assert_eq!(l, vec![6.0, -1.5]);
        let mut l = vec![3.0, -3.0];
        apply_repetition_penalty(&mut l, &[0, 1], 1.0);
        assert_eq!(l, vec![3.0, -3.0]);
    }

    #[test]
    fn same_seed_same_tokens() {
        let l = row(1000, 7);
        let p = SamplingParams {
            top_k: 50,
            top_p: 0.9,
            ..params(0.8)
        };
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..200)
                .map(|_| sample(&l, &[], &p, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn top_k_never_leaves_the_top_k() {
        for seed in 0..10 {
            let l = row(500, seed);
            let top: Vec<usize> = ranked(&l)[..7].to_vec();
            let p = SamplingParams {
                top_k: 7,
                ..params(5.0)
            };
            let mut rng = StdRng::seed_from_u64(seed);
            let mut hit = std::collections::BTreeSet::new();
            for _ in 0..2000 {
                let t = sample(&l, &[], &p, &mut rng) as usize;
                assert!(top.contains(&t), "token {t} is outside the top 7");
                hit.insert(t);
            }
            // At a high temperature all seven are reached.
            assert_eq!(hit.len(), 7);
        }
        // top-k 1 is greedy.
        let l = row(300, 99);
        let mut rng = StdRng::seed_from_u64(1);
        let p = SamplingParams {
            top_k: 1,
            ..params(1.0)
        };
        for _ in 0..100 {
            assert_eq!(sample(&l, &[], &p, &mut rng), argmax(&l));
        }
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth() {
        let probs = filtered_probs(
            &[3.0, 2.0, 2.0, 1.0],
            &SamplingParams {
                top_k: 2,
                ..params(1.0)
            },
        );
        assert!(probs[0] > 0.0 && probs[1] > 0.0 && probs[2] > 0.0);
        assert_eq!(probs[3], 0.0);
    }

    #[test]
    fn top_p_never_leaves_the_nucleus() {
        for seed in 0..10 {
            let l = row(200, seed + 100);
            let probs = softmax(&l, 1.0);
            let order = ranked(&l);
            // The nucleus: the smallest prefix of the order with mass >= 0.6.
            let mut acc = 0.0;
            let mut nucleus = Vec::new();
            for &i in &order {
                nucleus.push(i);
                acc += probs[i];
                if acc >= 0.6 {
                    break;
                }
            }
            let p = SamplingParams {
                top_p: 0.6,
                ..params(1.0)
            };
            let f = filtered_probs(&l, &p);
            let kept: Vec<usize> = (0..l.len()).filter(|&i| f[i] > 0.0).collect();
            let mut sorted_nucleus = nucleus.clone();
            sorted_nucleus.sort();
            assert_eq!(kept, sorted_nucleus);
            let mut rng = StdRng::seed_from_u64(seed);
            for _ in 0..2000 {
                let t = sample(&l, &[], &p, &mut rng) as usize;
                assert!(nucleus.contains(&t), "token {t} is outside the nucleus");
            }
        }
        // A tiny top_p keeps exactly the most likely token.
        let l = row(50, 5);
        let f = filtered_probs(
            &l,
            &SamplingParams {
                top_p: 1e-6,
                ..params(1.0)
            },
        );
        assert_eq!(f[argmax(&l) as usize], 1.0);
    }

    #[test]
    fn min_p_drops_the_unlikely() {
        // probs ~ [0.665, 0.245, 0.090] at T=1: min_p 0.3 -> threshold 0.1995 drops token 2.
        let l = [2.0, 1.0, 0.0];
        let f = filtered_probs(
            &l,
            &SamplingParams {
                min_p: 0.3,
                ..params(1.0)
            },
        );
        assert!(f[0] > 0.0 && f[1] > 0.0);
        assert_eq!(f[2], 0.0);
        assert!((f[0] + f[1] - 1.0).abs() < 1e-12);
        assert!((f[0] / f[1] - std::f64::consts::E).abs() < 1e-9);
        for seed in 0..5 {
            let l = row(300, seed + 200);
            let probs = softmax(&l, 0.7);
            let top = probs.iter().cloned().fold(0.0, f64::max);
            let p = SamplingParams {
                min_p: 0.2,
                ..params(0.7)
            };
            let mut rng = StdRng::seed_from_u64(seed);
            for _ in 0..2000 {
                let t = sample(&l, &[], &p, &mut rng) as usize;
                assert!(probs[t] >= 0.2 * top - 1e-12, "token {t} is below min_p");
            }
        }
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let l = [1.0f32, 0.0, -1.0, 0.5];
        let t = 0.8;
        let want = softmax(&l, t as f64);
        let mut rng = StdRng::seed_from_u64(123);
        let n = 100_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[sample(&l, &[], &params(t), &mut rng) as usize] += 1;
        }
        for i in 0..4 {
            let got = counts[i] as f64 / n as f64;
            // ~5 standard deviations of a binomial frequency.
            let sd = (want[i] * (1.0 - want[i]) / n as f64).sqrt();
            assert!(
                (got - want[i]).abs() < 5.0 * sd,
                "token {i}: {got} vs {}",
                want[i]
            );
        }
    }

    #[test]
    fn repetition_penalty_shifts_the_distribution() {
        let l = [1.0f32, 1.0];
        let p = SamplingParams {
            repetition_penalty: 3.0,
            ..params(1.0)
        };
        let mut rng = StdRng::seed_from_u64(5);
        let n = 20_000;
        let zeros = (0..n)
            .filter(|_| sample(&l, &[0], &p, &mut rng) == 0)
            .count();
        // logit 1/3 vs 1: p0 = 1 / (1 + e^(2/3)) ~ 0.339.
        let want = 1.0 / (1.0 + (2.0f64 / 3.0).exp());
        let got = zeros as f64 / n as f64;
        assert!((got - want).abs() < 0.02, "{got} vs {want}");
    }

    #[test]
    fn degenerate_rows_fall_back_to_argmax() {
        let mut rng = StdRng::seed_from_u64(0);
        let l = [f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY];
        let t = sample(&l, &[], &params(1.0), &mut rng);
        assert!(t < 3);
        let l = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
        assert_eq!(sample(&l, &[], &params(1.0), &mut rng), 1);
    }

    #[test]
    fn validate_names_the_flag() {
        assert!(SamplingParams::default().validate().is_ok());
        let bad = [
            (
                SamplingParams {
                    temperature: -1.0,
                    ..Default::default()
                },
                "--temperature",
            ),
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "--temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "--top-p",
            ),
            (
                SamplingParams {
                    top_p: 1.5,
                    ..Default::default()
                },
                "--top-p",
            ),
            (
                SamplingParams {
                    min_p: -0.1,
                    ..Default::default()
                },
                "--min-p",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "--repetition-penalty",
            ),
        ];
        for (p, flag) in bad {
            assert!(p.validate().unwrap_err().starts_with(flag), "{p:?}");
        }
    }
}
