#!/usr/bin/env python3
"""Writes tests/data/fused/<case>/ (model.onnx + test_data_set_0, the ONNX
backend-test layout) for the ops the fusion passes make that the ONNX node
tests lack: RMSNormalization (opset 23) and kiln's Silu, SwiGlu and RotaryHalf. Expected
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
print("wrote", HERE)
