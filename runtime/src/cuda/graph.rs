//! CUDA graphs of the decode step: after one eager warm-up step, the second decode step of a
//! given shape is captured from the engine's stream (`cuStreamBeginCapture_v2` ..
//! `cuStreamEndCapture`, then `cuGraphInstantiateWithFlags`) and every later step replays it
//! with one `cuGraphLaunch`.
//!
//! Why a replay is the same step: every decode launch argument is fixed at load (buffer, weight,
//! state and meta addresses; `Rows`, `Seq` and `Capacity` depend only on the batch and the
//! token count, which are the graph's key, as is the choice of a launch's batched kernel). Each
//! row's position and state slot live in device memory (`meta`, `Arg::Meta`), so one graph per
//! row count and launch table serves any set of slots (at most `max_batch` graphs per table,
//! captured lazily per count),
//! and the token ids in a fixed device buffer; both are written by ordinary stream copies *before* the
//! graph launch on the same stream, so they are not part of the graph. The logits are read
//! after it, also outside the graph. Nothing is allocated inside a step, so the captured
//! addresses stay valid for the engine's lifetime; `reset` only zeroes the same state buffers,
//! so graphs survive it.
//!
//! `ZAMBA2C_NO_CUDA_GRAPH=1` (or `CudaOptions::cuda_graph = false`) keeps every step eager.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaStream, DriverError};

/// The environment variable that disables capture when set to anything but `""` or `"0"`.
pub const NO_CUDA_GRAPH_ENV: &str = "ZAMBA2C_NO_CUDA_GRAPH";

/// True when [`NO_CUDA_GRAPH_ENV`] asks for eager decode.
pub fn disabled_by_env() -> bool {
    env_flag(NO_CUDA_GRAPH_ENV)
}

/// True when environment variable `name` is set to anything but `""` or `"0"`.
pub(crate) fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Key of a captured step: (launch table, batch, tokens per sequence). The table is part of the
/// key so a `decode` step and a `decode_rows` step never share a graph.
pub(crate) type StepKey = (zamba2c_ir::kernel::GraphId, usize, usize);

/// One instantiated graph. Only reachable through `&mut`, so the engine's `&mut self` is the
/// external serialization CUDA asks for on graph objects.
struct StepGraph(CudaGraph);

// SAFETY: CUgraph / CUgraphExec handles are plain driver handles, not bound to the thread that
// made them (cudarc binds the context to the calling thread before every graph call); the
// wrapper exposes no `&self` operation, so moving it to another thread or sharing `&StepGraph`
// cannot lead to concurrent use of the handles.
unsafe impl Send for StepGraph {}
// SAFETY: see above: `&StepGraph` gives no access to the graph at all.
unsafe impl Sync for StepGraph {}

/// What the next decode step of a shape should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepMode {
    /// Launch kernel by kernel (graphs off, or the warm-up step of this shape).
    Eager,
    /// Capture this step's launches, instantiate, then launch the graph.
    Capture,
    /// Launch the graph captured earlier.
    Replay,
}

/// The decode graphs of one engine and their counters.
pub(crate) struct DecodeGraphs {
    enabled: bool,
    /// Shapes that ran one eager step since graphs were (re)enabled.
    warm: BTreeSet<StepKey>,
    graphs: BTreeMap<StepKey, StepGraph>,
    captures: u64,
    replays: u64,
    /// Why capture was turned off after a failure (None while none failed).
    failure: Option<String>,
}

impl DecodeGraphs {
    pub(crate) fn new(enabled: bool) -> Self {
        DecodeGraphs {
            enabled,
            warm: BTreeSet::new(),
            graphs: BTreeMap::new(),
            captures: 0,
            replays: 0,
            failure: None,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Turns capture on or off; off drops the graphs (the next `on` warms up again).
    pub(crate) fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.graphs.clear();
            self.warm.clear();
        } else {
            self.failure = None;
        }
    }

    pub(crate) fn captures(&self) -> u64 {
        self.captures
    }

    pub(crate) fn replays(&self) -> u64 {
        self.replays
    }

    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// What the next step of shape `key` does.
    pub(crate) fn mode(&self, key: StepKey) -> StepMode {
        if !self.enabled {
            StepMode::Eager
        } else if self.graphs.contains_key(&key) {
            StepMode::Replay
        } else if self.warm.contains(&key) {
            StepMode::Capture
        } else {
            StepMode::Eager
        }
    }

    /// Records that an eager step of shape `key` completed its launches.
    pub(crate) fn ran_eager(&mut self, key: StepKey) {
        if self.enabled {
            self.warm.insert(key);
        }
    }

    /// Turns capture off for good (until `set_enabled(true)`) after a failed capture.
    pub(crate) fn fail(&mut self, why: String) {
        tracing::warn!("CUDA graph capture of the decode step failed, decoding eagerly: {why}");
        self.failure = Some(why);
        self.enabled = false;
        self.graphs.clear();
        self.warm.clear();
    }

    /// Starts capturing `stream` (thread-local mode: only this thread's unsafe API calls are
    /// refused while capturing; the step issues nothing but kernel launches).
    pub(crate) fn begin(stream: &Arc<CudaStream>) -> Result<(), DriverError> {
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
    }

    /// Ends the capture begun by [`DecodeGraphs::begin`] and drops what was recorded (after a
    /// failed launch): leaves the stream out of capture mode.
    pub(crate) fn abandon(stream: &Arc<CudaStream>) {
        // The result is either a graph (dropped, which destroys it) or the invalidation
        // error that a failed launch caused; either way the stream is no longer capturing.
        if let Err(e) = stream.end_capture(CUgraphInstantiate_flags(0)) {
            tracing::debug!("ending an abandoned capture: {e:?}");
        }
    }

    /// Ends the capture, instantiates the graph for `key` and uploads it. On success the graph
    /// is stored (not yet launched: the captured work has not run).
    pub(crate) fn finish(&mut self, stream: &Arc<CudaStream>, key: StepKey) -> Result<(), String> {
        let graph = match stream.end_capture(CUgraphInstantiate_flags(0)) {
            Ok(Some(g)) => g,
            Ok(None) => return Err("the capture recorded no graph".into()),
            Err(e) => return Err(format!("ending the capture / instantiating: {e:?}")),
        };
        graph
            .upload()
            .map_err(|e| format!("uploading the graph: {e:?}"))?;
        self.graphs.insert(key, StepGraph(graph));
        self.captures += 1;
        Ok(())
    }

    /// Launches the graph of `key` on the stream it was captured from.
    pub(crate) fn replay(&mut self, key: StepKey) -> Result<(), String> {
        let g = self.graphs.get_mut(&key).ok_or_else(|| {
            format!(
                "no decode CUDA graph for {:?}, batch {}, {} tokens",
                key.0, key.1, key.2
            )
        })?;
        g.0.launch()
            .map_err(|e| format!("launching the decode CUDA graph: {e:?}"))?;
        self.replays += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zamba2c_ir::kernel::GraphId;

    #[test]
    fn warm_up_then_capture_then_replay() {
        let mut g = DecodeGraphs::new(true);
        let k = (GraphId::Decode, 1, 1);
        assert_eq!(g.mode(k), StepMode::Eager);
        g.ran_eager(k);
        assert_eq!(g.mode(k), StepMode::Capture);
        assert_eq!(g.mode((GraphId::Decode, 2, 1)), StepMode::Eager);
        // The same shape through the other table is another graph.
        assert_eq!(g.mode((GraphId::DecodeRows, 1, 1)), StepMode::Eager);
        g.fail("test".into());
        assert_eq!(g.mode(k), StepMode::Eager);
        assert_eq!(g.failure(), Some("test"));
        g.ran_eager(k);
        assert_eq!(g.mode(k), StepMode::Eager);
        g.set_enabled(true);
        assert_eq!(g.mode(k), StepMode::Eager);
        assert!(g.failure().is_none());
    }

    #[test]
    fn engine_stays_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<DecodeGraphs>();
        check::<crate::cuda::CudaEngine>();
    }

    #[test]
    fn disabled_stays_eager() {
        let mut g = DecodeGraphs::new(false);
        g.ran_eager((GraphId::Decode, 1, 1));
        assert_eq!(g.mode((GraphId::Decode, 1, 1)), StepMode::Eager);
        assert!(!g.enabled());
        assert_eq!((g.captures(), g.replays()), (0, 0));
    }
}
