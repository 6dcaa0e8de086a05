#!/usr/bin/env python3
"""Build the chat-template fixture for zamba2c: how transformers' `apply_chat_template` renders
conversations with a few chat templates, so that zamba2c's minijinja rendering can be compared with it.

    python3 scripts/make_chat_fixture.py [--out tests/fixtures/chat/cases.json]

Needs transformers==5.24.0 and jinja2 (no torch). Deterministic.

The tokenizer is tests/fixtures/tokenizer (the Mistral v0.1 / Zamba2 vocabulary; bos <s>, eos </s>).
For every template below and every conversation, it records
  {"template": name, "messages": [...], "add_generation_prompt": bool,
   "text": apply_chat_template(..., tokenize=False),
   "ids": apply_chat_template(..., tokenize=True)}            (token ids, no special tokens added)
or, where the template raises (raise_exception), {"error": the exception message}.
The templates are stored in the same file ("templates": {name: source}).

The templates are written for this fixture in the styles real chat models use (ChatML with
<|im_start|> markers, a Llama-2/Mistral [INST] template that folds the system prompt into the first
user turn and checks role alternation with raise_exception, and one that uses namespace, tojson,
selectattr, loop.last, string methods and whitespace control); they are not copied from any model.
"""
import argparse
import json
import os
import sys

import transformers
from transformers import AutoTokenizer

TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "inst": (
        "{% if messages[0]['role'] == 'system' %}"
        "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
        "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
        "{{ bos_token }}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
    "features": """{%- set ns = namespace(turns=0, system='') -%}
{%- for m in messages if m.role == 'system' -%}
  {%- set ns.system = ns.system + m.content | trim -%}
{%- endfor %}
{% if ns.system %}System: {{ ns.system | upper }}
{% endif %}
{%- for m in messages | selectattr('role', 'ne', 'system') %}
  {%- set ns.turns = ns.turns + 1 %}
  {%- if m.role == 'user' %}
User ({{ ns.turns }}): {{ m.content | replace('\\n', ' ') }}
  {%- else %}
Assistant: {{ m.content }}{% if not loop.last %}{{ eos_token }}{% endif %}
  {%- endif %}
{%- endfor %}
{% if add_generation_prompt -%}
Assistant ({{ messages | length }} messages, meta {{ {'n': messages | length, 'last': messages[-1].role} | tojson }}):
{%- endif %}
""",
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello, who are you?"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "  Paris.  "},
        {"role": "user", "content": "And of Japan?\nAnswer briefly."},
    ],
    [
        {"role": "user", "content": "naïve café 😀 日本語"},
        {"role": "assistant", "content": "Ελληνικά"},
    ],
    # Roles out of order: the [INST] template raises.
    [
        {"role": "assistant", "content": "I speak first."},
        {"role": "user", "content": "Odd."},
    ],
]


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "tests/fixtures/chat/cases.json"))
    args = ap.parse_args()
    assert transformers.__version__ == "5.24.0", transformers.__version__
    tok = AutoTokenizer.from_pretrained(os.path.join(root, "tests/fixtures/tokenizer"))
    cases = []
    for name, template in TEMPLATES.items():
        for messages in CONVERSATIONS:
            for gen in (False, True):
                case = {"template": name, "messages": messages, "add_generation_prompt": gen}
                try:
                    case["text"] = tok.apply_chat_template(
                        messages, chat_template=template, tokenize=False, add_generation_prompt=gen
                    )
                    ids = tok.apply_chat_template(
                        messages,
                        chat_template=template,
                        tokenize=True,
                        add_generation_prompt=gen,
                        return_dict=False,
                    )
                    case["ids"] = [int(i) for i in ids]
                except Exception as e:  # the template's raise_exception
                    case["error"] = str(e)
                cases.append(case)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(
            {
                "transformers": transformers.__version__,
                "bos_token": tok.bos_token,
                "eos_token": tok.eos_token,
                "templates": TEMPLATES,
                "cases": cases,
            },
            f,
            ensure_ascii=False,
            indent=1,
        )
        f.write("\n")
    print(f"{len(cases)} cases -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
