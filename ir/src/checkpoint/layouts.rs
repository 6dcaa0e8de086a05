//! Which stored tensor each IR weight is read from, for every checkpoint layout
//! ([`crate::layout`], spec §5.1 and §5.3), and which stored tensors the model does not use.
//!
//! A child module of `checkpoint`, so it works on the reader's private tensor table directly.

use std::borrow::Cow;
use std::collections::BTreeSet;

use super::{ignorable, untied_block_fallback, Checkpoint, CheckpointError, Entry};
use crate::graph::{DType, Module, WeightSpec};
use crate::layout::{blocks, detect, standalone, Layout, RowSelect};
use crate::tensor::{from_safetensors, to_f32};

/// Where one IR weight is stored.
pub(super) struct Located<'a> {
    /// The stored tensor's name (what errors name).
    pub name: String,
    pub entry: &'a Entry,
    /// The rows of the stored tensor that make the weight (the original's fused q/k/v).
    pub rows: Option<RowSelect>,
}

impl Located<'_> {
    /// The shape and dtype the stored tensor must have for IR weight `spec`.
    pub fn stored_spec<'s>(&self, spec: &'s WeightSpec) -> Cow<'s, WeightSpec> {
        match (self.rows, spec.shape.as_slice()) {
            (Some(r), [_, cols]) => Cow::Owned(WeightSpec {
                shape: vec![r.stored_rows(), *cols],
                dtype: spec.dtype,
            }),
            _ => Cow::Borrowed(spec),
        }
    }
}

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

    /// IR weight `name` as stored — its dtype and little-endian bytes, rows selected — after
    /// the same checks as [`Checkpoint::tensor_f32`] (`zamba2c convert` copies weights without
    /// rounding them).
    pub fn tensor_stored(
        &self,
        name: &str,
        spec: &WeightSpec,
    ) -> Result<(DType, Vec<u8>), CheckpointError> {
        self.tensor_f32(name, spec)?;
        let at = self.locate(name)?;
        let dtype = self.check_entry(&at.name, at.entry, &at.stored_spec(spec))?;
        Ok((dtype, self.read(&at, spec, dtype).into_owned()))
    }

    /// The dtype IR weight `name` is stored in (headers only), after the shape and dtype checks.
    pub fn stored_dtype(&self, name: &str, spec: &WeightSpec) -> Result<DType, CheckpointError> {
        let at = self.locate(name)?;
        self.check_entry(&at.name, at.entry, &at.stored_spec(spec))
    }

    /// The layout the tensors were read in.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The stored tensor IR weight `name` is read from.
    pub(super) fn locate(&self, name: &str) -> Result<Located<'_>, CheckpointError> {
        let (stored, rows) = match self.layout {
            Layout::Layers | Layout::LayersAndBlocks => {
                if let Some(entry) = self.tensors.get(name) {
                    return Ok(Located {
                        name: name.to_string(),
                        entry,
                        rows: None,
                    });
                }
                (untied_block_fallback(&self.config, name), None)
            }
            Layout::Blocks => (blocks::from_layers(&self.config, name), None),
            Layout::Standalone => match standalone::source(&self.config, name) {
                Some((s, rows)) => (Some(s), rows),
                None => (None, None),
            },
        };
        let missing = |stored: Option<&String>| CheckpointError::Missing {
            path: self.source.clone(),
            tensor: match (self.layout, stored) {
                (Layout::Blocks | Layout::Standalone, Some(s)) if s != name => {
                    format!("{s} (layers layout: {name})")
                }
                _ => name.to_string(),
            },
        };
        let stored = stored.ok_or_else(|| missing(None))?;
        match self.tensors.get(&stored) {
            Some(entry) => Ok(Located {
                name: stored,
                entry,
                rows,
            }),
            None => Err(missing(Some(&stored))),
        }
    }

    /// The bytes of the weight at `at` (its rows only, for a row selection), in `dtype`, the
    /// stored dtype; the caller checked the stored shape against `at.stored_spec(spec)`.
    pub(super) fn read(&self, at: &Located<'_>, spec: &WeightSpec, dtype: DType) -> Cow<'_, [u8]> {
        let bytes = &self.shards[at.entry.shard].map[at.entry.range.clone()];
        match (at.rows, spec.shape.as_slice()) {
            (Some(r), [_, cols]) => Cow::Owned(r.gather(bytes, cols * dtype.size())),
            _ => Cow::Borrowed(bytes),
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
            Layout::Standalone => module
                .weights
                .keys()
                .filter_map(|n| standalone::source(c, n).map(|(s, _)| s))
                .collect(),
            _ => BTreeSet::new(),
        };
        self.tensors.iter().find_map(|(name, e)| {
            let canonical = match self.layout {
                Layout::Standalone => {
                    let known = used.contains(name) || standalone::ignorable(c, name);
                    return (!known).then(|| (name.as_str(), e, name.clone()));
                }
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
