//! The Zamba2 `config.json`: every field of spec §1.1, HF defaults, derived fields checked.
//!
//! Parsing goes through `serde_json::Value` rather than `#[derive(Deserialize)]` so that every
//! error names the file and the exact field, and so that legacy keys (§1.1) are tolerated.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Upper bounds on untrusted sizes: far above every released model, low enough that a hostile
/// config cannot make the compiler allocate absurd amounts before a weight is even read.
const MAX_HIDDEN: usize = 1 << 16;
const MAX_VOCAB: usize = 1 << 22;
const MAX_LAYERS: usize = 4096;
const MAX_HEADS: usize = 4096;
const MAX_STATE: usize = 4096;
const MAX_CONV: usize = 64;
const MAX_EXPAND: usize = 64;
const MAX_MEM_BLOCKS: usize = 64;

/// An error in config.json: always names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{}: {field}: {msg}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub field: String,
    pub msg: String,
}

/// The type of one decoder layer (spec §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    /// A plain Mamba2 decoder layer (HF 5.24 calls it "linear_attention"; legacy "m").
    Mamba,
    /// Shared transformer block + per-layer linear + the layer's own Mamba2 layer (legacy "g").
    Hybrid,
}

/// A validated Zamba2 configuration. Field names follow transformers' `Zamba2Config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zamba2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub layers_block_type: Vec<LayerType>,
    pub mamba_d_state: usize,
    pub mamba_d_conv: usize,
    pub mamba_expand: usize,
    pub mamba_ngroups: usize,
    pub n_mamba_heads: usize,
    pub mamba_headdim: usize,
    pub time_step_min: f64,
    pub chunk_size: usize,
    pub add_bias_linear: bool,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub attention_hidden_size: usize,
    pub attention_head_dim: usize,
    pub kv_channels: usize,
    pub num_mem_blocks: usize,
    pub use_shared_attention_adapter: bool,
    pub adapter_rank: usize,
    pub use_mem_rope: bool,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub pad_token_id: Option<i64>,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
    /// Whether the prompt (chunked) path clamps `dt >= time_step_min`: transformers 5.24 does
    /// (spec §3.5); Zyphra's original code does not (§5.2), so a plan compiled from its
    /// standalone checkpoint sets this false (`layout::standalone`). Not a config.json field.
    #[serde(default = "clamp_by_default")]
    pub prompt_dt_clamp: bool,
}

fn clamp_by_default() -> bool {
    true
}

impl Zamba2Config {
    /// Reads and validates `config.json` at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_value(path, &read_json(path)?)
    }

    /// Validates an already parsed JSON object; `path` is only used in error messages.
    pub fn from_value(path: &Path, value: &Value) -> Result<Self, ConfigError> {
        let obj = value.as_object().ok_or_else(|| ConfigError {
            path: path.to_path_buf(),
            field: "(json)".into(),
            msg: "the top level is not a JSON object".into(),
        })?;
        Fields { path, obj }.parse()
    }

    /// `Din = mamba_expand * H`.
    pub fn d_inner(&self) -> usize {
        self.mamba_expand * self.hidden_size
    }
    /// Conv width `CD = Din + 2*G*N`.
    pub fn conv_dim(&self) -> usize {
        self.d_inner() + 2 * self.mamba_ngroups * self.mamba_d_state
    }
    /// in_proj output width `DIP = 2*Din + 2*G*N + NH`.
    pub fn in_proj_dim(&self) -> usize {
        2 * self.d_inner() + 2 * self.mamba_ngroups * self.mamba_d_state + self.n_mamba_heads
    }
    /// Sorted indices of the hybrid layers.
    pub fn hybrid_layer_ids(&self) -> Vec<usize> {
        (0..self.num_hidden_layers)
            .filter(|&i| self.layers_block_type[i] == LayerType::Hybrid)
            .collect()
    }
    /// Softmax scale of the shared attention: `(d/2)^(-1/2)` (spec §2.4, §6.3).
    pub fn attention_scale(&self) -> f64 {
        1.0 / (self.kv_channels as f64).sqrt()
    }
    /// The default `layers_block_type` HF builds when the field is null (spec §1.2).
    pub fn default_layers_block_type() -> Vec<LayerType> {
        use LayerType::{Hybrid as H, Mamba as M};
        let mut v = vec![M];
        for _ in 0..7 {
            v.extend([M, M, M, M, M, H]);
        }
        v.extend([M, M, M, M, H, M, M, M, H, M, M]);
        v
    }
}

/// Reads a config file as JSON (no validation); errors name the file.
pub fn read_json(path: &Path) -> Result<Value, ConfigError> {
    let err = |field: &str, msg: String| ConfigError {
        path: path.to_path_buf(),
        field: field.to_string(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err("(file)", e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err("(json)", format!("malformed JSON: {e}")))
}

/// Field-by-field reader over the JSON object; every error names the field.
struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, field: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            msg: msg.into(),
        }
    }

    /// The value of `key`, treating JSON null as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, key: &str, max: usize) -> Result<Option<usize>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = v
            .as_u64()
            .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}")))?;
        if n == 0 || n as u128 > max as u128 {
            return Err(self.err(key, format!("{n} is out of range 1..={max}")));
        }
        Ok(Some(n as usize))
    }

    fn usize_or(&self, key: &str, default: usize, max: usize) -> Result<usize, ConfigError> {
        Ok(self.usize_opt(key, max)?.unwrap_or(default))
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => {
                let x = v
                    .as_f64()
                    .ok_or_else(|| self.err(key, format!("expected a number, got {v}")))?;
                if !x.is_finite() {
                    return Err(self.err(key, "must be finite"));
                }
                Ok(x)
            }
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, got {v}"))),
        }
    }

    fn token_id(&self, key: &str, default: i64) -> Result<Option<i64>, ConfigError> {
        match self.obj.get(key) {
            None => Ok(Some(default)),
            Some(Value::Null) => Ok(None),
            // generation configs sometimes carry a list of eos ids: the first is the primary one.
            Some(Value::Array(a)) if !a.is_empty() => a[0]
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.err(key, "expected an integer token id")),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected an integer token id, got {v}"))),
        }
    }

    /// A derived field: computed, and if the JSON also carries it, the two must agree (§1.1).
    fn derived(&self, key: &str, computed: usize) -> Result<usize, ConfigError> {
        if let Some(v) = self.get(key) {
            let n = v.as_u64().ok_or_else(|| {
                self.err(key, format!("expected a non-negative integer, got {v}"))
            })?;
            if n != computed as u64 {
                return Err(self.err(
                    key,
                    format!("is {n} but the other fields imply {computed}; inconsistent config"),
                ));
            }
        }
        Ok(computed)
    }

    fn layer_types(&self, n_layers: usize) -> Result<Vec<LayerType>, ConfigError> {
        let key = "layers_block_type";
        let Some(v) = self.get(key) else {
            let d = Zamba2Config::default_layers_block_type();
            if d.len() != n_layers {
                return Err(self.err(
                    key,
                    format!(
                        "absent, and the default pattern has {} layers but num_hidden_layers is {n_layers}",
                        d.len()
                    ),
                ));
            }
            return Ok(d);
        };
        let arr = v
            .as_array()
            .ok_or_else(|| self.err(key, format!("expected a list of layer types, got {v}")))?;
        if arr.len() != n_layers {
            return Err(self.err(
                key,
                format!(
                    "has {} entries but num_hidden_layers is {n_layers}",
                    arr.len()
                ),
            ));
        }
        arr.iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("mamba" | "linear_attention" | "m") => Ok(LayerType::Mamba),
                Some("hybrid" | "g") => Ok(LayerType::Hybrid),
                _ => Err(self.err(
                    &format!("{key}[{i}]"),
                    format!("unknown layer type {t}; expected \"mamba\" or \"hybrid\""),
                )),
            })
            .collect()
    }

    fn parse(&self) -> Result<Zamba2Config, ConfigError> {
        if let Some(mt) = self.get("model_type").and_then(Value::as_str) {
            if mt != "zamba2" {
                return Err(self.err("model_type", format!("is {mt:?}, expected \"zamba2\"")));
            }
        }
        let vocab_size = self.usize_or("vocab_size", 32000, MAX_VOCAB)?;
        let h = self.usize_or("hidden_size", 2560, MAX_HIDDEN)?;
        let n_layers = self.usize_or("num_hidden_layers", 54, MAX_LAYERS)?;
        let layers_block_type = self.layer_types(n_layers)?;
        let hybrid: Vec<usize> = (0..n_layers)
            .filter(|&i| layers_block_type[i] == LayerType::Hybrid)
            .collect();
        if let Some(v) = self.get("hybrid_layer_ids") {
            let ids: Option<Vec<u64>> = v
                .as_array()
                .map(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
                .unwrap_or(None);
            let ids = ids.ok_or_else(|| {
                self.err(
                    "hybrid_layer_ids",
                    format!("expected a list of integers, got {v}"),
                )
            })?;
            let want: Vec<u64> = hybrid.iter().map(|&i| i as u64).collect();
            if ids != want {
                return Err(self.err(
                    "hybrid_layer_ids",
                    format!(
                        "is {ids:?} but layers_block_type implies {want:?}; inconsistent config"
                    ),
                ));
            }
        }
        let d_state = self.usize_or("mamba_d_state", 64, MAX_STATE)?;
        let d_conv = self.usize_or("mamba_d_conv", 4, MAX_CONV)?;
        let expand = self.usize_or("mamba_expand", 2, MAX_EXPAND)?;
        let ngroups = self.usize_or("mamba_ngroups", 1, MAX_HEADS)?;
        let nh = self.usize_or("n_mamba_heads", 8, MAX_HEADS * 16)?;
        let d_inner = expand * h;
        if d_inner % nh != 0 {
            return Err(self.err(
                "n_mamba_heads",
                format!("{nh} does not divide mamba_expand*hidden_size = {d_inner}"),
            ));
        }
        if nh % ngroups != 0 {
            return Err(self.err(
                "mamba_ngroups",
                format!("{ngroups} does not divide n_mamba_heads = {nh}"),
            ));
        }
        let headdim = self.derived("mamba_headdim", d_inner / nh)?;
        let time_step_min = self.f64_or("time_step_min", 0.001)?;
        let chunk_size = self.usize_or("chunk_size", 256, 1 << 20)?;
        let add_bias_linear = self.bool_or("add_bias_linear", false)?;
        if add_bias_linear {
            return Err(self.err(
                "add_bias_linear",
                "true is not supported: no released Zamba2 model has linear biases",
            ));
        }
        let intermediate_size = self.usize_or("intermediate_size", 4 * h, MAX_HIDDEN * 16)?;
        let hidden_act = match self.get("hidden_act") {
            None => "gelu".to_string(),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err("hidden_act", format!("expected a string, got {v}")))?
                .to_string(),
        };
        if hidden_act != "gelu" {
            return Err(self.err(
                "hidden_act",
                format!("{hidden_act:?} is not supported; Zamba2 uses the exact erf \"gelu\""),
            ));
        }
        let ha = self.usize_or("num_attention_heads", 32, MAX_HEADS)?;
        let hkv = self.usize_or("num_key_value_heads", ha, MAX_HEADS)?;
        if ha % hkv != 0 {
            return Err(self.err(
                "num_key_value_heads",
                format!("{hkv} does not divide num_attention_heads = {ha}"),
            ));
        }
        if (2 * h) % ha != 0 || h % ha != 0 {
            return Err(self.err(
                "num_attention_heads",
                format!("{ha} does not divide hidden_size = {h}"),
            ));
        }
        let attention_hidden_size = self.derived("attention_hidden_size", 2 * h)?;
        let attention_head_dim = self.derived("attention_head_dim", 2 * h / ha)?;
        self.derived("head_dim", attention_head_dim)?;
        let kv_channels = self.derived("kv_channels", h / ha)?;
        self.derived("num_query_groups", ha)?;
        let num_mem_blocks = self.usize_or("num_mem_blocks", 1, MAX_MEM_BLOCKS)?;
        let use_shared_attention_adapter = self.bool_or("use_shared_attention_adapter", false)?;
        let adapter_rank = self.usize_or("adapter_rank", 128, MAX_HIDDEN)?;
        let use_mem_rope = self.bool_or("use_mem_rope", false)?;
        if use_mem_rope && attention_head_dim % 2 != 0 {
            return Err(self.err("attention_head_dim", "RoPE needs an even head dim"));
        }
        let rope_theta = match self
            .get("rope_parameters")
            .and_then(|v| v.get("rope_theta"))
        {
            Some(v) => v.as_f64().ok_or_else(|| {
                self.err(
                    "rope_parameters.rope_theta",
                    format!("expected a number, got {v}"),
                )
            })?,
            None => self.f64_or("rope_theta", 10000.0)?,
        };
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            return Err(self.err("rope_theta", "must be a positive number"));
        }
        let use_long_context = self.bool_or("use_long_context", false)?;
        let max_position_embeddings = if use_long_context {
            16384
        } else {
            self.usize_or("max_position_embeddings", 4096, 1 << 24)?
        };
        let rms_norm_eps = self.f64_or("rms_norm_eps", 1e-5)?;
        if rms_norm_eps <= 0.0 {
            return Err(self.err("rms_norm_eps", "must be positive"));
        }
        let tie_word_embeddings = self.bool_or("tie_word_embeddings", true)?;
        Ok(Zamba2Config {
            vocab_size,
            hidden_size: h,
            num_hidden_layers: n_layers,
            layers_block_type,
            mamba_d_state: d_state,
            mamba_d_conv: d_conv,
            mamba_expand: expand,
            mamba_ngroups: ngroups,
            n_mamba_heads: nh,
            mamba_headdim: headdim,
            time_step_min,
            chunk_size,
            add_bias_linear,
            intermediate_size,
            hidden_act,
            num_attention_heads: ha,
            num_key_value_heads: hkv,
            attention_hidden_size,
            attention_head_dim,
            kv_channels,
            num_mem_blocks,
            use_shared_attention_adapter,
            adapter_rank,
            use_mem_rope,
            rope_theta,
            max_position_embeddings,
            rms_norm_eps,
            tie_word_embeddings,
            pad_token_id: self.token_id("pad_token_id", 0)?,
            bos_token_id: self.token_id("bos_token_id", 1)?,
            eos_token_id: self.token_id("eos_token_id", 2)?,
            prompt_dt_clamp: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Zamba2Config, ConfigError> {
        Zamba2Config::from_value(Path::new("config.json"), &v)
    }

    #[test]
    fn defaults_give_the_27b_layout() {
        let c = parse(serde_json::json!({"n_mamba_heads": 80, "num_mem_blocks": 2})).unwrap();
        assert_eq!(
            c.hybrid_layer_ids(),
            vec![6, 12, 18, 24, 30, 36, 42, 47, 51]
        );
        assert_eq!(c.in_proj_dim(), 10448);
        assert_eq!(c.conv_dim(), 5248);
        assert_eq!(c.attention_head_dim, 160);
        assert_eq!(c.mamba_headdim, 64);
    }

    #[test]
    fn inconsistent_derived_field_names_the_field() {
        let e = parse(serde_json::json!({"n_mamba_heads": 80, "mamba_headdim": 32})).unwrap_err();
        assert_eq!(e.field, "mamba_headdim");
        assert!(e.to_string().starts_with("config.json: mamba_headdim:"));
    }

    #[test]
    fn legacy_layer_names_and_unknown_ones() {
        let c = parse(serde_json::json!({"num_hidden_layers": 2, "layers_block_type": ["m", "g"]}))
            .unwrap();
        assert_eq!(
            c.layers_block_type,
            vec![LayerType::Mamba, LayerType::Hybrid]
        );
        let e = parse(serde_json::json!({"num_hidden_layers": 1, "layers_block_type": ["moe"]}))
            .unwrap_err();
        assert_eq!(e.field, "layers_block_type[0]");
    }

    #[test]
    fn wrong_type_and_absurd_size() {
        assert_eq!(
            parse(serde_json::json!({"hidden_size": "big"}))
                .unwrap_err()
                .field,
            "hidden_size"
        );
        assert_eq!(
            parse(serde_json::json!({"vocab_size": 1u64 << 40}))
                .unwrap_err()
                .field,
            "vocab_size"
        );
    }
}
