//! Helpers shared by codegen's integration tests: the tiny Zamba2 config they all start from.

use serde_json::json;
use zamba2c_ir::Zamba2Config;

/// A 4-layer config (mamba, hybrid, mamba, hybrid; 2 shared blocks, adapters) with `extra`'s
/// fields overriding the defaults.
pub fn config(extra: serde_json::Value) -> Zamba2Config {
    let mut v = json!({
        "vocab_size": 67, "hidden_size": 24, "num_hidden_layers": 4,
        "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid"],
        "mamba_d_state": 12, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_ngroups": 1,
        "n_mamba_heads": 6, "intermediate_size": 40, "num_attention_heads": 4,
        "num_key_value_heads": 4, "num_mem_blocks": 2, "adapter_rank": 3,
        "use_mem_rope": false, "use_shared_attention_adapter": false,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "time_step_min": 0.001
    });
    for (k, x) in extra.as_object().expect("object") {
        v[k] = x.clone();
    }
    Zamba2Config::from_value(std::path::Path::new("(test)"), &v).expect("valid config")
}
