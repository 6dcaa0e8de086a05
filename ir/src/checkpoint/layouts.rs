//! Which stored tensor each IR weight is read from, for every checkpoint layout
//! ([`crate::layout`], spec §5.1 and §5.3), and which stored tensors the model does not use.
//!
//! A child module of `checkpoint`, so it works on the reader's private tensor table directly.

use std::collections::BTreeSet;

use super::{ignorable, untied_block_fallback, Checkpoint, CheckpointError, Entry};
use crate::graph::Module;
use crate::layout::{blocks, detect, Layout};
use crate::tensor::{from_safetensors, to_f32};

impl Checkpoint {
    /// Recognises the layout from the stored names. With both layouts present, the blocks set
    /// is compared with the layers set, dropped, and one log line says so (issue 18).
    pub(super) fn settle_layout(&mut self) {
        self.layout = detect(self.tensors.keys().map(String::as_str));
        if self.layout != Layout::LayersAndBlocks {
            return;
        }
        let other: Vec<String> = self
            .tensors
            .keys()
            .filter(|n| blocks::is_blocks_name(n))
            .cloned()
            .collect();
        let (mut agree, mut unmatched) = (0usize, 0usize);
        let mut differ: Vec<(String, String)> = Vec::new();
        for name in &other {
            let twin = blocks::to_layers(&self.config, name)
                .filter(|t| self.tensors.contains_key(t) && !blocks::is_blocks_name(t));
            match twin {
                Some(t) if self.same_values(&self.tensors[name], &self.tensors[&t]) => agree += 1,
                Some(t) => differ.push((name.clone(), t)),
                None => unmatched += 1,
            }
        }
        for name in &other {
            self.tensors.remove(name);
        }
        let differ_note = match differ.first() {
            None => String::new(),
            Some((b, l)) => format!(
                ", {} differ from their layers copy (first: {b} vs {l}; the layers one is used)",
                differ.len()
            ),
        };
        tracing::warn!(
            "{}: both the layers and the blocks layout are present (spec §5.3); using the layers \
             layout ({} tensors) and ignoring the {} blocks-layout tensors: {agree} equal their \
             layers copy{differ_note}, {unmatched} have no layers counterpart",
            self.source.display(),
            self.tensors.len(),
            other.len()
        );
    }

    /// Whether two stored tensors hold the same values (any float dtypes, any unit-dimension
    /// placement: conv weights are `[CD, 1, K]` or `[CD, K, 1]`).
    fn same_values(&self, a: &Entry, b: &Entry) -> bool {
        let numel = |e: &Entry| e.shape.iter().product::<usize>();
        if numel(a) != numel(b) {
            return false;
        }
        let (da, db) = (self.bytes(a), self.bytes(b));
        if a.dtype == b.dtype {
            return da == db;
        }
        match (from_safetensors(a.dtype), from_safetensors(b.dtype)) {
            (Some(ta), Some(tb)) => to_f32(da, ta) == to_f32(db, tb),
            _ => false,
        }
    }

    fn bytes(&self, e: &Entry) -> &[u8] {
        &self.shards[e.shard].map[e.range.clone()]
    }

    /// The layout the tensors were read in.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The stored tensor IR weight `name` is read from, and its name as stored.
    pub(super) fn locate(&self, name: &str) -> Result<(String, &Entry), CheckpointError> {
        let stored = match self.layout {
            Layout::Layers | Layout::LayersAndBlocks => {
                if let Some(e) = self.tensors.get(name) {
                    return Ok((name.to_string(), e));
                }
                untied_block_fallback(&self.config, name)
            }
            Layout::Blocks => blocks::from_layers(&self.config, name),
        };
        let missing = || CheckpointError::Missing {
            path: self.source.clone(),
            tensor: match self.layout {
                Layout::Blocks => stored_label(name, self.layout, &self.config),
                _ => name.to_string(),
            },
        };
        let stored = stored.ok_or_else(missing)?;
        match self.tensors.get(&stored) {
            Some(e) => Ok((stored, e)),
            None => Err(missing()),
        }
    }

    /// The first stored tensor the model does not use and no loader rule explains, with the
    /// name hints are computed from (its layers-layout name).
    pub(super) fn first_unknown(&self, module: &Module) -> Option<(&str, &Entry, String)> {
        let c = &module.config;
        let used: BTreeSet<String> = match self.layout {
            Layout::Blocks => module
                .weights
                .keys()
                .filter_map(|n| blocks::from_layers(c, n))
                .collect(),
            _ => BTreeSet::new(),
        };
        self.tensors.iter().find_map(|(name, e)| {
            let canonical = match self.layout {
                Layout::Blocks => {
                    if used.contains(name) {
                        return None;
                    }
                    blocks::to_layers(c, name).unwrap_or_else(|| name.clone())
                }
                _ => name.clone(),
            };
            let known = module.weights.contains_key(&canonical) || ignorable(c, &canonical);
            (!known).then_some((name.as_str(), e, canonical))
        })
    }
}

/// How an error names an IR weight that is missing from a checkpoint of another layout: its
/// name in that layout, with the layers-layout name beside it.
fn stored_label(ir_name: &str, layout: Layout, c: &crate::config::Zamba2Config) -> String {
    match layout {
        Layout::Blocks => match blocks::from_layers(c, ir_name) {
            Some(b) if b != ir_name => format!("{b} (layers layout: {ir_name})"),
            _ => ir_name.to_string(),
        },
        _ => ir_name.to_string(),
    }
}
