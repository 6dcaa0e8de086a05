//! `bench`'s report for people and its repeats (issue 17): the runs of one prompt length
//! summarised (mean ± standard deviation), and the rows printed as a llama-bench-style table
//! (model, dtype, device, prompt and generated lengths, TTFT, decode ms/token ± spread,
//! tokens/s, peak memory).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use zamba2c_ir::units::si;
use zamba2c_ir::Plan;

/// The most `--repeat` runs accepted per prompt length.
pub const MAX_REPEAT: usize = 1000;

/// The keys of a run's time to first token and decode time: one-sequence runs report
/// `ttft_ms` and `decode_ms_per_token`, batched ones `ttft_ms_median` and `ms_per_step`.
fn keys(run: &Value) -> (&'static str, &'static str) {
    if run.get("ms_per_step").is_some() {
        ("ttft_ms_median", "ms_per_step")
    } else {
        ("ttft_ms", "decode_ms_per_token")
    }
}

fn number(run: &Value, key: &str) -> Result<f64> {
    run.get(key)
        .and_then(Value::as_f64)
        .with_context(|| format!("bench: the report has no number {key}"))
}

/// Mean and sample standard deviation (0 for one value).
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// One row from the runs of one prompt length: the fields of the median run (by decode time),
/// so they agree with each other and a single run's object keeps its fields, plus `repeat`,
/// the mean and standard deviation of the TTFT and decode time over the runs
/// (`ttft_ms_mean`, `ttft_ms_stddev`, `decode_ms_per_token_mean`, ... ), `decode_tokens_per_s`
/// from the mean, and the largest peak memory seen.
pub fn summarize(mut runs: Vec<Value>) -> Result<Value> {
    let first = runs.first().context("bench: no runs")?;
    let (ttft_key, decode_key) = keys(first);
    let ttft: Vec<f64> = runs
        .iter()
        .map(|r| number(r, ttft_key))
        .collect::<Result<_>>()?;
    let decode: Vec<f64> = runs
        .iter()
        .map(|r| number(r, decode_key))
        .collect::<Result<_>>()?;
    let peaks: Vec<u64> = ["peak_gpu_bytes", "peak_rss_bytes"]
        .iter()
        .flat_map(|k| runs.iter().filter_map(move |r| r.get(*k)?.as_u64()))
        .collect();
    let batched_rate: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.get("decode_tokens_per_s")?.as_f64())
        .collect();
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| decode[a].total_cmp(&decode[b]));
    let median = order[order.len() / 2];
    let mut row = runs.swap_remove(median);
    let (t_mean, t_std) = mean_std(&ttft);
    let (d_mean, d_std) = mean_std(&decode);
    row["repeat"] = json!(decode.len());
    row[format!("{ttft_key}_mean")] = json!(t_mean);
    row[format!("{ttft_key}_stddev")] = json!(t_std);
    row[format!("{decode_key}_mean")] = json!(d_mean);
    row[format!("{decode_key}_stddev")] = json!(d_std);
    row["decode_tokens_per_s"] = if !batched_rate.is_empty() {
        json!(mean_std(&batched_rate).0)
    } else if d_mean > 0.0 {
        json!(1e3 / d_mean)
    } else {
        Value::Null
    };
    for key in ["peak_gpu_bytes", "peak_rss_bytes"] {
        if row.get(key).is_some_and(|v| !v.is_null()) {
            row[key] = json!(peaks.iter().max());
        }
    }
    Ok(row)
}

/// `mean ± std` in milliseconds with three significant digits on the mean, the deviation to
/// the same decimals.
fn ms_pm(mean: f64, std: f64) -> String {
    let decimals = if mean > 0.0 {
        (2 - mean.log10().floor() as i32).clamp(0, 4) as usize
    } else {
        2
    };
    format!("{mean:.decimals$} ± {std:.decimals$}")
}

/// The llama-bench-style table of `rows` (from [`summarize`]) for the plan at `dir`.
pub fn table(plan: &Plan, dir: &Path, rows: &[Value]) -> String {
    let model = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let m = &plan.module;
    let dtype = if m.dtype == m.act_dtype {
        m.dtype.to_string()
    } else {
        format!("{} ({} act)", m.dtype, m.act_dtype)
    };
    let batched = rows.iter().any(|r| r.get("ms_per_step").is_some());
    let mut header = vec!["model", "dtype", "device"];
    if batched {
        header.extend(["batch", "rows/step"]);
    }
    header.extend([
        "prompt",
        "gen",
        "TTFT ms",
        if batched {
            "decode ms/step"
        } else {
            "decode ms/token"
        },
        "tokens/s",
        "peak memory",
        "runs",
    ]);
    let mut cells: Vec<Vec<String>> = Vec::new();
    for r in rows {
        let (tk, dk) = keys(r);
        let f = |k: String| r.get(&k).and_then(Value::as_f64).unwrap_or(0.0);
        let text = |k: &str| match r.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(v) if !v.is_null() => v.to_string(),
            _ => "-".into(),
        };
        let mut row = vec![model.clone(), dtype.clone(), text("device")];
        if batched {
            row.extend([text("batch"), text("rows_per_step")]);
        }
        let peak = ["peak_gpu_bytes", "peak_rss_bytes"]
            .iter()
            .find_map(|k| r.get(*k)?.as_u64())
            .map_or_else(|| "-".to_string(), |b| si(b as f64, "B"));
        row.extend([
            text("prompt_len"),
            text("gen_len"),
            ms_pm(f(format!("{tk}_mean")), f(format!("{tk}_stddev"))),
            ms_pm(f(format!("{dk}_mean")), f(format!("{dk}_stddev"))),
            r.get("decode_tokens_per_s")
                .and_then(Value::as_f64)
                .map_or_else(|| "-".to_string(), |v| format!("{v:.1}")),
            peak,
            text("repeat"),
        ]);
        cells.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Text columns left-aligned, numbers right-aligned, as llama-bench prints them.
    let left = 3;
    let line = |row: Vec<String>| -> String {
        let parts: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                if i < left {
                    format!(" {c}{} ", " ".repeat(pad))
                } else {
                    format!(" {}{c} ", " ".repeat(pad))
                }
            })
            .collect();
        format!("|{}|\n", parts.join("|"))
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i < left {
                format!(" {} ", "-".repeat(*w))
            } else {
                format!(" {}: ", "-".repeat(w.saturating_sub(1)))
            }
        })
        .collect();
    out += &format!("|{}|\n", rule.join("|"));
    for row in cells {
        out += &line(row);
    }
    out
}

/// The process's peak resident memory (`VmHWM` of /proc/self/status), where the system says.
pub fn peak_rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_summarised_around_the_median_run() {
        let runs = vec![
            json!({"device": "cpu", "prompt_len": 8, "gen_len": 4, "ttft_ms": 10.0, "decode_ms_per_token": 3.0, "peak_rss_bytes": 100}),
            json!({"device": "cpu", "prompt_len": 8, "gen_len": 4, "ttft_ms": 14.0, "decode_ms_per_token": 1.0, "peak_rss_bytes": 300}),
            json!({"device": "cpu", "prompt_len": 8, "gen_len": 4, "ttft_ms": 12.0, "decode_ms_per_token": 2.0, "peak_rss_bytes": 200}),
        ];
        let row = summarize(runs).unwrap();
        // The median run's own fields, and the statistics beside them.
        assert_eq!(row["decode_ms_per_token"], 2.0);
        assert_eq!(row["ttft_ms"], 12.0);
        assert_eq!(row["repeat"], 3);
        assert_eq!(row["ttft_ms_mean"], 12.0);
        assert_eq!(row["decode_ms_per_token_mean"], 2.0);
        assert!((row["decode_ms_per_token_stddev"].as_f64().unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(row["decode_tokens_per_s"], 500.0);
        assert_eq!(row["peak_rss_bytes"], 300);
        assert_eq!(ms_pm(2.634, 0.0123), "2.63 ± 0.01");
        assert_eq!(ms_pm(123.4, 2.2), "123 ± 2");
        assert_eq!(ms_pm(0.0512, 0.001), "0.0512 ± 0.0010");
    }
}
