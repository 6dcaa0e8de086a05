//! A model's chat template (Jinja, from the plan's `chat_template.jinja` or the `chat_template`
//! of its `tokenizer_config.json`), rendered with minijinja the way transformers'
//! `apply_chat_template` renders it: `trim_blocks` and `lstrip_blocks` on, loop controls, the
//! special tokens (`bos_token`, `eos_token`, ...) and `add_generation_prompt` in the context,
//! `raise_exception(msg)`, Python's string and dict methods (minijinja-contrib's pycompat), and
//! `tojson` as Python's `json.dumps(..., ensure_ascii=False)` writes it.
//! tests/fixtures/chat/cases.json (scripts/make_chat_fixture.py) is what transformers renders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use zamba2c_ir::Plan;

use crate::RuntimeError;

/// The name the template is stored under in its environment.
const NAME: &str = "chat_template";

/// A chat template ready to render conversations.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where the template came from (for errors).
    origin: String,
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token` as the tokenizer config names them.
    special: BTreeMap<String, String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("special", &self.special)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `origin` names where it came from in errors; `special` are the
    /// special tokens the template may use (`bos_token`, ...).
    pub fn new(
        source: &str,
        origin: impl Into<String>,
        special: BTreeMap<String, String>,
    ) -> Result<Self, RuntimeError> {
        let origin = origin.into();
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| RuntimeError::ChatTemplate(format!("{origin}: {e}")))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| RuntimeError::ChatTemplate(format!("{origin}: {}", describe(&e))))?;
        Ok(ChatTemplate {
            env,
            origin,
            special,
        })
    }

    /// The plan's chat template: `chat_template.jinja` when the plan has one (transformers 5
    /// saves it so), else `chat_template` of `tokenizer_config.json` (a string, or a list of
    /// `{name, template}` of which "default" is used). `None` when the model has no template.
    pub fn from_plan(plan: &Plan) -> Result<Option<Self>, RuntimeError> {
        from_dir(&plan.dir)
    }

    /// Where the template came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders `messages` (a list of objects with `role` and `content`, passed to the template
    /// as they are) with `add_generation_prompt`. A template that raises gives
    /// [`RuntimeError::ChatTemplate`] with its message.
    pub fn render(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
    ) -> Result<String, RuntimeError> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| RuntimeError::ChatTemplate(format!("{}: {e}", self.origin)))?;
        let mut ctx: BTreeMap<String, Value> = self
            .special
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        ctx.insert(
            "messages".into(),
            Value::from(minijinja::value::Serde(messages)),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        tmpl.render(ctx)
            .map_err(|e| RuntimeError::ChatTemplate(describe(&e)))
    }
}

/// The chat template of a plan or checkpoint directory (see [`ChatTemplate::from_plan`]).
pub fn from_dir(dir: &Path) -> Result<Option<ChatTemplate>, RuntimeError> {
    let config_path = dir.join("tokenizer_config.json");
    let config: serde_json::Value = if config_path.is_file() {
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            RuntimeError::ChatTemplate(format!("{}: cannot read: {e}", config_path.display()))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            RuntimeError::ChatTemplate(format!("{}: malformed JSON: {e}", config_path.display()))
        })?
    } else {
        serde_json::Value::Null
    };
    let special = special_tokens(&config);
    let jinja: PathBuf = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let source = std::fs::read_to_string(&jinja).map_err(|e| {
            RuntimeError::ChatTemplate(format!("{}: cannot read: {e}", jinja.display()))
        })?;
        return ChatTemplate::new(&source, jinja.display().to_string(), special).map(Some);
    }
    let origin = format!("{}: chat_template", config_path.display());
    let source = match config.get("chat_template") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(items)) => {
            let default = items.iter().find(|t| t["name"] == "default");
            match default.and_then(|t| t["template"].as_str()) {
                Some(s) => s.to_string(),
                None => {
                    return Err(RuntimeError::ChatTemplate(format!(
                        "{origin}: a list of templates without a \"default\" one"
                    )))
                }
            }
        }
        Some(_) => {
            return Err(RuntimeError::ChatTemplate(format!(
                "{origin}: expected a string or a list of {{name, template}}"
            )))
        }
    };
    ChatTemplate::new(&source, origin, special).map(Some)
}

/// The special tokens of a tokenizer config (each a string or an `{"content": ...}` object).
fn special_tokens(config: &serde_json::Value) -> BTreeMap<String, String> {
    ["bos_token", "eos_token", "unk_token", "pad_token"]
        .iter()
        .filter_map(|&k| {
            let v = config.get(k)?;
            let s = v.as_str().or_else(|| v.get("content")?.as_str())?;
            Some((k.to_string(), s.to_string()))
        })
        .collect()
}

/// A minijinja error as one line: the template's own message for `raise_exception`.
fn describe(e: &Error) -> String {
    match (e.kind(), e.detail()) {
        (ErrorKind::InvalidOperation, Some(d)) => d.to_string(),
        _ => format!("{e:#}").replace('\n', " "),
    }
}

/// `raise_exception(msg)`: the template refuses the conversation.
fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)` (keys in order).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, &value, indent, 0)?;
    Ok(Value::from_safe_string(out))
}

/// Python's `json.dumps` layout: `", "` and `": "` without indent; with one, a newline and
/// `indent` spaces per level, `","` between items.
fn write_json(
    out: &mut String,
    v: &Value,
    indent: Option<usize>,
    level: usize,
) -> Result<(), Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                let f = f64::try_from(v.clone())?;
                out.push_str(&python_float(f));
            }
        }
        ValueKind::String => write_json_string(out, v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                write_json(out, item, indent, level + 1)?;
            }
            if !items.is_empty() {
                newline(out, level);
            }
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                write_json_string(out, &k.to_string());
                out.push_str(": ");
                write_json(out, &v.get_item(k)?, indent, level + 1)?;
            }
            if !keys.is_empty() {
                newline(out, level);
            }
            out.push('}');
        }
        _ => write_json_string(out, &v.to_string()),
    }
    Ok(())
}

/// A float as Python's `repr` writes the common cases (`1.0`, `0.5`, `1e-07`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// A JSON string with `ensure_ascii=False`: only quotes, backslashes and control characters
/// are escaped, as Python does.
fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_dir() -> PathBuf {
        std::env::var_os("ZAMBA2C_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures"))
    }

    fn fixture() -> serde_json::Value {
        let p = fixture_dir().join("chat/cases.json");
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    }

    #[test]
    fn renders_as_transformers_does() {
        let f = fixture();
        let special: BTreeMap<String, String> = [
            ("bos_token", &f["bos_token"]),
            ("eos_token", &f["eos_token"]),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_str().unwrap().to_string()))
        .collect();
        let mut templates = BTreeMap::new();
        for (name, src) in f["templates"].as_object().unwrap() {
            let t = ChatTemplate::new(src.as_str().unwrap(), name.clone(), special.clone());
            templates.insert(name.clone(), t.unwrap());
        }
        let cases = f["cases"].as_array().unwrap();
        assert!(cases.len() >= 20);
        let tok = crate::generate::text::TextTokenizer::from_file(
            &fixture_dir().join("tokenizer/tokenizer.json"),
        )
        .unwrap();
        for (i, c) in cases.iter().enumerate() {
            let t = &templates[c["template"].as_str().unwrap()];
            let gen = c["add_generation_prompt"].as_bool().unwrap();
            let got = t.render(&c["messages"], gen);
            match (&c["text"], &c["error"]) {
                (serde_json::Value::String(want), _) => {
                    let got = got.unwrap();
                    assert_eq!(&got, want, "case {i} ({})", c["template"]);
                    // and tokenized as apply_chat_template(tokenize=True) does
                    let ids: Vec<u32> = c["ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as u32)
                        .collect();
                    assert_eq!(tok.encode_plain(&got).unwrap(), ids, "case {i} ids");
                }
                (_, serde_json::Value::String(msg)) => {
                    let err = got.unwrap_err().to_string();
                    assert_eq!(&err, msg, "case {i}");
                }
                _ => panic!("case {i} has neither text nor error"),
            }
        }
    }

    #[test]
    fn tojson_writes_as_python() {
        let t = ChatTemplate::new(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}",
            "test",
            BTreeMap::new(),
        )
        .unwrap();
        let x = serde_json::json!({"x": {"a": [1, 2.5, 3.0], "b": "é\"\n", "c": null, "d": true}});
        let got = t
            .env
            .get_template(NAME)
            .unwrap()
            .render(minijinja::Value::from(minijinja::value::Serde(&x)))
            .unwrap();
        // Python: json.dumps(x, ensure_ascii=False) and json.dumps(x, ensure_ascii=False, indent=2)
        let want = "{\"a\": [1, 2.5, 3.0], \"b\": \"é\\\"\\n\", \"c\": null, \"d\": true}|{\n  \"a\": [\n    1,\n    2.5,\n    3.0\n  ],\n  \"b\": \"é\\\"\\n\",\n  \"c\": null,\n  \"d\": true\n}";
        assert_eq!(got, want);
    }

    #[test]
    fn bad_templates_and_configs_name_the_file() {
        let err = ChatTemplate::new("{% for %}", "x/tokenizer_config.json", BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x/tokenizer_config.json"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        assert!(from_dir(dir.path()).unwrap().is_none());
        let cfg = dir.path().join("tokenizer_config.json");
        std::fs::write(&cfg, r#"{"bos_token": "<s>"}"#).unwrap();
        assert!(from_dir(dir.path()).unwrap().is_none());
        std::fs::write(&cfg, r#"{"chat_template": 5}"#).unwrap();
        let err = from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("chat_template") && err.contains("expected"),
            "{err}"
        );
        std::fs::write(&cfg, "{").unwrap();
        let err = from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("malformed JSON"), "{err}");
        std::fs::write(
            &cfg,
            r#"{"bos_token": {"content": "<s>"}, "chat_template": [{"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"}]}"#,
        )
        .unwrap();
        let t = from_dir(dir.path()).unwrap().unwrap();
        let m = serde_json::json!([{"role": "user", "content": "hi"}]);
        assert_eq!(t.render(&m, false).unwrap(), "<s>hi");
        std::fs::write(dir.path().join("chat_template.jinja"), "J{{ eos_token }}").unwrap();
        let t = from_dir(dir.path()).unwrap().unwrap();
        assert_eq!(t.render(&m, false).unwrap(), "J");
    }
}
