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
/// Parameters a config may imply: 2^36 (68.7 billion, nine times Zamba2-7B). The per-field
/// bounds alone still allow products of terabytes, which `--dummy-weights` compiled into a
/// plan that aborted at load (issue 16).
pub const MAX_PARAMETERS: u128 = 1 << 36;
/// config.json files larger than this are refused before they are read (a real one is a few
/// KB; the index of a sharded checkpoint has a 100 MB cap of its own).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

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
        let err = |field: &str, msg: String| ConfigError {
            path: path.to_path_buf(),
            field: field.to_string(),
            msg,
        };
        let bytes =
            crate::fsread::read_capped(path, MAX_CONFIG_BYTES, crate::fsread::Links::Follow)
                .map_err(|e| err("(file)", e))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| err("(json)", format!("malformed JSON: {e}")))?;
        Self::from_value(path, &value)
    }

    /// Validates a config that was stored rather than read from config.json (the copy inside
    /// a plan's module.json): it must be exactly what [`Zamba2Config::from_value`] makes of
    /// itself, so every bound and cross-field rule applies again. `path` names the file in
    /// errors; the field is reported as `config.FIELD`.
    pub fn revalidate(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |field: &str, msg: String| ConfigError {
            path: path.to_path_buf(),
            field: format!("config.{field}"),
            msg,
        };
        let value = serde_json::to_value(self).map_err(|e| err("(json)", e.to_string()))?;
        let mut again = Self::from_value(path, &value).map_err(|e| err(&e.field, e.msg))?;
        // Not a config.json field: set by the checkpoint layout (standalone: false), so it is
        // carried over rather than derived.
        again.prompt_dt_clamp = self.prompt_dt_clamp;
        if &again == self {
            return Ok(());
        }
        // Name the first field that the parser derives differently (e.g. a stored
        // mamba_headdim that the other fields do not imply).
        let back = serde_json::to_value(&again).map_err(|e| err("(json)", e.to_string()))?;
        let field = value
            .as_object()
            .and_then(|o| o.iter().find(|(k, v)| back.get(k.as_str()) != Some(v)))
            .map_or("(json)".to_string(), |(k, _)| k.clone());
        let implied = back.get(&field).map_or("nothing".into(), |v| v.to_string());
        Err(err(
            &field,
            format!("the other fields imply {implied}; inconsistent config"),
        ))
    }

    /// Number of weight elements the model has: exactly the sum over the weight table that
    /// lowering builds (`crate::lower`; a test compares the two). u128, so no product of
    /// bounded fields can overflow.
    pub fn parameter_count(&self) -> u128 {
        let u = |x: usize| x as u128;
        let (h, v) = (u(self.hidden_size), u(self.vocab_size));
        let (din, cd, dip, nh) = (
            u(self.d_inner()),
            u(self.conv_dim()),
            u(self.in_proj_dim()),
            u(self.n_mamba_heads),
        );
        let k = u(self.mamba_d_conv);
        // One Mamba2 mixer: in_proj, conv weight and bias, dt_bias/A_log/D, gated norm, out_proj.
        let mixer = dip * h + cd * k + cd + 3 * nh + din + h * din;
        let layers = u(self.num_hidden_layers);
        let hybrids = u(self.hybrid_layer_ids().len());
        // Every layer: one mixer and one hidden-size input norm; every hybrid layer: `linear`.
        let mut n = layers * (mixer + h) + hybrids * h * h;
        // The shared transformer block: stored once per block when tied, else per hybrid layer
        // (lower::shared_block_store).
        let (ha, hkv, d) = (
            u(self.num_attention_heads),
            u(self.num_key_value_heads),
            u(self.attention_head_dim),
        );
        let inter = u(self.intermediate_size);
        let block = 2 * h                   // input_layernorm over concat(h, e)
            + (ha * d + 2 * hkv * d) * 2 * h // q, k, v
            + h * ha * d                     // o_proj
            + h                              // pre_ff_layernorm
            + 2 * inter * h                  // gate_up_proj
            + h * inter; // down_proj
        let stores = if self.tie_word_embeddings {
            hybrids.min(u(self.num_mem_blocks))
        } else {
            hybrids
        };
        n += stores * block;
        // Per-invocation LoRA adapters, one set per hybrid layer.
        let r = u(self.adapter_rank);
        let mut adapters = r * h + 2 * inter * r;
        if self.use_shared_attention_adapter {
            adapters += [ha * d, hkv * d, hkv * d]
                .iter()
                .map(|&out| r * 2 * h + out * r)
                .sum::<u128>();
        }
        n += hybrids * adapters;
        // Embeddings, the final norm, and an untied lm_head.
        n += v * h + h;
        if !self.tie_word_embeddings {
            n += v * h;
        }
        n
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
    let bytes = crate::fsread::read_capped(path, MAX_CONFIG_BYTES, crate::fsread::Links::Follow)
        .map_err(|e| err("(file)", e))?;
    serde_json::from_slice(&bytes).map_err(|e| err("(json)", format!("malformed JSON: {e}")))
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
        // The prompt path clamps dt from below with it (spec §3.5): a step in (0, 1] like
        // Mamba2's init range [1e-3, 1e-1]; 0 disables the clamp.
        if !(0.0..=1.0).contains(&time_step_min) {
            return Err(self.err(
                "time_step_min",
                format!("{time_step_min} is out of range [0, 1] (a time step)"),
            ));
        }
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
        // inv_freq_i = theta^(-2i/d) must stay in (0, 1]: theta <= 1 makes it grow without
        // bound (1e-300 gave NaN logits), and theta must be finite in f32, as the plan stores it.
        if !(rope_theta.is_finite() && rope_theta > 1.0 && rope_theta <= f32::MAX as f64) {
            return Err(self.err(
                "rope_theta",
                format!("{rope_theta} is out of range: must be greater than 1 and finite in f32"),
            ));
        }
        let use_long_context = self.bool_or("use_long_context", false)?;
        let max_position_embeddings = if use_long_context {
            16384
        } else {
            self.usize_or("max_position_embeddings", 4096, 1 << 24)?
        };
        let rms_norm_eps = self.f64_or("rms_norm_eps", 1e-5)?;
        // A small positive constant added to the mean square (1e-5 in every released model);
        // the plan stores it as f32, where 1e39 is infinite and 1e-46 is zero.
        if !(f32::MIN_POSITIVE as f64..=1.0).contains(&rms_norm_eps) {
            return Err(self.err(
                "rms_norm_eps",
                format!(
                    "{rms_norm_eps} is out of range [{:e}, 1]",
                    f32::MIN_POSITIVE
                ),
            ));
        }
        let tie_word_embeddings = self.bool_or("tie_word_embeddings", true)?;
        let config = Zamba2Config {
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
        };
        let params = config.parameter_count();
        if params > MAX_PARAMETERS {
            // Name the field behind the largest term: the embeddings, the layer stack, or the
            // shared block's MLP.
            let (v, hh, l, i) = (
                vocab_size as u128,
                h as u128,
                n_layers as u128,
                intermediate_size as u128,
            );
            let terms = [
                (v * hh, "vocab_size"),
                (l * config.in_proj_dim() as u128 * hh, "num_hidden_layers"),
                (3 * i * hh, "intermediate_size"),
            ];
            let field = terms
                .iter()
                .max_by_key(|t| t.0)
                .map_or("hidden_size", |t| t.1);
            return Err(self.err(
                field,
                format!(
                    "the sizes (vocab_size {vocab_size}, hidden_size {h}, num_hidden_layers \
                     {n_layers}, intermediate_size {intermediate_size}, ...) imply {params} \
                     parameters, over the {MAX_PARAMETERS} this compiler accepts"
                ),
            ));
        }
        Ok(config)
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
    /// The analytic parameter count is exactly the lowered weight table's size, for every
    /// fixture and demo config (tied and untied, adapters on and off, GQA) and the 2.7B layout.
    #[test]
    fn parameter_count_matches_lowering() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut configs = vec![(
            "2.7B defaults".to_string(),
            parse(serde_json::json!({"n_mamba_heads": 80, "num_mem_blocks": 2})).unwrap(),
        )];
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("tests/fixtures/models"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.push(root.join("examples/demo-model"));
        for d in dirs {
            let p = d.join("config.json");
            if p.is_file() {
                configs.push((
                    p.display().to_string(),
                    Zamba2Config::from_file(&p).unwrap(),
                ));
            }
        }
        assert!(configs.len() > 5);
        let mut seen = (false, false, false);
        for (name, c) in configs {
            let m = crate::lower(&c, crate::DType::F32);
            let lowered: u128 = m.weights.values().map(|w| w.numel() as u128).sum();
            assert_eq!(c.parameter_count(), lowered, "{name}");
            seen.0 |= !c.tie_word_embeddings;
            seen.1 |= c.use_shared_attention_adapter;
            seen.2 |= c.num_key_value_heads != c.num_attention_heads;
        }
        assert_eq!(seen, (true, true, true), "the configs cover every term");
    }

    #[test]
    fn physical_ranges() {
        for (field, v) in [
            ("rms_norm_eps", serde_json::json!(1e39)),
            ("rms_norm_eps", serde_json::json!(1e-50)),
            ("rms_norm_eps", serde_json::json!(0.0)),
            ("rms_norm_eps", serde_json::json!(2.0)),
            ("rope_theta", serde_json::json!(1e-300)),
            ("rope_theta", serde_json::json!(1.0)),
            ("rope_theta", serde_json::json!(1e39)),
            ("time_step_min", serde_json::json!(-0.1)),
            ("time_step_min", serde_json::json!(5.0)),
        ] {
            let mut obj = serde_json::json!({"n_mamba_heads": 80, "num_mem_blocks": 2});
            obj[field] = v.clone();
            let e = parse(obj).expect_err(&format!("{field} = {v} was accepted"));
            assert_eq!(e.field, field, "{e}");
            assert!(e.msg.contains("range"), "{e}");
        }
        let ok = parse(
            serde_json::json!({"n_mamba_heads": 80, "rms_norm_eps": 1e-6, "rope_theta": 500000.0}),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn sizes_whose_product_is_absurd_are_refused() {
        // Every field within its own bound, the product ~ 2^45 parameters.
        let e = parse(serde_json::json!({
            "hidden_size": 65536, "vocab_size": 4194304, "n_mamba_heads": 64,
            "num_attention_heads": 64, "num_hidden_layers": 2,
            "layers_block_type": ["mamba", "hybrid"]
        }))
        .unwrap_err();
        assert_eq!(e.field, "vocab_size", "{e}");
        assert!(e.msg.contains("parameters, over the"), "{e}");
        let e = parse(serde_json::json!({
            "hidden_size": 8192, "vocab_size": 1000, "n_mamba_heads": 64,
            "num_attention_heads": 64, "num_hidden_layers": 4096,
            "layers_block_type": vec!["mamba"; 4096]
        }))
        .unwrap_err();
        assert_eq!(e.field, "num_hidden_layers", "{e}");
    }

    #[test]
    fn a_stored_config_is_validated_again() {
        let good = parse(serde_json::json!({"n_mamba_heads": 80})).unwrap();
        good.revalidate(Path::new("module.json")).unwrap();
        let mut c = good.clone();
        c.vocab_size = 0;
        let e = c.revalidate(Path::new("module.json")).unwrap_err();
        assert_eq!(e.field, "config.vocab_size");
        assert!(e
            .to_string()
            .starts_with("module.json: config.vocab_size: 0 is out of range"));
        let mut c = good.clone();
        c.mamba_headdim = 7;
        let e = c.revalidate(Path::new("module.json")).unwrap_err();
        assert_eq!(e.field, "config.mamba_headdim", "{e}");
        let mut c = good.clone();
        c.rms_norm_eps = 1e39;
        assert_eq!(
            c.revalidate(Path::new("module.json")).unwrap_err().field,
            "config.rms_norm_eps"
        );
        let mut c = good;
        c.layers_block_type.pop();
        assert_eq!(
            c.revalidate(Path::new("module.json")).unwrap_err().field,
            "config.layers_block_type"
        );
    }
}
