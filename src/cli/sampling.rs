//! The sampling flags of `run` and `chat`, and their defaults from the model: the plan's
//! `generation_config.json` (copied by `compile`), read the way transformers'
//! `GenerationConfig` reads it (issue 17). A flag that changes nothing (`--top-k` with greedy
//! decoding) is warned about once.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;
use zamba2c_ir::Plan;
use zamba2c_runtime::generate::sampling::SamplingParams;

/// transformers' `top_k` when sampling and the model's generation config sets none
/// (`GenerationConfig._get_default_generation_params`, transformers 5.24.0).
const HF_DEFAULT_TOP_K: usize = 50;

/// Sampling flags; each one left out takes the model's default (see [`resolve`]).
#[derive(Args, Debug, Clone, Default)]
pub struct SamplingFlags {
    /// Sampling temperature; 0 is greedy (argmax). Default: the model's generation_config.json
    /// (its temperature when do_sample is true), else 0.
    #[arg(short = 't', long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Sample among the K most likely tokens only (0: all). Default: the model's (transformers'
    /// 50 when the model samples and sets none), else 0.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sample from the smallest set of tokens whose probability adds up to P (1: all).
    /// Default: the model's, else 1.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than P times the most likely one (0: off). Default: the
    /// model's, else 0.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// Penalise tokens already seen, prompt included (Hugging Face semantics; 1: off).
    /// Default: the model's, else 1.
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub repetition_penalty: Option<f32>,
    /// Random seed for sampling: the same seed gives the same output on the same device.
    /// Without it a random seed is used (printed with --json and in the logs).
    #[arg(short = 's', long, value_name = "N")]
    pub seed: Option<u64>,
}

/// The sampling settings of a model's `generation_config.json`: the fields it sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelDefaults {
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
}

impl ModelDefaults {
    /// The plan's `generation_config.json`, or no defaults when it has none.
    pub fn from_plan(plan: &Plan) -> Result<Self> {
        Self::from_file(&plan.dir.join("generation_config.json"))
    }

    /// Reads `path` (absent: no defaults); a field of the wrong type names the file and field.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: malformed JSON", path.display()))?;
        let field = |name: &str| v.get(name).filter(|x| !x.is_null());
        let number = |name: &str| -> Result<Option<f32>> {
            match field(name) {
                None => Ok(None),
                Some(x) => match x.as_f64() {
                    Some(f) if f.is_finite() => Ok(Some(f as f32)),
                    _ => bail!("{}: {name}: expected a number, got {x}", path.display()),
                },
            }
        };
        let do_sample = match field("do_sample") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(x) => bail!(
                "{}: do_sample: expected true or false, got {x}",
                path.display()
            ),
        };
        let top_k = match field("top_k") {
            None => None,
            Some(x) => Some(
                x.as_u64()
                    .and_then(|k| usize::try_from(k).ok())
                    .with_context(|| {
                        format!(
                            "{}: top_k: expected a whole number >= 0, got {x}",
                            path.display()
                        )
                    })?,
            ),
        };
        Ok(ModelDefaults {
            do_sample,
            temperature: number("temperature")?,
            top_k,
            top_p: number("top_p")?,
            min_p: number("min_p")?,
            repetition_penalty: number("repetition_penalty")?,
        })
    }

    /// What transformers' `generate()` does with this config and no arguments: greedy unless
    /// `do_sample` is true; then the config's temperature (1), top_k (50), top_p (1) and min_p
    /// (off). The repetition penalty applies to greedy decoding too.
    pub fn params(&self) -> SamplingParams {
        let off = SamplingParams::default();
        let repetition_penalty = self.repetition_penalty.unwrap_or(off.repetition_penalty);
        if self.do_sample != Some(true) {
            return SamplingParams {
                repetition_penalty,
                ..off
            };
        }
        SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(HF_DEFAULT_TOP_K),
            top_p: self.top_p.unwrap_or(off.top_p),
            min_p: self.min_p.unwrap_or(off.min_p),
            repetition_penalty,
        }
    }
}

/// The sampling parameters of a run: each flag given, else the model's default. With
/// `-t T > 0` on a greedy model the model's own top-k/top-p/min-p settings (if it has any)
/// still apply, as `generate(do_sample=True, temperature=T)` would apply them. Warns once (one
/// line) about flags that change nothing because decoding is greedy. `file` names the model's
/// generation config in errors.
pub fn resolve(
    flags: &SamplingFlags,
    model: &ModelDefaults,
    file: &Path,
) -> Result<SamplingParams> {
    let base = model.params();
    let params = SamplingParams {
        temperature: flags.temperature.unwrap_or(base.temperature),
        top_k: flags.top_k.or(model.top_k).unwrap_or(base.top_k),
        top_p: flags.top_p.or(model.top_p).unwrap_or(base.top_p),
        min_p: flags.min_p.or(model.min_p).unwrap_or(base.min_p),
        repetition_penalty: flags.repetition_penalty.unwrap_or(base.repetition_penalty),
    };
    if let Err(e) = params.validate() {
        // A bad value the user typed names the flag; one from the model names the file.
        let from_flag = match e.split(':').next().unwrap_or("") {
            "--temperature" => flags.temperature.is_some(),
            "--top-p" => flags.top_p.is_some(),
            "--min-p" => flags.min_p.is_some(),
            "--repetition-penalty" => flags.repetition_penalty.is_some(),
            _ => true,
        };
        if from_flag {
            bail!("{e}");
        }
        bail!(
            "{}: {e} (the model's default; override it with the flag)",
            file.display()
        );
    }
    if params.is_greedy() {
        let idle: Vec<&str> = [
            ("--top-k", flags.top_k.is_some()),
            ("--top-p", flags.top_p.is_some()),
            ("--min-p", flags.min_p.is_some()),
            ("--seed", flags.seed.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect();
        if !idle.is_empty() {
            tracing::warn!(
                "{} {} no effect: decoding is greedy (temperature 0{}); give -t/--temperature T > 0 to sample",
                idle.join(", "),
                if idle.len() == 1 { "has" } else { "have" },
                if flags.temperature.is_some() {
                    ""
                } else {
                    ", the model's default"
                }
            );
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(json: &str) -> Result<ModelDefaults> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("generation_config.json");
        std::fs::write(&p, json).unwrap();
        ModelDefaults::from_file(&p)
    }

    #[test]
    fn transformers_reading_of_generation_config() {
        // No do_sample: greedy, whatever else is set (transformers warns and ignores them),
        // but the repetition penalty still applies.
        let g = defaults(r#"{"temperature": 0.7, "top_k": 10, "repetition_penalty": 1.2}"#)
            .unwrap()
            .params();
        assert_eq!(g.temperature, 0.0);
        assert_eq!(g.repetition_penalty, 1.2);
        // do_sample with nothing else: temperature 1, top_k 50, top_p 1.
        let s = defaults(r#"{"do_sample": true}"#).unwrap().params();
        assert_eq!(
            (s.temperature, s.top_k, s.top_p, s.min_p),
            (1.0, 50, 1.0, 0.0)
        );
        let s = defaults(r#"{"do_sample": true, "temperature": 0.6, "top_p": 0.9, "top_k": 0}"#)
            .unwrap()
            .params();
        assert_eq!((s.temperature, s.top_k, s.top_p), (0.6, 0, 0.9));
        assert!(defaults(r#"{"top_k": -1}"#)
            .unwrap_err()
            .to_string()
            .contains("top_k"));
        assert!(defaults(r#"{"do_sample": "yes"}"#)
            .unwrap_err()
            .to_string()
            .contains("do_sample"));
        // No file: greedy.
        let none =
            ModelDefaults::from_file(Path::new("/nonexistent/generation_config.json")).unwrap();
        assert_eq!(none.params(), SamplingParams::default());
    }

    #[test]
    fn flags_override_the_model() {
        let model = defaults(r#"{"do_sample": true, "temperature": 0.6, "top_p": 0.9}"#).unwrap();
        let f = Path::new("g.json");
        let p = resolve(&SamplingFlags::default(), &model, f).unwrap();
        assert_eq!((p.temperature, p.top_k, p.top_p), (0.6, 50, 0.9));
        let greedy = SamplingFlags {
            temperature: Some(0.0),
            ..Default::default()
        };
        assert!(resolve(&greedy, &model, f).unwrap().is_greedy());
        // -t on a greedy model with top_p set: the model's top_p applies, top_k stays off.
        let model = defaults(r#"{"top_p": 0.8}"#).unwrap();
        let hot = SamplingFlags {
            temperature: Some(0.9),
            ..Default::default()
        };
        let p = resolve(&hot, &model, f).unwrap();
        assert_eq!((p.temperature, p.top_k, p.top_p), (0.9, 0, 0.8));
        // A bad model value names the file, a bad flag the flag.
        let bad = defaults(r#"{"do_sample": true, "temperature": -1}"#).unwrap();
        let e = resolve(&SamplingFlags::default(), &bad, f)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("g.json: --temperature"), "{e}");
        let e = resolve(
            &SamplingFlags {
                top_p: Some(2.0),
                ..Default::default()
            },
            &model,
            f,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--top-p"), "{e}");
    }
}
