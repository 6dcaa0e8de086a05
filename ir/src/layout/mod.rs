//! Checkpoint layouts: the tensor naming schemes a Zamba2 checkpoint directory may use, and how
//! each maps onto the IR's weight names, which are those of the Hugging Face "layers" layout
//! (spec §5.1).
//!
//! * [`Layout::Layers`]: `model.layers.{i}.*`, what transformers ≥ 4.48 writes (spec §5.1).
//! * [`Layout::Blocks`]: the transformers fork's `model.blocks.{b}.*`, `model.mamba_layers.{i}.*`,
//!   `model.linear_layers.{k}.*` (spec §5.3, [`blocks`]).
//! * [`Layout::LayersAndBlocks`]: both sets side by side in one repository (reported for the 7B);
//!   the layers set is used and the blocks set is only compared with it (issue 18).
//!
//! The layout is recognised from the tensor names alone ([`detect`]).

pub mod blocks;

use serde::{Deserialize, Serialize};

/// The naming scheme a checkpoint's tensors follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// The Hugging Face layout (spec §5.1).
    Layers,
    /// The transformers fork's layout (spec §5.3).
    Blocks,
    /// Both of the above; the layers set is used.
    LayersAndBlocks,
}

impl Layout {
    /// A short description for logs and `inspect`.
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Layers => "layers (model.layers.{i}.*, spec §5.1)",
            Layout::Blocks => {
                "blocks (model.blocks.{b}.*, model.mamba_layers.{i}.*, model.linear_layers.{k}.*, spec §5.3)"
            }
            Layout::LayersAndBlocks => {
                "layers and blocks side by side (the layers set was used, spec §5.1 and §5.3)"
            }
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Layers => "layers",
            Layout::Blocks => "blocks",
            Layout::LayersAndBlocks => "layers+blocks",
        })
    }
}

/// The layout of a checkpoint holding the tensors `names`: blocks when some names carry a
/// blocks-layout prefix and none is under `model.layers.`, both when both kinds are present,
/// layers otherwise (including a checkpoint with neither, whose errors then name the layers
/// layout's tensors, as before issue 18).
pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Layout {
    let (mut layers, mut blocks) = (false, false);
    for n in names {
        layers |= n.starts_with("model.layers.");
        blocks |= blocks::is_blocks_name(n);
    }
    match (layers, blocks) {
        (true, true) => Layout::LayersAndBlocks,
        (false, true) => Layout::Blocks,
        _ => Layout::Layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_by_names() {
        let l = ["model.embed_tokens.weight", "model.layers.0.mamba.D"];
        let b = ["model.embed_tokens.weight", "model.mamba_layers.0.mamba.D"];
        assert_eq!(detect(l), Layout::Layers);
        assert_eq!(detect(b), Layout::Blocks);
        assert_eq!(detect(l.into_iter().chain(b)), Layout::LayersAndBlocks);
        assert_eq!(detect(["x"]), Layout::Layers);
    }
}
