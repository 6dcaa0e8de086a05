//! Checkpoint reading on tiny synthetic Hugging Face Zamba2 checkpoints.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};
use zamba2c_ir::layout::Layout;
use zamba2c_ir::tensor::{from_f32, to_f32};
use zamba2c_ir::{lower, Checkpoint, CheckpointError, DType, Module, WeightStore, Zamba2Config};

/// 5 layers, hybrids at 1, 3, 4 with two shared blocks: block 0 under layer 1 (k = 0, 2),
/// block 1 under layer 3 (k = 1); layer 4 reuses block 0.
fn config_json(tied: bool) -> Value {
    json!({
        "model_type": "zamba2",
        "vocab_size": 32,
        "hidden_size": 16,
        "num_hidden_layers": 5,
        "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid", "hybrid"],
        "mamba_d_state": 4,
        "mamba_d_conv": 4,
        "mamba_expand": 2,
        "mamba_ngroups": 1,
        "n_mamba_heads": 4,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "num_mem_blocks": 2,
        "use_shared_attention_adapter": true,
        "adapter_rank": 4,
        "tie_word_embeddings": tied,
    })
}

/// One stored tensor: dtype, shape, little-endian bytes.
type StoredTensor = (Dtype, Vec<usize>, Vec<u8>);
type Stored = BTreeMap<String, StoredTensor>;

/// Values that bf16, f16 and f32 all hold exactly: multiples of 1/16 in [-1, 1].
fn values(name: &str, n: usize) -> Vec<f32> {
    let h = name
        .bytes()
        .fold(7usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
    (0..n).map(|i| ((h + i) % 33) as f32 / 16.0 - 1.0).collect()
}

fn encode(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => from_f32(v, DType::F32),
        Dtype::BF16 => from_f32(v, DType::BF16),
        Dtype::F16 => from_f32(v, DType::F16),
        _ => unreachable!(),
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    module: Module,
}

impl Fixture {
    fn new(tied: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_json(tied);
        fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
        let config = Zamba2Config::from_file(&dir.path().join("config.json")).unwrap();
        let module = lower(&config, DType::BF16);
        Fixture { dir, module }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Every IR weight as HF stores it: conv1d weights `[CD, 1, K]`, in `dtype`.
    fn stored(&self, dtype: Dtype) -> Stored {
        self.module
            .weights
            .iter()
            .map(|(name, spec)| {
                let mut shape = spec.shape.clone();
                if name.ends_with("conv1d.weight") {
                    shape = vec![shape[0], 1, shape[1]];
                }
                let v = values(name, spec.numel());
                (name.clone(), (dtype, shape, encode(&v, dtype)))
            })
            .collect()
    }
    fn open(&self) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::open(self.path())
    }
}

fn write_st(path: &Path, tensors: &Stored) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// A raw safetensors file from a header JSON and data bytes (for hostile files).
fn raw_st(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

fn err_of<T: std::fmt::Debug>(r: Result<T, CheckpointError>) -> String {
    let msg = r.unwrap_err().to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    msg
}

fn assert_names(msg: &str, file: &Path, what: &str) {
    assert!(
        msg.contains(&file.display().to_string()),
        "message does not name {}: {msg}",
        file.display()
    );
    assert!(msg.contains(what), "message does not name {what}: {msg}");
}

fn assert_values(ck: &Checkpoint, module: &Module) {
    for (name, spec) in &module.weights {
        assert_eq!(
            ck.tensor_f32(name, spec).unwrap(),
            values(name, spec.numel()),
            "{name}"
        );
    }
}

#[test]
fn happy_path_single_file_in_every_float_dtype() {
    for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32] {
        let fx = Fixture::new(true);
        write_st(&fx.file("model.safetensors"), &fx.stored(dtype));
        let ck = fx.open().unwrap();
        assert_eq!(ck.config().hidden_size, 16);
        assert_eq!(ck.config().hybrid_layer_ids(), vec![1, 3, 4]);
        ck.check(&fx.module).unwrap();
        assert_values(&ck, &fx.module);
    }
}

#[test]
fn bf16_and_f16_convert_exactly() {
    // Values spread over the whole finite range, subnormals and both signs included.
    let fx = Fixture::new(true);
    let mut st = fx.stored(Dtype::BF16);
    let name = "model.layers.0.mamba.out_proj.weight";
    let spec = fx.module.weights[name].clone();
    let bf: Vec<bf16> = (0..spec.numel())
        .map(|i| bf16::from_bits(((i * 997 % 0x7f80) | (i % 2) << 15) as u16))
        .collect();
    let bytes: Vec<u8> = bf.iter().flat_map(|v| v.to_le_bytes()).collect();
    st.get_mut(name).unwrap().2 = bytes;
    let name16 = "model.layers.2.mamba.in_proj.weight";
    let spec16 = fx.module.weights[name16].clone();
    let hf: Vec<f16> = (0..spec16.numel())
        .map(|i| f16::from_bits(((i * 613 % 0x7c00) | (i % 2) << 15) as u16))
        .collect();
    let e = st.get_mut(name16).unwrap();
    e.0 = Dtype::F16;
    e.2 = hf.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_st(&fx.file("model.safetensors"), &st);
    let ck = fx.open().unwrap();
    ck.check(&fx.module).unwrap();
    let got = ck.tensor_f32(name, &spec).unwrap();
    assert!(got.iter().zip(&bf).all(|(g, w)| *g == w.to_f32()));
    let got = ck.tensor_f32(name16, &spec16).unwrap();
    assert!(got.iter().zip(&hf).all(|(g, w)| *g == w.to_f32()));
}

#[test]
fn sharded_index() {
    let fx = Fixture::new(true);
    let st = fx.stored(Dtype::BF16);
    let mut shards = [Stored::new(), Stored::new()];
    let mut map = serde_json::Map::new();
    for (i, (n, t)) in st.into_iter().enumerate() {
        let s = i % 2;
        map.insert(
            n.clone(),
            json!(format!("model-0000{}-of-00002.safetensors", s + 1)),
        );
        shards[s].insert(n, t);
    }
    for (s, t) in shards.iter().enumerate() {
        write_st(
            &fx.file(&format!("model-0000{}-of-00002.safetensors", s + 1)),
            t,
        );
    }
    let index = json!({"metadata": {"total_size": 0}, "weight_map": map});
    fs::write(fx.file("model.safetensors.index.json"), index.to_string()).unwrap();
    let ck = fx.open().unwrap();
    ck.check(&fx.module).unwrap();
    assert_values(&ck, &fx.module);

    // A missing tensor in a sharded checkpoint names the index.
    let index_path = fx.file("model.safetensors.index.json");
    let victim = "model.layers.2.mamba.D";
    let mut map2 = map.clone();
    let shard = map2.remove(victim).unwrap();
    let shard = shard.as_str().unwrap();
    let s = if shard.contains("00001") { 0 } else { 1 };
    let mut t = shards[s].clone();
    t.remove(victim);
    write_st(&fx.file(shard), &t);
    fs::write(&index_path, json!({"weight_map": map2}).to_string()).unwrap();
    let msg = err_of(fx.open().unwrap().check(&fx.module));
    assert_names(&msg, &index_path, victim);
    assert!(msg.contains("missing"), "{msg}");

    // The index maps a tensor to a shard that does not hold it.
    fs::write(&index_path, json!({"weight_map": map}).to_string()).unwrap();
    let msg = err_of(fx.open());
    assert_names(&msg, &index_path, victim);
    assert!(msg.contains(shard), "{msg}");
}

#[test]
fn index_errors() {
    let fx = Fixture::new(true);
    let index = fx.file("model.safetensors.index.json");
    write_st(&fx.file("a.safetensors"), &fx.stored(Dtype::BF16));

    fs::write(
        &index,
        r#"{"weight_map": {"model.embed_tokens.weight": "nope.safetensors"}"#,
    )
    .unwrap();
    let msg = err_of(fx.open());
    assert_names(&msg, &index, "malformed JSON");

    fs::write(&index, r#"{"metadata": {}}"#).unwrap();
    let msg = err_of(fx.open());
    assert_names(&msg, &index, "weight_map");

    fs::write(
        &index,
        r#"{"weight_map": {"model.embed_tokens.weight": "nope.safetensors"}}"#,
    )
    .unwrap();
    let msg = err_of(fx.open());
    assert_names(&msg, &index, "nope.safetensors");
    assert!(msg.contains("does not exist"), "{msg}");

    fs::write(
        &index,
        r#"{"weight_map": {"model.embed_tokens.weight": "../../etc/passwd"}}"#,
    )
    .unwrap();
    let msg = err_of(fx.open());
    assert_names(&msg, &index, "../../etc/passwd");

    fs::write(
        &index,
        r#"{"weight_map": {"model.embed_tokens.weight": 3}}"#,
    )
    .unwrap();
    let msg = err_of(fx.open());
    assert_names(&msg, &index, "weight_map.model.embed_tokens.weight");

    // A shard that is itself broken is named by its path.
    fs::write(fx.file("b.safetensors"), b"xy").unwrap();
    fs::write(
        &index,
        r#"{"weight_map": {"model.embed_tokens.weight": "b.safetensors"}}"#,
    )
    .unwrap();
    let msg = err_of(fx.open());
    assert_names(&msg, &fx.file("b.safetensors"), "truncated");
}

#[test]
fn tied_and_untied_lm_head() {
    // Tied: the IR has no lm_head; a stored one is ignored.
    let fx = Fixture::new(true);
    assert!(!fx.module.weights.contains_key("lm_head.weight"));
    let mut st = fx.stored(Dtype::BF16);
    st.insert(
        "lm_head.weight".into(),
        (
            Dtype::BF16,
            vec![32, 16],
            encode(&values("x", 512), Dtype::BF16),
        ),
    );
    write_st(&fx.file("model.safetensors"), &st);
    fx.open().unwrap().check(&fx.module).unwrap();

    // Untied: lm_head is an IR weight; required.
    let fx = Fixture::new(false);
    assert!(fx.module.weights.contains_key("lm_head.weight"));
    let st = fx.stored(Dtype::BF16);
    write_st(&fx.file("model.safetensors"), &st);
    let ck = fx.open().unwrap();
    ck.check(&fx.module).unwrap();
    assert_values(&ck, &fx.module);
    let mut st2 = st.clone();
    st2.remove("lm_head.weight");
    write_st(&fx.file("model.safetensors"), &st2);
    let msg = err_of(fx.open().unwrap().check(&fx.module));
    assert_names(&msg, &fx.file("model.safetensors"), "lm_head.weight");
}

#[test]
fn conv_layouts() {
    let name = "model.layers.1.mamba_decoder.mamba.conv1d.weight";
    for layout in ["hf", "mlx", "ir", "bad"] {
        let fx = Fixture::new(true);
        let mut st = fx.stored(Dtype::BF16);
        let spec = fx.module.weights[name].clone();
        let (cd, k) = (spec.shape[0], spec.shape[1]);
        st.get_mut(name).unwrap().1 = match layout {
            "hf" => vec![cd, 1, k],
            "mlx" => vec![cd, k, 1],
            "ir" => vec![cd, k],
            _ => vec![1, cd, k],
        };
        write_st(&fx.file("model.safetensors"), &st);
        let ck = fx.open().unwrap();
        if layout == "bad" {
            let msg = err_of(ck.check(&fx.module));
            assert_names(&msg, &fx.file("model.safetensors"), name);
            assert!(msg.contains(&format!("[1, {cd}, {k}]")), "{msg}");
            err_of(ck.tensor_f32(name, &spec));
        } else {
            ck.check(&fx.module).unwrap();
            assert_eq!(ck.tensor_f32(name, &spec).unwrap(), values(name, cd * k));
        }
    }
}

#[test]
fn ignorable_tensors_are_accepted() {
    let fx = Fixture::new(true);
    let mut st = fx.stored(Dtype::BF16);
    let extra: Vec<(String, StoredTensor)> = st
        .iter()
        .filter_map(|(n, t)| {
            // Duplicates of block 0 under layer 4 (hybrid ordinal 2 >= NMB).
            n.strip_prefix("model.layers.1.shared_transformer.")
                .map(|r| (format!("model.layers.4.shared_transformer.{r}"), t.clone()))
        })
        .collect();
    assert!(!extra.is_empty());
    st.extend(extra);
    let one = |shape: Vec<usize>| {
        let n = shape.iter().product();
        (Dtype::BF16, shape, encode(&values("e", n), Dtype::BF16))
    };
    // Adapter slots of the other block: k = 1 under block 0 (layer 1), k = 0, 2 under block 1.
    for (layer, k) in [(1, 1), (3, 0), (3, 2)] {
        let p = format!("model.layers.{layer}.shared_transformer");
        st.insert(
            format!("{p}.feed_forward.gate_up_proj_adapter_list.{k}.0.weight"),
            one(vec![4, 16]),
        );
        st.insert(
            format!("{p}.feed_forward.gate_up_proj_adapter_list.{k}.1.weight"),
            one(vec![64, 4]),
        );
        st.insert(
            format!("{p}.self_attn.linear_q_adapter_list.{k}.0.weight"),
            one(vec![4, 32]),
        );
    }
    st.insert(
        "model.layers.1.shared_transformer.self_attn.rotary_emb.inv_freq".into(),
        (Dtype::F32, vec![8], encode(&[1.0; 8], Dtype::F32)),
    );
    write_st(&fx.file("model.safetensors"), &st);
    let ck = fx.open().unwrap();
    ck.check(&fx.module).unwrap();
    assert_values(&ck, &fx.module);
}

#[test]
fn missing_extra_misshaped_wrong_dtype() {
    let fx = Fixture::new(true);
    let file = fx.file("model.safetensors");
    let base = fx.stored(Dtype::BF16);

    let victim = "model.layers.3.mamba_decoder.mamba.in_proj.weight";
    let mut st = base.clone();
    st.remove(victim);
    write_st(&file, &st);
    let msg = err_of(fx.open().unwrap().check(&fx.module));
    assert_names(&msg, &file, victim);
    assert!(msg.contains("missing"), "{msg}");

    for unknown in [
        "model.layers.0.mamba.bogus.weight",
        // the source layer of block 0 is 1: a shared_transformer under mamba layer 2 is unknown.
        "model.layers.2.shared_transformer.input_layernorm.weight",
        // slot 0 under block 0 is used, slot 5 does not exist (only 3 hybrid layers).
        "model.layers.1.shared_transformer.feed_forward.gate_up_proj_adapter_list.5.0.weight",
    ] {
        let mut st = base.clone();
        st.insert(unknown.into(), (Dtype::BF16, vec![2], vec![0; 4]));
        write_st(&file, &st);
        let msg = err_of(fx.open().unwrap().check(&fx.module));
        assert_names(&msg, &file, unknown);
        assert!(msg.contains("extra unknown tensor"), "{msg}");
    }

    let mut st = base.clone();
    st.get_mut(victim).unwrap().1 = vec![10, 4];
    st.get_mut(victim).unwrap().2 = vec![0; 80];
    write_st(&file, &st);
    let ck = fx.open().unwrap();
    let msg = err_of(ck.check(&fx.module));
    let want = format!("{:?}", fx.module.weights[victim].shape);
    assert_names(&msg, &file, victim);
    assert!(
        msg.contains("shape [10, 4], expected") && msg.contains(&want),
        "{msg}"
    );
    err_of(ck.tensor_f32(victim, &fx.module.weights[victim]));

    for dtype in [Dtype::I64, Dtype::U8] {
        let mut st = base.clone();
        let name = "model.final_layernorm.weight";
        let e = st.get_mut(name).unwrap();
        e.0 = dtype;
        e.2 = vec![0; 16 * dtype.bitsize() / 8];
        write_st(&file, &st);
        let ck = fx.open().unwrap();
        let msg = err_of(ck.check(&fx.module));
        assert_names(&msg, &file, name);
        assert!(msg.contains(&format!("{dtype:?}")), "{msg}");
        err_of(ck.tensor_f32(name, &fx.module.weights[name]));
    }
}

#[test]
fn non_finite_weights_are_refused() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let fx = Fixture::new(true);
        let file = fx.file("model.safetensors");
        let mut st = fx.stored(Dtype::F32);
        let name = "model.layers.0.mamba.A_log";
        let mut v = values(name, 4);
        v[2] = bad;
        st.get_mut(name).unwrap().2 = encode(&v, Dtype::F32);
        write_st(&file, &st);
        let ck = fx.open().unwrap();
        ck.check(&fx.module).unwrap(); // headers only
        let msg = err_of(ck.tensor_f32(name, &fx.module.weights[name]));
        assert_names(&msg, &file, name);
        assert!(msg.contains("element 2"), "{msg}");
        let out = fx.file("plan.safetensors");
        let msg = err_of(ck.write_plan_weights(&fx.module, &out, &mut |_, _| {}));
        assert_names(&msg, &file, name);
        assert!(!out.exists() && !fx.file("plan.safetensors.partial").exists());
    }
}

#[test]
fn hostile_safetensors_files() {
    let fx = Fixture::new(true);
    let file = fx.file("model.safetensors");
    let good = {
        write_st(&file, &fx.stored(Dtype::BF16));
        fs::read(&file).unwrap()
    };
    let f32x4 = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("shorter than the length field", vec![1, 2, 3]),
        ("truncated data", good[..good.len() - 5].to_vec()),
        ("truncated header", good[..100].to_vec()),
        ("absurd header length", {
            let mut b = (1u64 << 60).to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            b
        }),
        ("header length past the end", {
            let mut b = 1000u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            b
        }),
        ("header length u64::MAX", u64::MAX.to_le_bytes().to_vec()),
        (
            "offsets out of range",
            raw_st(
                r#"{"a":{"dtype":"F32","shape":[250],"data_offsets":[0,1000]}}"#,
                &[0; 16],
            ),
        ),
        (
            "offsets inconsistent with the shape",
            raw_st(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                &[0; 16],
            ),
        ),
        (
            "overlapping data",
            raw_st(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
                &[0; 24],
            ),
        ),
        (
            "gap between tensors",
            raw_st(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#,
                &[0; 24],
            ),
        ),
        (
            "shape overflow",
            raw_st(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#,
                &[0; 16],
            ),
        ),
        ("trailing garbage", {
            let mut b = raw_st(f32x4, &[0; 16]);
            b.extend_from_slice(&[0; 7]);
            b
        }),
        ("header not JSON", raw_st("{not json at all", &[])),
        ("header not UTF-8", {
            let mut b = 4u64.to_le_bytes().to_vec();
            b.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
            b
        }),
    ];
    for (what, bytes) in cases {
        fs::write(&file, &bytes).unwrap();
        let r = fx.open();
        assert!(r.is_err(), "{what}: accepted");
        let msg = err_of(r);
        assert_names(&msg, &file, "");
        eprintln!("{what}: {msg}");
    }
    // The well-formed minimal file is accepted at open time (then refused by check).
    fs::write(&file, raw_st(f32x4, &[0; 16])).unwrap();
    let msg = err_of(fx.open().unwrap().check(&fx.module));
    assert_names(&msg, &file, "missing");
}

#[test]
fn the_safetensors_crate_validates_hostile_headers() {
    // What Checkpoint relies on beyond its own length checks.
    let past_end = {
        let mut b = 1000u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        b
    };
    assert!(SafeTensors::deserialize(&past_end).is_err());
    let absurd = (1u64 << 60).to_le_bytes();
    assert!(SafeTensors::deserialize(&absurd).is_err());
    let oob = raw_st(
        r#"{"a":{"dtype":"F32","shape":[250],"data_offsets":[0,1000]}}"#,
        &[0; 16],
    );
    assert!(SafeTensors::deserialize(&oob).is_err());
    let overlap = raw_st(
        r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
        &[0; 24],
    );
    assert!(SafeTensors::deserialize(&overlap).is_err());
}

#[test]
fn config_errors() {
    let fx = Fixture::new(true);
    write_st(&fx.file("model.safetensors"), &fx.stored(Dtype::BF16));
    let cfg = fx.file("config.json");

    fs::write(&cfg, "{\"hidden_size\": 16,").unwrap();
    let msg = err_of(fx.open());
    assert_names(&msg, &cfg, "malformed JSON");

    let mut v = config_json(true);
    v["hidden_size"] = json!("sixteen");
    fs::write(&cfg, v.to_string()).unwrap();
    let msg = err_of(fx.open());
    assert_names(&msg, &cfg, "hidden_size");

    fs::remove_file(&cfg).unwrap();
    let msg = err_of(fx.open());
    assert_names(&msg, &cfg, "");
    assert!(matches!(fx.open(), Err(CheckpointError::Config(_))));

    // No weights at all.
    let fx = Fixture::new(true);
    let msg = err_of(fx.open());
    assert_names(&msg, fx.path(), "model.safetensors");
}

#[test]
fn write_plan_weights_round_trips() {
    for (store, plan) in [
        (Dtype::BF16, DType::BF16),
        (Dtype::F32, DType::BF16),
        (Dtype::BF16, DType::F16),
        (Dtype::F16, DType::F32),
    ] {
        let fx = Fixture::new(false);
        let config = fx.module.config.clone();
        let module = lower(&config, plan);
        write_st(&fx.file("model.safetensors"), &fx.stored(store));
        let ck = fx.open().unwrap();
        let out = fx.file("plan.safetensors");
        let mut calls = Vec::new();
        ck.write_plan_weights(&module, &out, &mut |d, t| calls.push((d, t)))
            .unwrap();
        let total = module.weights.len();
        assert_eq!(calls.len(), total);
        assert_eq!(calls.last(), Some(&(total, total)));
        let ws = WeightStore::open_file(&out, &module).unwrap();
        for (name, spec) in &module.weights {
            let want = to_f32(
                &from_f32(&ck.tensor_f32(name, spec).unwrap(), spec.dtype),
                spec.dtype,
            );
            assert_eq!(ws.f32(name).unwrap(), want, "{name}");
            assert_eq!(ws.raw(name).unwrap().0, spec.dtype, "{name}");
        }
    }
}

#[test]
fn write_plan_weights_refuses_f16_overflow_and_bad_checkpoints() {
    let fx = Fixture::new(true);
    let file = fx.file("model.safetensors");
    let module = lower(&fx.module.config, DType::F16);
    let mut st = fx.stored(Dtype::F32);
    let name = "model.embed_tokens.weight";
    let mut v = values(name, 32 * 16);
    v[7] = 1e5;
    st.get_mut(name).unwrap().2 = encode(&v, Dtype::F32);
    write_st(&file, &st);
    let ck = fx.open().unwrap();
    let out = fx.file("plan.safetensors");
    let msg = err_of(ck.write_plan_weights(&module, &out, &mut |_, _| {}));
    assert_names(&msg, &file, name);
    assert!(
        msg.contains("overflows") && msg.contains("element 7"),
        "{msg}"
    );
    assert!(!out.exists());

    // A check failure is reported before anything is written.
    st.remove("model.final_layernorm.weight");
    write_st(&file, &st);
    let msg = err_of(
        fx.open()
            .unwrap()
            .write_plan_weights(&module, &out, &mut |_, _| {}),
    );
    assert_names(&msg, &file, "model.final_layernorm.weight");
    assert!(!out.exists());
}

#[path = "../../tests/common/blocks_layout.rs"]
mod blocks_layout;

/// The blocks-layout form of a stored layers-layout checkpoint (spec §5.3), and for each IR
/// weight the layers-layout tensor whose values it must read.
fn to_blocks_stored(fx: &Fixture, st: &Stored) -> Stored {
    use blocks_layout::{to_blocks, ToBlocks};
    let mut out = Stored::new();
    for (n, t) in st {
        if let ToBlocks::Name(b) = to_blocks(&fx.module.config, n) {
            if let Some(prev) = out.get(&b) {
                assert_eq!(prev, t, "{n} and another copy of {b} differ");
            }
            out.insert(b, t.clone());
        }
    }
    out
}

/// The layers-layout tensor an IR weight's values come from once duplicate copies are dropped.
fn source_name(fx: &Fixture, name: &str) -> String {
    use blocks_layout::{to_blocks, ToBlocks};
    match to_blocks(&fx.module.config, name) {
        ToBlocks::Copy { of } => of,
        ToBlocks::Name(_) => name.to_string(),
    }
}

#[test]
fn blocks_layout_reads_the_same_weights() {
    for tied in [true, false] {
        let fx = Fixture::new(tied);
        let st = to_blocks_stored(&fx, &fx.stored(Dtype::BF16));
        assert!(st.contains_key("model.blocks.1.feed_forward.linear_fc1_lora_B_list.1.weight"));
        assert!(st.contains_key("model.blocks.0.self_attn.linear_v_lora_A_list.2.weight"));
        assert!(st.contains_key("model.linear_layers.2.weight"));
        assert!(!st.keys().any(|n| n.starts_with("model.layers.")));
        write_st(&fx.file("model.safetensors"), &st);
        let ck = fx.open().unwrap();
        assert_eq!(ck.layout(), Layout::Blocks);
        ck.check(&fx.module).unwrap();
        for (name, spec) in &fx.module.weights {
            let src = source_name(&fx, name);
            assert_eq!(
                ck.tensor_f32(name, spec).unwrap(),
                values(&src, spec.numel()),
                "{name} (from {src})"
            );
        }
    }
}

#[test]
fn blocks_layout_missing_misshapen_and_unknown_tensors_are_named() {
    let fx = Fixture::new(true);
    let file = fx.file("model.safetensors");
    let base = to_blocks_stored(&fx, &fx.stored(Dtype::BF16));

    for victim in [
        "model.mamba_layers.3.mamba.D",
        "model.blocks.1.feed_forward.linear_fc2.weight",
        "model.blocks.0.self_attn.linear_q_lora_B_list.2.weight",
        "model.linear_layers.0.weight",
    ] {
        let mut st = base.clone();
        assert!(st.remove(victim).is_some(), "{victim}");
        write_st(&file, &st);
        let msg = err_of(fx.open().unwrap().check(&fx.module));
        assert_names(&msg, &file, victim);
        assert!(msg.contains("missing"), "{msg}");
    }

    let victim = "model.blocks.0.feed_forward.linear_fc1.weight";
    let mut st = base.clone();
    let e = st.get_mut(victim).unwrap();
    let want = e.1.clone();
    e.1 = vec![want[1], want[0]];
    write_st(&file, &st);
    let ck = fx.open().unwrap();
    let msg = err_of(ck.check(&fx.module));
    assert_names(&msg, &file, victim);
    assert!(msg.contains(&format!("expected {want:?}")), "{msg}");
    let ir = "model.layers.1.shared_transformer.feed_forward.gate_up_proj.weight";
    assert_names(
        &err_of(ck.tensor_f32(ir, &fx.module.weights[ir])),
        &file,
        victim,
    );

    for unknown in [
        "model.blocks.0.feed_forward.bogus.weight",
        "model.blocks.2.input_layernorm.weight",
        "model.mamba_layers.9.mamba.D",
        "model.bogus.weight",
    ] {
        let mut st = base.clone();
        st.insert(unknown.into(), (Dtype::BF16, vec![2], vec![0; 4]));
        write_st(&file, &st);
        let msg = err_of(fx.open().unwrap().check(&fx.module));
        assert_names(&msg, &file, unknown);
        assert!(msg.contains("extra unknown tensor"), "{msg}");
    }

    // Adapter slots of the other block are kept by the fork in every block: ignored, as in the
    // layers layout (spec §5.1 rule 3).
    let mut st = base.clone();
    st.insert(
        "model.blocks.1.feed_forward.linear_fc1_lora_A_list.0.weight".into(),
        (Dtype::BF16, vec![4, 16], vec![0; 128]),
    );
    write_st(&file, &st);
    fx.open().unwrap().check(&fx.module).unwrap();
}

#[test]
fn both_layouts_use_the_layers_set() {
    let fx = Fixture::new(true);
    let layers = fx.stored(Dtype::BF16);
    let mut blocks = to_blocks_stored(&fx, &layers);
    // One blocks tensor disagrees with its layers twin: the layers one is used.
    let twin = "model.mamba_layers.0.mamba.D";
    blocks.get_mut(twin).unwrap().2 = encode(&[0.5; 4], Dtype::BF16);
    // One blocks tensor exists only there: ignored with the rest of the blocks set.
    blocks.insert(
        "model.blocks.0.feed_forward.bogus.weight".into(),
        (Dtype::BF16, vec![2], vec![0; 4]),
    );
    let mut both = layers.clone();
    both.extend(blocks);
    write_st(&fx.file("model.safetensors"), &both);
    let ck = fx.open().unwrap();
    assert_eq!(ck.layout(), Layout::LayersAndBlocks);
    ck.check(&fx.module).unwrap();
    assert_values(&ck, &fx.module);

    // A tensor of neither layout is still refused.
    both.insert(
        "model.bogus.weight".into(),
        (Dtype::BF16, vec![2], vec![0; 4]),
    );
    write_st(&fx.file("model.safetensors"), &both);
    let msg = err_of(fx.open().unwrap().check(&fx.module));
    assert_names(&msg, &fx.file("model.safetensors"), "model.bogus.weight");
}
