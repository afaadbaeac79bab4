#!/usr/bin/env python3
"""Writes tests/data/fused_softmax/<case>/ (model.onnx + test_data_set_0, the
ONNX backend-test layout): softmax and log-softmax written out the way
exporters decompose them (Exp(x - ReduceMax(x)) / ReduceSum(...), the
unstable Exp(x) / ReduceSum(Exp(x)), e * Reciprocal(sum), (x - max) -
Log(ReduceSum(Exp(x - max))); axes as attribute or as input by opset),
which fuse-act turns into one Softmax / LogSoftmax at -O2, plus a near miss
that must stay unfused. Expected outputs come from onnxruntime running the
unfused model, so kiln-conformance checks the fused CPU kernel and
kiln-cuda-emu the generated CUDA kernel against an independent reference.
Deterministic: rerunning gives the same files. Needs the onnx, numpy and
onnxruntime PyPI packages (/work/venv-models)."""

import os
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, TensorProto

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused_softmax")
rng = np.random.default_rng(13)
N = helper.make_node


def write(name, nodes, x, outputs, opset, inits=()):
    d = os.path.join(HERE, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    res = sess.run(None, {"x": x})
    del m.graph.output[:]
    m.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
                           for n, a in zip(outputs, res)])
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(d, "model.onnx"))
    with open(os.path.join(d, "test_data_set_0", "input_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(x, "x").SerializeToString())
    for i, (n, a) in enumerate(zip(outputs, res)):
        with open(os.path.join(d, "test_data_set_0", "output_%d.pb" % i), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())


def reduce(op, inp, out, axis, opset, inits, keepdims=1):
    """ReduceMax/ReduceSum over one axis, axes as input from opset 18 / 13."""
    if opset >= (18 if op == "ReduceMax" else 13):
        inits.append(numpy_helper.from_array(np.array([axis], np.int64), out + "_axes"))
        return N(op, [inp, out + "_axes"], [out], keepdims=keepdims)
    return N(op, [inp], [out], axes=[axis], keepdims=keepdims)


def softmax(name, x, axis, opset, stable=True, tail="div", extra=None):
    inits, nodes, d = [], [], "x"
    if stable:
        nodes += [reduce("ReduceMax", "x", "max", axis, opset, inits), N("Sub", ["x", "max"], ["d"])]
        d = "d"
    nodes += [N("Exp", [d], ["e"]), reduce("ReduceSum", "e", "sum", axis, opset, inits)]
    if tail == "div":
        nodes.append(N("Div", ["e", "sum"], ["y"]))
    elif tail == "recip":
        nodes += [N("Reciprocal", ["sum"], ["r"]), N("Mul", ["e", "r"], ["y"])]
    else:
        nodes += [N("Log", ["sum"], ["l"]), N("Sub", [d, "l"], ["y"])]
    write(name, nodes, x, ["y"] + ([extra] if extra else []), opset, inits)


x = (3 * rng.standard_normal((2, 4, 8))).astype(np.float32)
softmax("softmax_stable_opset17", x, -1, 17)
softmax("softmax_stable_opset18_axis1_reciprocal", x, 1, 18, tail="recip")
softmax("softmax_stable_opset11_axis0", x, 0, 11)
softmax("softmax_unstable_opset13", rng.standard_normal((3, 5, 7)).astype(np.float32), 2, 13, stable=False)
softmax("log_softmax_stable_opset17", x, -1, 17, tail="log")
softmax("log_softmax_unstable_opset11", x, 1, 11, stable=False, tail="log")
# near miss: the exponentials are a graph output too, so nothing fuses
softmax("softmax_stable_exp_read_twice", x, -1, 17, extra="e")
print("wrote", HERE)
