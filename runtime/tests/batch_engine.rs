//! The batched engine on the CPU (issue 12): every fixture model (tests/fixtures/models, real
//! transformers checkpoints) compiled as `zamba2c compile` does, then sequences of different
//! lengths that join and leave a batch mid-run must each give the logits and greedy tokens
//! they give alone on the one-sequence engine; plus the slots API's rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use zamba2c_ir::{lower, Checkpoint, DType, Plan, PlanInfo, PlanWriter, WeightsSource};
use zamba2c_runtime::batch::{BatchEngine, Batcher, SingleSlot};
use zamba2c_runtime::cpu::{CpuBatchEngine, CpuEngine, InferenceState};
use zamba2c_runtime::generate::sampling::SamplingParams;
use zamba2c_runtime::{Engine, RuntimeError};

/// The bar for a sequence in a batch against the same sequence alone (f32).
const TOL: f32 = 1e-5;

fn fixture_models() -> Vec<PathBuf> {
    let dir = match std::env::var_os("ZAMBA2C_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures"),
    }
    .join("models");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixture models under {}", dir.display());
    v
}

/// The checkpoint `model` compiled into a plan the way `zamba2c compile` does (lowering, the
/// -O1 pass pipeline, the checkpoint's weights), without kernels.
fn compile(model: &Path, out: &Path) -> Plan {
    let ck = Checkpoint::open(model).unwrap();
    let mut module = lower(ck.config(), DType::F32);
    zamba2c_passes::run_pipeline(&mut module, 1, None).unwrap();
    let mut w = PlanWriter::create(out).unwrap();
    w.write("module.json", module.to_json().as_bytes()).unwrap();
    let path = w.file_path("weights.safetensors").unwrap();
    ck.write_plan_weights(&module, &path, &mut |_, _| {})
        .unwrap();
    w.finish(PlanInfo {
        created_by: "test".into(),
        dtype: DType::F32,
        weights: WeightsSource::File("weights.safetensors".into()),
        tokenizer: None,
        opt_level: 1,
        passes: vec![],
        arch: None,
    })
    .unwrap();
    Plan::open(out).unwrap()
}

/// Reproducible token ids below `vocab`.
fn prompt(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// One sequence's greedy run: the logits every token was chosen from, and the tokens.
#[derive(Debug, Clone, Default)]
struct Run {
    logits: Vec<Vec<f32>>,
    tokens: Vec<u32>,
}

/// `prompt` alone on the one-sequence engine: prefill, then `n` greedy tokens.
fn alone(e: &mut CpuEngine, prompt: &[u32], n: usize) -> Run {
    e.reset();
    let v = e.vocab_size();
    let all = e.prefill(prompt).unwrap();
    let mut row = all[all.len() - v..].to_vec();
    let mut run = Run::default();
    loop {
        let t = zamba2c_runtime::generate::sampling::argmax(&row);
        run.logits.push(row);
        run.tokens.push(t);
        if run.tokens.len() == n {
            return run;
        }
        row = e.decode_step(t).unwrap();
    }
}

/// The sequences `(prompt, n)` through a batcher of `slots` slots: each joins when a slot
/// is free, in order, and leaves after its `n` tokens.
fn batched(
    engine: Box<dyn BatchEngine>,
    chunk: usize,
    seqs: &[(Vec<u32>, usize)],
) -> (Vec<Run>, usize) {
    let mut b = Batcher::new(engine, chunk);
    let mut runs = vec![Run::default(); seqs.len()];
    let mut in_slot: BTreeMap<usize, usize> = BTreeMap::new();
    let (mut next, mut steps, mut most_active) = (0, 0, 0);
    while next < seqs.len() || !in_slot.is_empty() {
        while next < seqs.len() && b.has_free_slot() {
            let slot = b
                .add(seqs[next].0.clone(), SamplingParams::default(), 0)
                .unwrap();
            in_slot.insert(slot, next);
            next += 1;
        }
        most_active = most_active.max(b.active());
        for s in b.step().unwrap() {
            let i = in_slot[&s.slot];
            runs[i].logits.push(b.logits(s.slot).unwrap().to_vec());
            runs[i].tokens.push(s.token);
            assert_eq!(s.first, runs[i].tokens.len() == 1);
            if runs[i].tokens.len() == seqs[i].1 {
                assert!(b.release(s.slot));
                in_slot.remove(&s.slot);
            }
        }
        steps += 1;
        assert!(steps < 1000, "the batch does not finish");
    }
    (runs, most_active)
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |d, (x, y)| d.max((x - y).abs())) / m
}

/// Seven sequences, prompts of 1 to 13 tokens, 2 to 9 generated tokens each.
fn sequences(vocab: usize) -> Vec<(Vec<u32>, usize)> {
    [(5, 6), (1, 9), (13, 2), (3, 4), (8, 7), (2, 3), (11, 5)]
        .iter()
        .enumerate()
        .map(|(i, &(len, n))| (prompt(i as u64 + 1, len, vocab), n))
        .collect()
}

#[test]
fn every_fixture_batched_equals_alone() {
    let tmp = tempfile::tempdir().unwrap();
    for model in fixture_models() {
        let name = model.file_name().unwrap().to_string_lossy().to_string();
        let plan = compile(&model, &tmp.path().join(&name));
        let vocab = plan.module.config.vocab_size;
        let seqs = sequences(vocab);
        let mut one = CpuEngine::new(&plan).unwrap();
        let want: Vec<Run> = seqs.iter().map(|(p, n)| alone(&mut one, p, *n)).collect();
        // Chunks of 4 prompt tokens per step (prompts span steps while others decode), and
        // whole prompts per step (no chunk boundary inside a prompt: bit-identical).
        for (chunk, exact) in [(4, false), (64, true)] {
            let engine = CpuBatchEngine::new(&plan, 3, 64).unwrap();
            let (got, most) = batched(Box::new(engine), chunk, &seqs);
            assert_eq!(most, 3, "{name}: the batch was never full");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.tokens, w.tokens,
                    "{name} chunk {chunk}: sequence {i} tokens"
                );
                for (k, (a, b)) in g.logits.iter().zip(&w.logits).enumerate() {
                    if exact {
                        assert_eq!(a, b, "{name}: sequence {i} token {k}: logits differ");
                    } else {
                        let r = max_rel(a, b);
                        assert!(
                            r <= TOL,
                            "{name} chunk {chunk}: seq {i} token {k}: rel {r:e}"
                        );
                    }
                }
            }
        }
    }
}

/// A tiny model with dummy weights (no checkpoint needed) for the API's rules.
fn tiny_plan(dir: &Path) -> Plan {
    let v = serde_json::json!({
        "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 3,
        "layers_block_type": ["mamba", "hybrid", "mamba"],
        "mamba_d_state": 4, "mamba_d_conv": 3, "mamba_expand": 2, "n_mamba_heads": 4,
        "intermediate_size": 24, "num_attention_heads": 2, "num_key_value_heads": 2,
        "num_mem_blocks": 1, "adapter_rank": 2, "max_position_embeddings": 16,
    });
    let c = zamba2c_ir::Zamba2Config::from_value(Path::new("config.json"), &v).unwrap();
    let module = lower(&c, DType::F32);
    let target = dir.join("tiny");
    let mut w = PlanWriter::create(&target).unwrap();
    w.write("module.json", module.to_json().as_bytes()).unwrap();
    w.finish(PlanInfo {
        created_by: "test".into(),
        dtype: DType::F32,
        weights: WeightsSource::Dummy { seed: 3 },
        tokenizer: None,
        opt_level: 0,
        passes: vec![],
        arch: None,
    })
    .unwrap();
    Plan::open(&target).unwrap()
}

#[test]
fn slots_are_admitted_released_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tiny_plan(tmp.path());
    let mut b = Batcher::new(Box::new(CpuBatchEngine::new(&plan, 2, 16).unwrap()), 8);
    let greedy = SamplingParams::default();
    // Bad prompts are refused and take no slot.
    let err = b.add(vec![], greedy, 0).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    let err = b.add(vec![1, 40], greedy, 0).unwrap_err().to_string();
    assert!(
        err.contains("token id 40") && err.contains("40 tokens"),
        "{err}"
    );
    let err = b.add(vec![1; 17], greedy, 0).unwrap_err().to_string();
    assert!(err.contains("17 tokens") && err.contains("16"), "{err}");
    let bad = SamplingParams {
        top_p: 0.0,
        ..greedy
    };
    assert!(b.add(vec![1], bad, 0).is_err());
    assert_eq!(b.active(), 0);
    // Two slots: a third sequence is refused until one leaves.
    assert_eq!(b.add(vec![1, 2, 3], greedy, 0).unwrap(), 0);
    assert_eq!(b.add(vec![4, 5], greedy, 0).unwrap(), 1);
    assert!(matches!(
        b.add(vec![6], greedy, 0),
        Err(RuntimeError::NoFreeSlot { max_batch: 2 })
    ));
    assert!(b.logits(0).is_none());
    let first = b.step().unwrap();
    assert_eq!(first.iter().map(|s| s.slot).collect::<Vec<_>>(), [0, 1]);
    assert!(first.iter().all(|s| s.first));
    assert_eq!((b.position(0), b.position(1)), (3, 2));
    let second = b.step().unwrap();
    assert!(second.iter().all(|s| !s.first));
    assert_eq!((b.position(0), b.position(1)), (4, 3));
    assert!(b.release(1));
    assert!(!b.release(1));
    assert!(!b.release(7));
    // The freed slot is reused with a fresh state: the same prompt gives the same first token.
    assert_eq!(b.add(vec![4, 5], greedy, 0).unwrap(), 1);
    let again = b.step().unwrap();
    let slot1: Vec<_> = again.iter().filter(|s| s.slot == 1).collect();
    assert_eq!(slot1.len(), 1);
    assert_eq!(slot1[0].token, first[1].token);
    assert!(slot1[0].first);
    assert_eq!(b.position(1), 2);

    // A sequence at the end of its context is not decoded; the others go on.
    let mut b = Batcher::new(Box::new(CpuBatchEngine::new(&plan, 2, 4).unwrap()), 8);
    b.add(vec![1, 2, 3, 4], greedy, 0).unwrap();
    b.add(vec![1], greedy, 0).unwrap();
    b.step().unwrap();
    let s = b.step().unwrap();
    assert_eq!(s.iter().map(|s| s.slot).collect::<Vec<_>>(), [1]);
    assert_eq!(b.position(0), 4);
    b.release(1);
    assert!(!b.has_work());

    // A sequence keeps the logits it last sampled from after it stops taking part in steps (its
    // context is full) while another one decodes on.
    let mut b = Batcher::new(Box::new(CpuBatchEngine::new(&plan, 2, 4).unwrap()), 8);
    b.add(vec![1, 2, 3], greedy, 0).unwrap();
    b.add(vec![1], greedy, 0).unwrap();
    b.step().unwrap();
    let both = b.step().unwrap();
    assert_eq!(both.iter().map(|s| s.slot).collect::<Vec<_>>(), [0, 1]);
    let kept = b.logits(0).unwrap().to_vec();
    let one = b.step().unwrap();
    assert_eq!(one.iter().map(|s| s.slot).collect::<Vec<_>>(), [1]);
    assert_eq!(b.logits(0).unwrap(), &kept[..]);
    assert_ne!(b.logits(1).unwrap(), &kept[..]);
}

/// With `set_keep_logits(false)` a step of greedy sequences asks the engine for tokens only
/// (`BatchEngine::decode_greedy`) and gives the tokens the logits path gives; a sequence that
/// needs its logits (a repetition penalty) keeps the whole step on the logits path.
#[test]
fn tokens_only_steps_give_the_tokens_of_the_logits_path() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tiny_plan(tmp.path());
    let greedy = SamplingParams::default();
    let penalised = SamplingParams {
        repetition_penalty: 1.5,
        ..greedy
    };
    for mixed in [false, true] {
        let mut tokens = Vec::new();
        for keep in [true, false] {
            let mut b = Batcher::new(Box::new(CpuBatchEngine::new(&plan, 3, 16).unwrap()), 8);
            b.set_keep_logits(keep);
            b.add(vec![1, 2, 3], greedy, 0).unwrap();
            b.add(vec![7], greedy, 0).unwrap();
            let third = if mixed { penalised } else { greedy };
            b.add(vec![5, 9, 2, 2], third, 0).unwrap();
            let mut got = Vec::new();
            for step in 0..6 {
                let sampled = b.step().unwrap();
                assert_eq!(sampled.len(), 3);
                got.extend(sampled.iter().map(|s| (s.slot, s.token)));
                // Decode steps without kept logits leave none to read, unless the step needed
                // them (the penalised sequence).
                let readable = (0..3).all(|s| b.logits(s).is_some());
                assert_eq!(
                    readable,
                    keep || mixed || step == 0,
                    "keep {keep}, step {step}"
                );
                assert!((0..3).all(|s| b.is_prefilled(s)));
            }
            tokens.push(got);
        }
        assert_eq!(tokens[0], tokens[1], "mixed {mixed}");
    }
}

#[test]
fn engine_slots_refuse_bad_calls_without_changing_state() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tiny_plan(tmp.path());
    let mut e = CpuBatchEngine::new(&plan, 2, 16).unwrap();
    let a = e.prefill(0, &[1, 2]).unwrap();
    assert_eq!(a.len(), 40);
    assert!(matches!(
        e.prefill(2, &[1]),
        Err(RuntimeError::NoSuchSlot {
            slot: 2,
            max_batch: 2
        })
    ));
    let err = e.decode(&[(0, 3), (0, 4)]).unwrap_err().to_string();
    assert!(err.contains("twice"), "{err}");
    let err = e.decode(&[(0, 3), (1, 99)]).unwrap_err().to_string();
    assert!(err.contains("token id 99"), "{err}");
    assert_eq!((e.position(0), e.position(1)), (2, 0));
    // Slot 1 at position 14 and slot 0 at 2: a prompt of 3 is refused for slot 1 only.
    e.prefill(1, &[5; 14]).unwrap();
    let err = e.prefill(1, &[1, 2, 3]).unwrap_err().to_string();
    assert!(err.contains("maximum context of 16"), "{err}");
    assert_eq!(e.position(1), 14);
    e.prefill(0, &[1, 2, 3]).unwrap();
    assert_eq!(e.position(0), 5);
    // One decode step over both, each at its own position, equals each slot alone.
    let both = e.decode(&[(1, 7), (0, 9)]).unwrap();
    let mut one = CpuEngine::new(&plan).unwrap();
    one.prefill(&[1, 2, 1, 2, 3]).unwrap();
    assert_eq!(one.decode_step(9).unwrap(), both[40..].to_vec());
    one.reset();
    one.prefill(&[5; 14]).unwrap();
    assert_eq!(one.decode_step(7).unwrap(), both[..40].to_vec());
    e.reset(1).unwrap();
    assert_eq!(e.position(1), 0);
}

#[test]
fn a_one_sequence_engine_is_a_batch_of_one() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tiny_plan(tmp.path());
    let seqs = vec![(vec![1, 2, 3], 4), (vec![9], 3), (vec![4, 4, 8, 1], 2)];
    let single = SingleSlot::new(CpuEngine::new(&plan).unwrap(), 16);
    assert_eq!(single.max_batch(), 1);
    let (got, _) = batched(Box::new(single), 2, &seqs);
    let (want, _) = batched(
        Box::new(CpuBatchEngine::new(&plan, 1, 16).unwrap()),
        2,
        &seqs,
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.tokens, w.tokens);
        assert_eq!(g.logits, w.logits);
    }
    let mut single = SingleSlot::new(CpuEngine::new(&plan).unwrap(), 16);
    assert!(single.decode(&[(0, 1), (1, 2)]).is_err());
    assert!(matches!(
        single.prefill(1, &[1]),
        Err(RuntimeError::NoSuchSlot { .. })
    ));
}

#[test]
fn stacked_states_split_back_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tiny_plan(tmp.path());
    let mut parts = Vec::new();
    for (i, p) in [vec![1u32, 2, 3], vec![7], vec![5, 6]].iter().enumerate() {
        let mut e = CpuEngine::new(&plan).unwrap();
        e.set_max_context(16 + i);
        e.prefill(p).unwrap();
        parts.push(e.state.clone());
    }
    let stacked = InferenceState::stack(parts.clone()).unwrap();
    assert_eq!(stacked.batch, 3);
    assert_eq!(stacked.positions, vec![3, 1, 2]);
    assert_eq!(stacked.max_context, 16);
    let back = stacked.split();
    for (b, p) in back.iter().zip(&parts) {
        assert_eq!(b.regions, p.regions);
        assert_eq!(b.positions, p.positions);
    }
    let mut two = parts[0].clone();
    two.batch = 2;
    assert!(InferenceState::stack(vec![parts[1].clone(), two]).is_err());
    assert!(InferenceState::stack(vec![]).is_err());
}

/// A CPU batched engine that declares prompts splittable only at multiples of `align` (as the
/// CUDA engine's chunked scan does) and records every prefill call as `(slot, start, len)`.
struct Aligned {
    inner: CpuBatchEngine,
    align: usize,
    calls: std::rc::Rc<std::cell::RefCell<Vec<(usize, usize, usize)>>>,
}

impl BatchEngine for Aligned {
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn max_context(&self) -> usize {
        self.inner.max_context()
    }
    fn position(&self, slot: usize) -> usize {
        self.inner.position(slot)
    }
    fn prefill(&mut self, slot: usize, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let start = self.inner.position(slot);
        self.calls.borrow_mut().push((slot, start, tokens.len()));
        self.inner.prefill(slot, tokens)
    }
    fn decode(&mut self, batch: &[(usize, u32)]) -> Result<Vec<f32>, RuntimeError> {
        self.inner.decode(batch)
    }
    fn reset(&mut self, slot: usize) -> Result<(), RuntimeError> {
        self.inner.reset(slot)
    }
    fn prefill_align(&self) -> usize {
        self.align
    }
}

/// Prompts sharing a step's prompt tokens are split only at multiples of the engine's
/// `prefill_align` from their start (the last piece excepted), every prompt still finishes, and
/// a chunk smaller than one granule is raised to one.
#[test]
fn prompts_split_only_at_the_engines_alignment() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = tiny_plan(tmp.path());
    let greedy = SamplingParams::default();
    for (chunk, align) in [(10, 4), (3, 4), (9, 1)] {
        let calls = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let engine = Aligned {
            inner: CpuBatchEngine::new(&plan, 3, 32).unwrap(),
            align,
            calls: calls.clone(),
        };
        let mut b = Batcher::new(Box::new(engine), chunk);
        let lens = [13usize, 7, 22];
        for (i, &n) in lens.iter().enumerate() {
            b.add(prompt(i as u64 + 1, n, 40), greedy, 0).unwrap();
        }
        let mut firsts = 0;
        for _ in 0..40 {
            firsts += b.step().unwrap().iter().filter(|s| s.first).count();
        }
        assert_eq!(
            firsts,
            lens.len(),
            "chunk {chunk}, align {align}: every prompt finishes"
        );
        let budget = chunk.max(align) / align * align;
        let mut total: BTreeMap<usize, usize> = BTreeMap::new();
        for &(slot, start, len) in calls.borrow().iter() {
            assert!(
                len <= budget,
                "chunk {chunk}, align {align}: a call of {len}"
            );
            assert_eq!(
                start % align,
                0,
                "chunk {chunk}, align {align}: slot {slot} split at {start}"
            );
            let end = start + len;
            assert!(
                end == lens[slot] || end % align == 0,
                "chunk {chunk}, align {align}: slot {slot} split at {end}"
            );
            *total.entry(slot).or_default() += len;
        }
        for (slot, &n) in lens.iter().enumerate() {
            assert_eq!(total[&slot], n, "slot {slot}: every prompt token once");
        }
    }
}
