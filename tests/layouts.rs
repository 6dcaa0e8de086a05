//! Issue 18: every fixture checkpoint (tests/fixtures/models, made by scripts/make_fixtures.py)
//! converted at run time into the transformers fork's "blocks" layout, and into a directory
//! holding both layouts in different shard sets (spec §5.3), compiles to a plan whose logits —
//! prompt path and decode path, f32, CPU — equal those of the original fixture's plan within
//! 1e-5; `inspect` records the layout; a blocks checkpoint with a missing or misshapen tensor
//! fails with one line naming it.
//!
//! The conversion is `tests/common/blocks_layout.rs`, written from the layers side and
//! independently of `zamba2c_ir::layout::blocks` (which maps the other way).

mod common;

#[path = "common/blocks_layout.rs"]
mod blocks_layout;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use blocks_layout::{to_blocks, ToBlocks};
use common::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use zamba2c_ir::Zamba2Config;

/// The bar for a layout conversion: the same weights must give the same logits.
const TOL: f64 = 1e-5;

/// dtype, shape, bytes.
type Tensor = (Dtype, Vec<usize>, Vec<u8>);

/// Every tensor of a fixture checkpoint, single-file or sharded.
fn read_checkpoint(dir: &Path) -> BTreeMap<String, Tensor> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".safetensors") || name == "reference.safetensors" {
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (n, t) in st.tensors() {
            out.insert(n, (t.dtype(), t.shape().to_vec(), t.data().to_vec()));
        }
    }
    out
}

fn write_st(path: &Path, tensors: &BTreeMap<String, Tensor>) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// The blocks-layout form of a layers checkpoint, or `None` when the layers checkpoint holds
/// shared-block copies that differ from their source block (an untied model's independent
/// copies, which the blocks layout, one copy per block, cannot express).
fn convert(
    c: &Zamba2Config,
    layers: &BTreeMap<String, Tensor>,
) -> Option<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (n, t) in layers {
        match to_blocks(c, n) {
            ToBlocks::Name(b) => {
                if out.get(&b).is_some_and(|prev| prev != t) {
                    return None;
                }
                out.insert(b, t.clone());
            }
            ToBlocks::Copy { of } => {
                if layers.get(&of) != Some(t) {
                    return None;
                }
            }
        }
    }
    Some(out)
}

fn copy_config(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "generation_config.json"] {
        if src.join(f).is_file() {
            std::fs::copy(src.join(f), dst.join(f)).unwrap();
        }
    }
}

/// A blocks-only checkpoint directory.
fn write_blocks(model: &Path, dst: &Path, blocks: &BTreeMap<String, Tensor>) {
    copy_config(model, dst);
    write_st(&dst.join("model.safetensors"), blocks);
}

/// Both layouts in different shard sets, as reported for the 7B: shard 1 holds the complete
/// layers checkpoint, shard 2 the complete blocks checkpoint (its shared names too); the
/// index maps the layers set and the blocks-only names.
fn write_both(
    model: &Path,
    dst: &Path,
    layers: &BTreeMap<String, Tensor>,
    blocks: &BTreeMap<String, Tensor>,
) {
    copy_config(model, dst);
    let (a, b) = (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    );
    write_st(&dst.join(a), layers);
    write_st(&dst.join(b), blocks);
    let mut map = serde_json::Map::new();
    for n in layers.keys() {
        map.insert(n.clone(), a.into());
    }
    for n in blocks.keys().filter(|n| !layers.contains_key(*n)) {
        map.insert(n.clone(), b.into());
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dst.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Compiles `dir` (f32) and returns (plan path, prompt logits, decode-path logits).
fn logits_of(dir: &Path, tmp: &Path, tokens: &str, k: &str) -> (PathBuf, Vec<f64>, Vec<f64>) {
    let plan = tmp.join(format!(
        "{}.plan",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let out = tmp.join("logits.safetensors");
    let (p, o) = (plan.to_str().unwrap(), out.to_str().unwrap());
    zamba2c_ok(&["compile", dir.to_str().unwrap(), "-o", p]);
    zamba2c_ok(&["logits", p, "--tokens", tokens, "--out", o]);
    let prompt = read_tensor(&out, "logits").data;
    zamba2c_ok(&[
        "logits",
        p,
        "--tokens",
        tokens,
        "--out",
        o,
        "--decode-from",
        k,
    ]);
    let decode = read_tensor(&out, "logits").data;
    (plan, prompt, decode)
}

fn inspect_layout(plan: &Path) -> serde_json::Value {
    let out = zamba2c_ok(&["inspect", plan.to_str().unwrap(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["manifest"]["checkpoint_layout"].clone()
}

#[test]
fn every_fixture_in_the_blocks_and_both_layouts_gives_the_same_logits() {
    let mut blocks_done = 0;
    for model in fixture_models() {
        let name = model.file_name().unwrap().to_string_lossy().to_string();
        let tmp = tempfile::tempdir().unwrap();
        let c = Zamba2Config::from_file(&model.join("config.json")).unwrap();
        let layers = read_checkpoint(&model);
        let reference = model.join("reference.safetensors");
        let tokens = ids_arg(&read_tensor(&reference, "tokens").data);
        let k = (read_tensor(&reference, "decode_from").data[0] as usize).to_string();
        let (plan, want_prompt, want_decode) = logits_of(&model, tmp.path(), &tokens, &k);
        assert_eq!(inspect_layout(&plan), "layers", "{name}");

        let blocks = convert(&c, &layers);
        let mut dirs = Vec::new();
        if let Some(blocks) = &blocks {
            let d = tmp.path().join(format!("{name}-blocks"));
            write_blocks(&model, &d, blocks);
            dirs.push((d, "blocks"));
            blocks_done += 1;
        } else {
            // Only the fixture with independent untied copies cannot be expressed.
            assert_eq!(name, "untied_independent_blocks", "{name}: no blocks form");
        }
        // The blocks half of a both-layouts directory may disagree with the layers half (it
        // is then made from the first copy of each block); the layers half is used.
        let blocks_half = blocks.unwrap_or_else(|| {
            layers
                .iter()
                .filter_map(|(n, t)| match to_blocks(&c, n) {
                    ToBlocks::Name(b) => Some((b, t.clone())),
                    ToBlocks::Copy { .. } => None,
                })
                .collect()
        });
        let d = tmp.path().join(format!("{name}-both"));
        write_both(&model, &d, &layers, &blocks_half);
        dirs.push((d, "layers_and_blocks"));

        for (dir, layout) in dirs {
            let (plan, prompt, decode) = logits_of(&dir, tmp.path(), &tokens, &k);
            assert_eq!(inspect_layout(&plan), layout, "{name}");
            let text = zamba2c_ok(&["inspect", plan.to_str().unwrap()]);
            assert!(text.contains("checkpoint layout: "), "{name}: {text}");
            let (ep, ed) = (
                rel_err(&prompt, &want_prompt),
                rel_err(&decode, &want_decode),
            );
            eprintln!("{name} [{layout}]: prompt {ep:.1e}, decode {ed:.1e}");
            assert!(ep <= TOL && ed <= TOL, "{name} [{layout}]: {ep:e} {ed:e}");
        }
    }
    assert!(blocks_done >= 10, "only {blocks_done} fixtures converted");
}

/// One line on stderr, exit status 1, naming `what`.
fn assert_one_line_error(args: &[&str], what: &str) -> String {
    let out = zamba2c(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(what), "does not name {what}: {err}");
    err
}

#[test]
fn a_blocks_checkpoint_with_a_missing_or_misshapen_tensor_is_refused_in_one_line() {
    let model = fixtures().join("models").join("two_blocks_adapter_rope");
    let c = Zamba2Config::from_file(&model.join("config.json")).unwrap();
    let blocks = convert(&c, &read_checkpoint(&model)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan");
    let p = plan.to_str().unwrap();

    for victim in [
        "model.mamba_layers.4.mamba.in_proj.weight",
        "model.blocks.1.self_attn.linear_k_lora_B_list.3.weight",
    ] {
        let mut st = blocks.clone();
        st.remove(victim).unwrap();
        let d = tmp.path().join("missing");
        write_blocks(&model, &d, &st);
        let err = assert_one_line_error(&["compile", d.to_str().unwrap(), "-o", p], victim);
        assert!(
            err.contains("missing") && err.contains("model.safetensors"),
            "{err}"
        );
        assert!(!plan.exists());
    }

    let victim = "model.blocks.0.feed_forward.linear_fc2.weight";
    let mut st = blocks.clone();
    let t = st.get_mut(victim).unwrap();
    t.1.reverse();
    let d = tmp.path().join("misshapen");
    write_blocks(&model, &d, &st);
    let err = assert_one_line_error(&["compile", d.to_str().unwrap(), "-o", p], victim);
    assert!(err.contains("shape"), "{err}");
    assert!(!plan.exists());
}

#[test]
fn convert_writes_a_blocks_checkpoint_in_the_layers_layout() {
    let model = fixtures().join("models").join("two_blocks_adapter_rope");
    let c = Zamba2Config::from_file(&model.join("config.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let blocks_dir = tmp.path().join("blocks");
    write_blocks(
        &model,
        &blocks_dir,
        &convert(&c, &read_checkpoint(&model)).unwrap(),
    );
    let hf = tmp.path().join("hf");
    zamba2c_ok(&[
        "convert",
        blocks_dir.to_str().unwrap(),
        "-o",
        hf.to_str().unwrap(),
    ]);
    let converted = read_checkpoint(&hf);
    assert!(
        converted.keys().all(|n| !blocks_layout_name(n)),
        "blocks names left"
    );
    let reference = model.join("reference.safetensors");
    let tokens = ids_arg(&read_tensor(&reference, "tokens").data);
    let k = (read_tensor(&reference, "decode_from").data[0] as usize).to_string();
    let (_, want_p, want_d) = logits_of(&model, tmp.path(), &tokens, &k);
    let (plan, p, d) = logits_of(&hf, tmp.path(), &tokens, &k);
    assert_eq!(inspect_layout(&plan), "layers");
    assert!(rel_err(&p, &want_p) <= TOL && rel_err(&d, &want_d) <= TOL);
}

fn blocks_layout_name(n: &str) -> bool {
    zamba2c_ir::layout::blocks::is_blocks_name(n)
}
