//! The server's counters, gauges and latency histograms, written in the Prometheus text
//! exposition format (version 0.0.4) for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A cumulative histogram over [`BUCKETS`].
#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (c, &b) in self.counts.iter_mut().zip(&BUCKETS) {
            if seconds <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, b) in self.counts.iter().zip(&BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Values {
    /// Finished HTTP requests by (endpoint, status code).
    requests: BTreeMap<(String, u16), u64>,
    prompt_tokens: u64,
    generated_tokens: u64,
    /// Sequences dropped because their client went away.
    disconnects: u64,
    queue_depth: usize,
    active_slots: usize,
    ttft: Histogram,
    inter_token: Histogram,
}

/// Everything `/metrics` reports; shared by the handlers and the scheduler.
#[derive(Debug)]
pub struct Metrics {
    max_slots: usize,
    values: Mutex<Values>,
}

impl Metrics {
    pub fn new(max_slots: usize) -> Self {
        Metrics {
            max_slots,
            values: Mutex::new(Values::default()),
        }
    }

    fn with(&self, f: impl FnOnce(&mut Values)) {
        let mut v = self
            .values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut v);
    }

    /// A finished request to `endpoint` (a known route, or "other") with `status`.
    pub fn request(&self, endpoint: &str, status: u16) {
        self.with(|v| {
            *v.requests
                .entry((endpoint.to_string(), status))
                .or_default() += 1
        });
    }

    pub fn prompt_tokens(&self, n: usize) {
        self.with(|v| v.prompt_tokens += n as u64);
    }

    /// One generated token, `seconds` after the request arrived (first token) or after the
    /// sequence's previous token.
    pub fn token(&self, first: bool, seconds: f64) {
        self.with(|v| {
            v.generated_tokens += 1;
            if first {
                v.ttft.observe(seconds);
            } else {
                v.inter_token.observe(seconds);
            }
        });
    }

    pub fn disconnect(&self) {
        self.with(|v| v.disconnects += 1);
    }

    pub fn set_queue_depth(&self, n: usize) {
        self.with(|v| v.queue_depth = n);
    }

    pub fn set_active_slots(&self, n: usize) {
        self.with(|v| v.active_slots = n);
    }

    /// The Prometheus text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with(|v| {
            let _ = writeln!(
                out,
                "# HELP zamba2c_requests_total HTTP requests by endpoint and status code.\n# TYPE zamba2c_requests_total counter"
            );
            for ((endpoint, status), n) in &v.requests {
                let _ = writeln!(
                    out,
                    "zamba2c_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
                );
            }
            let scalar = |out: &mut String, name: &str, kind: &str, help: &str, x: String| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {x}");
            };
            scalar(&mut out, "zamba2c_prompt_tokens_total", "counter", "Prompt tokens admitted.", v.prompt_tokens.to_string());
            scalar(&mut out, "zamba2c_generation_tokens_total", "counter", "Tokens generated.", v.generated_tokens.to_string());
            scalar(&mut out, "zamba2c_disconnects_total", "counter", "Sequences stopped because the client went away.", v.disconnects.to_string());
            scalar(&mut out, "zamba2c_queue_depth", "gauge", "Sequences waiting for a slot.", v.queue_depth.to_string());
            scalar(&mut out, "zamba2c_active_slots", "gauge", "Slots holding a sequence.", v.active_slots.to_string());
            scalar(&mut out, "zamba2c_max_slots", "gauge", "Slots of the batched engine (--max-batch).", self.max_slots.to_string());
            v.ttft.write(
                &mut out,
                "zamba2c_time_to_first_token_seconds",
                "From a request's arrival to its first token.",
            );
            v.inter_token.write(
                &mut out,
                "zamba2c_inter_token_latency_seconds",
                "Between consecutive tokens of one sequence.",
            );
        });
        out
    }
}
