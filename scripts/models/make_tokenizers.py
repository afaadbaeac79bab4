#!/usr/bin/env python3
"""Builds the small byte-level BPE tokenizers kiln's tokenizer tests use.

No model hub is reachable, so the tokenizers are trained here with the
Hugging Face `tokenizers` library on a few KB of multilingual text, and the
ids that library gives for the test strings are stored as the reference:

  tests/tokenizers/<name>/tokenizer.json   the tokenizer
  tests/tokenizers/<name>/expected.json    [{"text", "ids", "ids_plain",
                                             "decoded", "decoded_skip"}, ...]
  (ids: add_special_tokens=True, the default; ids_plain: False)

  gpt2   ByteLevel pre-tokenizer with GPT-2's regex (use_regex=true)
  qwen2  NFC normalizer, Split with the Llama-3/Qwen2 regex + ByteLevel
         (use_regex=false), merges in the ["a","b"] list form, a
         non-special added token, and a TemplateProcessing post-processor

Run by developers (not CI): python scripts/models/make_tokenizers.py
"""
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "tokenizers")

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
           r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = """
The quick brown fox jumps over the lazy dog. It's what they'll say, isn't it? We're here, you've seen.
A tokenizer splits text into pieces; the model only ever sees the ids of those pieces.
In 2024 there were 1,234,567 tokens per second and 3.14159 was still pi. Call 555-0100 before 9:30.
Café, naïve, résumé, façade, jalapeño, Straße, Ærøskøbing, Łódź, São Paulo, crème brûlée.
Él está en la ciudad. Ça va très bien, merci! Größe und Übermut. Dziękuję bardzo.
Привет, как дела? Это простой текст на русском языке. Ελληνικά γράμματα και λέξεις.
日本語のテキストです。東京は日本の首都です。今日はいい天気ですね。
中文文本测试。我们今天去公园散步。机器学习和自然语言处理。
한국어 텍스트입니다. 안녕하세요, 반갑습니다.
مرحبا بالعالم. שלום עולם. नमस्ते दुनिया।
Emoji: 😀 😃 😄 👍 🎉 🚀 ❤️ 👨‍👩‍👧‍👦 🏳️‍🌈 👩🏽‍💻 🇫🇷 🇯🇵
def main(argv):
    for i in range(10):
        if i % 2 == 0:
            print(f"even {i}")
\treturn {"key": [1, 2, 3], 'other': None}
int main(void) { return x->y[0] + *p++ - (a << 2) && b || !c; }
    indented    with     runs      of       spaces
\t\ttabs\tand\nnewlines\r\nwindows line endings\n\n\nblank lines
<html><body class="main">Hello &amp; welcome</body></html>
SELECT id, name FROM users WHERE age >= 18 ORDER BY name;
"""

STRINGS = [
    "",
    "Hello world",
    "Hello, world!",
    "hello   world",
    " leading space",
    "trailing space ",
    "The quick brown fox jumps over the lazy dog.",
    "It's what they'll say, isn't it? We're here, you've seen, I'd, I'm.",
    "IT'S LOUD, WE'RE HERE",
    "Café naïve résumé façade",
    "e\u0301 combining acute (decomposed)",
    "Straße Größe Übermut",
    "Привет, мир!",
    "Ελληνικά",
    "日本語のテキストです。",
    "中文文本测试",
    "한국어 텍스트",
    "مرحبا بالعالم",
    "नमस्ते",
    "😀",
    "👍🏽",
    "👨\u200d👩\u200d👧\u200d👦 family",
    "🏳️\u200d🌈 flag",
    "👩🏽\u200d💻 coder",
    "🇫🇷🇯🇵",
    "❤️ love",
    "12345",
    "1234567890",
    "3.14159",
    "1,234,567 tokens",
    "Call 555-0100 before 9:30",
    "\t",
    "\n",
    "\n\n\n",
    "a\tb\tc",
    "line one\nline two\r\nline three",
    "    four spaces",
    "x     \n     y",
    "   ",
    "def f(x):\n    return x * 2\n",
    "int main(void) { return 0; }",
    "{\"key\": [1, 2, 3]}",
    "<html><body>Hi</body></html>",
    "<|endoftext|>",
    "Hello<|endoftext|>world",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text <|im_end|> more",
    "<|im_start|><|im_end|>",
    "<|im_end",
    "<|unknown|> not special",
    "zzzzqqqq xylophone",
    "~!@#$%^&*()_+-=[]{}|;:,.<>?/",
    "mixed 日本 and English 123 😀!",
    "ÅÉÎÕÜ åéîõü",
    "a",
    " ",
    "kiln compiles; kilns and kiln",
    "caf\u00e9 or cafe\u0301, Caf\u00e9 and kil\u006e",
    "no\u00a0break and ideographic\u3000space",
    "next\u0085line, zero\u200bwidth, em\u2003space",
    "  \u00a0 mixed \t\u3000 blanks  ",
]


def train(pre_tok, normalizer, merges_list_form):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=1, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    data = json.loads(tok.to_str())
    merges = data["model"]["merges"]
    if merges and not merges_list_form and isinstance(merges[0], list):
        data["model"]["merges"] = [" ".join(m) for m in merges]
    if merges and merges_list_form and isinstance(merges[0], str):
        data["model"]["merges"] = [m.split(" ") for m in merges]
    return Tokenizer.from_str(json.dumps(data)), data


def write(name, tok, data):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
    # Reload what was written, so the reference is the committed file's.
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    cases = []
    for s in STRINGS:
        ids = tok.encode(s).ids
        cases.append({"text": s, "ids": ids,
                      "ids_plain": tok.encode(s, add_special_tokens=False).ids,
                      "decoded": tok.decode(ids, skip_special_tokens=False),
                      "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
    print(f"{name}: vocab {tok.get_vocab_size()}, {len(cases)} strings")


def main():
    gpt2_pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok, data = train(gpt2_pre, None, merges_list_form=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    data = json.loads(tok.to_str())
    data["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    write("gpt2", tok, data)

    qwen_pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok, data = train(qwen_pre, normalizers.NFC(), merges_list_form=True)
    # A non-special added token: matched before pre-tokenization like the
    # special ones, but kept by decode(skip_special_tokens=True).
    tok.add_tokens([AddedToken("kiln", normalized=False)])
    # ... and one matched after normalizing (NFC): "cafe\u0301" finds it.
    tok.add_tokens([AddedToken("caf\u00e9", normalized=True)])
    # Llama-3-style post-processor: ByteLevel, then a template adding
    # special tokens around the text (encode's add_special).
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|im_start|> $A <|im_end|>", pair="$A $B",
                                      special_tokens=[("<|im_start|>", 1), ("<|im_end|>", 2)]),
    ])
    data = json.loads(tok.to_str())
    write("qwen2", tok, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
