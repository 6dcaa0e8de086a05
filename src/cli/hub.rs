//! `zamba2c compile ORG/NAME`: a Hugging Face repo id resolved to a checkpoint directory the
//! way `huggingface_hub` does (issue 17). The local cache comes first: `$HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, laid out as
//! `models--ORG--NAME/{refs/REV, snapshots/COMMIT/FILE}`; a revision is a branch or tag name
//! (through `refs/`) or a commit hash. A snapshot that holds the files is used without asking
//! the network; otherwise the files are downloaded into that cache with the `hf-hub` crate
//! from `$HF_ENDPOINT` (default https://huggingface.co), with `$HF_TOKEN` (or the cache's
//! token file) for gated repos. `HF_HUB_OFFLINE=1` never touches the network.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

/// The files of a repo that a checkpoint directory may need (the weights are found apart).
const SIDE_FILES: [&str; 6] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Whether `s` reads as a Hub repo id (`ORG/NAME`: two parts of letters, digits, `-`, `_`,
/// `.`), the way `huggingface_hub` validates one.
pub fn is_repo_id(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with(['.', '-'])
            && !p.ends_with(['.', '-'])
            && !p.contains("..")
            && !p.contains("--")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(s.split('/').collect::<Vec<_>>().as_slice(), [org, name] if part(org) && part(name))
}

/// The hub cache directory the environment names.
fn cache_dir() -> Result<PathBuf> {
    let set = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = set("HF_HUB_CACHE") {
        return Ok(p);
    }
    if let Some(p) = set("HF_HOME") {
        return Ok(p.join("hub"));
    }
    if let Some(p) = set("XDG_CACHE_HOME") {
        return Ok(p.join("huggingface/hub"));
    }
    match set("HOME") {
        Some(h) => Ok(h.join(".cache/huggingface/hub")),
        None => bail!("no Hugging Face cache: set HF_HUB_CACHE or HF_HOME (HOME is not set)"),
    }
}

/// `HF_HUB_OFFLINE` as huggingface_hub reads it (1, true, yes, on).
fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// A commit hash as the Hub writes them (40 hex digits).
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a snapshot directory lacks to be a checkpoint: config.json and weights (one
/// model.safetensors, every shard of model.safetensors.index.json, or a pytorch_model.bin).
fn missing_files(dir: &Path) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    if !dir.join("config.json").is_file() {
        missing.push("config.json".to_string());
    }
    let index = dir.join("model.safetensors.index.json");
    if dir.join("model.safetensors").is_file() || dir.join("pytorch_model.bin").is_file() {
        return Ok(missing);
    }
    if index.is_file() {
        for shard in shards(&index)? {
            if !dir.join(&shard).is_file() {
                missing.push(shard);
            }
        }
    } else {
        missing.push("model.safetensors".to_string());
    }
    Ok(missing)
}

/// The shard files a safetensors index names, sorted and deduplicated.
fn shards(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).with_context(|| index.display().to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: malformed JSON", index.display()))?;
    let map = v["weight_map"]
        .as_object()
        .with_context(|| format!("{}: weight_map: expected an object", index.display()))?;
    let mut files: Vec<String> = Vec::new();
    for f in map.values() {
        let f = f
            .as_str()
            .with_context(|| format!("{}: weight_map: expected file names", index.display()))?;
        // A shard is a plain file name in the repo's top directory.
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
            bail!(
                "{}: weight_map: {f:?} is not a file of the repo",
                index.display()
            );
        }
        files.push(f.to_string());
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// The cached snapshot of `repo_id` at `revision`, if the cache knows that revision.
fn cached_snapshot(repo_dir: &Path, revision: &str) -> Result<Option<PathBuf>> {
    let commit = if is_commit(revision) {
        revision.to_string()
    } else {
        let r = repo_dir.join("refs").join(revision);
        if !r.is_file() {
            return Ok(None);
        }
        let c = std::fs::read_to_string(&r).with_context(|| r.display().to_string())?;
        let c = c.trim().to_string();
        if !is_commit(&c) {
            bail!("{}: expected a commit hash, found {c:?}", r.display());
        }
        c
    };
    let dir = repo_dir.join("snapshots").join(commit);
    Ok(dir.is_dir().then_some(dir))
}

/// The checkpoint directory of `repo_id` at `revision` (default `main`): the cached snapshot
/// when it holds a checkpoint, else downloaded into the cache (never with HF_HUB_OFFLINE=1).
pub fn resolve(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    let revision = revision.unwrap_or("main");
    if revision.is_empty() || revision.contains("..") || revision.starts_with('/') {
        bail!("--revision: {revision:?} is not a branch, tag or commit");
    }
    let cache = cache_dir()?;
    let repo_dir = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    if let Some(dir) = cached_snapshot(&repo_dir, revision)? {
        let missing = missing_files(&dir)?;
        if missing.is_empty() {
            tracing::info!(repo = repo_id, revision, path = %dir.display(), "from the Hugging Face cache");
            return Ok(dir);
        }
        if offline() {
            bail!(
                "{repo_id} (revision {revision}): {} lacks {} and HF_HUB_OFFLINE=1 forbids downloading it",
                dir.display(),
                missing.join(", ")
            );
        }
    } else if offline() {
        bail!(
            "{repo_id} (revision {revision}): not in the Hugging Face cache {} and HF_HUB_OFFLINE=1 forbids downloading it (unset HF_HUB_OFFLINE, or set HF_HUB_CACHE / HF_HOME to the cache that has it)",
            cache.display()
        );
    }
    download(repo_id, revision, &cache)
}

/// Downloads what a checkpoint needs of `repo_id` at `revision` into `cache` and returns the
/// snapshot directory.
fn download(repo_id: &str, revision: &str, cache: &Path) -> Result<PathBuf> {
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_string());
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let hf_cache = Cache::new(cache.to_path_buf());
    // HF_TOKEN first, then the token `huggingface-cli login` saved.
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| hf_cache.token());
    let api = ApiBuilder::from_cache(hf_cache)
        .with_endpoint(endpoint.clone())
        .with_token(token)
        .with_progress(std::io::stderr().is_terminal())
        .build()
        .with_context(|| format!("{repo_id}: cannot set up the download client"))?;
    let repo = api.repo(Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let where_ = format!("{repo_id} (revision {revision}) from {endpoint}");
    let info = repo
        .info()
        .map_err(|e| anyhow::anyhow!("{where_}: cannot list the repo: {e}"))?;
    let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    if !names.contains(&"config.json") {
        bail!("{where_}: the repo has no config.json: not a transformers checkpoint");
    }
    let mut wanted: Vec<String> = SIDE_FILES
        .iter()
        .filter(|f| names.contains(f))
        .map(|f| f.to_string())
        .collect();
    let top = |n: &&str| !n.contains('/');
    if names.contains(&"model.safetensors.index.json") {
        wanted.push("model.safetensors.index.json".into());
    } else if names.contains(&"model.safetensors") {
        wanted.push("model.safetensors".into());
    } else if names.contains(&"pytorch_model.bin") {
        wanted.push("pytorch_model.bin".into());
    } else {
        let any: Vec<&str> = names.iter().copied().filter(top).collect();
        bail!(
            "{where_}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin among {}",
            any.join(", ")
        );
    }
    let mut snapshot: Option<PathBuf> = None;
    let mut fetch = |name: &str| -> Result<PathBuf> {
        tracing::info!(file = name, "downloading");
        let path = repo
            .get(name)
            .map_err(|e| anyhow::anyhow!("{where_}: {name}: {e}"))?;
        let dir = path
            .parent()
            .with_context(|| format!("{where_}: {name}: no snapshot directory"))?
            .to_path_buf();
        match &snapshot {
            Some(d) if *d != dir => bail!(
                "{where_}: {name} came from another commit than the other files ({} vs {}); the branch moved while downloading: try again",
                dir.display(),
                d.display()
            ),
            _ => snapshot = Some(dir),
        }
        Ok(path)
    };
    for name in &wanted {
        let path = fetch(name)?;
        if name == "model.safetensors.index.json" {
            for shard in shards(&path)? {
                if !names.contains(&shard.as_str()) {
                    bail!("{where_}: the index names {shard}, which the repo does not have");
                }
                fetch(&shard)?;
            }
        }
    }
    let dir = snapshot.with_context(|| format!("{where_}: nothing was downloaded"))?;
    let missing = missing_files(&dir)?;
    if !missing.is_empty() {
        bail!(
            "{where_}: {} still lacks {}",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths() {
        assert!(is_repo_id("Zyphra/Zamba2-2.7B"));
        assert!(is_repo_id("org_1/name.v2"));
        assert!(!is_repo_id("./Zamba2-2.7B"));
        assert!(!is_repo_id("plans/z27/x"));
        assert!(!is_repo_id("/abs/path"));
        assert!(!is_repo_id("a/../b"));
        assert!(!is_repo_id("Zamba2"));
        assert!(!is_repo_id("org/.hidden"));
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("main"));
    }
}
