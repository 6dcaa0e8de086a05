//! GPU-vs-CPU validation: the same tokens through the CPU interpreter (the reference meaning of
//! every op) and the GPU, node by node; the report names the first op whose output differs
//! beyond tolerance. Used by `zamba2c run --validate` and the GPU tests.

use std::collections::BTreeMap;
use std::fmt;

use petgraph::stable_graph::NodeIndex;
use zamba2c_ir::{DType, Phase, Plan};

use super::engine::CudaEngine;
use crate::cpu::CpuEngine;
use crate::{RuntimeError, Tensor};

/// The comparison of one node's output.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDiff {
    pub phase: Phase,
    /// Decode step (0 for the prompt).
    pub step: usize,
    /// Topological position in its graph (the id in `module.json`).
    pub node: usize,
    pub op: &'static str,
    pub label: String,
    pub max_abs: f32,
    /// `max |gpu - cpu| / max |cpu|`.
    pub rel: f32,
    pub ok: bool,
}

/// Every node compared, in execution order.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidateReport {
    pub tolerance: f32,
    pub nodes: Vec<NodeDiff>,
}

impl ValidateReport {
    /// The first node beyond tolerance.
    pub fn first_failure(&self) -> Option<&NodeDiff> {
        self.nodes.iter().find(|n| !n.ok)
    }
    /// True when every node is within tolerance.
    pub fn passed(&self) -> bool {
        self.first_failure().is_none()
    }
    /// The largest relative difference.
    pub fn worst(&self) -> Option<&NodeDiff> {
        self.nodes.iter().max_by(|a, b| a.rel.total_cmp(&b.rel))
    }
}

impl fmt::Display for ValidateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first_failure() {
            None => write!(
                f,
                "GPU matches CPU on {} node outputs (tolerance {:e})",
                self.nodes.len(),
                self.tolerance
            )?,
            Some(n) => write!(
                f,
                "first difference: {:?} step {} node %{} {} ({}): max |diff| {:e}, relative {:e} > {:e}",
                n.phase, n.step, n.node, n.op, n.label, n.max_abs, n.rel, self.tolerance
            )?,
        }
        if let Some(w) = self.worst() {
            write!(
                f,
                "; worst: {:?} step {} node %{} {} ({}) relative {:e}",
                w.phase, w.step, w.node, w.op, w.label, w.rel
            )?;
        }
        Ok(())
    }
}

/// The default per-node tolerance for an activation dtype (spec §6.1: ~1e-5 for f32 kernels).
/// With bf16 activations the GPU rounds every node output while the interpreter computes in
/// f32, and the difference compounds through the layers: 6.0e-2 was measured on a node of the
/// dt_clamp fixture (2026-11-28), so 1e-1 — a broken kernel is off by O(1).
pub fn default_tolerance(act: DType) -> f32 {
    match act {
        DType::F32 => 1e-3,
        _ => 1e-1,
    }
}

/// The default per-node tolerance for a module: that of its activation dtype, and at least
/// 1e-2 when the KV cache is narrower (bf16 under f32 activations). Both sides round K and V
/// to bf16 when caching, but their f32 projections differ in the last bits, so now and then
/// a value on a rounding boundary lands one bf16 step (2^-8 relative) apart, and the attention
/// output moves by up to that times its weight; a broken kernel is off by O(1).
///
/// f16 weights under f32 activations: at least 5e-3. Their tensor-core GEMMs round each input
/// to f16 once (2^-11 relative, docs/KERNELS.md "GEMM inputs") where the interpreter multiplies
/// the f32 values, a few 1e-4 of a projection's output that compound over the layers.
pub fn module_tolerance(m: &zamba2c_ir::Module) -> f32 {
    let mut tol = default_tolerance(m.act_dtype);
    if m.kv_dtype.size() < m.act_dtype.size() {
        tol = tol.max(1e-2);
    }
    let f16_gemms = m.dtype == DType::F16 || m.shared_projection_dtype() == Some(DType::F16);
    if f16_gemms && m.act_dtype == DType::F32 {
        tol = tol.max(5e-3);
    }
    tol
}

/// Loads `plan` on the CPU interpreter and the GPU, runs `tokens` as a prompt then
/// `decode_steps` greedy decode steps (next token = the CPU's argmax), and compares every node.
pub fn validate(
    plan: &Plan,
    tokens: &[u32],
    decode_steps: usize,
    tolerance: Option<f32>,
) -> Result<ValidateReport, RuntimeError> {
    let ctx = tokens.len() + decode_steps;
    let mut cpu = CpuEngine::new(plan)?;
    cpu.set_max_context(ctx.max(1));
    let mut gpu = CudaEngine::with_options(plan, super::CudaOptions::new(ctx.max(1)).prompt_all())?;
    validate_engines(&mut cpu, &mut gpu, tokens, decode_steps, tolerance)
}

impl super::CudaOptions {
    /// Processes the whole prompt in one launch sequence (validation compares node outputs of
    /// one prompt call).
    pub fn prompt_all(mut self) -> Self {
        self.prompt_chunk = self.max_context;
        self
    }
}

/// [`validate`] on engines already loaded with the same module and weights, from their
/// current (normally empty) state.
pub fn validate_engines(
    cpu: &mut CpuEngine,
    gpu: &mut CudaEngine,
    tokens: &[u32],
    decode_steps: usize,
    tolerance: Option<f32>,
) -> Result<ValidateReport, RuntimeError> {
    let tol = tolerance.unwrap_or_else(|| module_tolerance(&cpu.module));
    let mut report = ValidateReport {
        tolerance: tol,
        nodes: Vec::new(),
    };
    let mut input = tokens.to_vec();
    for step in 0..=decode_steps {
        let phase = if step == 0 {
            Phase::Prompt
        } else {
            Phase::Decode
        };
        let mut reference: BTreeMap<NodeIndex, Tensor> = BTreeMap::new();
        let logits = cpu.run_phase(phase, &[input.clone()], &mut |n, t| {
            reference.insert(n, t.clone());
        })?;
        let graph = cpu.module.graph(phase).clone();
        let order: BTreeMap<NodeIndex, usize> = graph
            .topo_order()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let mut diffs = Vec::new();
        gpu.run_phase(
            phase,
            &input,
            Some(&mut |n: NodeIndex, t: &Tensor| {
                let node = &graph.g[n];
                let (max_abs, rel) = match reference.get(&n) {
                    Some(r) => compare(r, t),
                    None => (f32::INFINITY, f32::INFINITY),
                };
                diffs.push(NodeDiff {
                    phase,
                    step,
                    node: order.get(&n).copied().unwrap_or(usize::MAX),
                    op: node.op.name(),
                    label: node.label.clone(),
                    max_abs,
                    rel,
                    ok: rel <= tol,
                });
            }),
        )?;
        report.nodes.extend(diffs);
        let v = logits.width();
        let last = &logits.data[logits.data.len() - v..];
        let next = last
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32);
        input = vec![next];
    }
    Ok(report)
}

/// `(max |a - b|, max |a - b| / max |a|)`; shapes must hold the same number of values.
fn compare(reference: &Tensor, got: &Tensor) -> (f32, f32) {
    if reference.data.len() != got.data.len() {
        return (f32::INFINITY, f32::INFINITY);
    }
    let mut max_abs = 0f32;
    let mut scale = 0f32;
    for (a, b) in reference.data.iter().zip(&got.data) {
        let d = (a - b).abs();
        if d.is_nan() {
            return (f32::NAN, f32::INFINITY);
        }
        max_abs = max_abs.max(d);
        scale = scale.max(a.abs());
    }
    (max_abs, max_abs / scale.max(1e-6))
}
