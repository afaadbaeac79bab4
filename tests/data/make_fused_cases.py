#!/usr/bin/env python3
"""Writes tests/data/fused/<case>/ (model.onnx + test_data_set_0, the ONNX
backend-test layout) for the ops the fusion passes make that the ONNX node
tests lack: RMSNormalization (opset 23) and kiln's Silu, SwiGlu (also packed), RotaryHalf and
GemmEpilogue (every activation; bias, residual, broadcasting). Expected
outputs are computed here with numpy (float64, rounded to float32), so
kiln-conformance and kiln-cuda-emu check the CPU kernels and the CUDA
emitters against an independent reference. Deterministic: rerunning gives
the same files. Needs the onnx and numpy PyPI packages."""

import os
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused")
rng = np.random.default_rng(6)


def write(name, nodes, inputs, outputs, opsets):
    d = os.path.join(HERE, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    vi = lambda n, a: helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
    g = helper.make_graph(nodes, name, [vi(n, a) for n, a in inputs], [vi(n, a) for n, a in outputs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(dom, v) for dom, v in opsets], ir_version=10)
    onnx.save(m, os.path.join(d, "model.onnx"))
    for i, (n, a) in enumerate(inputs):
        with open(os.path.join(d, "test_data_set_0", "input_%d.pb" % i), "wb") as f:
            f.write(numpy_helper.from_array(a.astype(np.float32), n).SerializeToString())
    for i, (n, a) in enumerate(outputs):
        with open(os.path.join(d, "test_data_set_0", "output_%d.pb" % i), "wb") as f:
            f.write(numpy_helper.from_array(a.astype(np.float32), n).SerializeToString())


def silu(x):
    return x / (1.0 + np.exp(-x))


def rms(x, scale, eps, axis):
    ax = tuple(range(axis % x.ndim, x.ndim))
    return x / np.sqrt(np.mean(x * x, axis=ax, keepdims=True) + eps) * scale


x = rng.standard_normal((2, 5, 16)).astype(np.float32)
w = (1 + 0.1 * rng.standard_normal(16)).astype(np.float32)
write("rms_normalization_last_axis",
      [helper.make_node("RMSNormalization", ["x", "w"], ["y"], epsilon=1e-6)],
      [("x", x), ("w", w)], [("y", rms(x.astype(np.float64), w, np.float32(1e-6), -1))], [("", 23)])
w2 = (1 + 0.1 * rng.standard_normal((5, 16))).astype(np.float32)
write("rms_normalization_axis1",
      [helper.make_node("RMSNormalization", ["x", "w"], ["y"], axis=1)],
      [("x", x), ("w", w2)], [("y", rms(x.astype(np.float64), w2, np.float32(1e-5), 1))], [("", 23)])
write("kiln_silu",
      [helper.make_node("Silu", ["x"], ["y"], domain="kiln")],
      [("x", 4 * x)], [("y", silu(4 * x.astype(np.float64)))], [("", 17), ("kiln", 1)])
up = rng.standard_normal((5, 16)).astype(np.float32)
write("kiln_swiglu_broadcast",
      [helper.make_node("SwiGlu", ["g", "u"], ["y"], domain="kiln")],
      [("g", 3 * x), ("u", up)], [("y", silu(3 * x.astype(np.float64)) * up)], [("", 17), ("kiln", 1)])


def rotate_half(x):
    d = x.shape[-1]
    h = d // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


q = rng.standard_normal((2, 3, 5, 8)).astype(np.float32)
cs = rng.standard_normal((2, 1, 5, 8)).astype(np.float32)
sn = rng.standard_normal((2, 1, 5, 8)).astype(np.float32)
q64 = q.astype(np.float64)
write("kiln_rotary_half",
      [helper.make_node("RotaryHalf", ["x", "cos", "sin"], ["y"], domain="kiln")],
      [("x", q), ("cos", cs), ("sin", sn)], [("y", q64 * cs + rotate_half(q64) * sn)], [("", 17), ("kiln", 1)])
q7 = rng.standard_normal((2, 5, 7)).astype(np.float32)
cs7 = rng.standard_normal((5, 7)).astype(np.float32)
sn7 = rng.standard_normal((5, 7)).astype(np.float32)
write("kiln_rotary_half_odd",
      [helper.make_node("RotaryHalf", ["x", "cos", "sin"], ["y"], domain="kiln")],
      [("x", q7), ("cos", cs7), ("sin", sn7)],
      [("y", q7.astype(np.float64) * cs7 + rotate_half(q7.astype(np.float64)) * sn7)], [("", 17), ("kiln", 1)])
packed = rng.standard_normal((2, 5, 32)).astype(np.float32)
p64 = packed.astype(np.float64)
write("kiln_swiglu_packed",
      [helper.make_node("SwiGlu", ["p"], ["y"], domain="kiln")],
      [("p", packed)], [("y", silu(p64[..., :16]) * p64[..., 16:])], [("", 17), ("kiln", 1)])


def gelu(x):
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


ACTS = {
    "": lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "clip": lambda v: np.clip(v, -0.5, 0.75),
    "gelu": gelu,
    "gelu_tanh": lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3))),
    "silu": silu,
    "hardsigmoid": lambda v: np.clip(np.float32(0.3) * v + np.float32(0.4), 0, 1),
    "hardswish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1),
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "tanh": np.tanh,
    "leakyrelu": lambda v: np.where(v < 0, np.float32(0.3) * v, v),
}
ACT_ATTRS = {"clip": (-0.5, 0.75), "hardsigmoid": (0.3, 0.4), "leakyrelu": (0.3, 0.0)}


def epilogue(name, act, a, b, bias=None, res=None, gemm=0, trans_b=0, alpha=1.0):
    attrs = {"activation": act, "gemm": gemm}
    if act in ACT_ATTRS:
        attrs["act_alpha"], attrs["act_beta"] = ACT_ATTRS[act]
    if gemm:
        attrs.update(transB=trans_b, alpha=alpha)
    ins = [("a", a), ("b", b)] + ([("bias", bias)] if bias is not None else []) + ([("res", res)] if res is not None else [])
    names = ["a", "b", "bias" if bias is not None else "", "res" if res is not None else ""]
    while names and names[-1] == "":
        names.pop()
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    v = (a64 @ (b64.T if trans_b else b64)) * (np.float32(alpha) if gemm else 1)
    if bias is not None:
        v = v + bias.astype(np.float64)
    v = ACTS[act](v)
    if res is not None:
        v = v + res.astype(np.float64)
    write(name, [helper.make_node("GemmEpilogue", names, ["y"], domain="kiln", **attrs)], ins, [("y", v)],
          [("", 17), ("kiln", 1)])


A = rng.standard_normal((2, 5, 8)).astype(np.float32)
B = (0.4 * rng.standard_normal((8, 6))).astype(np.float32)
bias6 = rng.standard_normal(6).astype(np.float32)
res = rng.standard_normal((2, 5, 6)).astype(np.float32)
for act in ACTS:
    epilogue("kiln_gemm_epilogue_%s" % (act or "none"), act, A, B, bias6)
epilogue("kiln_gemm_epilogue_relu_residual", "relu", A, B, bias6, res)
epilogue("kiln_gemm_epilogue_bias_residual", "", A, B, bias6, res)
epilogue("kiln_gemm_epilogue_residual", "", A, B, None, res)
epilogue("kiln_gemm_epilogue_gemm_bias_residual", "", A, B, bias6, res, gemm=1)
A2 = rng.standard_normal((5, 8)).astype(np.float32)
Bt = (0.4 * rng.standard_normal((6, 8))).astype(np.float32)
epilogue("kiln_gemm_epilogue_gemm_transb_gelu_tanh", "gelu_tanh", A2, Bt, bias6, gemm=1, trans_b=1, alpha=0.5)
epilogue("kiln_gemm_epilogue_broadcast_residual", "hardsigmoid", A2, B, bias6,
         rng.standard_normal((3, 1, 1)).astype(np.float32))
epilogue("kiln_gemm_epilogue_scalar_bias", "tanh", A2, B, np.array([0.25], np.float32))
print("wrote", HERE)
