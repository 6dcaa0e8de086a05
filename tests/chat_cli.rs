//! `zamba2c chat` through the binary (issue 17): turns read line by line from stdin, rendered
//! with the model's chat template, the state carried between turns so a turn prefills only its
//! new tokens. The reference is `zamba2c run --tokens` on the whole conversation from an empty
//! state: the conversation rendered here by hand (ChatML, the fixture's template) and tokenized
//! with the `tokenizers` crate directly, the earlier replies as the tokens the model generated.
//! Greedy decoding on the CPU interpreter: the same tokens, exactly.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat_cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo checkpoint with the chat fixture's `template` (none: no template) compiled to a
/// plan.
fn plan_with_template(template: Option<&str>) -> PathBuf {
    common::edited_demo_plan(&scratch(), template.unwrap_or("none"), |model| {
        if let Some(t) = template {
            let fixture: Value = serde_json::from_str(
                &std::fs::read_to_string(common::fixtures().join("chat/cases.json")).unwrap(),
            )
            .unwrap();
            let p = model.join("tokenizer_config.json");
            let mut cfg: Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            cfg["chat_template"] = fixture["templates"][t].clone();
            std::fs::write(&p, cfg.to_string()).unwrap();
        }
    })
}

fn chatml_plan() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| plan_with_template(Some("chatml")))
}

/// Runs `zamba2c chat` with `input` on stdin.
fn chat(plan: &Path, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(common::zamba2c_bin())
        .arg("chat")
        .arg(plan)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zamba2c chat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The greedy continuation of `prompt` by `run --tokens` from an empty state.
fn run_from_scratch(plan: &Path, prompt: &[u32], n: usize) -> Vec<u32> {
    let list: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let out = common::zamba2c_ok(&[
        "run",
        plan.to_str().unwrap(),
        "--tokens",
        &list.join(","),
        "-n",
        &n.to_string(),
        "--json",
        "--device",
        "cpu",
    ]);
    ids(&serde_json::from_str::<Value>(out.trim()).unwrap()["generated_tokens"])
}

const N: usize = 6;

#[test]
fn turns_carry_the_state_and_match_the_conversation_from_scratch() {
    let plan = chatml_plan();
    let out = chat(
        plan,
        &[
            "--json",
            "-n",
            &N.to_string(),
            "--device",
            "cpu",
            "--system",
            "Be brief.",
        ],
        "Hi there\n\nHow are you?\n/reset\nHi there\n/exit\nnever read\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let turns: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The blank line is no turn; /exit ends before the last line.
    assert_eq!(turns.len(), 3, "{turns:?}");

    let tok = tokenizers::Tokenizer::from_file(plan.join("tokenizer.json")).unwrap();
    let enc = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
    let im = |role: &str, content: &str| format!("<|im_start|>{role}\n{content}<|im_end|>\n");
    let system = im("system", "Be brief.");

    // Turn 1: the rendered conversation, all of it prefilled.
    let prompt1 = enc(&format!(
        "{system}{}<|im_start|>assistant\n",
        im("user", "Hi there")
    ));
    let g1 = ids(&turns[0]["generated_tokens"]);
    assert_eq!(turns[0]["prefilled"], prompt1.len());
    assert!(!g1.is_empty() && g1.len() <= N);
    assert_eq!(g1, run_from_scratch(plan, &prompt1, N)[..g1.len()]);

    // Turn 2: only the new tokens are prefilled: the reply's last token (sampled, not yet in
    // the state), then what the template writes after the reply.
    let added = enc(&format!(
        "<|im_end|>\n{}<|im_start|>assistant\n",
        im("user", "How are you?")
    ));
    assert_eq!(turns[1]["prefilled"], 1 + added.len());
    let mut conversation = prompt1.clone();
    conversation.extend(&g1);
    conversation.extend(&added);
    let g2 = ids(&turns[1]["generated_tokens"]);
    assert_eq!(
        turns[1]["context_tokens"],
        conversation.len() + g2.len() - 1
    );
    assert_eq!(g2, run_from_scratch(plan, &conversation, N)[..g2.len()]);
    assert_ne!(g2, g1);

    // /reset: the same as the first turn of a new conversation (the system message kept).
    assert_eq!(turns[2]["prefilled"], prompt1.len());
    assert_eq!(turns[2]["generated_tokens"], turns[0]["generated_tokens"]);
    assert_eq!(turns[2]["text"], turns[0]["text"]);
    assert_eq!(turns[0]["user"], "Hi there");
}

/// Without --json the replies stream to stdout, one line each, and the text is the turn's.
#[test]
fn streamed_replies_are_the_json_texts() {
    let plan = chatml_plan();
    let input = "Hello\nTell me more\n";
    let json = chat(plan, &["--json", "-n", "4", "--device", "cpu"], input);
    let texts: Vec<String> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let plain = chat(plan, &["-n", "4", "--device", "cpu"], input);
    assert!(plain.status.success());
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        texts.iter().map(|t| format!("{t}\n")).collect::<String>()
    );
    // Not a terminal: no "> " prompts and no banner.
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("> "));
}

#[test]
fn a_model_without_a_chat_template_is_one_clear_error() {
    let plan = plan_with_template(None);
    let out = chat(&plan, &["--device", "cpu"], "Hi\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("has no chat template"), "{err}");
    assert!(err.contains(plan.to_str().unwrap()), "{err}");
}

/// A template that rewrites the reply (`[INST]`: it strips the reply and writes
/// `' ' + reply.strip() + ' ' + eos_token` after it) still carries the state: the new tokens
/// are the reply's last token, then what the template writes after the reply's text (the
/// closing ` </s>`, without it when the model's own EOS ended the reply) and the new turn.
#[test]
fn templates_that_rewrite_the_reply_still_carry_the_state() {
    let plan = plan_with_template(Some("inst"));
    let out = chat(
        &plan,
        &["--json", "-n", &N.to_string(), "--device", "cpu"],
        "Hi there\nHow are you?\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let turns: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(turns.len(), 2);
    let tok = tokenizers::Tokenizer::from_file(plan.join("tokenizer.json")).unwrap();
    let enc = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
    let prompt1 = enc("<s>[INST] Hi there [/INST]");
    let g1 = ids(&turns[0]["generated_tokens"]);
    assert_eq!(turns[0]["prefilled"], prompt1.len());
    let eos = 2;
    let added = if g1.last() == Some(&eos) {
        enc("</s>[INST] How are you? [/INST]")[1..].to_vec()
    } else {
        enc(" </s>[INST] How are you? [/INST]")
    };
    assert_eq!(turns[1]["prefilled"], 1 + added.len());
    let mut conversation = prompt1;
    conversation.extend(&g1);
    conversation.extend(&added);
    let g2 = ids(&turns[1]["generated_tokens"]);
    assert_eq!(g2, run_from_scratch(&plan, &conversation, N)[..g2.len()]);
}
