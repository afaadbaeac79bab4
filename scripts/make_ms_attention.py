#!/usr/bin/env python3
"""Writes tests/data/ms_attention/<case>/ (model.onnx + test_data_set_0, the
ONNX backend-test layout): small graphs of ONNX Runtime's com.microsoft
MultiHeadAttention, GroupQueryAttention and RotaryEmbedding in the forms
kiln's canon-ms pass rewrites (passes/canon_ms.c), with outputs computed by
onnxruntime on the CPU. Deterministic inputs (seeded). Needs numpy, onnx and
onnxruntime (the /work/venv-models environment); never run by the build.

  python3 scripts/make_ms_attention.py
"""

import os
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "ms_attention")
rng = np.random.default_rng(23)
ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32,
        np.dtype(np.int64): TensorProto.INT64}


def write(name, node, inputs, out_names, inits=()):
    d = os.path.join(HERE, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    vi = lambda n, a: helper.make_tensor_value_info(n, ELEM[a.dtype], list(a.shape))
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in out_names]
    g = helper.make_graph([node], name, [vi(n, a) for n, a in inputs], outs,
                          [numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                          ir_version=9)
    path = os.path.join(d, "model.onnx")
    onnx.save(m, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    res = sess.run(out_names, {n: a for n, a in inputs})
    for i, (n, a) in enumerate(inputs):
        with open(os.path.join(d, "test_data_set_0", "input_%d.pb" % i), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())
    for i, (n, a) in enumerate(zip(out_names, res)):
        with open(os.path.join(d, "test_data_set_0", "output_%d.pb" % i), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


# MultiHeadAttention: cross attention (7 keys), 4 heads of 4
write("mha_basic",
      helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=4),
      [("q", f32(2, 5, 16)), ("k", f32(2, 7, 16)), ("v", f32(2, 7, 16))], ["y"])
# causal, a given scale and an additive attention bias
write("mha_causal_bias",
      helper.make_node("MultiHeadAttention", ["q", "k", "v", "", "", "bias"], ["y"], domain="com.microsoft",
                       num_heads=4, unidirectional=1, scale=0.3),
      [("q", f32(2, 5, 16)), ("k", f32(2, 5, 16)), ("v", f32(2, 5, 16)), ("bias", f32(2, 1, 5, 5))], ["y"])
# keys and values already split into heads: [B, N, L, H]
write("mha_kv_bnsh",
      helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=4),
      [("q", f32(2, 5, 16)), ("k", f32(2, 4, 7, 4)), ("v", f32(2, 4, 7, 4))], ["y"])
# GroupQueryAttention, the prompt: 8 query heads over 2 kv heads, no past
S = 5
write("gqa_prompt",
      helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens_k", "total"],
                       ["y", "present_key", "present_value"], domain="com.microsoft", num_heads=8, kv_num_heads=2),
      [("q", f32(2, S, 64)), ("k", f32(2, S, 16)), ("v", f32(2, S, 16)),
       ("seqlens_k", np.array([S - 1, S - 1], np.int32)), ("total", np.array(S, np.int32))],
      ["y", "present_key", "present_value"])
# right-padded batch: the second sequence has 3 valid tokens
write("gqa_prompt_padded",
      helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens_k", "total"], ["y"],
                       domain="com.microsoft", num_heads=8, kv_num_heads=2),
      [("q", f32(2, S, 64)), ("k", f32(2, S, 16)), ("v", f32(2, S, 16)),
       ("seqlens_k", np.array([S - 1, 2], np.int32)), ("total", np.array(S, np.int32))], ["y"])
write("gqa_prompt_scale",
      helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens_k", "total"], ["y"],
                       domain="com.microsoft", num_heads=4, kv_num_heads=4, scale=0.5),
      [("q", f32(1, 6, 32)), ("k", f32(1, 6, 32)), ("v", f32(1, 6, 32)),
       ("seqlens_k", np.array([5], np.int32)), ("total", np.array(6, np.int32))], ["y"])
# RotaryEmbedding on [B, N, S, H] and on [B, S, N*H], position ids [B, S]
cos_cache = np.cos(np.outer(np.arange(16), 1.0 / 10000 ** (np.arange(0, 8, 2) / 8))).astype(np.float32)
sin_cache = np.sin(np.outer(np.arange(16), 1.0 / 10000 ** (np.arange(0, 8, 2) / 8))).astype(np.float32)
pos = np.array([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]], np.int64)
write("rotary_bnsh",
      helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain="com.microsoft"),
      [("x", f32(2, 4, 5, 8)), ("pos", pos)], ["y"], [("cos", cos_cache), ("sin", sin_cache)])
write("rotary_bsd",
      helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain="com.microsoft", num_heads=4),
      [("x", f32(2, 5, 32)), ("pos", pos)], ["y"], [("cos", cos_cache), ("sin", sin_cache)])
# position_ids as one offset [1]: positions offset .. offset + S - 1 for every batch entry
write("rotary_offset",
      helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain="com.microsoft", num_heads=4),
      [("x", f32(2, 5, 32)), ("pos", np.array([3], np.int64))], ["y"], [("cos", cos_cache), ("sin", sin_cache)])
print("wrote", os.path.normpath(HERE))
