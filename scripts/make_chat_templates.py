#!/usr/bin/env python3
"""Renders the chat templates in tests/chat_templates/*.jinja with jinja2 the
way transformers' apply_chat_template does (sandboxed environment,
trim_blocks, lstrip_blocks, raise_exception, tojson with ensure_ascii=False)
and writes tests/chat_templates/expected.json for test_chat_template.

Run by developers (needs the jinja2 package, e.g. /work/venv-models/bin/python);
CI only reads the committed expected.json.
"""
import json
import os
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "chat_templates")

CONVERSATIONS = {
    "one_user": [{"role": "user", "content": "Hello!"}],
    "system_multi": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    "unicode_ws": [
        {"role": "user", "content": "  caf\u00e9 \u2615 \u65e5\u672c\u8a9e \"quoted\" \\ back\n\tend  "},
        {"role": "assistant", "content": "\U0001F600 ok\r\n"},
    ],
    "two_users": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    "tool_reply": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "calling"},
        {"role": "tool", "content": "{\"t\": 21}"},
        {"role": "tool", "content": "{\"t\": 22}"},
        {"role": "user", "content": "thanks"},
    ],
    "empty": [],
}

BOS, EOS = "<s>", "</s>"


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def render(source, messages, add_generation_prompt):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(
        messages=messages, add_generation_prompt=add_generation_prompt, bos_token=BOS, eos_token=EOS)


def main():
    cases = []
    for name in sorted(f[:-6] for f in os.listdir(HERE) if f.endswith(".jinja")):
        with open(os.path.join(HERE, name + ".jinja"), encoding="utf-8") as f:
            source = f.read()
        for conv, messages in CONVERSATIONS.items():
            for agp in (False, True):
                case = {"template": name, "conversation": conv, "add_generation_prompt": agp}
                try:
                    case["output"] = render(source, messages, agp)
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                except (IndexError, TypeError) as e:  # messages[0] of an empty list and the like
                    case["error"] = type(e).__name__
                cases.append(case)
    out = {"generator": "scripts/make_chat_templates.py", "jinja2": jinja2.__version__, "bos_token": BOS,
           "eos_token": EOS, "conversations": CONVERSATIONS, "cases": cases}
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases, {sum('error' in c for c in cases)} errors", file=sys.stderr)


if __name__ == "__main__":
    main()
