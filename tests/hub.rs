//! `zamba2c compile ORG/NAME` (issue 17): a Hub repo id resolved in a Hugging Face cache laid
//! out on disk (`models--ORG--NAME/{refs,snapshots}`), `--revision` by branch and by commit,
//! `HF_HUB_OFFLINE=1` never touching the network, and a download through `hf-hub` from a
//! local HTTP endpoint (`HF_ENDPOINT`, a tiny server in this test that serves the demo model
//! the way the Hub's resolve and API routes do, and records each request) with `HF_TOKEN`
//! sent as a bearer token. Never the internet. The plan compiled from the cache equals the
//! plan compiled from the directory (same weights file, same logits).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OTHER_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("hub")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-model")
}

/// The demo model's files, by name.
fn demo_files() -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(demo_model())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_file() && e.file_name() != "README.md")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// zamba2c with a clean Hugging Face environment plus `env`.
fn zamba2c_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(common::zamba2c_bin());
    c.args(args);
    for k in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "XDG_CACHE_HOME",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("spawn zamba2c")
}

/// A cache holding the demo model at `COMMIT`, `refs/main` and `refs/v1` pointing at it; a
/// second snapshot `OTHER_COMMIT` without weights.
fn lay_out_cache(hub: &Path) {
    let repo = hub.join("models--test-org--tiny-zamba2");
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap).unwrap();
    // Files as the Hub cache holds them: blobs, linked from the snapshot.
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    for (i, (name, bytes)) in demo_files().into_iter().enumerate() {
        let blob = repo.join("blobs").join(format!("blob{i}"));
        std::fs::write(&blob, bytes).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/blob{i}"), snap.join(&name)).unwrap();
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    std::fs::write(repo.join("refs/v1"), format!("{COMMIT}\n")).unwrap();
    let other = repo.join("snapshots").join(OTHER_COMMIT);
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(demo_model().join("config.json"), other.join("config.json")).unwrap();
}

/// Greedy ids from `plan` on the CPU, to compare plans by what they compute.
fn greedy(plan: &Path) -> String {
    common::zamba2c_ok(&[
        "run",
        plan.to_str().unwrap(),
        "--tokens",
        "1,22557,28725",
        "-n",
        "6",
        "--device",
        "cpu",
    ])
}

fn compile_ok(args: &[&str], env: &[(&str, &str)]) {
    let out = zamba2c_env(args, env);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn one_error_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn repo_ids_resolve_in_the_cache_offline() {
    let dir = scratch("cache");
    let hub = dir.join("hf-home/hub");
    lay_out_cache(&hub);
    let reference = dir.join("from-dir");
    common::zamba2c_ok(&[
        "compile",
        demo_model().to_str().unwrap(),
        "-o",
        reference.to_str().unwrap(),
    ]);
    let want = greedy(&reference);
    let want_weights = std::fs::read(reference.join("weights.safetensors")).unwrap();
    // A port nothing listens on: any network use would fail the compile.
    let dead = "http://127.0.0.1:9";
    let home = dir.join("hf-home");
    let hub_s = hub.to_str().unwrap();
    for (name, extra, env) in [
        ("hf-home", vec![], vec![("HF_HOME", home.to_str().unwrap())]),
        ("hub-cache", vec![], vec![("HF_HUB_CACHE", hub_s)]),
        (
            "tag",
            vec!["--revision", "v1"],
            vec![("HF_HUB_CACHE", hub_s)],
        ),
        (
            "commit",
            vec!["--revision", COMMIT],
            vec![("HF_HUB_CACHE", hub_s)],
        ),
    ] {
        let plan = dir.join(format!("plan-{name}"));
        let mut args = vec![
            "compile",
            "test-org/tiny-zamba2",
            "-o",
            plan.to_str().unwrap(),
        ];
        args.extend(extra);
        let mut env = env;
        env.extend([("HF_HUB_OFFLINE", "1"), ("HF_ENDPOINT", dead)]);
        compile_ok(&args, &env);
        assert_eq!(greedy(&plan), want, "{name}");
        assert_eq!(
            std::fs::read(plan.join("weights.safetensors")).unwrap(),
            want_weights,
            "{name}"
        );
        // The tokenizer came along from the snapshot.
        assert!(plan.join("tokenizer.json").is_file(), "{name}");
    }

    // Offline and not cached: one line naming the repo, the cache and HF_HUB_OFFLINE.
    let plan = dir.join("missing");
    let out = zamba2c_env(
        &["compile", "test-org/absent", "-o", plan.to_str().unwrap()],
        &[
            ("HF_HUB_CACHE", hub_s),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_ENDPOINT", dead),
        ],
    );
    let err = one_error_line(&out);
    assert!(
        err.contains("test-org/absent") && err.contains("HF_HUB_OFFLINE=1"),
        "{err}"
    );
    assert!(err.contains(hub_s), "{err}");
    assert!(!plan.exists());
    // A cached revision without its weights, offline: names what is missing.
    let out = zamba2c_env(
        &[
            "compile",
            "test-org/tiny-zamba2",
            "--revision",
            OTHER_COMMIT,
            "-o",
            plan.to_str().unwrap(),
        ],
        &[("HF_HUB_CACHE", hub_s), ("HF_HUB_OFFLINE", "1")],
    );
    let err = one_error_line(&out);
    assert!(
        err.contains("model.safetensors") && err.contains(OTHER_COMMIT),
        "{err}"
    );
    // --revision with a directory is refused; a directory that exists wins over a repo id.
    let out = zamba2c_env(
        &[
            "compile",
            demo_model().to_str().unwrap(),
            "--revision",
            "main",
            "-o",
            plan.to_str().unwrap(),
        ],
        &[],
    );
    assert!(one_error_line(&out).contains("--revision"));
}

/// What the test server saw: (method, path, authorization header).
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// Serves `files` as repo `repo` at commit `COMMIT`: `GET /api/models/REPO/revision/main`
/// (the file list) and `GET /REPO/resolve/main/FILE` with `Range` (206, `content-range`,
/// `etag`, `x-repo-commit`), one request per connection. Returns the endpoint URL.
fn serve(repo: &'static str, files: BTreeMap<String, Vec<u8>>, seen: Seen) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut headers = BTreeMap::new();
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let mut parts = request.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            seen.lock().unwrap().push((
                method,
                path.clone(),
                headers.get("authorization").cloned(),
            ));
            let api = format!("/api/models/{repo}/revision/main");
            let resolve = format!("/{repo}/resolve/main/");
            let (status, extra, body): (&str, Vec<(String, String)>, Vec<u8>) = if path == api {
                let siblings: Vec<_> = files
                    .keys()
                    .map(|f| serde_json::json!({"rfilename": f}))
                    .collect();
                let body = serde_json::json!({"sha": COMMIT, "siblings": siblings}).to_string();
                ("200 OK", vec![], body.into_bytes())
            } else if let Some(bytes) = path.strip_prefix(&resolve).and_then(|f| files.get(f)) {
                let start: usize = headers
                    .get("range")
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let end = match headers.get("range").map(String::as_str) {
                    Some("bytes=0-0") => 1.min(bytes.len()),
                    _ => bytes.len(),
                };
                let tag = format!("\"{:x}\"", bytes.len() * 31 + path.len());
                (
                    "206 Partial Content",
                    vec![
                        ("etag".into(), tag),
                        ("x-repo-commit".into(), COMMIT.into()),
                        (
                            "content-range".into(),
                            format!("bytes {start}-{}/{}", end.max(1) - 1, bytes.len()),
                        ),
                    ],
                    bytes[start.min(end)..end].to_vec(),
                )
            } else {
                (
                    "404 Not Found",
                    vec![],
                    b"{\"error\":\"not found\"}".to_vec(),
                )
            };
            let mut head = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in extra {
                head += &format!("{k}: {v}\r\n");
            }
            head += "\r\n";
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            // Drain what the client may still send, then close.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    });
    format!("http://{addr}")
}

#[test]
fn missing_repos_download_from_hf_endpoint_into_the_cache() {
    let dir = scratch("download");
    let hub = dir.join("cache");
    let seen: Seen = Arc::default();
    let endpoint = serve("test-org/tiny-zamba2", demo_files(), seen.clone());
    let plan = dir.join("plan");
    compile_ok(
        &[
            "compile",
            "test-org/tiny-zamba2",
            "-o",
            plan.to_str().unwrap(),
        ],
        &[
            ("HF_HUB_CACHE", hub.to_str().unwrap()),
            ("HF_ENDPOINT", &endpoint),
            ("HF_TOKEN", "hf_test_token"),
        ],
    );
    let reference = dir.join("from-dir");
    common::zamba2c_ok(&[
        "compile",
        demo_model().to_str().unwrap(),
        "-o",
        reference.to_str().unwrap(),
    ]);
    assert_eq!(greedy(&plan), greedy(&reference));
    // The cache layout huggingface_hub uses, every file byte for byte.
    let repo = hub.join("models--test-org--tiny-zamba2");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT
    );
    for (name, bytes) in demo_files() {
        let cached = repo.join("snapshots").join(COMMIT).join(&name);
        assert_eq!(std::fs::read(&cached).unwrap(), bytes, "{name}");
    }
    // Every request carried the token; the repo was listed once.
    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty());
    for (_, path, auth) in &requests {
        assert_eq!(auth.as_deref(), Some("Bearer hf_test_token"), "{path}");
    }
    assert_eq!(
        requests
            .iter()
            .filter(|(_, p, _)| p.starts_with("/api/"))
            .count(),
        1
    );

    // Now cached: compiling again asks the server nothing, offline or not.
    let before = seen.lock().unwrap().len();
    let again = dir.join("again");
    compile_ok(
        &[
            "compile",
            "test-org/tiny-zamba2",
            "-o",
            again.to_str().unwrap(),
        ],
        &[
            ("HF_HUB_CACHE", hub.to_str().unwrap()),
            ("HF_ENDPOINT", &endpoint),
        ],
    );
    assert_eq!(seen.lock().unwrap().len(), before);

    // HF_HUB_OFFLINE=1 with a repo the cache lacks: an error and no request at all.
    let out = zamba2c_env(
        &[
            "compile",
            "test-org/other",
            "-o",
            dir.join("x").to_str().unwrap(),
        ],
        &[
            ("HF_HUB_CACHE", hub.to_str().unwrap()),
            ("HF_ENDPOINT", &endpoint),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    assert!(one_error_line(&out).contains("HF_HUB_OFFLINE=1"));
    assert_eq!(seen.lock().unwrap().len(), before);

    // A repo the endpoint does not have: one line naming the repo and the endpoint.
    let out = zamba2c_env(
        &[
            "compile",
            "test-org/other",
            "-o",
            dir.join("y").to_str().unwrap(),
        ],
        &[
            ("HF_HUB_CACHE", hub.to_str().unwrap()),
            ("HF_ENDPOINT", &endpoint),
        ],
    );
    let err = one_error_line(&out);
    assert!(
        err.contains("test-org/other") && err.contains(&endpoint),
        "{err}"
    );
}
