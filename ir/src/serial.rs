//! The module's on-disk form (`module.json` in a plan): graphs as node lists in topological
//! order with operand ids, so the file is deterministic and readable.

use std::collections::BTreeMap;
use std::path::Path;

use petgraph::stable_graph::NodeIndex;
use serde::{Deserialize, Serialize};

use crate::config::Zamba2Config;
use crate::graph::{DType, Graph, Module, Node, Phase, StateSpec, WeightSpec};
use crate::lower::lower_with_kv;

/// One node of a serialized graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFile {
    pub id: usize,
    #[serde(flatten)]
    pub node: Node,
    pub inputs: Vec<usize>,
}

/// A serialized graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphFile {
    pub phase: Phase,
    pub nodes: Vec<NodeFile>,
    pub outputs: Vec<usize>,
}

/// A serialized module.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModuleFile {
    pub config: Zamba2Config,
    pub dtype: DType,
    pub act_dtype: DType,
    /// The KV caches' element dtype; plans written before `--kv-dtype` existed stored them in
    /// the activation dtype, which is what an absent field means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_dtype: Option<DType>,
    /// `compile --batch-invariant` (absent: false, as in plans written before it existed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batch_invariant: bool,
    pub weights: BTreeMap<String, WeightSpec>,
    pub states: Vec<StateSpec>,
    pub prompt: GraphFile,
    pub decode: GraphFile,
}

impl From<&Graph> for GraphFile {
    fn from(g: &Graph) -> Self {
        let order = g.topo_order();
        let id: BTreeMap<NodeIndex, usize> =
            order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        GraphFile {
            phase: g.phase,
            nodes: order
                .iter()
                .map(|&n| NodeFile {
                    id: id[&n],
                    node: g.g[n].clone(),
                    inputs: g.inputs(n).iter().map(|i| id[i]).collect(),
                })
                .collect(),
            outputs: g.outputs.iter().map(|o| id[o]).collect(),
        }
    }
}

impl GraphFile {
    /// Rebuilds the graph; fails on ids that are out of order or out of range (untrusted input).
    pub fn to_graph(&self) -> Result<Graph, String> {
        let mut g = Graph::new(self.phase);
        let mut idx: Vec<NodeIndex> = Vec::with_capacity(self.nodes.len());
        for (pos, n) in self.nodes.iter().enumerate() {
            if n.id != pos {
                return Err(format!(
                    "node ids must be 0,1,2,... in order; found {} at position {pos}",
                    n.id
                ));
            }
            let mut ins = Vec::with_capacity(n.inputs.len());
            for &i in &n.inputs {
                if i >= pos {
                    return Err(format!(
                        "node {pos} reads node {i}, which does not come before it"
                    ));
                }
                ins.push(idx[i]);
            }
            idx.push(g.add(
                n.node.op.clone(),
                &ins,
                n.node.shape.clone(),
                n.node.dtype,
                n.node.label.clone(),
            ));
        }
        for &o in &self.outputs {
            g.outputs.push(
                *idx.get(o)
                    .ok_or_else(|| format!("output {o} is not a node"))?,
            );
        }
        Ok(g)
    }
}

impl From<&Module> for ModuleFile {
    fn from(m: &Module) -> Self {
        ModuleFile {
            config: m.config.clone(),
            dtype: m.dtype,
            act_dtype: m.act_dtype,
            kv_dtype: Some(m.kv_dtype),
            batch_invariant: m.batch_invariant,
            weights: m.weights.clone(),
            states: m.states.clone(),
            prompt: (&m.prompt).into(),
            decode: (&m.decode).into(),
        }
    }
}

impl ModuleFile {
    /// Rebuilds the module (not yet verified: call [`crate::verify_module`]). The file is
    /// untrusted: its config is validated again as config.json would be, and its weight and
    /// state tables must be exactly those the config lowers to, so that no size in the file
    /// escapes the config's bounds (issue 16).
    pub fn to_module(&self) -> Result<Module, String> {
        self.config
            .revalidate(Path::new("module.json"))
            .map_err(|e| format!("{}: {}", e.field, e.msg))?;
        let float = |d: DType| matches!(d, DType::F32 | DType::BF16 | DType::F16);
        let kv_dtype = self.kv_dtype.unwrap_or(self.act_dtype);
        if !float(self.dtype) || !float(self.act_dtype) || !float(kv_dtype) {
            return Err(format!(
                "dtype {} / act_dtype {} / kv_dtype {kv_dtype}: not float types",
                self.dtype, self.act_dtype
            ));
        }
        let mut lowered = lower_with_kv(&self.config, self.dtype, self.act_dtype, kv_dtype);
        // The SSM states' dtype (`compile --state-dtype`) is the one field of the state table
        // the config does not imply: taken from the file's first SSM state, after which the
        // whole table must match.
        let ssm_dtype = StateSpec::ssm_dtype(&self.states);
        if !float(ssm_dtype) {
            return Err(format!(
                "states: SSM state dtype {ssm_dtype} is not a float type"
            ));
        }
        lowered.set_ssm_state_dtype(ssm_dtype);
        // Likewise the shared blocks' projection dtype (`compile --shared-dtype`): the file's
        // first such weight's, 16-bit beside 16-bit weights only; the table must then match.
        let shared = crate::graph::shared_projections_dtype(&self.weights);
        if let Some(d) = shared.filter(|d| *d != self.dtype) {
            let half = |d: DType| matches!(d, DType::BF16 | DType::F16);
            if !half(d) || !half(self.dtype) {
                return Err(format!(
                    "weights: shared block projections in {d} beside {} weights",
                    self.dtype
                ));
            }
            lowered.set_shared_projection_dtype(d);
        }
        if let Some((name, spec)) = self
            .weights
            .iter()
            .find(|(n, s)| lowered.weights.get(*n) != Some(*s))
        {
            return Err(match lowered.weights.get(name) {
                None => {
                    format!("weights: {name} is not a weight of the model the config describes")
                }
                Some(want) => format!(
                    "weights: {name} is {} {:?}, the config implies {} {:?}",
                    spec.dtype, spec.shape, want.dtype, want.shape
                ),
            });
        }
        if let Some(name) = lowered
            .weights
            .keys()
            .find(|n| !self.weights.contains_key(*n))
        {
            return Err(format!("weights: {name} is missing from the table"));
        }
        if self.states != lowered.states {
            return Err("states: the state table is not the one the config implies".into());
        }
        let prompt = self
            .prompt
            .to_graph()
            .map_err(|e| format!("prompt graph: {e}"))?;
        let decode = self
            .decode
            .to_graph()
            .map_err(|e| format!("decode graph: {e}"))?;
        if prompt.phase != Phase::Prompt || decode.phase != Phase::Decode {
            return Err("graph phases are swapped".into());
        }
        Ok(Module {
            config: self.config.clone(),
            dtype: self.dtype,
            act_dtype: self.act_dtype,
            kv_dtype,
            batch_invariant: self.batch_invariant,
            weights: self.weights.clone(),
            states: self.states.clone(),
            prompt,
            decode,
        })
    }
}

impl Module {
    /// The module as pretty JSON (deterministic).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&ModuleFile::from(self)).expect("module serializes")
    }
}
