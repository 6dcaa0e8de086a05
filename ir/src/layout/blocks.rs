//! The "blocks" layout of Zyphra's transformers fork and early Hub revisions (spec §5.3):
//! `model.blocks.{b}.*` for the shared blocks, `model.mamba_layers.{i}.*` for every layer's
//! norm and mixer, `model.linear_layers.{k}.*` for the hybrid linears.
//!
//! Names are those of the fork's `Zamba2Model` (Zyphra/transformers_zamba2,
//! `modeling_zamba2.py`): the MLP keeps Megatron's `linear_fc1`/`linear_fc2` and
//! `linear_fc1_lora_{A,B}_list.{k}`, the attention LoRAs are `linear_{q,k,v}_lora_{A,B}_list.{k}`
//! (the fork's `Zamba2Attention`, and what the original `MambaModel.from_pretrained` renames
//! from), and everything else is spelled as in the layers layout. Each block holds an adapter
//! slot for every hybrid ordinal `k`; block `b` uses the slots with `k mod NMB == b` (§2.3).
//!
//! The mapping is a pure renaming both ways: [`to_layers`] gives the layers-layout (IR) name of
//! a stored blocks-layout tensor, [`from_layers`] the blocks-layout name an IR weight is read
//! from. For an untied config the IR reads a shared-block copy per hybrid layer
//! (`lower::shared_block_store`); the blocks layout has one copy per block, so every copy maps
//! to block `k mod NMB`, as the fork computes.

use crate::config::{LayerType, Zamba2Config};

/// Name prefixes only the blocks layout uses.
pub const PREFIXES: [&str; 3] = [
    "model.blocks.",
    "model.mamba_layers.",
    "model.linear_layers.",
];

/// Whether `name` belongs to the blocks layout (by its prefix).
pub fn is_blocks_name(name: &str) -> bool {
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Block-relative renames (blocks layout, layers layout); the rest of a block's names are equal.
const RENAMES: [(&str, &str); 2] = [
    (
        "feed_forward.linear_fc1.weight",
        "feed_forward.gate_up_proj.weight",
    ),
    (
        "feed_forward.linear_fc2.weight",
        "feed_forward.down_proj.weight",
    ),
];

/// LoRA list prefixes (blocks layout, layers layout); `.{k}.weight` becomes `.{k}.{0|1}.weight`.
const LORA_LISTS: [(&str, &str); 4] = [
    (
        "feed_forward.linear_fc1_lora",
        "feed_forward.gate_up_proj_adapter_list",
    ),
    ("self_attn.linear_q_lora", "self_attn.linear_q_adapter_list"),
    ("self_attn.linear_k_lora", "self_attn.linear_k_adapter_list"),
    ("self_attn.linear_v_lora", "self_attn.linear_v_adapter_list"),
];

/// Splits `"{n}.{rest}"` into the index and the rest.
fn index_and_rest(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    // Leading zeros or signs would make two spellings of one index.
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((n.parse().ok()?, rest))
}

/// The layers-layout name of a blocks-layout tensor, or `None` when `stored` is not a
/// blocks-layout name this config can place (a layer, block or ordinal out of range). Names
/// outside the three blocks prefixes are returned unchanged (`model.embed_tokens.weight`, ...).
pub fn to_layers(c: &Zamba2Config, stored: &str) -> Option<String> {
    let hybrid = c.hybrid_layer_ids();
    if let Some(rest) = stored.strip_prefix("model.mamba_layers.") {
        let (i, rest) = index_and_rest(rest)?;
        return Some(match c.layers_block_type.get(i)? {
            LayerType::Mamba => format!("model.layers.{i}.{rest}"),
            LayerType::Hybrid => format!("model.layers.{i}.mamba_decoder.{rest}"),
        });
    }
    if let Some(rest) = stored.strip_prefix("model.linear_layers.") {
        let (k, rest) = index_and_rest(rest)?;
        return Some(format!("model.layers.{}.linear.{rest}", hybrid.get(k)?));
    }
    let Some(rest) = stored.strip_prefix("model.blocks.") else {
        return Some(stored.to_string());
    };
    let (b, rest) = index_and_rest(rest)?;
    if b >= c.num_mem_blocks {
        return None;
    }
    let layer = hybrid.get(b)?;
    Some(format!(
        "model.layers.{layer}.shared_transformer.{}",
        block_to_layers(rest)
    ))
}

/// A block-relative blocks-layout name in the layers layout's spelling.
fn block_to_layers(rest: &str) -> String {
    if let Some((_, to)) = RENAMES.iter().find(|(from, _)| *from == rest) {
        return to.to_string();
    }
    for (from, to) in LORA_LISTS {
        let Some(tail) = rest.strip_prefix(from) else {
            continue;
        };
        let (which, tail) = if let Some(t) = tail.strip_prefix("_A_list.") {
            (0, t)
        } else if let Some(t) = tail.strip_prefix("_B_list.") {
            (1, t)
        } else {
            continue;
        };
        if let Some((k, "weight")) = index_and_rest(tail) {
            return format!("{to}.{k}.{which}.weight");
        }
    }
    rest.to_string()
}

/// The blocks-layout name from which the IR weight `ir_name` (a layers-layout name) is read.
/// Names the two layouts share (`model.embed_tokens.weight`, `model.final_layernorm.weight`,
/// `lm_head.weight`) come back unchanged; `None` for a layers name with no blocks counterpart.
pub fn from_layers(c: &Zamba2Config, ir_name: &str) -> Option<String> {
    let Some(rest) = ir_name.strip_prefix("model.layers.") else {
        return Some(ir_name.to_string());
    };
    let (i, rest) = index_and_rest(rest)?;
    let hybrid = c.hybrid_layer_ids();
    match c.layers_block_type.get(i)? {
        LayerType::Mamba => Some(format!("model.mamba_layers.{i}.{rest}")),
        LayerType::Hybrid => {
            let k = hybrid.iter().position(|&l| l == i)?;
            if let Some(r) = rest.strip_prefix("mamba_decoder.") {
                Some(format!("model.mamba_layers.{i}.{r}"))
            } else if let Some(r) = rest.strip_prefix("linear.") {
                Some(format!("model.linear_layers.{k}.{r}"))
            } else {
                let r = rest.strip_prefix("shared_transformer.")?;
                Some(format!(
                    "model.blocks.{}.{}",
                    k % c.num_mem_blocks,
                    block_from_layers(r)
                ))
            }
        }
    }
}

/// A block-relative layers-layout name in the blocks layout's spelling.
fn block_from_layers(rest: &str) -> String {
    if let Some((from, _)) = RENAMES.iter().find(|(_, to)| *to == rest) {
        return from.to_string();
    }
    for (from, to) in LORA_LISTS {
        let Some(tail) = rest.strip_prefix(to).and_then(|t| t.strip_prefix('.')) else {
            continue;
        };
        if let Some((k, which)) = index_and_rest(tail) {
            match which {
                "0.weight" => return format!("{from}_A_list.{k}.weight"),
                "1.weight" => return format!("{from}_B_list.{k}.weight"),
                _ => {}
            }
        }
    }
    rest.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(tied: bool) -> Zamba2Config {
        let v = serde_json::json!({
            "hidden_size": 16, "num_hidden_layers": 5, "vocab_size": 32,
            "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid", "hybrid"],
            "n_mamba_heads": 4, "num_attention_heads": 2, "num_mem_blocks": 2,
            "use_shared_attention_adapter": true, "tie_word_embeddings": tied,
        });
        Zamba2Config::from_value(Path::new("config.json"), &v).unwrap()
    }

    #[test]
    fn spec_5_3_mapping_both_ways() {
        let c = config(true);
        let cases = [
            ("model.mamba_layers.0.mamba.in_proj.weight", "model.layers.0.mamba.in_proj.weight"),
            ("model.mamba_layers.3.input_layernorm.weight", "model.layers.3.mamba_decoder.input_layernorm.weight"),
            ("model.linear_layers.2.weight", "model.layers.4.linear.weight"),
            ("model.blocks.1.feed_forward.linear_fc1.weight", "model.layers.3.shared_transformer.feed_forward.gate_up_proj.weight"),
            ("model.blocks.0.feed_forward.linear_fc2.weight", "model.layers.1.shared_transformer.feed_forward.down_proj.weight"),
            ("model.blocks.0.feed_forward.linear_fc1_lora_B_list.2.weight",
             "model.layers.1.shared_transformer.feed_forward.gate_up_proj_adapter_list.2.1.weight"),
            ("model.blocks.1.self_attn.linear_k_lora_A_list.1.weight",
             "model.layers.3.shared_transformer.self_attn.linear_k_adapter_list.1.0.weight"),
            ("model.blocks.1.self_attn.q_proj.weight", "model.layers.3.shared_transformer.self_attn.q_proj.weight"),
            ("model.embed_tokens.weight", "model.embed_tokens.weight"),
        ];
        for (blocks, layers) in cases {
            assert_eq!(to_layers(&c, blocks).as_deref(), Some(layers), "{blocks}");
            assert_eq!(from_layers(&c, layers).as_deref(), Some(blocks), "{layers}");
        }
        // Hybrid ordinal 2 (layer 4) reuses block 0; its own adapter slot is 2.
        assert_eq!(
            from_layers(&c, "model.layers.4.shared_transformer.feed_forward.gate_up_proj_adapter_list.2.0.weight").as_deref(),
            Some("model.blocks.0.feed_forward.linear_fc1_lora_A_list.2.weight")
        );
    }

    #[test]
    fn out_of_range_and_malformed_names_have_no_place() {
        let c = config(false);
        for bad in [
            "model.mamba_layers.5.mamba.D",
            "model.mamba_layers.x.mamba.D",
            "model.mamba_layers.01.mamba.D",
            "model.linear_layers.3.weight",
            "model.blocks.2.input_layernorm.weight",
        ] {
            assert_eq!(to_layers(&c, bad), None, "{bad}");
        }
        assert!(is_blocks_name("model.blocks.0.x") && !is_blocks_name("model.layers.0.x"));
    }
}
