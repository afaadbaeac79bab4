#!/usr/bin/env python3
"""Exports small random-initialised decoder-only language models (GPT-2, Llama
with grouped-query attention, Qwen2) to ONNX with past/present KV-cache inputs
and outputs, and writes their reference data to tests/models/<name>/:

  model.onnx          fp32, opset 17, dynamic batch / seq / past_seq dims
  test_data_set_0/    prefill: 7 tokens, batch 1, empty past (past_seq 0)
  test_data_set_1/    decode: 1 token with the past from set 0
  reference.json      transformers' greedy generation (64 new tokens) and the
                      logits of its first 4 steps for 3 prompts (3, 8, 17 ids)
  README.md           the case's tolerance line for kiln-conformance

Run by developers, not by CI (it needs torch, transformers, onnx, onnxruntime
and numpy from PyPI; see tests/models/README.md for the versions used):

  python3 -m venv /work/venv-models
  /work/venv-models/bin/pip install torch transformers onnx onnxruntime numpy
  /work/venv-models/bin/python scripts/models/export_decoders.py [--only NAME]

Everything is seeded; the same package versions give the same files.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from onnx import numpy_helper
from transformers import (DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OPSET = 17
VOCAB = 512           # Llama and Qwen2
GPT2_VOCAB = 256      # GPT-2's exporter writes the tied embedding twice (Gather table and
                      # folded, transposed lm_head), so its vocabulary is halved to stay < 2 MB
MAX_POS = 128          # prompts of at most 17 ids + 64 new tokens fit
NEW_TOKENS = 64
LOGIT_STEPS = 4
PROMPT_LENGTHS = (3, 8, 17)
PROMPT_SEED = 1234
PREFILL_LEN = 7
SIZE_LIMIT = 2_000_000
# Larger than transformers' default 0.02 so that the random models' logits
# are decisive (greedy top-1 / top-2 margins well above float rounding).
INIT_RANGE = 0.1


def make_gpt2():
    return GPT2LMHeadModel, GPT2Config(
        vocab_size=GPT2_VOCAB, n_positions=MAX_POS, n_embd=128, n_layer=2, n_head=4,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        initializer_range=INIT_RANGE, bos_token_id=None, eos_token_id=None, pad_token_id=None,
        tie_word_embeddings=True)


def make_llama():
    return LlamaForCausalLM, LlamaConfig(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
        max_position_embeddings=MAX_POS, rms_norm_eps=1e-6, rope_theta=10000.0,
        initializer_range=INIT_RANGE, bos_token_id=None, eos_token_id=None, pad_token_id=None,
        tie_word_embeddings=False)


def make_qwen2():
    return Qwen2ForCausalLM, Qwen2Config(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
        max_position_embeddings=MAX_POS, rms_norm_eps=1e-6, rope_theta=10000.0,
        use_sliding_window=False, initializer_range=INIT_RANGE,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)


MODELS = {
    "gpt2_tiny": (make_gpt2, 1),
    "llama_gqa_tiny": (make_llama, 2),
    "qwen2_tiny": (make_qwen2, 3),
}


def build(name):
    make, seed = MODELS[name]
    cls, cfg = make()
    torch.manual_seed(seed)
    model = cls(cfg)
    # Re-draw every parameter from a seeded generator so that the weights do not
    # depend on how a transformers version orders its init calls.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in sorted(model.named_parameters()):
            if pname.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif p.dim() == 1:   # norm weights
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * INIT_RANGE)
    model.config._attn_implementation = "eager"
    model.eval()
    return model, cfg


def kv_dims(cfg):
    """(layers, kv heads, head dim)."""
    if isinstance(cfg, GPT2Config):
        return cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
    return cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads


class Wrapper(torch.nn.Module):
    """Flat tensors in, flat tensors out: input_ids, attention_mask,
    position_ids, past_key_values.{i}.key/value -> logits, present.{i}.key/value."""

    def __init__(self, model, n_layers):
        super().__init__()
        self.model = model
        self.n = n_layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.n)],
                             config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        pkv = out.past_key_values
        presents = []
        for i in range(self.n):
            presents += [pkv.layers[i].keys, pkv.layers[i].values]
        return (out.logits, *presents)


def io_names(n):
    ins = ["input_ids", "attention_mask", "position_ids"]
    outs = ["logits"]
    for i in range(n):
        ins += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outs += [f"present.{i}.key", f"present.{i}.value"]
    return ins, outs


def feeds(cfg, ids, past=None):
    """Inputs for a step: ids [b, s] (int64), past: list of 2n arrays or None."""
    n, kvh, hd = kv_dims(cfg)
    b, s = ids.shape
    if past is None:
        past = [np.zeros((b, kvh, 0, hd), np.float32) for _ in range(2 * n)]
    p = past[0].shape[2]
    d = {"input_ids": ids.astype(np.int64),
         "attention_mask": np.ones((b, p + s), np.int64),
         "position_ids": np.tile(np.arange(p, p + s, dtype=np.int64), (b, 1))}
    for i in range(n):
        d[f"past_key_values.{i}.key"] = past[2 * i]
        d[f"past_key_values.{i}.value"] = past[2 * i + 1]
    return d


def torch_run(wrapper, names, d):
    with torch.no_grad():
        out = wrapper(*[torch.from_numpy(d[k]) for k in names])
    return [o.numpy() for o in out]


def export(name, model, cfg, path, check=True):
    n, kvh, hd = kv_dims(cfg)
    wrapper = Wrapper(model, n).eval()
    ins, outs = io_names(n)
    rng = np.random.default_rng(99)
    past = [rng.standard_normal((2, kvh, 3, hd)).astype(np.float32) for _ in range(2 * n)]
    example = feeds(cfg, rng.integers(0, cfg.vocab_size, (2, 5)), past)
    args = tuple(torch.from_numpy(example[k]) for k in ins)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total_seq"},
            "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    for i in range(n):
        axes[f"past_key_values.{i}.key"] = axes[f"past_key_values.{i}.value"] = {0: "batch", 2: "past_seq"}
        axes[f"present.{i}.key"] = axes[f"present.{i}.value"] = {0: "batch", 2: "total_seq"}
    torch.onnx.export(wrapper, args, path, dynamo=False, opset_version=OPSET, input_names=ins,
                      output_names=outs, dynamic_axes=axes, do_constant_folding=True)
    if check:  # (a model over 2 GB is checked by path, after its weights are gathered in one file)
        m = onnx.load(path)
        onnx.checker.check_model(m, full_check=True)
    return wrapper, ins, outs


def ort_session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def verify(sess, wrapper, cfg, ins, outs):
    """Max abs logits diff ORT vs torch for prefill (batch 1 and 2) and decode with past."""
    rng = np.random.default_rng(7)
    report = {}
    for label, b in (("prefill_b1", 1), ("prefill_b2", 2)):
        d = feeds(cfg, rng.integers(0, cfg.vocab_size, (b, 9)))
        t = torch_run(wrapper, ins, d)
        o = sess.run(outs, d)
        report[label] = float(np.abs(t[0] - o[0]).max())
        report[label + "_present"] = float(max(np.abs(a - c).max() for a, c in zip(t[1:], o[1:])))
        d2 = feeds(cfg, rng.integers(0, cfg.vocab_size, (b, 1)), o[1:])
        t2 = torch_run(wrapper, ins, d2)
        o2 = sess.run(outs, d2)
        report[label.replace("prefill", "decode")] = float(np.abs(t2[0] - o2[0]).max())
        d3 = feeds(cfg, rng.integers(0, cfg.vocab_size, (b, 4)), o2[1:])   # several new tokens with a past
        t3 = torch_run(wrapper, ins, d3)
        o3 = sess.run(outs, d3)
        report[label.replace("prefill", "chunk4")] = float(np.abs(t3[0] - o3[0]).max())
    return report


def write_set(folder, ins, outs, d, results):
    os.makedirs(folder, exist_ok=True)
    for k, nm in enumerate(ins):
        with open(os.path.join(folder, f"input_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(d[nm], nm).SerializeToString())
    for k, (nm, arr) in enumerate(zip(outs, results)):
        with open(os.path.join(folder, f"output_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(arr, nm).SerializeToString())


def sig6(x):
    return [float(f"{v:.6g}") for v in np.asarray(x, np.float64).ravel()]


def prompts(vocab):
    rng = np.random.default_rng(PROMPT_SEED)
    return [rng.integers(0, vocab, L).astype(np.int64) for L in PROMPT_LENGTHS]


def reference(model, cfg, sess, outs):
    gc = transformers.GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                       use_cache=True, eos_token_id=None, pad_token_id=None,
                                       bos_token_id=None, num_beams=1)
    res = []
    for p in prompts(cfg.vocab_size):
        ids = torch.from_numpy(p)[None]
        with torch.no_grad():
            g = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gc,
                               output_logits=True, return_dict_in_generate=True)
        new = g.sequences[0, len(p):].tolist()
        assert len(new) == NEW_TOKENS, len(new)
        logits = [s[0].numpy() for s in g.logits]
        margins = []
        for step in logits:
            top = np.sort(step)[-2:]
            margins.append(float(top[1] - top[0]))
        # The same greedy loop through the ONNX model in onnxruntime, with its KV cache.
        d = feeds(cfg, p[None])
        ort_tokens, ort_logit_diff = [], 0.0
        for step in range(NEW_TOKENS):
            o = sess.run(outs, d)
            last = o[0][0, -1]
            if step < LOGIT_STEPS:
                ort_logit_diff = max(ort_logit_diff, float(np.abs(last - logits[step]).max()))
            t = int(np.argmax(last))
            ort_tokens.append(t)
            d = feeds(cfg, np.array([[t]], np.int64), o[1:])
        res.append({
            "prompt_ids": p.tolist(),
            "new_tokens": new,
            "first_logits": [sig6(l) for l in logits[:LOGIT_STEPS]],
            "min_top2_margin": float(f"{min(margins):.6g}"),
            "onnxruntime_tokens_equal": ort_tokens == new,
            "onnxruntime_first_logits_max_abs_diff": float(f"{ort_logit_diff:.3g}"),
        })
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=sorted(MODELS))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "models"))
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    summary = {}
    for name in sorted(MODELS):
        if a.only and name != a.only:
            continue
        model, cfg = build(name)
        folder = os.path.join(a.out, name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "model.onnx")
        wrapper, ins, outs = export(name, model, cfg, path)
        size = os.path.getsize(path)
        if size >= SIZE_LIMIT:
            sys.exit(f"{path}: {size} bytes, over the {SIZE_LIMIT} limit: shrink the model")
        sess = ort_session(path)
        diffs = verify(sess, wrapper, cfg, ins, outs)
        worst = max(v for k, v in diffs.items() if not k.endswith("_present"))
        if worst >= 1e-4:
            sys.exit(f"{name}: onnxruntime and torch logits differ by {worst} (limit 1e-4): {diffs}")

        # Reference data sets: prefill of 7 ids with an empty past, then one decode step.
        ids = np.random.default_rng(4321).integers(0, cfg.vocab_size, (1, PREFILL_LEN)).astype(np.int64)
        d0 = feeds(cfg, ids)
        r0 = sess.run(outs, d0)
        write_set(os.path.join(folder, "test_data_set_0"), ins, outs, d0, r0)
        nxt = np.array([[int(np.argmax(r0[0][0, -1]))]], np.int64)
        d1 = feeds(cfg, nxt, r0[1:])
        r1 = sess.run(outs, d1)
        write_set(os.path.join(folder, "test_data_set_1"), ins, outs, d1, r1)
        t0, t1 = torch_run(wrapper, ins, d0), torch_run(wrapper, ins, d1)
        diffs["set0_logits"] = float(np.abs(t0[0] - r0[0]).max())
        diffs["set1_logits"] = float(np.abs(t1[0] - r1[0]).max())

        ref = {
            "model": name,
            "config": cfg.to_diff_dict(),
            "generation": {"do_sample": False, "max_new_tokens": NEW_TOKENS, "use_cache": True,
                           "eos_token_id": None, "pad_token_id": None, "logit_steps": LOGIT_STEPS,
                           "prompt_seed": PROMPT_SEED, "logits_rounding": "6 significant digits"},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
            "prompts": reference(model, cfg, sess, outs),
        }
        with open(os.path.join(folder, "reference.json"), "w") as f:
            json.dump(ref, f, separators=(",", ":"))
            f.write("\n")
        with open(os.path.join(folder, "README.md"), "w") as f:
            f.write(f"# {name}\n\nRandom-initialised test decoder made by `scripts/models/export_decoders.py`; "
                    "see [../README.md](../README.md).\n\n"
                    "Tolerance for kiln-conformance: using rtol 1e-3, atol 1e-4\n")
        summary[name] = {"bytes": size, "diffs": diffs,
                         "tokens_equal": [p["onnxruntime_tokens_equal"] for p in ref["prompts"]],
                         "min_margin": [p["min_top2_margin"] for p in ref["prompts"]]}
        print(name, json.dumps(summary[name]), flush=True)


if __name__ == "__main__":
    main()
