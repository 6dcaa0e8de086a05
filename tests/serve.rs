//! `zamba2c serve` end to end on loopback (127.0.0.1 only), on the CPU, with the demo model:
//! concurrent greedy requests give what sequential ones give (and what `run` gives); streamed
//! text equals non-streamed; chat renders with the template as transformers does; overload
//! gives 429 and the server keeps serving; a client that disconnects frees its slot; hostile
//! bodies get 4xx and change nothing; SIGTERM drains. Every wait is bounded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PROMPT: &str = "Hello, my name is";
/// How long any one response may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);

fn scratch() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve")
}

/// The demo checkpoint (changed by `edit`) compiled into the plan `name`.
fn plan(name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    common::edited_demo_plan(&scratch(), name, edit)
}

/// The chat-template fixture (scripts/make_chat_fixture.py, transformers 5.24.0).
fn chat_fixture() -> Value {
    let p = common::fixtures().join("chat/cases.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The demo plan with the fixture's [INST] chat template in its tokenizer_config.json.
fn chat_plan() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        plan("chat-plan", |dir| {
            let p = dir.join("tokenizer_config.json");
            let mut cfg: Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            cfg["chat_template"] = chat_fixture()["templates"]["inst"].clone();
            std::fs::write(&p, cfg.to_string()).unwrap();
        })
    })
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(plan: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(common::zamba2c_bin())
            .args(["serve", plan.to_str().unwrap(), "--host", "127.0.0.1"])
            .args(["--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn zamba2c serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(TIMEOUT)
            .expect("the server prints its address");
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .expect("an address")
            .to_string();
        assert!(addr.starts_with("127.0.0.1:"), "{line:?}");
        Server { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s
    }

    /// Sends a raw request and returns the status and the (de-chunked) body.
    fn raw(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = self.connect();
        send(&mut s, method, path, body);
        let mut all = Vec::new();
        // A server that refused a body early may reset the connection after its answer.
        if let Err(e) = s.read_to_end(&mut all) {
            assert!(!all.is_empty(), "no response: {e}");
        }
        parse_response(&all)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, bytes) = self.raw("POST", path, body.to_string().as_bytes());
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&bytes)));
        (status, v)
    }

    fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, v) = self.post(path, body);
        assert_eq!(status, 200, "{v}");
        v
    }

    fn get(&self, path: &str) -> (u16, String) {
        let (status, bytes) = self.raw("GET", path, b"");
        (status, String::from_utf8(bytes).unwrap())
    }

    /// The value of the metric line starting with `name` (labels included).
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0.0)
    }

    /// Polls `/metrics` until `name` has `value` (bounded).
    fn wait_metric(&self, name: &str, value: f64) {
        let t0 = Instant::now();
        while self.metric(name) != value {
            assert!(t0.elapsed() < TIMEOUT, "{name} never became {value}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send(s: &mut TcpStream, method: &str, path: &str, body: &[u8]) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A body refused early (413) may close the connection before it is all sent.
    let _ = s.write_all(body);
}

/// Status and body of a whole HTTP/1.1 response (chunked transfer decoded).
fn parse_response(all: &[u8]) -> (u16, Vec<u8>) {
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&all[..split]).to_lowercase();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = &all[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (status, body.to_vec());
    }
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return (status, out);
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + n]);
        body = &body[eol + 2 + n + 2..];
    }
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

/// A streamed request's text per choice, finish reasons, and whether it ended with [DONE].
fn stream_text(server: &Server, path: &str, body: &Value) -> (Vec<String>, Vec<String>, bool) {
    let mut b = body.clone();
    b["stream"] = json!(true);
    let (status, bytes) = server.raw("POST", path, b.to_string().as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let data = sse_data(&bytes);
    let done = data.last().map(String::as_str) == Some("[DONE]");
    let (mut texts, mut finish) = (vec![String::new(); 4], vec![String::new(); 4]);
    for d in &data[..data.len() - usize::from(done)] {
        let v: Value = serde_json::from_str(d).unwrap();
        for c in v["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            let t = c["text"]
                .as_str()
                .or_else(|| c["delta"]["content"].as_str())
                .unwrap_or("");
            texts[i] += t;
            if let Some(f) = c["finish_reason"].as_str() {
                finish[i] = f.to_string();
            }
        }
    }
    let n = finish.iter().filter(|f| !f.is_empty()).count();
    texts.truncate(n);
    finish.truncate(n);
    (texts, finish, done)
}

fn demo_plan() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| plan("demo-plan", |_| {}))
}

const PROMPTS: [&str; 6] = [
    PROMPT,
    "The capital of France is",
    "a",
    "Once upon a time, in a land far away, there lived",
    "naïve café 😀",
    "1 2 3 4",
];

fn completion(prompt: &str) -> Value {
    json!({"model": "demo-plan", "prompt": prompt, "max_tokens": 12, "temperature": 0})
}

#[test]
fn concurrent_greedy_requests_equal_sequential_ones_and_run() {
    let server = Server::start(demo_plan(), &["--max-batch", "3"]);
    let text = |v: &Value| v["choices"][0]["text"].as_str().unwrap().to_string();
    let sequential: Vec<String> = PROMPTS
        .iter()
        .map(|p| text(&server.ok("/v1/completions", &completion(p))))
        .collect();
    // All at once: three run while three wait, and join as slots free up.
    let concurrent: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = PROMPTS
            .iter()
            .map(|p| s.spawn(|| text(&server.ok("/v1/completions", &completion(p)))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(concurrent, sequential);
    // One request with every prompt: one choice per prompt, in order.
    let v = server.ok(
        "/v1/completions",
        &json!({"prompt": PROMPTS, "max_tokens": 12}),
    );
    let choices: Vec<String> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(choices, sequential);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["usage"]["completion_tokens"], 12 * PROMPTS.len());
    // The same as the CLI's greedy run of the same prompt.
    let out = common::zamba2c_ok(&[
        "run",
        demo_plan().to_str().unwrap(),
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "12",
        "--json",
        "-q",
    ]);
    let run: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(sequential[0], run["text"].as_str().unwrap());
    // Token ids in, the same text out.
    let ids: Vec<u64> = run["prompt_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let v = server.ok("/v1/completions", &json!({"prompt": ids, "max_tokens": 12}));
    assert_eq!(text(&v), sequential[0]);
    assert_eq!(v["usage"]["prompt_tokens"], ids.len());
}

#[test]
fn streamed_text_equals_non_streamed() {
    let server = Server::start(demo_plan(), &["--max-batch", "2"]);
    let bodies = [
        json!({"prompt": PROMPT, "max_tokens": 20}),
        json!({"prompt": [PROMPTS[1], PROMPTS[4]], "max_tokens": 20, "stop": ["e", "🎉"]}),
        json!({"prompt": PROMPT, "max_tokens": 20, "temperature": 0.9, "top_p": 0.9, "seed": 7}),
        json!({"prompt": PROMPT, "max_tokens": 5, "echo": true}),
    ];
    for body in bodies {
        let whole = server.ok("/v1/completions", &body);
        let (texts, finish, done) = stream_text(&server, "/v1/completions", &body);
        assert!(done, "the stream ends with [DONE]");
        let choices = whole["choices"].as_array().unwrap();
        assert_eq!(texts.len(), choices.len(), "{body}");
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(texts[i], c["text"].as_str().unwrap(), "{body}");
            assert_eq!(finish[i], c["finish_reason"].as_str().unwrap(), "{body}");
        }
    }
    // usage in the stream when asked for
    let body = json!({"prompt": PROMPT, "max_tokens": 3, "stream": true,
                      "stream_options": {"include_usage": true}});
    let (_, bytes) = server.raw("POST", "/v1/completions", body.to_string().as_bytes());
    let data = sse_data(&bytes);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(usage["usage"]["prompt_tokens"], 6);

    let server = Server::start(chat_plan(), &[]);
    let body =
        json!({"messages": [{"role": "user", "content": "Hello, who are you?"}], "max_tokens": 15});
    let whole = server.ok("/v1/chat/completions", &body);
    assert_eq!(whole["object"], "chat.completion");
    let msg = &whole["choices"][0]["message"];
    assert_eq!(msg["role"], "assistant");
    let (texts, finish, done) = stream_text(&server, "/v1/chat/completions", &body);
    assert!(done);
    assert_eq!(texts, [msg["content"].as_str().unwrap()]);
    assert_eq!(
        finish,
        [whole["choices"][0]["finish_reason"].as_str().unwrap()]
    );
}

#[test]
fn chat_renders_the_template_as_transformers_does() {
    let f = chat_fixture();
    let server = Server::start(chat_plan(), &[]);
    let mut checked = 0;
    for case in f["cases"].as_array().unwrap() {
        if case["template"] != "inst" || case["add_generation_prompt"] != true {
            continue;
        }
        let body = json!({"messages": case["messages"], "max_tokens": 6});
        match case.get("ids") {
            Some(ids) => {
                // The chat request runs exactly transformers' token ids.
                let chat = server.ok("/v1/chat/completions", &body);
                assert_eq!(
                    chat["usage"]["prompt_tokens"],
                    ids.as_array().unwrap().len()
                );
                let plain = server.ok("/v1/completions", &json!({"prompt": ids, "max_tokens": 6}));
                assert_eq!(
                    chat["choices"][0]["message"]["content"], plain["choices"][0]["text"],
                    "{}",
                    case["messages"]
                );
                checked += 1;
            }
            None => {
                // The template's raise_exception is the client's error.
                let (status, v) = server.post("/v1/chat/completions", &body);
                assert_eq!(status, 400, "{v}");
                let msg = v["error"]["message"].as_str().unwrap();
                assert!(msg.contains(case["error"].as_str().unwrap()), "{msg}");
            }
        }
    }
    assert!(checked >= 3);
    // A model without a chat template: a clear 400.
    let server = Server::start(demo_plan(), &[]);
    let (status, v) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no chat template"),
        "{v}"
    );
}

/// Starts a long streamed generation and returns its connection once its first chunk came,
/// so the sequence is known to hold a slot.
fn occupy_a_slot(server: &Server) -> TcpStream {
    occupy(server, true)
}

/// A long generation holding a slot (streamed or not), and its connection.
fn occupy(server: &Server, stream: bool) -> TcpStream {
    let mut s = server.connect();
    let body = json!({"prompt": PROMPT, "max_tokens": 4000, "ignore_eos": true, "stream": stream});
    send(
        &mut s,
        "POST",
        "/v1/completions",
        body.to_string().as_bytes(),
    );
    if !stream {
        server.wait_metric("zamba2c_active_slots", 1.0);
        return s;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: {") {
        let n = s.read(&mut buf).expect("the stream starts");
        assert!(n > 0, "the stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    s
}

#[test]
fn overload_gives_429_and_the_server_keeps_serving() {
    let server = Server::start(demo_plan(), &["--max-batch", "1", "--max-queue", "1"]);
    let want = server.ok("/v1/completions", &completion(PROMPT));
    let hog = occupy_a_slot(&server);
    std::thread::scope(|s| {
        // The queue's one place.
        let queued = s.spawn(|| server.ok("/v1/completions", &completion(PROMPT)));
        server.wait_metric("zamba2c_queue_depth", 1.0);
        // No room left: 429, in the OpenAI error shape.
        let (status, v) = server.post("/v1/completions", &completion(PROMPTS[1]));
        assert_eq!(status, 429, "{v}");
        assert_eq!(v["error"]["code"], "queue_full");
        assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
        drop(hog);
        let v = queued.join().unwrap();
        assert_eq!(v["choices"][0]["text"], want["choices"][0]["text"]);
    });
    // And the server goes on serving.
    let again = server.ok("/v1/completions", &completion(PROMPT));
    assert_eq!(again["choices"][0]["text"], want["choices"][0]["text"]);
    assert_eq!(
        server.metric("zamba2c_requests_total{endpoint=\"/v1/completions\",status=\"429\"}"),
        1.0
    );
}

#[test]
fn a_client_that_disconnects_frees_its_slot() {
    let server = Server::start(demo_plan(), &["--max-batch", "1"]);
    for stream in [true, false] {
        let hog = occupy(&server, stream);
        assert_eq!(server.metric("zamba2c_active_slots"), 1.0);
        drop(hog);
        // The next request gets the only slot (it would wait ~4000 tokens otherwise).
        let t0 = Instant::now();
        let v = server.ok("/v1/completions", &completion(PROMPT));
        assert_eq!(v["usage"]["completion_tokens"], 12);
        assert!(t0.elapsed() < TIMEOUT);
        server.wait_metric("zamba2c_active_slots", 0.0);
    }
    assert_eq!(server.metric("zamba2c_disconnects_total"), 2.0);
    // Far fewer than the 8000 tokens the two streams asked for were generated.
    assert!(server.metric("zamba2c_generation_tokens_total") < 4000.0);
}

#[test]
fn hostile_bodies_get_4xx_and_change_nothing() {
    let server = Server::start(demo_plan(), &["--max-batch", "2"]);
    let want = server.ok("/v1/completions", &completion(PROMPT));
    let tokens_before = server.metric("zamba2c_generation_tokens_total");
    let deep = format!(
        "{{\"prompt\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(5 << 20));
    let raw: Vec<(&[u8], u16)> = vec![
        (huge.as_bytes(), 413),
        (deep.as_bytes(), 400),
        (b"{\"prompt\": \"unterminated", 400),
        (b"", 400),
        (b"\xff\xfe\x00garbage", 400),
        (b"[1, 2, 3]", 400),
        (b"null", 400),
    ];
    for (body, status) in raw {
        let (got, bytes) = server.raw("POST", "/v1/completions", body);
        assert_eq!(
            got,
            status,
            "{}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
        let v: Value = serde_json::from_slice(&bytes).expect("an OpenAI-shaped error");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let typed = [
        json!({"prompt": 5}),
        json!({"prompt": PROMPT, "max_tokens": "many"}),
        json!({"prompt": PROMPT, "max_tokens": -1}),
        json!({"prompt": PROMPT, "max_tokens": 1_000_000}),
        json!({"prompt": PROMPT, "temperature": "hot"}),
        json!({"prompt": PROMPT, "temperature": -0.5}),
        json!({"prompt": PROMPT, "top_p": 0}),
        json!({"prompt": PROMPT, "n": 3}),
        json!({"prompt": PROMPT, "logprobs": 9}),
        json!({"prompt": PROMPT, "stop": [1, 2]}),
        json!({"prompt": PROMPT, "stream": "yes"}),
        json!({"prompt": [99_999_999]}),
        json!({"prompt": []}),
        json!({"prompt": "a ".repeat(5000)}),
        json!({"prompt": vec![PROMPT; 65]}),
    ];
    for body in typed {
        let (status, v) = server.post("/v1/completions", &body);
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let (status, v) = server.post(
        "/v1/completions",
        &json!({"model": "gpt-4", "prompt": PROMPT}),
    );
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    let (status, _) = server.post("/v1/chat/completions", &json!({"messages": [{"role": 1}]}));
    assert_eq!(status, 400);
    let (status, _) = server.get("/v1/nothing-here");
    assert_eq!(status, 404);
    // Nothing was generated for them, and the server answers as before.
    assert_eq!(
        server.metric("zamba2c_generation_tokens_total"),
        tokens_before
    );
    let again = server.ok("/v1/completions", &completion(PROMPT));
    assert_eq!(again["choices"], want["choices"]);
}

#[test]
fn models_health_metrics_and_logprobs() {
    let server = Server::start(demo_plan(), &["--served-model-name", "tiny"]);
    let (status, body) = server.get("/health");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );
    let (_, body) = server.get("/v1/models");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny");
    let v = server.ok(
        "/v1/completions",
        &json!({"model": "tiny", "prompt": PROMPT, "max_tokens": 6, "logprobs": 3}),
    );
    assert_eq!(v["model"], "tiny");
    let lp = &v["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 6);
    // The tokens' texts add up to the text; greedy picks the most likely token.
    let joined: String = tokens.iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(joined, v["choices"][0]["text"].as_str().unwrap());
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 3);
        let best = top
            .values()
            .map(|x| x.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        assert_eq!(chosen, best, "token {i}");
        let mass: f64 = top.values().map(|x| x.as_f64().unwrap().exp()).sum();
        assert!(chosen < 0.0 && mass <= 1.0 + 1e-6);
    }
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    for name in [
        "zamba2c_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 1",
        "zamba2c_prompt_tokens_total 6",
        "zamba2c_generation_tokens_total 6",
        "zamba2c_queue_depth 0",
        "zamba2c_max_slots 8",
        "zamba2c_time_to_first_token_seconds_count 1",
        "zamba2c_inter_token_latency_seconds_count 5",
        "# TYPE zamba2c_time_to_first_token_seconds histogram",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let mut server = Server::start(demo_plan(), &[]);
    let mut s = server.connect();
    let body = json!({"prompt": PROMPT, "max_tokens": 300, "ignore_eos": true, "stream": true});
    send(
        &mut s,
        "POST",
        "/v1/completions",
        body.to_string().as_bytes(),
    );
    let mut first = [0u8; 64];
    assert!(s.read(&mut first).unwrap() > 0);
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    // The request in flight still gets every token and [DONE].
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let all = [&first[..], &rest[..]].concat();
    let (_, body) = parse_response(&all);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let fin: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    // Then the server exits cleanly and stops listening.
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < TIMEOUT,
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(&server.addr).is_err());
}

#[test]
fn without_a_queue_free_slots_still_take_requests() {
    let server = Server::start(demo_plan(), &["--max-batch", "1", "--max-queue", "0"]);
    let want = server.ok("/v1/completions", &completion(PROMPT));
    let hog = occupy_a_slot(&server);
    let (status, _) = server.post("/v1/completions", &completion(PROMPT));
    assert_eq!(status, 429);
    drop(hog);
    server.wait_metric("zamba2c_active_slots", 0.0);
    let again = server.ok("/v1/completions", &completion(PROMPT));
    assert_eq!(again["choices"], want["choices"]);
}
