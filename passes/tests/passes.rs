//! One test per pass: the CPU interpreter's logits before and after the pipeline up to that
//! pass agree within 1e-5 relative, on several tiny configurations, for prompt (from empty and
//! from cached state) and decode; and the pass did rewrite something.

mod common;

use common::{check_passes_keep_logits, count, upto};
use zamba2c_ir::OpKind;

#[test]
fn fuse_lora_keeps_logits() {
    for (name, m) in check_passes_keep_logits(upto("fuse-lora")) {
        // MLP adapters always exist; attention adapters add three per invocation.
        assert!(count(&m, OpKind::LinearLora) > 0, "{name}: nothing fused");
        assert_eq!(count(&m, OpKind::Add) % 2, 0, "{name}");
    }
}

#[test]
fn specialise_shared_concat_keeps_logits() {
    for (name, m) in check_passes_keep_logits(upto("specialise-shared-concat")) {
        assert_eq!(count(&m, OpKind::Concat), 0, "{name}: a concat is left");
        assert!(count(&m, OpKind::SplitNormLinear) > 0, "{name}");
        // Tied configurations reuse a block, so its embedding half is shared; untied ones
        // have one block per hybrid layer (lower::shared_block_store), so nothing to share.
        let shared = count(&m, OpKind::EmbedHalfProj) > 0;
        assert_eq!(shared, m.config.tie_word_embeddings, "{name}");
    }
}

#[test]
fn fuse_norm_linear_keeps_logits() {
    for (name, m) in check_passes_keep_logits(upto("fuse-norm-linear")) {
        assert_eq!(count(&m, OpKind::RmsNorm), 0, "{name}: an RMSNorm is left");
        assert!(count(&m, OpKind::NormLinear) > 0, "{name}");
    }
}

#[test]
fn fuse_mlp_keeps_logits() {
    for (name, m) in check_passes_keep_logits(upto("fuse-mlp")) {
        assert_eq!(count(&m, OpKind::Gelu), 0, "{name}: an MLP is left");
        assert!(count(&m, OpKind::GatedMlp) > 0, "{name}");
    }
}

#[test]
fn fuse_mixer_keeps_logits() {
    for (name, m) in check_passes_keep_logits(upto("fuse-mixer")) {
        assert_eq!(count(&m, OpKind::SsmScan), 0, "{name}: a mixer is left");
        let layers = m.config.num_hidden_layers;
        assert_eq!(count(&m, OpKind::MambaMixer), 2 * layers, "{name}");
    }
}

#[test]
fn eliminate_dead_nodes_keeps_logits() {
    check_passes_keep_logits(upto("eliminate-dead-nodes"));
}

#[test]
fn pipeline_records_and_dumps_every_pass() {
    let (_, c) = common::configs().remove(0);
    let dir = std::env::temp_dir().join(format!("z2c-dump-{}", std::process::id()));
    let mut m = zamba2c_ir::lower(&c, zamba2c_ir::DType::F32);
    let recs = zamba2c_passes::run_pipeline(&mut m, 1, Some(&dir)).expect("pipeline");
    assert_eq!(recs.len(), zamba2c_passes::PASSES.len() + 1);
    assert_eq!(recs[0].name, "lower");
    assert!(recs.last().map(|r| r.decode_nodes) < Some(recs[0].decode_nodes));
    for (i, r) in recs.iter().enumerate() {
        for ext in ["prompt.txt", "decode.txt", "prompt.dot", "decode.dot"] {
            let p = dir.join(format!("{i:02}-{}.{ext}", r.name));
            assert!(p.is_file(), "{} missing", p.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut m0 = zamba2c_ir::lower(&c, zamba2c_ir::DType::F32);
    let recs0 = zamba2c_passes::run_pipeline(&mut m0, 0, None).expect("O0");
    assert_eq!(recs0.len(), 1);
}

/// The identity a kernel for `SplitNormLinear` fed the shared embedding half relies on (its
/// decomposition does not use that operand): `W·RMSNorm_2H([h,e]) =
/// (W[:, ..H]·(g_h⊙h) + rms(e)·E) / rms([h,e])`, with `E` the `EmbedHalfProj` output.
#[test]
fn embedding_half_identity_holds() {
    use zamba2c_runtime::cpu::{eval_node, CpuWeights, InferenceState};
    use zamba2c_runtime::Tensor;
    let (_, c) = common::configs().remove(1); // one block used three times, no adapters
    let m = common::compiled(&c, upto("specialise-shared-concat"));
    let g = &m.decode;
    let node = |k: OpKind| {
        g.g.node_weights()
            .find(|n| n.op.kind() == k)
            .expect("fused node")
            .op
            .clone()
    };
    let (half, split) = (node(OpKind::EmbedHalfProj), node(OpKind::SplitNormLinear));
    let zamba2c_ir::Op::SplitNormLinear {
        norm,
        projs,
        hidden,
    } = &split
    else {
        unreachable!()
    };
    let w = CpuWeights::dummy(&m, 3);
    let mut st = InferenceState::new(&m.states, 1, 8);
    let vals = |seed: u32| -> Vec<f32> {
        (0..*hidden)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 250.0 - 2.0
            })
            .collect()
    };
    let (h, e) = (vals(1), vals(99));
    let t = |v: &Vec<f32>| Tensor::new(vec![1, 1, *hidden], v.clone());
    let eh = eval_node(&half, &[&t(&e)], &w, &mut st).expect("embed half");
    let want = eval_node(&split, &[&t(&h), &t(&e), &eh], &w, &mut st).expect("split");
    let ss = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
    let eps = norm.eps as f64;
    let rms = ((ss(&h) + ss(&e)) / (2 * hidden) as f64 + eps).sqrt();
    let rms_e = (ss(&e) / *hidden as f64 + eps).sqrt();
    let gw = w.get(&norm.weight).expect("norm").data.clone();
    let mut got = Vec::new();
    let mut off = 0;
    for p in projs {
        let wt = w.get(&p.weight).expect("weight");
        let rows = wt.shape[0];
        for r in 0..rows {
            let row = &wt.data[r * 2 * hidden..(r + 1) * 2 * hidden];
            let hpart: f64 = (0..*hidden)
                .map(|j| row[j] as f64 * gw[j] as f64 * h[j] as f64)
                .sum();
            got.push(((hpart + rms_e * eh.data[off + r] as f64) / rms) as f32);
        }
        off += rows;
    }
    let scale = want.data.iter().fold(0f32, |a, &b| a.max(b.abs()));
    let diff = got
        .iter()
        .zip(&want.data)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(diff / scale < 1e-5, "relative error {:e}", diff / scale);
}

#[test]
fn fuse_residual_keeps_logits() {
    for (name, m) in check_passes_keep_logits(upto("fuse-residual")) {
        // Every layer ends in a residual add; each one moves into its producer's kernel.
        assert_eq!(count(&m, OpKind::Add), 0, "{name}: a residual add is left");
        let layers = m.config.num_hidden_layers;
        assert!(count(&m, OpKind::Residual) >= 2 * layers, "{name}");
    }
}
