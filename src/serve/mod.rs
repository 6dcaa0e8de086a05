//! `zamba2c serve PLAN`: an OpenAI-compatible HTTP server (axum on tokio) with continuous
//! batching. The server only schedules and speaks HTTP: the batching is the runtime's
//! [`zamba2c_runtime::batch::Batcher`], driven by one scheduler thread ([`scheduler`]).

mod api;
mod handlers;
mod metrics;
mod scheduler;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use zamba2c_ir::Plan;
use zamba2c_runtime::batch::{Batcher, DEFAULT_PREFILL_CHUNK};
use zamba2c_runtime::generate::chat::ChatTemplate;
use zamba2c_runtime::generate::eos_ids;
use zamba2c_runtime::generate::text::TextTokenizer;

use crate::cli::engine::{open_batch_engine, Device, MAX_BATCH};
use handlers::AppState;
use metrics::Metrics;
use scheduler::Scheduler;

/// Request bodies larger than this are refused with 413.
const BODY_LIMIT: usize = 4 << 20;
/// The largest `--max-queue`.
const MAX_QUEUE: usize = 1 << 16;

/// Serve the model over HTTP with the OpenAI API (completions, chat completions, models),
/// batching concurrent requests (up to --max-batch at once; up to --max-queue more wait, then
/// 429). Prints the address it listens on; logs each request (RUST_LOG=info is the default for
/// the server); SIGTERM or Ctrl-C stops accepting, finishes the requests in flight, and exits.
///
/// Examples:
///   zamba2c serve plans/demo --device cpu --max-batch 8
///   zamba2c serve plans/z27 --device cuda --port 8080 --served-model-name zamba2-2.7b
///   curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \
///     -d '{"prompt": "Hello, my name is", "max_tokens": 16}'
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    /// The plan directory (from `zamba2c compile`); it must have a tokenizer.
    pub plan: PathBuf,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the one chosen is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Where to run the plan.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Sequences generated at once (slots of the batched engine).
    #[arg(long, default_value_t = 8, value_name = "B")]
    pub max_batch: usize,
    /// Tokens each sequence may hold, prompt and generated (default: the model's
    /// max_position_embeddings, at most 16384).
    #[arg(long, value_name = "N")]
    pub max_context: Option<usize>,
    /// Sequences that may wait for a free slot; beyond that requests get 429.
    #[arg(long, default_value_t = 64, value_name = "Q")]
    pub max_queue: usize,
    /// The model name in responses and the one requests must name (default: the plan
    /// directory's name).
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,
}

pub fn main(a: ServeArgs) -> Result<()> {
    if a.max_batch == 0 || a.max_batch > MAX_BATCH {
        bail!(
            "--max-batch: must be in 1..={MAX_BATCH}, got {}",
            a.max_batch
        );
    }
    if a.max_queue > MAX_QUEUE {
        bail!(
            "--max-queue: must be at most {MAX_QUEUE}, got {}",
            a.max_queue
        );
    }
    let plan = Plan::open(&a.plan)?;
    let device = a.device.resolve(&plan);
    let max_context = crate::cli::engine::context_or_default(a.max_context, &plan)?;
    let tok = Arc::new(TextTokenizer::from_plan(&plan)?);
    let chat = ChatTemplate::from_plan(&plan)?;
    match &chat {
        Some(t) => tracing::info!(origin = t.origin(), "chat template loaded"),
        None => tracing::warn!(
            "{}: the model has no chat template; /v1/chat/completions answers 400",
            plan.dir.display()
        ),
    }
    let eos = eos_ids(&plan)?;
    let model = match &a.served_model_name {
        Some(n) if n.is_empty() => bail!("--served-model-name: is empty"),
        Some(n) => n.clone(),
        None => a
            .plan
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "zamba2c".into()),
    };
    let vocab = plan.module.config.vocab_size;
    let metrics = Arc::new(Metrics::new(a.max_batch));
    let scheduler = Arc::new(Scheduler::new(a.max_queue, a.max_batch, metrics.clone()));

    // The engine lives on the scheduler thread; it reports whether it loaded.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let thread = {
        let (sched, tok, device, max_batch) = (scheduler.clone(), tok.clone(), device, a.max_batch);
        std::thread::Builder::new()
            .name("zamba2c-scheduler".into())
            .spawn(
                // Not batch-invariant: a lone request decodes on the one-row kernels (1.8x
                // faster than the invariant engine's GEMMs; docs/KERNELS.md "Batch invariance").
                move || match open_batch_engine(&plan, device, max_batch, max_context, false) {
                    Ok(engine) => {
                        let _ = ready_tx.send(Ok(()));
                        drop(plan);
                        sched.run(Batcher::new(engine, DEFAULT_PREFILL_CHUNK), &tok);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                },
            )
            .context("cannot start the scheduler thread")?
    };
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the scheduler thread stopped while loading the plan"))??;

    let state = Arc::new(AppState {
        model: model.clone(),
        created: handlers::unix_now(),
        tok,
        chat,
        eos,
        max_context,
        vocab,
        scheduler: scheduler.clone(),
        metrics,
    });
    let app = Router::new()
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/models", get(handlers::models))
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            handlers::log_requests,
        ))
        .with_state(state);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("--host {} --port {}: cannot listen", a.host, a.port))?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "zamba2c serve: {model} on http://{addr}");
        let _ = out.flush();
        tracing::info!(%addr, model, max_batch = a.max_batch, max_context, "listening");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the HTTP server failed")
    });
    // Every connection is closed: no request waits on the scheduler any more.
    scheduler.close();
    if thread.join().is_err() {
        bail!("the scheduler thread panicked");
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C: the server then stops accepting and drains.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}
