//! `zamba2c chat PLAN`: a conversation with the model through its chat template, the recurrent
//! state and KV cache carried from turn to turn so each turn prefills only its new tokens.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use zamba2c_ir::Plan;
use zamba2c_runtime::generate::chat::ChatTemplate;
use zamba2c_runtime::generate::sampling::Sampler;
use zamba2c_runtime::generate::{eos_ids, generate_with, Settings, TextSink};
use zamba2c_runtime::Engine;

use super::engine::{open_engine, Device};
use super::run::{fmt_ms, fmt_rate, fmt_tokens, Sink};
use super::sampling::{self, ModelDefaults, SamplingFlags};
use super::text::TextTokenizer;

/// Talk with the model: each line you type is a user turn, rendered with the model's chat
/// template (its tokenizer_config.json or chat_template.jinja) as transformers'
/// apply_chat_template renders it, and the reply is streamed.
///
/// The conversation stays in the model's state: a turn prefills only the text the template
/// adds after the model's last reply (closing that reply, the new user turn, the start of the
/// next reply); the reply itself stays as the tokens the model generated, as llama.cpp's chat
/// keeps it. `/reset` starts a new conversation, `/exit` (or end of input) ends. When standard
/// input is not a terminal, every line of it is one turn (`printf 'Hi\nMore\n' | zamba2c chat
/// PLAN`). Sampling flags and defaults are run's.
///
/// Examples:
///   zamba2c chat plans/z27 --device cuda
///   zamba2c chat plans/z27 --system "You are terse." -t 0.7 --top-p 0.9
///   printf 'Hello!\nTell me more.\n' | zamba2c chat plans/z27 -n 64 --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ChatArgs {
    /// The plan directory (from `zamba2c compile`); its model needs a chat template.
    pub plan: PathBuf,
    /// A system message starting the conversation (and every conversation after /reset).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// The most tokens of one reply (EOS included); --max-tokens is the same.
    #[arg(
        short = 'n',
        long,
        visible_alias = "max-tokens",
        default_value_t = 512,
        value_name = "N"
    )]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingFlags,
    /// End a reply when its text contains STRING (not printed); repeatable.
    #[arg(long, value_name = "STRING")]
    pub stop: Vec<String>,
    /// Where to run the plan.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
    /// Tokens the conversation may hold (default: the model's max_position_embeddings, at
    /// most 16384); the KV caches are allocated for this many.
    #[arg(long, value_name = "N")]
    pub max_context: Option<usize>,
    /// Print one JSON object per turn on stdout instead of the streamed reply: the user text,
    /// the reply text and tokens, the tokens prefilled for the turn, the tokens in the state
    /// after it, stop_reason, and timings.
    #[arg(long)]
    pub json: bool,
}

/// One conversation: its messages, and the tokens the engine's state holds.
struct Conversation {
    messages: Vec<Value>,
    /// Every token the engine has consumed since its last reset, in order.
    context: Vec<u32>,
    /// The last reply's last token, not in the state yet (it was sampled, not decoded).
    pending: Option<u32>,
    /// The rendered conversation up to the start of the last reply.
    last_prompt_text: String,
}

impl Conversation {
    fn new(system: Option<&str>) -> Self {
        Conversation {
            messages: system
                .map(|s| vec![json!({"role": "system", "content": s})])
                .unwrap_or_default(),
            context: Vec::new(),
            pending: None,
            last_prompt_text: String::new(),
        }
    }
}

pub fn main(mut a: ChatArgs) -> Result<()> {
    if a.max_new_tokens == 0 {
        bail!("--max-new-tokens: must be at least 1");
    }
    if a.stop.iter().any(String::is_empty) {
        bail!("--stop: the stop string is empty");
    }
    let plan = Plan::open(&a.plan)?;
    a.device = a.device.resolve(&plan);
    let params = sampling::resolve(
        &a.sampling,
        &ModelDefaults::from_plan(&plan)?,
        &plan.dir.join("generation_config.json"),
    )?;
    let template = ChatTemplate::from_plan(&plan)?.with_context(|| {
        format!(
            "{}: the model has no chat template (no chat_template in tokenizer_config.json, no \
             chat_template.jinja); use `zamba2c run` with a prompt",
            plan.dir.display()
        )
    })?;
    tracing::info!(origin = template.origin(), "chat template loaded");
    let tok = TextTokenizer::from_plan(&plan)?;
    let max_context = plan.module.config.max_position_embeddings;
    let seed = a.sampling.seed.unwrap_or_else(rand::random);
    if !params.is_greedy() {
        tracing::info!(seed, "sampling");
    }
    let settings = Settings {
        params,
        seed,
        max_new_tokens: a.max_new_tokens,
        max_context,
        eos: eos_ids(&plan)?,
        ignore_eos: false,
        stops: a.stop.clone(),
    };
    let ctx = super::engine::context_or_default(a.max_context, &plan)?;
    let mut engine = open_engine(&plan, a.device, ctx)?;

    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!(
            "chatting with {} on {} (/reset starts over, /exit or Ctrl-D ends)",
            a.plan.display(),
            a.device.name()
        );
    }
    let mut sink = Sink {
        out: std::io::stdout(),
        closed: false,
    };
    let mut conv = Conversation::new(a.system.as_deref());
    let mut turn = 0usize;
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("stdin: cannot read a line (is it UTF-8 text?)")?;
        let line = line.strip_suffix('\r').unwrap_or(&line).to_string();
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                engine.reset();
                conv = Conversation::new(a.system.as_deref());
                if interactive {
                    eprintln!("(a new conversation)");
                }
                continue;
            }
            _ => {}
        }
        turn += 1;
        let source = format!("stdin: turn {turn}");
        match one_turn(
            engine.as_mut(),
            &template,
            &tok,
            &settings,
            &mut conv,
            &source,
            &line,
            turn,
            (!a.json).then_some(&mut sink),
        ) {
            Ok(result) => {
                if a.json {
                    let mut obj = result;
                    obj["user"] = json!(line);
                    sink.write(&format!("{obj}\n"))?;
                } else {
                    sink.write("\n")?;
                    if interactive {
                        let gen = result["generated_tokens"].as_array().map_or(0, Vec::len);
                        let secs = result["decode_ms"].as_f64().unwrap_or(0.0) / 1e3;
                        eprintln!(
                            "[{} prefilled in {}, {} in {}{}; {} in context]",
                            fmt_tokens(result["prefilled"].as_u64().unwrap_or(0) as usize),
                            fmt_ms(result["prompt_ms"].as_f64().unwrap_or(0.0) / 1e3),
                            fmt_tokens(gen),
                            fmt_ms(secs),
                            fmt_rate(gen, secs),
                            fmt_tokens(conv.context.len() + 1),
                        );
                    }
                }
            }
            // A turn that does not fit (the conversation is full) or that the template refuses
            // is reported and dropped; the conversation goes on when someone is typing.
            Err(e) if interactive => eprintln!("error: {e:#}"),
            Err(e) => return Err(e),
        }
        if sink.closed {
            break;
        }
    }
    Ok(())
}

/// Adds the user message `text` to `conv`, prefills what the template adds since the state's
/// last token, and generates the reply (streamed to `sink`). Returns the turn's JSON record.
/// On error the conversation is as it was before the turn; after a failed engine call the
/// state is cleared and the next turn starts from the beginning of the conversation.
#[allow(clippy::too_many_arguments)]
fn one_turn(
    engine: &mut dyn Engine,
    template: &ChatTemplate,
    tok: &TextTokenizer,
    settings: &Settings,
    conv: &mut Conversation,
    source: &str,
    text: &str,
    turn: usize,
    sink: Option<&mut Sink>,
) -> Result<Value> {
    let mut messages = conv.messages.clone();
    messages.push(json!({"role": "user", "content": text}));
    let rendered = template
        .render(&Value::Array(messages.clone()), true)
        .with_context(|| format!("{source}: the chat template refused the conversation"))?;
    let (new_ids, from_scratch) = new_tokens(template, tok, conv, &rendered, source)?;
    let vocab = engine.vocab_size();
    if let Some(&bad) = new_ids.iter().find(|&&i| i as usize >= vocab) {
        bail!(
            "{}: token id {bad} is outside the plan's vocab_size {vocab}: the tokenizer does not belong to this model",
            tok.path().display()
        );
    }
    let held = if from_scratch { 0 } else { conv.context.len() };
    let room = settings.max_context.saturating_sub(held);
    if new_ids.len() >= room {
        bail!(
            "{source}: the conversation would be {} tokens, and the plan holds {} (the model's max_position_embeddings); /reset starts over",
            held + new_ids.len(),
            settings.max_context
        );
    }
    if from_scratch {
        engine.reset();
        conv.context.clear();
        tracing::info!(
            "{source}: the template renders the earlier turns differently now; running the conversation from the start"
        );
    }
    let mut seen = conv.context.clone();
    seen.extend_from_slice(&new_ids);
    // Each turn draws from its own seed, so a conversation replays the same for a seed.
    let sampler = Sampler::new(settings.params, turn_seed(settings, turn), &seen);
    let turn_settings = Settings {
        max_context: room,
        ..settings.clone()
    };
    let outcome = match generate_with(
        engine,
        source,
        &new_ids,
        sampler,
        &turn_settings,
        Some(tok),
        sink,
    ) {
        Ok(o) => o,
        Err(e) => {
            forget_state(engine, conv);
            return Err(e.context(format!("{source}: running the turn")));
        }
    };
    // The state now holds the prefilled tokens and every generated token but the last, which
    // the next turn feeds first.
    conv.context.extend_from_slice(&new_ids);
    if let Some((last, fed)) = outcome.generated.split_last() {
        conv.context.extend_from_slice(fed);
        conv.pending = Some(*last);
    } else {
        conv.pending = None;
    }
    let reply = outcome.text.clone().unwrap_or_default();
    conv.last_prompt_text = rendered;
    messages.push(json!({"role": "assistant", "content": reply}));
    conv.messages = messages;
    Ok(json!({
        "turn": turn,
        "text": reply,
        "generated_tokens": outcome.generated,
        "prefilled": new_ids.len(),
        "context_tokens": conv.context.len(),
        "stop_reason": outcome.reason.as_str(),
        "prompt_ms": outcome.prompt_s * 1e3,
        "decode_ms": outcome.decode_s * 1e3,
    }))
}

/// After a failed engine call: the state is cleared, and the next turn runs the conversation
/// (without the failed turn) from the start.
fn forget_state(engine: &mut dyn Engine, conv: &mut Conversation) {
    engine.reset();
    conv.context.clear();
    conv.pending = None;
}

fn turn_seed(s: &Settings, turn: usize) -> u64 {
    s.seed.wrapping_add(turn as u64 - 1)
}

/// The tokens to prefill for a turn whose whole conversation renders as `rendered`, and
/// whether they start from an empty state.
///
/// The first turn is the whole rendering. After a reply, the state holds the rendering up to
/// that reply and the reply's own tokens but the last (sampled, not yet decoded). The template
/// renders the conversation with the reply as `A + R + C + N` where `A` is the earlier
/// rendering, `R` the reply text (stripped or not), `C` what closes it (an end-of-turn marker)
/// and `N` the new user turn and generation prompt. The new tokens are then the reply's last
/// token, then `C + N` tokenized (without `C`'s end-of-sequence marker when the model ended
/// its reply with it). When the template renders the earlier turns differently (the rendering
/// does not start with `A`), the conversation is run from the start.
fn new_tokens(
    template: &ChatTemplate,
    tok: &TextTokenizer,
    conv: &Conversation,
    rendered: &str,
    source: &str,
) -> Result<(Vec<u32>, bool)> {
    let encode = |s: &str| tok.encode_plain(s).with_context(|| source.to_string());
    let Some(last) = conv.pending else {
        return Ok((encode(rendered)?, !conv.context.is_empty()));
    };
    let reply = conv
        .messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let before = template
        .render(&Value::Array(conv.messages.clone()), false)
        .with_context(|| format!("{source}: the chat template refused the conversation"))?;
    let after_prompt = before
        .strip_prefix(conv.last_prompt_text.as_str())
        .filter(|_| rendered.starts_with(before.as_str()));
    let Some(after_prompt) = after_prompt else {
        return Ok((encode(rendered)?, true));
    };
    // C: what the template writes after the reply's text.
    let trimmed = reply.trim();
    let closing = match after_prompt.find(trimmed) {
        Some(at) => &after_prompt[at + trimmed.len()..],
        None => after_prompt,
    };
    let added = format!("{closing}{}", &rendered[before.len()..]);
    let mut ids = vec![last];
    let ended_with_eos = tok.is_special(last);
    let mut tail = encode(if ended_with_eos {
        added.trim_start()
    } else {
        &added
    })?;
    // The model's own end-of-turn token stands for the template's.
    if ended_with_eos && tail.first() == Some(&last) {
        tail.remove(0);
    }
    ids.extend(tail);
    Ok((ids, false))
}
