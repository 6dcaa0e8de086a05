//! The pass pipeline: the table of contents of the compiler. Every pass is a
//! `Module -> Module` rewrite of both graphs that keeps the meaning (the CPU interpreter's
//! logits before and after agree: passes/tests/), and the verifier runs after each one.

use std::path::Path;

use zamba2c_ir::plan::PassRecord;
use zamba2c_ir::{verify_module, Module, Phase};

use crate::{fuse, shared_concat};

/// A named pass and the lowest optimisation level that runs it.
pub struct Pass {
    pub name: &'static str,
    pub min_level: u8,
    pub run: fn(&mut Module),
}

/// The passes, in order.
#[rustfmt::skip]
pub const PASSES: &[Pass] = &[
    // x·Wᵀ + (x·Aᵀ)·Bᵀ -> LinearLora: each per-invocation adapter joins its shared base projection.
    Pass { name: "fuse-lora", min_level: 1, run: fuse::fuse_lora },
    // concat([h,e]) -> norm -> q/k/v: SplitNormLinear per invocation, e-half once per block (§2.3).
    Pass { name: "specialise-shared-concat", min_level: 1, run: shared_concat::specialise_shared_concat },
    // RMSNorm -> projections: one NormLinear with a split output (in_proj, gate_up, lm_head).
    Pass { name: "fuse-norm-linear", min_level: 1, run: fuse::fuse_norm_linear },
    // gate_up (+adapter) -> GELU(gate)⊙up -> down -> the layer's linear: one GatedMlp (§2.5).
    Pass { name: "fuse-mlp", min_level: 1, run: fuse::fuse_mlp },
    // split -> conv+SiLU -> split -> SSM scan/step (softplus dt, D skip) -> gated norm (-> out_proj): MambaMixer.
    Pass { name: "fuse-mixer", min_level: 1, run: fuse::fuse_mixer },
    // r + y where y is a projection, MLP or mixer: the add moves into y's kernel epilogue.
    Pass { name: "fuse-residual", min_level: 1, run: fuse::fuse_residual },
    // Drop every node no output depends on (each rewrite above also sweeps what it replaced).
    Pass { name: "eliminate-dead-nodes", min_level: 1, run: fuse::eliminate_dead_nodes },
];

/// A pass failure (a verifier finding after a pass, or an unwritable dump directory).
#[derive(Debug, thiserror::Error)]
#[error("pass {pass}: {msg}")]
pub struct PassError {
    pub pass: String,
    pub msg: String,
}

/// Runs the passes of `opt_level` (0: none) over both graphs, verifying after each, dumping the
/// IR after each into `dump_dir` when given (`NN-pass.{prompt,decode}.{txt,dot}`). Returns one
/// record per step, `lower` first.
pub fn run_pipeline(
    module: &mut Module,
    opt_level: u8,
    dump_dir: Option<&Path>,
) -> Result<Vec<PassRecord>, PassError> {
    if let Some(d) = dump_dir {
        std::fs::create_dir_all(d).map_err(|e| PassError {
            pass: "lower".into(),
            msg: format!("{}: {e}", d.display()),
        })?;
    }
    let mut records = Vec::new();
    step(module, "lower", records.len(), dump_dir, &mut records)?;
    for pass in PASSES.iter().filter(|p| opt_level >= p.min_level) {
        let _span = tracing::debug_span!("pass", name = pass.name).entered();
        (pass.run)(module);
        step(module, pass.name, records.len(), dump_dir, &mut records)?;
    }
    Ok(records)
}

/// Verifies after a step, dumps it, and records its node counts.
fn step(
    module: &Module,
    name: &str,
    index: usize,
    dump_dir: Option<&Path>,
    records: &mut Vec<PassRecord>,
) -> Result<(), PassError> {
    let err = |msg: String| PassError {
        pass: name.into(),
        msg,
    };
    verify_module(module).map_err(|e| err(e.to_string()))?;
    if let Some(d) = dump_dir {
        for phase in [Phase::Prompt, Phase::Decode] {
            let g = module.graph(phase);
            let stem = format!("{index:02}-{name}.{}", phase_name(phase));
            let dump = |ext: &str, text: String| {
                let p = d.join(format!("{stem}.{ext}"));
                std::fs::write(&p, text).map_err(|e| err(format!("{}: {e}", p.display())))
            };
            dump("txt", g.to_text())?;
            dump("dot", g.to_dot(&stem))?;
        }
    }
    tracing::debug!(
        pass = name,
        prompt = module.prompt.len(),
        decode = module.decode.len(),
        "pass done"
    );
    records.push(PassRecord {
        name: name.into(),
        prompt_nodes: module.prompt.len(),
        decode_nodes: module.decode.len(),
    });
    Ok(())
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Prompt => "prompt",
        Phase::Decode => "decode",
    }
}
