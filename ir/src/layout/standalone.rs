//! Zyphra's original standalone checkpoint (spec §5.2): the state dict of `MambaModel` from the
//! public Zyphra/Zamba2 repository (`mamba_model.py`, `mamba_block.py`, `attention.py`,
//! `mlp.py`), saved with `torch.save`, beside a `config.json` in the field names
//! `MambaModel.from_pretrained` reads.
//!
//! * [`config_from_value`]: those fields → a [`Zamba2Config`], with the original's semantics
//!   where they differ from transformers: no dt clamp (`prompt_dt_clamp = false`, §5.2), the
//!   output layer always tied to the embedding, RoPE theta 10000.
//! * [`source`]: the stored tensor each IR weight (HF layers-layout name) is read from, with
//!   the q/k/v de-interleave of the fused `linear_qkv` as a [`RowSelect`].
//! * [`ignorable`]: stored tensors the model does not use (adapter slots of other blocks, which
//!   the original keeps in every block, and buffers).

use std::path::Path;

use serde_json::{json, Map, Value};

use super::RowSelect;
use crate::config::{ConfigError, LayerType, Zamba2Config};

/// Whether `names` are the original code's state-dict names (`embedding.weight`, `decoder.*`)
/// and none is a transformers name.
pub fn is_standalone<'a>(names: impl IntoIterator<Item = &'a str>) -> bool {
    let (mut ours, mut hf) = (false, false);
    for n in names {
        ours |= n == "embedding.weight" || n.starts_with("decoder.");
        hf |= n.starts_with("model.") || n == "lm_head.weight";
    }
    ours && !hf
}

/// The original's config field a transformers field comes from, for error messages.
const FIELD_NAMES: [(&str, &str); 8] = [
    ("mamba_d_state", "state_size"),
    ("mamba_d_conv", "conv_dimension"),
    ("mamba_expand", "expansion_factor"),
    ("n_mamba_heads", "mamba_headdim"),
    ("intermediate_size", "ffn_hidden_size"),
    ("adapter_rank", "lora_rank"),
    ("use_shared_attention_adapter", "use_shared_attention_lora"),
    ("kv_channels", "kv_channels"),
];

/// Validates the original's `config.json` (as `MambaModel.from_pretrained` reads it: required
/// `num_hidden_layers`, `hidden_size`, `state_size`, `conv_dimension`, `expansion_factor`,
/// `num_attention_heads`, `mamba_headdim`, `layers_block_type` ("m"/"g"), `add_bias_linear`,
/// `use_shared_block_lora`, `lora_rank`, `gated_linear_unit`, `kv_channels`, `ffn_hidden_size`,
/// `vocab_size`, `num_query_groups`, `use_mem_rope`; optional `num_mem_blocks` (2),
/// `mamba_ngroups` (1), `use_shared_attention_lora` (false)) and returns the equivalent config.
pub fn config_from_value(path: &Path, v: &Value) -> Result<Zamba2Config, ConfigError> {
    let err = |field: &str, msg: String| ConfigError {
        path: path.to_path_buf(),
        field: field.to_string(),
        msg,
    };
    let obj = v
        .as_object()
        .ok_or_else(|| err("(json)", "the top level is not a JSON object".into()))?;
    let get = |k: &str| {
        obj.get(k).filter(|v| !v.is_null()).ok_or_else(|| {
            err(
                k,
                "missing (MambaModel.from_pretrained of the original code requires it)".into(),
            )
        })
    };
    let uint = |k: &str| -> Result<u64, ConfigError> {
        let v = get(k)?;
        v.as_u64()
            .filter(|&n| n > 0)
            .ok_or_else(|| err(k, format!("expected a positive integer, got {v}")))
    };
    let boolean = |k: &str, default: Option<bool>| -> Result<bool, ConfigError> {
        match (obj.get(k).filter(|v| !v.is_null()), default) {
            (None, Some(d)) => Ok(d),
            (None, None) => get(k).map(|_| false),
            (Some(v), _) => v
                .as_bool()
                .ok_or_else(|| err(k, format!("expected true or false, got {v}"))),
        }
    };
    let h = uint("hidden_size")?;
    let ha = uint("num_attention_heads")?;
    let expand = uint("expansion_factor")?;
    let headdim = uint("mamba_headdim")?;
    if boolean("add_bias_linear", None)? {
        return Err(err(
            "add_bias_linear",
            "true is not supported: no released Zamba2 model has linear biases".into(),
        ));
    }
    if !boolean("use_shared_block_lora", None)? {
        return Err(err(
            "use_shared_block_lora",
            "false is not supported: every released Zamba2 model has the shared-MLP LoRA".into(),
        ));
    }
    boolean("gated_linear_unit", None)?;
    // mlp.py: the shared MLP's fc1 is hard-coded 8H wide and GLU-split, so fc2 reads 4H.
    if uint("ffn_hidden_size")? != 4 * h {
        return Err(err(
            "ffn_hidden_size",
            format!("must be 4 * hidden_size = {}: the original's shared MLP hard-codes its fc1 as 8 * hidden_size", 4 * h),
        ));
    }
    // attention.py: linear_qkv is 6H wide, viewed as [num_query_groups, (HA/groups + 2) * 2 * kv_channels].
    if uint("num_query_groups")? != ha {
        return Err(err(
            "num_query_groups",
            format!("must equal num_attention_heads = {ha}: the original's fused 6H-wide qkv holds one k and v per head"),
        ));
    }
    if h % ha != 0 || uint("kv_channels")? != h / ha {
        return Err(err(
            "kv_channels",
            format!("must be hidden_size / num_attention_heads = {}", h / ha),
        ));
    }
    let layers = get("layers_block_type")?
        .as_array()
        .ok_or_else(|| {
            err(
                "layers_block_type",
                "expected a list of \"m\" and \"g\"".into(),
            )
        })?
        .iter()
        .enumerate()
        .map(|(i, t)| match t.as_str() {
            // "m"/"g" as the original reads them; the Hub's later spelling is accepted too.
            Some("m" | "mamba") => Ok("mamba"),
            Some("g" | "hybrid") => Ok("hybrid"),
            _ => Err(err(
                &format!("layers_block_type[{i}]"),
                format!("{t} is not \"m\" or \"g\""),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let d_inner = expand.saturating_mul(h);
    if headdim > d_inner || d_inner % headdim != 0 {
        return Err(err(
            "mamba_headdim",
            format!("{headdim} does not divide expansion_factor * hidden_size = {d_inner}"),
        ));
    }
    let opt_uint = |k: &str, d: u64| match obj.get(k).filter(|v| !v.is_null()) {
        None => Ok(d),
        Some(_) => uint(k),
    };
    let mut hf = Map::new();
    let mut put = |k: &str, v: Value| {
        hf.insert(k.to_string(), v);
    };
    put("model_type", json!("zamba2"));
    put("vocab_size", json!(uint("vocab_size")?));
    put("hidden_size", json!(h));
    put("num_hidden_layers", json!(uint("num_hidden_layers")?));
    put("layers_block_type", json!(layers));
    put("mamba_d_state", json!(uint("state_size")?));
    put("mamba_d_conv", json!(uint("conv_dimension")?));
    put("mamba_expand", json!(expand));
    put("mamba_ngroups", json!(opt_uint("mamba_ngroups", 1)?));
    put("n_mamba_heads", json!(d_inner / headdim));
    put("intermediate_size", json!(4 * h));
    put("num_attention_heads", json!(ha));
    put("num_key_value_heads", json!(ha));
    put("num_mem_blocks", json!(opt_uint("num_mem_blocks", 2)?));
    put(
        "use_shared_attention_adapter",
        json!(boolean("use_shared_attention_lora", Some(false))?),
    );
    put("adapter_rank", json!(uint("lora_rank")?));
    put("use_mem_rope", json!(boolean("use_mem_rope", None)?));
    // rotary.py hard-codes the base; the RMSNorms use MambaConfig's layernorm_epsilon default.
    put("rope_theta", json!(10000.0));
    put("rms_norm_eps", json!(1e-5));
    put("tie_word_embeddings", json!(true));
    for k in ["pad_token_id", "bos_token_id", "eos_token_id"] {
        if let Some(v) = obj.get(k) {
            put(k, v.clone());
        }
    }
    let mut c = Zamba2Config::from_value(path, &Value::Object(hf)).map_err(|mut e| {
        if let Some((_, orig)) = FIELD_NAMES.iter().find(|(hf, _)| *hf == e.field) {
            e.field = orig.to_string();
        }
        e
    })?;
    c.prompt_dt_clamp = false;
    Ok(c)
}

/// The stored tensor IR weight `ir_name` is read from, and the rows of it that make the
/// weight (only for q/k/v, cut out of the fused `linear_qkv`, spec §5.2). `None` when the
/// original has no such tensor (`lm_head.weight`: the original always ties it).
pub fn source(c: &Zamba2Config, ir_name: &str) -> Option<(String, Option<RowSelect>)> {
    let plain = |s: String| Some((s, None));
    match ir_name {
        "model.embed_tokens.weight" => return plain("embedding.weight".into()),
        "model.final_layernorm.weight" => return plain("decoder.final_layernorm.weight".into()),
        _ => {}
    }
    let rest = ir_name.strip_prefix("model.layers.")?;
    let (i, rest) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    let hybrid = *c.layers_block_type.get(i)? == LayerType::Hybrid;
    let mixer = |r: &str| -> Option<(String, Option<RowSelect>)> {
        if r == "input_layernorm.weight" {
            return plain(format!("decoder.layers.{i}.norm.weight"));
        }
        let m = r.strip_prefix("mamba.")?;
        // mamba2_layer.py: in_proj is a one-element ModuleList.
        let m = if m == "in_proj.weight" {
            "in_proj.0.weight"
        } else {
            m
        };
        plain(format!("decoder.layers.{i}.mixer.{m}"))
    };
    if !hybrid {
        return mixer(rest);
    }
    if let Some(r) = rest.strip_prefix("mamba_decoder.") {
        return mixer(r);
    }
    if rest == "linear.weight" {
        return plain(format!("decoder.block_map.{i}.weight"));
    }
    let r = rest.strip_prefix("shared_transformer.")?;
    let k = c.hybrid_layer_ids().iter().position(|&l| l == i)?;
    let b = format!("decoder.blocks.{}", k % c.num_mem_blocks);
    let (ha, d) = (c.num_attention_heads, c.attention_head_dim);
    let qkv = |part: usize| {
        Some((
            format!("{b}.sa.mixer.linear_qkv.weight"),
            Some(RowSelect {
                groups: ha,
                stride: 3 * d,
                offset: part * d,
                take: d,
            }),
        ))
    };
    match r {
        "input_layernorm.weight" => return plain(format!("{b}.sa.norm.weight")),
        "self_attn.q_proj.weight" => return qkv(0),
        "self_attn.k_proj.weight" => return qkv(1),
        "self_attn.v_proj.weight" => return qkv(2),
        "self_attn.o_proj.weight" => return plain(format!("{b}.sa.mixer.linear_proj.weight")),
        "pre_ff_layernorm.weight" => return plain(format!("{b}.mlp.norm.weight")),
        "feed_forward.gate_up_proj.weight" => {
            return plain(format!("{b}.mlp.mixer.linear_fc1.weight"))
        }
        "feed_forward.down_proj.weight" => {
            return plain(format!("{b}.mlp.mixer.linear_fc2.weight"))
        }
        _ => {}
    }
    for (hf, orig) in [
        (
            "feed_forward.gate_up_proj_adapter_list.",
            "mlp.mixer.linear_fc1_lora",
        ),
        ("self_attn.linear_q_adapter_list.", "sa.mixer.linear_q_lora"),
        ("self_attn.linear_k_adapter_list.", "sa.mixer.linear_k_lora"),
        ("self_attn.linear_v_adapter_list.", "sa.mixer.linear_v_lora"),
    ] {
        if let Some(t) = r.strip_prefix(hf) {
            let (slot, part) = t.split_once('.')?;
            let ab = match part {
                "0.weight" => "A",
                "1.weight" => "B",
                _ => return None,
            };
            return plain(format!("{b}.{orig}_{ab}_list.{slot}.weight"));
        }
    }
    None
}

/// Stored tensors of the original's state dict that the model does not read: adapter slots
/// `k` of block `b` with `k mod NMB != b` (the original keeps a slot for every hybrid layer in
/// every block), and buffers (`inv_freq`, Transformer Engine's `_extra_state`).
pub fn ignorable(c: &Zamba2Config, stored: &str) -> bool {
    if stored.ends_with(".inv_freq") || stored.ends_with("._extra_state") {
        return true;
    }
    let Some(rest) = stored.strip_prefix("decoder.blocks.") else {
        return false;
    };
    let Some((b, rest)) = rest.split_once('.') else {
        return false;
    };
    let Ok(b) = b.parse::<usize>() else {
        return false;
    };
    let n_hybrid = c.hybrid_layer_ids().len();
    let Some((_, tail)) = rest.split_once("_lora_") else {
        return false;
    };
    let slot = tail
        .strip_prefix("A_list.")
        .or_else(|| tail.strip_prefix("B_list."))
        .and_then(|t| t.strip_suffix(".weight"))
        .and_then(|t| t.parse::<usize>().ok());
    b < c.num_mem_blocks && slot.is_some_and(|k| k < n_hybrid && k % c.num_mem_blocks != b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original_config() -> Value {
        json!({
            "num_hidden_layers": 4, "hidden_size": 16, "state_size": 4, "conv_dimension": 4,
            "expansion_factor": 2, "num_attention_heads": 2, "mamba_headdim": 8,
            "layers_block_type": ["m", "g", "m", "g"], "add_bias_linear": false,
            "use_shared_block_lora": true, "lora_rank": 4, "gated_linear_unit": true,
            "kv_channels": 8, "ffn_hidden_size": 64, "vocab_size": 32, "num_query_groups": 2,
            "use_mem_rope": true, "num_mem_blocks": 2, "use_shared_attention_lora": true
        })
    }

    #[test]
    fn config_maps_with_the_originals_semantics() {
        let c = config_from_value(Path::new("config.json"), &original_config()).unwrap();
        assert_eq!(c.n_mamba_heads, 4);
        assert_eq!(c.mamba_d_state, 4);
        assert_eq!(c.intermediate_size, 64);
        assert_eq!(c.attention_head_dim, 16);
        assert_eq!(c.hybrid_layer_ids(), vec![1, 3]);
        assert!(c.tie_word_embeddings && c.use_shared_attention_adapter && c.use_mem_rope);
        assert!(!c.prompt_dt_clamp);
    }

    #[test]
    fn config_errors_name_the_originals_fields() {
        for (field, value) in [
            ("state_size", json!(null)),
            ("ffn_hidden_size", json!(48)),
            ("num_query_groups", json!(1)),
            ("kv_channels", json!(4)),
            ("mamba_headdim", json!(5)),
            ("use_shared_block_lora", json!(false)),
            ("add_bias_linear", json!(true)),
            ("lora_rank", json!("x")),
        ] {
            let mut v = original_config();
            v[field] = value;
            let e = config_from_value(Path::new("config.json"), &v).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let mut v = original_config();
        v["layers_block_type"] = json!(["m", "x", "m", "g"]);
        let e = config_from_value(Path::new("config.json"), &v).unwrap_err();
        assert_eq!(e.field, "layers_block_type[1]");
    }

    #[test]
    fn names_follow_spec_5_2() {
        let c = config_from_value(Path::new("config.json"), &original_config()).unwrap();
        let s = |n: &str| source(&c, n).map(|(s, r)| (s, r.map(|r| (r.offset, r.take, r.stride))));
        assert_eq!(
            s("model.embed_tokens.weight").unwrap().0,
            "embedding.weight"
        );
        assert_eq!(
            s("model.layers.0.mamba.in_proj.weight").unwrap().0,
            "decoder.layers.0.mixer.in_proj.0.weight"
        );
        assert_eq!(
            s("model.layers.3.mamba_decoder.input_layernorm.weight")
                .unwrap()
                .0,
            "decoder.layers.3.norm.weight"
        );
        assert_eq!(
            s("model.layers.3.linear.weight").unwrap().0,
            "decoder.block_map.3.weight"
        );
        assert_eq!(
            s("model.layers.3.shared_transformer.self_attn.k_proj.weight").unwrap(),
            (
                "decoder.blocks.1.sa.mixer.linear_qkv.weight".into(),
                Some((16, 16, 48))
            )
        );
        assert_eq!(
            s("model.layers.1.shared_transformer.feed_forward.gate_up_proj_adapter_list.0.1.weight").unwrap().0,
            "decoder.blocks.0.mlp.mixer.linear_fc1_lora_B_list.0.weight"
        );
        assert!(s("lm_head.weight").is_none());
        assert!(ignorable(
            &c,
            "decoder.blocks.0.sa.mixer.linear_q_lora_A_list.1.weight"
        ));
        assert!(!ignorable(
            &c,
            "decoder.blocks.0.sa.mixer.linear_q_lora_A_list.0.weight"
        ));
        assert!(!ignorable(
            &c,
            "decoder.blocks.0.sa.mixer.linear_q_lora_A_list.3.weight"
        ));
    }
}
