//! The OpenAI request bodies the server accepts, read field by field from JSON so that every
//! wrong type or out-of-range value is a 400 naming the field (unknown fields are ignored, as
//! the OpenAI clients send some we do not use), and the OpenAI error shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use zamba2c_runtime::generate::sampling::SamplingParams;

/// Prompts one completions request may carry.
pub const MAX_PROMPTS: usize = 64;
/// Stop strings one request may carry, and their longest length in bytes.
const MAX_STOPS: usize = 16;
const MAX_STOP_LEN: usize = 1024;
/// The most alternatives `logprobs` may ask for.
pub const MAX_LOGPROBS: usize = 5;

/// An error in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{param}: {}", message.into()),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
        }
    }

    /// A 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: String,
    ) -> Self {
        ApiError {
            status,
            message,
            kind,
            param: None,
            code: Some(code),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        (self.status, axum::Json(body)).into_response()
    }
}

/// Parses a request body as one JSON object (serde_json refuses nesting deeper than 128).
pub fn parse_body(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!("malformed JSON body: {e}"))),
    }
}

/// The fields both endpoints share.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub params: SamplingParams,
    pub seed: Option<u64>,
    pub max_tokens: Option<usize>,
    pub stops: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
}

/// A field that is present and not null.
fn field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.get(k).filter(|v| !v.is_null())
}

fn number(m: &Map<String, Value>, k: &str) -> Result<Option<f64>, ApiError> {
    match field(m, k) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(k, "expected a number")),
    }
}

fn integer(m: &Map<String, Value>, k: &str) -> Result<Option<i64>, ApiError> {
    match field(m, k) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(k, "expected an integer")),
    }
}

pub fn boolean(m: &Map<String, Value>, k: &str) -> Result<bool, ApiError> {
    match field(m, k) {
        None => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ApiError::invalid(k, "expected true or false")),
    }
}

/// A number in `lo..=hi` (with `open_lo`, above `lo`).
fn ranged(
    m: &Map<String, Value>,
    k: &str,
    lo: f64,
    open_lo: bool,
    hi: f64,
) -> Result<Option<f32>, ApiError> {
    let Some(x) = number(m, k)? else {
        return Ok(None);
    };
    let above = if open_lo { x > lo } else { x >= lo };
    if !(above && x <= hi) {
        let l = if open_lo { "(" } else { "[" };
        return Err(ApiError::invalid(
            k,
            format!("must be in {l}{lo}, {hi}], got {x}"),
        ));
    }
    Ok(Some(x as f32))
}

/// Reads the sampling and stopping fields; `max_context` bounds `max_tokens`.
pub fn common(m: &Map<String, Value>, max_context: usize) -> Result<Common, ApiError> {
    let mut p = SamplingParams::default();
    if let Some(t) = ranged(m, "temperature", 0.0, false, 2.0)? {
        p.temperature = t;
    }
    if let Some(x) = ranged(m, "top_p", 0.0, true, 1.0)? {
        p.top_p = x;
    }
    if let Some(x) = ranged(m, "min_p", 0.0, false, 1.0)? {
        p.min_p = x;
    }
    if let Some(x) = ranged(m, "repetition_penalty", 0.0, true, 100.0)? {
        p.repetition_penalty = x;
    }
    match integer(m, "top_k")? {
        None | Some(-1) | Some(0) => {}
        Some(k) if k > 0 => p.top_k = k as usize,
        Some(k) => {
            return Err(ApiError::invalid(
                "top_k",
                format!("must be >= -1, got {k}"),
            ))
        }
    }
    for k in ["frequency_penalty", "presence_penalty"] {
        if let Some(x) = number(m, k)? {
            if x != 0.0 {
                return Err(ApiError::invalid(
                    k,
                    "is not supported (use repetition_penalty)",
                ));
            }
        }
    }
    if let Some(v) = field(m, "logit_bias") {
        if !v.as_object().is_some_and(Map::is_empty) {
            return Err(ApiError::invalid("logit_bias", "is not supported"));
        }
    }
    match integer(m, "n")? {
        None | Some(1) => {}
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("only n=1 is supported, got {n}"),
            ))
        }
    }
    let seed = match field(m, "seed") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_i64().map(|i| i as u64))
                .ok_or_else(|| ApiError::invalid("seed", "expected an integer"))?,
        ),
    };
    // max_tokens (max_completion_tokens is the chat API's newer name).
    let mut max_tokens = None;
    for k in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = integer(m, k)? {
            if n < 1 || n as u64 > max_context as u64 {
                return Err(ApiError::invalid(
                    k,
                    format!("must be in [1, {max_context}] (the context), got {n}"),
                ));
            }
            max_tokens = Some(n as usize);
        }
    }
    let stops = match field(m, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid("stop", "expected a string or a list of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                "expected a string or a list of strings",
            ))
        }
    };
    if stops.len() > MAX_STOPS {
        return Err(ApiError::invalid(
            "stop",
            format!("at most {MAX_STOPS} stop strings, got {}", stops.len()),
        ));
    }
    if stops.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
        return Err(ApiError::invalid(
            "stop",
            format!("every stop string must have 1 to {MAX_STOP_LEN} bytes"),
        ));
    }
    let include_usage = match field(m, "stream_options") {
        None => false,
        Some(Value::Object(o)) => boolean(o, "include_usage")?,
        Some(_) => return Err(ApiError::invalid("stream_options", "expected an object")),
    };
    Ok(Common {
        params: p,
        seed,
        max_tokens,
        stops,
        ignore_eos: boolean(m, "ignore_eos")?,
        stream: boolean(m, "stream")?,
        include_usage,
    })
}

/// One prompt of a completions request.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// `prompt`: a string, a list of strings, a list of token ids, or a list of such lists.
pub fn prompts(m: &Map<String, Value>, vocab: usize) -> Result<Vec<Prompt>, ApiError> {
    let ids = |items: &[Value]| -> Result<Vec<u32>, ApiError> {
        items
            .iter()
            .map(|x| match x.as_u64() {
                Some(i) if (i as usize) < vocab => Ok(i as u32),
                _ => Err(ApiError::invalid(
                    "prompt",
                    format!("token ids must be integers in [0, {vocab}), got {x}"),
                )),
            })
            .collect()
    };
    let shape =
        "expected a string, a list of strings, a list of token ids or a list of lists of token ids";
    let out = match field(m, "prompt") {
        None => return Err(ApiError::invalid("prompt", "is required")),
        Some(Value::String(s)) => vec![Prompt::Text(s.clone())],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid("prompt", "is an empty list"))
        }
        Some(Value::Array(items)) => match &items[0] {
            Value::Number(_) => vec![Prompt::Ids(ids(items)?)],
            Value::String(_) => items
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(|s| Prompt::Text(s.to_string()))
                        .ok_or_else(|| ApiError::invalid("prompt", shape))
                })
                .collect::<Result<_, _>>()?,
            Value::Array(_) => items
                .iter()
                .map(|x| {
                    x.as_array()
                        .ok_or_else(|| ApiError::invalid("prompt", shape))
                        .and_then(|a| ids(a))
                        .map(Prompt::Ids)
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(ApiError::invalid("prompt", shape)),
        },
        Some(_) => return Err(ApiError::invalid("prompt", shape)),
    };
    if out.len() > MAX_PROMPTS {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "at most {MAX_PROMPTS} prompts per request, got {}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// `logprobs` of a completions request: an integer 0..=5 (null or absent: none).
pub fn completion_logprobs(m: &Map<String, Value>) -> Result<Option<usize>, ApiError> {
    match integer(m, "logprobs")? {
        None => Ok(None),
        Some(n) if (0..=MAX_LOGPROBS as i64).contains(&n) => Ok(Some(n as usize)),
        Some(n) => Err(ApiError::invalid(
            "logprobs",
            format!("must be in [0, {MAX_LOGPROBS}], got {n}"),
        )),
    }
}

/// `logprobs` (true/false) and `top_logprobs` (0..=5) of a chat request.
pub fn chat_logprobs(m: &Map<String, Value>) -> Result<Option<usize>, ApiError> {
    let on = boolean(m, "logprobs")?;
    let top = match integer(m, "top_logprobs")? {
        None => 0,
        Some(n) if (0..=MAX_LOGPROBS as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("must be in [0, {MAX_LOGPROBS}], got {n}"),
            ))
        }
    };
    if top > 0 && !on {
        return Err(ApiError::invalid("top_logprobs", "needs logprobs: true"));
    }
    Ok(on.then_some(top))
}

/// `messages` of a chat request: a non-empty list of objects with a string `role` and a
/// `content` that is a string, null, or a list of text parts; returned with each content as
/// one string, as the template sees it.
pub fn messages(m: &Map<String, Value>) -> Result<Value, ApiError> {
    let Some(Value::Array(items)) = field(m, "messages") else {
        return Err(ApiError::invalid("messages", "expected a list of messages"));
    };
    if items.is_empty() {
        return Err(ApiError::invalid("messages", "is an empty list"));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, msg) in items.iter().enumerate() {
        let param = format!("messages[{i}]");
        let Some(obj) = msg.as_object() else {
            return Err(ApiError::invalid(&param, "expected an object"));
        };
        if !obj.get("role").is_some_and(Value::is_string) {
            return Err(ApiError::invalid(&param, "role: expected a string"));
        }
        let content = match obj.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(
                                &param,
                                "content: only text parts ({\"type\": \"text\", \"text\": ...}) are supported",
                            ))
                        }
                    }
                }
                text
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    &param,
                    "content: expected a string or a list of text parts",
                ))
            }
        };
        let mut obj = obj.clone();
        obj.insert("content".into(), Value::String(content));
        out.push(Value::Object(obj));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn wrong_types_and_ranges_name_the_field() {
        let cases = [
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"top_p": 0}), "top_p"),
            (json!({"top_k": -2}), "top_k"),
            (json!({"min_p": 1.5}), "min_p"),
            (json!({"repetition_penalty": 0}), "repetition_penalty"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": 1.5}), "max_tokens"),
            (json!({"max_tokens": 100000}), "max_tokens"),
            (json!({"n": 2}), "n"),
            (json!({"stop": 3}), "stop"),
            (json!({"stop": [""]}), "stop"),
            (json!({"stream": "yes"}), "stream"),
            (json!({"seed": "x"}), "seed"),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (json!({"logit_bias": {"5": 1}}), "logit_bias"),
        ];
        for (body, param) in cases {
            let e = common(&obj(body.clone()), 4096).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
            assert!(e.message.starts_with(param), "{}", e.message);
        }
        let ok = common(
            &obj(
                json!({"temperature": 0.5, "top_k": -1, "stop": "x", "seed": -1, "n": 1,
                        "max_tokens": 7, "presence_penalty": 0, "user": "ignored"}),
            ),
            4096,
        )
        .unwrap();
        assert_eq!(ok.params.temperature, 0.5);
        assert_eq!(ok.params.top_k, 0);
        assert_eq!(ok.stops, ["x"]);
        assert_eq!(ok.seed, Some(u64::MAX));
        assert_eq!(ok.max_tokens, Some(7));
    }

    #[test]
    fn prompts_take_every_openai_form() {
        let p = |v: Value| prompts(&obj(json!({ "prompt": v })), 100);
        assert_eq!(p(json!("hi")).unwrap(), [Prompt::Text("hi".into())]);
        assert_eq!(p(json!(["a", "b"])).unwrap().len(), 2);
        assert_eq!(p(json!([1, 2, 3])).unwrap(), [Prompt::Ids(vec![1, 2, 3])]);
        assert_eq!(p(json!([[1], [2, 3]])).unwrap().len(), 2);
        for bad in [
            json!([]),
            json!(5),
            json!([1, "a"]),
            json!(["a", 1]),
            json!([100]),
            json!([-1]),
            json!([{}]),
            json!([[1], 2]),
        ] {
            assert_eq!(
                p(bad.clone()).unwrap_err().param.as_deref(),
                Some("prompt"),
                "{bad}"
            );
        }
        assert!(prompts(&obj(json!({})), 100).is_err());
    }

    #[test]
    fn messages_are_checked_and_flattened() {
        let m = messages(&obj(json!({"messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null},
        ]})))
        .unwrap();
        assert_eq!(m[0]["content"], "ab");
        assert_eq!(m[1]["content"], "");
        for bad in [
            json!({"messages": []}),
            json!({"messages": "hi"}),
            json!({"messages": [{"content": "x"}]}),
            json!({"messages": [{"role": "user", "content": 5}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            json!({"messages": [7]}),
        ] {
            assert!(messages(&obj(bad.clone())).is_err(), "{bad}");
        }
    }
}
