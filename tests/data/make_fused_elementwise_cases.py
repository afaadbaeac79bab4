#!/usr/bin/env python3
"""Writes tests/data/fused_elementwise/<case>/ (model.onnx + test_data_set_0,
the ONNX backend-test layout): chains of plain ONNX elementwise ops that the
fuse-elementwise pass turns into one kiln.FusedElementwise node at -O2, with
broadcasting, Cast between dtypes (float16, float64, int64), Where and the
logic ops. Expected outputs come from onnxruntime running the unfused model,
so kiln-conformance checks the CPU kernel and kiln-cuda-emu the generated
CUDA kernel against an independent reference. Deterministic: rerunning gives
the same files. Needs the onnx, numpy and onnxruntime PyPI packages
(/work/venv-models)."""

import os
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, TensorProto

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused_elementwise")
rng = np.random.default_rng(11)
NP2ONNX = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE,
           np.int64: TensorProto.INT64, np.int32: TensorProto.INT32, np.bool_: TensorProto.BOOL}


def const(name, value, dtype):
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def write(name, nodes, inputs, outputs, inits=(), opset=17):
    d = os.path.join(HERE, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    vi = lambda n, a: helper.make_tensor_value_info(n, NP2ONNX[a.dtype.type], list(a.shape))
    g = helper.make_graph(nodes, name, [vi(n, a) for n, a in inputs],
                          [helper.make_tensor_value_info(n, t, None) for n, t in outputs], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    res = sess.run(None, {n: a for n, a in inputs})
    del m.graph.output[:]
    m.graph.output.extend([helper.make_tensor_value_info(n, t, list(a.shape)) for (n, t), a in zip(outputs, res)])
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(d, "model.onnx"))
    for i, (n, a) in enumerate(inputs):
        with open(os.path.join(d, "test_data_set_0", "input_%d.pb" % i), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())
    for i, ((n, _), a) in enumerate(zip(outputs, res)):
        with open(os.path.join(d, "test_data_set_0", "output_%d.pb" % i), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())


N = helper.make_node

# 6 ops, four input shapes broadcast to [2, 4, 8]
write("chain6_broadcast",
      [N("Add", ["x", "bias"], ["a"]), N("Mul", ["scale", "a"], ["s"]), N("Tanh", ["s"], ["t"]),
       N("Sub", ["t", "z"], ["u"]), N("Relu", ["u"], ["v"]), N("Sigmoid", ["v"], ["y"])],
      [("x", rng.standard_normal((2, 4, 8)).astype(np.float32)),
       ("z", rng.standard_normal((1, 8)).astype(np.float32))],
      [("y", TensorProto.FLOAT)],
      [const("bias", rng.standard_normal(8), np.float32), const("scale", rng.standard_normal((4, 1)), np.float32)])

# the shape grows inside the chain: [3,1] + [1,4] -> [3,4], * [2,1,1]
write("broadcast_grows",
      [N("Add", ["a", "b"], ["s"]), N("Exp", ["a"], ["e"]), N("Div", ["s", "e"], ["q"]),
       N("Mul", ["q", "c"], ["y"])],
      [("a", rng.standard_normal((3, 1)).astype(np.float32)), ("b", rng.standard_normal((1, 4)).astype(np.float32)),
       ("c", rng.standard_normal((2, 1, 1)).astype(np.float32))],
      [("y", TensorProto.FLOAT)])

# activations with attributes, Clip, Pow, Max/Min, both Gelus, a float64 leg
x = rng.uniform(-3, 3, (2, 3, 16)).astype(np.float32)
write("activations",
      [N("LeakyRelu", ["x"], ["a1"], alpha=0.2), N("Elu", ["a1"], ["a2"], alpha=0.7), N("Selu", ["a2"], ["a3"]),
       N("Clip", ["a3", "lo", "hi"], ["a4"]), N("HardSigmoid", ["a4"], ["a5"], alpha=0.3),
       N("HardSwish", ["x"], ["b1"]), N("Softplus", ["b1"], ["b2"]), N("Add", ["a5", "b2"], ["a6"]),
       N("Pow", ["a6", "e"], ["a7"]), N("Max", ["a7", "x"], ["a8"]), N("Min", ["a8", "hi"], ["a9"]),
       N("Gelu", ["a9"], ["a10"], approximate="tanh"), N("Gelu", ["a10"], ["a11"]), N("Erf", ["a11"], ["a12"]),
       N("Cast", ["a12"], ["d1"], to=TensorProto.DOUBLE), N("Add", ["d1", "q"], ["d2"]), N("Sin", ["d2"], ["d3"]),
       N("Cos", ["d3"], ["d4"]), N("Reciprocal", ["d4"], ["d5"]), N("Log", ["d5"], ["d6"]),
       N("Cast", ["d6"], ["y"], to=TensorProto.FLOAT)],
      [("x", x)], [("y", TensorProto.FLOAT)],
      [const("lo", -1.5, np.float32), const("hi", 2.0, np.float32), const("e", 1.5, np.float32),
       const("q", 0.3, np.float64)], opset=20)

# float16 arithmetic between Casts, and int64 arithmetic cast to float
write("cast_f16_int64",
      [N("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16), N("Mul", ["x16", "h"], ["m16"]),
       N("Abs", ["m16"], ["a16"]), N("Sqrt", ["a16"], ["s16"]), N("Cast", ["s16"], ["s32"], to=TensorProto.FLOAT),
       N("Mul", ["k", "three"], ["k3"]), N("Neg", ["k3"], ["kn"]), N("Cast", ["kn"], ["kf"], to=TensorProto.FLOAT),
       N("Add", ["s32", "kf"], ["y"])],
      [("x", rng.standard_normal((3, 5)).astype(np.float32)), ("k", rng.integers(-9, 9, 5).astype(np.int64))],
      [("y", TensorProto.FLOAT)],
      [const("h", 1.25, np.float16), const("three", 3, np.int64)])

# comparisons, Not/And/Or and Where over float and int32 conditions
write("where_logic",
      [N("Greater", ["x", "zero"], ["pos"]), N("Less", ["x", "lim"], ["low"]), N("Not", ["low"], ["nlow"]),
       N("And", ["pos", "nlow"], ["c1"]), N("Or", ["c1", "p"], ["cond"]), N("Exp", ["x"], ["e"]),
       N("Neg", ["x"], ["nx"]), N("Where", ["cond", "e", "nx"], ["w"]), N("Equal", ["i", "two"], ["ieq"]),
       N("Where", ["ieq", "w", "zero"], ["y"])],
      [("x", rng.standard_normal((4, 6)).astype(np.float32)), ("p", rng.integers(0, 2, 6).astype(np.bool_)),
       ("i", rng.integers(0, 4, (4, 1)).astype(np.int32))],
      [("y", TensorProto.FLOAT)],
      [const("zero", 0.0, np.float32), const("lim", -1.0, np.float32), const("two", 2, np.int32)])
