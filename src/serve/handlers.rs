//! The HTTP endpoints: `POST /v1/completions`, `POST /v1/chat/completions` (JSON, or
//! server-sent events ending with `data: [DONE]`), `GET /v1/models`, `GET /health`,
//! `GET /metrics`, and the request log. Responses and errors in the OpenAI shapes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use zamba2c_runtime::generate::chat::ChatTemplate;
use zamba2c_runtime::generate::text::TextTokenizer;
use zamba2c_runtime::generate::{Settings, StopReason};

use super::api::{self, ApiError, Common, Prompt};
use super::metrics::Metrics;
use super::scheduler::{Event, Refused, Scheduler, Sequence, TokenLogprob};

/// What every handler shares.
pub struct AppState {
    pub model: String,
    pub created: u64,
    pub tok: Arc<TextTokenizer>,
    pub chat: Option<ChatTemplate>,
    pub eos: Vec<u32>,
    pub max_context: usize,
    pub vocab: usize,
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
}

type Shared = State<Arc<AppState>>;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The routes the metrics name; anything else counts as "other".
const ENDPOINTS: [&str; 5] = [
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/health",
    "/metrics",
];

/// Logs every request (method, path, status, time) and counts it by endpoint and status.
pub async fn log_requests(State(st): Shared, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(200).collect();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let endpoint = ENDPOINTS
        .iter()
        .find(|&&e| e == path)
        .copied()
        .unwrap_or("other");
    st.metrics.request(endpoint, status);
    tracing::info!(
        %method,
        path,
        status,
        ms = format!("{:.1}", t0.elapsed().as_secs_f64() * 1e3),
        "request"
    );
    resp
}

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn models(State(st): Shared) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": st.model, "object": "model", "created": st.created, "owned_by": "zamba2c"}],
    }))
}

pub async fn metrics(State(st): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "not_found",
        "no such endpoint (try /v1/completions, /v1/chat/completions, /v1/models)".into(),
    )
}

/// The body as a JSON object, or the error to answer with (413 over the size limit, 400
/// malformed), and the `model` field checked against the served name.
fn body(
    st: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = body.map_err(|r| {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(status, "invalid_request_error", code, r.body_text())
    })?;
    let m = api::parse_body(&bytes)?;
    match m.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if *s == st.model => {}
        Some(Value::String(s)) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!(
                    "the model `{s}` does not exist: this server serves `{}`",
                    st.model
                ),
            ))
        }
        Some(_) => return Err(ApiError::invalid("model", "expected a string")),
    }
    Ok(m)
}

/// Which API a generation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

/// One generation request, checked: the prompts (ids and, for echo, their text).
struct Job {
    kind: Kind,
    prompts: Vec<(Vec<u32>, String)>,
    common: Common,
    logprobs: Option<usize>,
    echo: bool,
    /// `max_tokens` when the request has none.
    default_max_tokens: usize,
}

pub async fn completions(State(st): Shared, raw: Result<Bytes, BytesRejection>) -> Response {
    match completion_job(&st, raw) {
        Ok(job) => run(st, job).await,
        Err(e) => e.into_response(),
    }
}

fn completion_job(st: &AppState, raw: Result<Bytes, BytesRejection>) -> Result<Job, ApiError> {
    let m = body(st, raw)?;
    let common = api::common(&m, st.max_context)?;
    let logprobs = api::completion_logprobs(&m)?;
    let echo = api::boolean(&m, "echo")?;
    if echo && logprobs.is_some() {
        return Err(ApiError::invalid(
            "echo",
            "echo with logprobs is not supported",
        ));
    }
    if m.get("suffix").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid("suffix", "is not supported"));
    }
    match m.get("best_of") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_i64() == Some(1) => {}
        Some(_) => return Err(ApiError::invalid("best_of", "only best_of=1 is supported")),
    }
    let mut prompts = Vec::new();
    for p in api::prompts(&m, st.vocab)? {
        let (ids, text) = match p {
            Prompt::Text(t) => (encode(st, &t, true)?, t),
            Prompt::Ids(ids) => {
                let text = st.tok.decode(&ids).unwrap_or_default();
                (ids, text)
            }
        };
        prompts.push((ids, text));
    }
    Ok(Job {
        kind: Kind::Completion,
        prompts,
        common,
        logprobs,
        echo,
        default_max_tokens: 16,
    })
}

pub async fn chat_completions(State(st): Shared, raw: Result<Bytes, BytesRejection>) -> Response {
    match chat_job(&st, raw) {
        Ok(job) => run(st, job).await,
        Err(e) => e.into_response(),
    }
}

fn chat_job(st: &AppState, raw: Result<Bytes, BytesRejection>) -> Result<Job, ApiError> {
    let m = body(st, raw)?;
    let common = api::common(&m, st.max_context)?;
    let logprobs = api::chat_logprobs(&m)?;
    let messages = api::messages(&m)?;
    let Some(template) = &st.chat else {
        return Err(ApiError::bad_request(
            "this model has no chat template (no chat_template in its tokenizer_config.json, no \
             chat_template.jinja); use /v1/completions with a prompt",
        ));
    };
    let text = template.render(&messages, true).map_err(|e| {
        ApiError::invalid("messages", format!("the chat template refused them: {e}"))
    })?;
    let ids = encode(st, &text, false)?;
    let room = st.max_context.saturating_sub(ids.len()).max(1);
    Ok(Job {
        kind: Kind::Chat,
        prompts: vec![(ids, text)],
        common,
        logprobs,
        echo: false,
        default_max_tokens: room,
    })
}

/// Tokenizes a prompt (with the tokenizer's special tokens for completions, without for a
/// rendered chat, as transformers does) and checks it fits the context.
fn encode(st: &AppState, text: &str, special: bool) -> Result<Vec<u32>, ApiError> {
    let ids = if special {
        st.tok.encode(text)
    } else {
        st.tok.encode_plain(text)
    }
    .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
    Ok(ids)
}

/// Submits the job's sequences and answers: one JSON response, or an SSE stream.
async fn run(st: Arc<AppState>, job: Job) -> Response {
    let param = if job.kind == Kind::Chat {
        "messages"
    } else {
        "prompt"
    };
    for (ids, _) in &job.prompts {
        if ids.is_empty() {
            return ApiError::invalid(param, "is empty").into_response();
        }
        if ids.len() > st.max_context {
            return ApiError::invalid(
                param,
                format!(
                    "is {} tokens, longer than the context of {} tokens",
                    ids.len(),
                    st.max_context
                ),
            )
            .into_response();
        }
    }
    let (tx, rx) = unbounded_channel();
    let arrived = Instant::now();
    let seed = job.common.seed.unwrap_or_else(rand::random);
    let seqs: Vec<Sequence> = job
        .prompts
        .iter()
        .enumerate()
        .map(|(choice, (ids, _))| Sequence {
            prompt: ids.clone(),
            settings: Settings {
                params: job.common.params,
                seed,
                max_new_tokens: job.common.max_tokens.unwrap_or(job.default_max_tokens),
                max_context: st.max_context,
                eos: st.eos.clone(),
                ignore_eos: job.common.ignore_eos,
                stops: job.common.stops.clone(),
            },
            logprobs: job.logprobs,
            choice,
            events: tx.clone(),
            arrived,
        })
        .collect();
    drop(tx);
    match st.scheduler.submit(seqs) {
        Ok(()) => {}
        Err(Refused::QueueFull) => {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "queue_full",
                "the server is at capacity (every slot busy and the queue full); retry later"
                    .into(),
            )
            .into_response()
        }
        Err(Refused::Closed) => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "shutting_down",
                "the server is shutting down".into(),
            )
            .into_response()
        }
    }
    let reply = Reply {
        id: format!(
            "{}-{:032x}",
            if job.kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            rand::random::<u128>()
        ),
        created: unix_now(),
        model: st.model.clone(),
        kind: job.kind,
        logprobs: job.logprobs.is_some(),
    };
    let echoes: Vec<String> = job
        .prompts
        .iter()
        .map(|(_, t)| if job.echo { t.clone() } else { String::new() })
        .collect();
    if job.common.stream {
        stream(reply, rx, echoes, job.common.include_usage).into_response()
    } else {
        match collect(&reply, rx, echoes).await {
            Ok(v) => Json(v).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// The fields every response and chunk of one request share.
struct Reply {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    logprobs: bool,
}

/// One choice's result so far.
#[derive(Default)]
struct Choice {
    text: String,
    logprobs: Vec<TokenLogprob>,
    finish: Option<&'static str>,
    prompt_tokens: usize,
    completion_tokens: usize,
}

fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::Eos | StopReason::Stop | StopReason::Closed => "stop",
        StopReason::Length | StopReason::Context => "length",
    }
}

fn engine_error(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "engine_error",
        message,
    )
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }

    /// The `logprobs` object of a choice in this API's shape (`text_offset` counts bytes from
    /// the start of the choice's text).
    fn logprobs_json(&self, lps: &[TokenLogprob], offset: usize) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        match self.kind {
            Kind::Completion => {
                let mut offsets = Vec::with_capacity(lps.len());
                let mut at = offset;
                for lp in lps {
                    offsets.push(at);
                    at += lp.token.len();
                }
                json!({
                    "tokens": lps.iter().map(|l| &l.token).collect::<Vec<_>>(),
                    "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
                    "top_logprobs": lps.iter().map(|l| {
                        l.top.iter().map(|(t, p)| (t.clone(), json!(p))).collect::<Map<_, _>>()
                    }).collect::<Vec<_>>(),
                    "text_offset": offsets,
                })
            }
            Kind::Chat => json!({"content": lps.iter().map(|l| json!({
                "token": l.token,
                "logprob": l.logprob,
                "bytes": l.token.as_bytes(),
                "top_logprobs": l.top.iter().map(|(t, p)| json!({
                    "token": t, "logprob": p, "bytes": t.as_bytes(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()}),
        }
    }

    fn usage(&self, choices: &[Choice]) -> Value {
        let p: usize = choices.iter().map(|c| c.prompt_tokens).sum();
        let g: usize = choices.iter().map(|c| c.completion_tokens).sum();
        json!({"prompt_tokens": p, "completion_tokens": g, "total_tokens": p + g})
    }

    /// A streamed chunk for choice `index`: `text` (None: no delta, e.g. the finish chunk).
    fn chunk(
        &self,
        index: usize,
        text: Option<&str>,
        lps: &[TokenLogprob],
        offset: usize,
        finish: Option<&str>,
        first: bool,
    ) -> Value {
        let choice = match self.kind {
            Kind::Completion => json!({
                "index": index,
                "text": text.unwrap_or(""),
                "logprobs": if lps.is_empty() { Value::Null } else { self.logprobs_json(lps, offset) },
                "finish_reason": finish,
            }),
            Kind::Chat => {
                let mut delta = Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({
                    "index": index,
                    "delta": delta,
                    "logprobs": if lps.is_empty() { Value::Null } else { self.logprobs_json(lps, offset) },
                    "finish_reason": finish,
                })
            }
        };
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [choice],
        })
    }
}

/// Waits for every choice to finish and builds the response object.
async fn collect(
    reply: &Reply,
    mut rx: UnboundedReceiver<Event>,
    echoes: Vec<String>,
) -> Result<Value, ApiError> {
    let mut choices: Vec<Choice> = echoes
        .into_iter()
        .map(|text| Choice {
            text,
            ..Default::default()
        })
        .collect();
    let mut left = choices.len();
    while left > 0 {
        let Some(event) = rx.recv().await else {
            return Err(engine_error("the scheduler stopped".into()));
        };
        match event {
            Event::Token {
                choice,
                text,
                logprob,
            } => {
                let c = &mut choices[choice];
                c.text.push_str(&text);
                c.logprobs.extend(logprob);
            }
            Event::Done {
                choice,
                text,
                reason,
                prompt_tokens,
                completion_tokens,
            } => {
                let c = &mut choices[choice];
                c.text.push_str(&text);
                c.finish = Some(finish_reason(reason));
                c.prompt_tokens = prompt_tokens;
                c.completion_tokens = completion_tokens;
                left -= 1;
            }
            Event::Failed { message, .. } => return Err(engine_error(message)),
        }
    }
    let list: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| match reply.kind {
            Kind::Completion => json!({
                "index": i, "text": c.text, "logprobs": reply.logprobs_json(&c.logprobs, 0),
                "finish_reason": c.finish,
            }),
            Kind::Chat => json!({
                "index": i, "message": {"role": "assistant", "content": c.text},
                "logprobs": reply.logprobs_json(&c.logprobs, 0), "finish_reason": c.finish,
            }),
        })
        .collect();
    Ok(json!({
        "id": reply.id, "object": reply.object(false), "created": reply.created,
        "model": reply.model, "choices": list, "usage": reply.usage(&choices),
    }))
}

/// State of one SSE stream.
struct Streaming {
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    choices: Vec<Choice>,
    /// Per choice: whether its first chunk went out (chat sends the role first).
    started: Vec<bool>,
    left: usize,
    include_usage: bool,
    out: VecDeque<SseEvent>,
    ended: bool,
}

fn sse(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

impl Streaming {
    /// Queues the chunks for `event`.
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Token {
                choice,
                text,
                logprob,
            } => {
                let lps: Vec<TokenLogprob> = logprob.into_iter().collect();
                if text.is_empty() && lps.is_empty() {
                    return;
                }
                self.delta(choice, &text, &lps);
            }
            Event::Done {
                choice,
                text,
                reason,
                prompt_tokens,
                completion_tokens,
            } => {
                if !text.is_empty() {
                    self.delta(choice, &text, &[]);
                }
                let first = !self.started[choice];
                self.started[choice] = true;
                let c = &mut self.choices[choice];
                c.prompt_tokens = prompt_tokens;
                c.completion_tokens = completion_tokens;
                let fin = finish_reason(reason);
                let chunk = self.reply.chunk(choice, None, &[], 0, Some(fin), first);
                self.out.push_back(sse(&chunk));
                self.left -= 1;
            }
            Event::Failed { message, .. } => {
                let body = json!({"error": {"message": message, "type": "server_error", "param": null, "code": "engine_error"}});
                self.out.push_back(sse(&body));
                self.left = 0;
            }
        }
        if self.left == 0 && !self.ended {
            if self.include_usage {
                let usage = json!({
                    "id": self.reply.id, "object": self.reply.object(true),
                    "created": self.reply.created, "model": self.reply.model,
                    "choices": [], "usage": self.reply.usage(&self.choices),
                });
                self.out.push_back(sse(&usage));
            }
            self.out.push_back(SseEvent::default().data("[DONE]"));
            self.ended = true;
        }
    }

    fn delta(&mut self, choice: usize, text: &str, lps: &[TokenLogprob]) {
        let first = !self.started[choice];
        self.started[choice] = true;
        let c = &mut self.choices[choice];
        let offset = c.text.len();
        c.text.push_str(text);
        let chunk = self
            .reply
            .chunk(choice, Some(text), lps, offset, None, first);
        self.out.push_back(sse(&chunk));
    }
}

/// The SSE response: one chunk per piece of text, a finish chunk per choice, then `[DONE]`.
/// Dropping it (the client went away) drops the receiver, which frees the slots.
fn stream(
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    echoes: Vec<String>,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let n = echoes.len();
    let mut s = Streaming {
        reply,
        rx,
        choices: (0..n).map(|_| Choice::default()).collect(),
        started: vec![false; n],
        left: n,
        include_usage,
        out: VecDeque::new(),
        ended: false,
    };
    for (i, e) in echoes.iter().enumerate() {
        if !e.is_empty() {
            s.delta(i, e, &[]);
        }
    }
    let events = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(e) = s.out.pop_front() {
                return Some((Ok(e), s));
            }
            if s.ended {
                return None;
            }
            match s.rx.recv().await {
                Some(event) => s.on_event(event),
                None => {
                    s.on_event(Event::Failed {
                        choice: 0,
                        message: "the scheduler stopped".into(),
                    });
                }
            }
        }
    });
    Sse::new(events)
}
