//! Checkpoint layouts: the tensor naming schemes a Zamba2 checkpoint directory may use, and how
//! each maps onto the IR's weight names, which are those of the Hugging Face "layers" layout
//! (spec §5.1).
//!
//! * [`Layout::Layers`]: `model.layers.{i}.*`, what transformers ≥ 4.48 writes (spec §5.1).
//! * [`Layout::Blocks`]: the transformers fork's `model.blocks.{b}.*`, `model.mamba_layers.{i}.*`,
//!   `model.linear_layers.{k}.*` (spec §5.3, [`blocks`]).
//! * [`Layout::LayersAndBlocks`]: both sets side by side in one repository (reported for the 7B);
//!   the layers set is used and the blocks set is only compared with it (issue 18).
//! * [`Layout::Standalone`]: Zyphra's original `MambaModel` state dict, `embedding.weight` and
//!   `decoder.*`, saved with `torch.save` (spec §5.2, [`standalone`]).
//!
//! The layout is recognised from the tensor names alone ([`detect`]).

pub mod blocks;
pub mod standalone;

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
    /// Zyphra's original standalone checkpoint (spec §5.2).
    Standalone,
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
            Layout::Standalone => {
                "standalone (Zyphra's original MambaModel state dict: embedding.weight, decoder.*; \
                 spec §5.2; no dt clamp)"
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
            Layout::Standalone => "standalone",
        })
    }
}

/// Rows `[g * stride + offset, g * stride + offset + take)` for `g` in `0..groups` of a 2-D
/// stored tensor, concatenated: how q, k and v are cut out of the original's fused
/// `linear_qkv`, whose rows are `[q_g | k_g | v_g]` per head `g` (spec §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSelect {
    pub groups: usize,
    pub stride: usize,
    pub offset: usize,
    pub take: usize,
}

impl RowSelect {
    /// Rows the stored tensor must have.
    pub fn stored_rows(&self) -> usize {
        self.groups * self.stride
    }

    /// The selected rows of `bytes`, a row-major tensor of [`Self::stored_rows`] rows of
    /// `row_bytes` bytes each (the caller checked the stored shape).
    pub fn gather(&self, bytes: &[u8], row_bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.groups * self.take * row_bytes);
        for g in 0..self.groups {
            let first = g * self.stride + self.offset;
            out.extend_from_slice(&bytes[first * row_bytes..(first + self.take) * row_bytes]);
        }
        out
    }
}

/// The layout of a checkpoint holding the tensors `names`: standalone for the original's
/// names (`embedding.weight`, `decoder.*`, and no `model.*`), blocks when some names carry a
/// blocks-layout prefix and none is under `model.layers.`, both when both kinds are present,
/// layers otherwise (including a checkpoint with neither, whose errors then name the layers
/// layout's tensors, as before issue 18).
pub fn detect<'a>(names: impl IntoIterator<Item = &'a str> + Clone) -> Layout {
    if standalone::is_standalone(names.clone()) {
        return Layout::Standalone;
    }
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
        assert_eq!(
            detect(["embedding.weight", "decoder.final_layernorm.weight"]),
            Layout::Standalone
        );
        assert_eq!(
            detect(["decoder.x", "model.layers.0.mamba.D"]),
            Layout::Layers
        );
    }

    #[test]
    fn row_select_de_interleaves() {
        // 2 heads of [q|k|v], 2 rows each, rows of 1 byte: q = rows 0,1,6,7.
        let rows: Vec<u8> = (0..12).collect();
        let q = RowSelect {
            groups: 2,
            stride: 6,
            offset: 0,
            take: 2,
        };
        let v = RowSelect { offset: 4, ..q };
        assert_eq!(q.gather(&rows, 1), [0, 1, 6, 7]);
        assert_eq!(v.gather(&rows, 1), [4, 5, 10, 11]);
    }
}
