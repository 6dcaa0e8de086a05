//! Test-side conversion of a Hugging Face "layers" checkpoint into the transformers fork's
//! "blocks" layout (spec §5.3), written from the layers side and independently of
//! `zamba2c_ir::layout::blocks`, which maps the other way. Shared by `ir/tests/checkpoint.rs`
//! and `tests/layouts.rs` (included with `#[path]`).

use zamba2c_ir::{LayerType, Zamba2Config};

/// What becomes of one layers-layout tensor in the blocks layout.
#[derive(Debug, PartialEq, Eq)]
pub enum ToBlocks {
    /// Stored under this blocks-layout name.
    Name(String),
    /// A later hybrid layer's copy of shared block `k mod NMB`, stored under this layers name:
    /// the blocks layout keeps one copy per block, so the copy is dropped (it must equal it).
    Copy { of: String },
}

/// The blocks-layout fate of layers-layout tensor `name` (every name the layers layout stores).
/// Two layers tensors may get the same blocks name (an untied model's copies of one adapter
/// slot): the caller keeps one and checks they are equal.
pub fn to_blocks(c: &Zamba2Config, name: &str) -> ToBlocks {
    let Some(rest) = name.strip_prefix("model.layers.") else {
        return ToBlocks::Name(name.to_string());
    };
    let (i, tail) = rest.split_once('.').expect("model.layers.{i}.…");
    let i: usize = i.parse().expect("layer index");
    if c.layers_block_type[i] == LayerType::Mamba {
        return ToBlocks::Name(format!("model.mamba_layers.{i}.{tail}"));
    }
    let hybrid = c.hybrid_layer_ids();
    let k = hybrid.iter().position(|&l| l == i).expect("hybrid layer");
    if let Some(t) = tail.strip_prefix("mamba_decoder.") {
        return ToBlocks::Name(format!("model.mamba_layers.{i}.{t}"));
    }
    if let Some(t) = tail.strip_prefix("linear.") {
        return ToBlocks::Name(format!("model.linear_layers.{k}.{t}"));
    }
    let t = tail
        .strip_prefix("shared_transformer.")
        .expect("a hybrid layer holds mamba_decoder, linear, shared_transformer");
    let b = k % c.num_mem_blocks;
    // A hybrid layer's own adapter slot is per invocation, not part of the shared copy: the
    // blocks layout keeps it in block b's list at index k (spec §2.3).
    let own_slot = adapter_slot(t) == Some(k);
    if k != b && !own_slot {
        return ToBlocks::Copy {
            of: format!("model.layers.{}.shared_transformer.{t}", hybrid[b]),
        };
    }
    ToBlocks::Name(format!("model.blocks.{b}.{}", rename_in_block(t)))
}

/// The slot index of an adapter-list tensor name inside a shared block.
fn adapter_slot(t: &str) -> Option<usize> {
    let (_, r) = t.split_once("_adapter_list.")?;
    r.split('.').next()?.parse().ok()
}

/// The fork's names inside a shared block (`Zamba2MLP`: Megatron's fc1/fc2 and LoRA lists;
/// `Zamba2Attention`: `linear_{q,k,v}_lora_{A,B}_list`).
fn rename_in_block(t: &str) -> String {
    match t {
        "feed_forward.gate_up_proj.weight" => return "feed_forward.linear_fc1.weight".into(),
        "feed_forward.down_proj.weight" => return "feed_forward.linear_fc2.weight".into(),
        _ => {}
    }
    for (hf, fork) in [
        (
            "feed_forward.gate_up_proj_adapter_list.",
            "feed_forward.linear_fc1_lora",
        ),
        (
            "self_attn.linear_q_adapter_list.",
            "self_attn.linear_q_lora",
        ),
        (
            "self_attn.linear_k_adapter_list.",
            "self_attn.linear_k_lora",
        ),
        (
            "self_attn.linear_v_adapter_list.",
            "self_attn.linear_v_lora",
        ),
    ] {
        if let Some(r) = t.strip_prefix(hf) {
            let parts: Vec<&str> = r.split('.').collect();
            let ab = match parts[1] {
                "0" => "A",
                "1" => "B",
                other => panic!("adapter part {other}"),
            };
            assert_eq!(parts[2], "weight");
            return format!("{fork}_{ab}_list.{}.weight", parts[0]);
        }
    }
    t.to_string()
}
