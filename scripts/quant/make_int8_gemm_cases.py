"""Writes tests/data/quant_int8_gemm: int8 x int8 matrix products in the
shapes target cuda runs through the cuBLASLt int8 GEMM (k and n multiples
of 4, zero points absent or zero) and one it does not (k = 6), with
references computed here exactly as kiln's CPU kernels define them
(runtime/cpu/k_linalg.c, k_quant.c): exact integer sums; MatMulIntegerToFloat
acc * float32(a_scale * b_scale) in double plus the bias; QLinearMatMul
rint(acc * float32(float32(a_scale * b_scale) / y_scale) + y_zp) half to
even, saturated. onnxruntime's outputs are compared and the differences
printed (its requantization may round differently by one step).

Run with /work/venv-models/bin/python scripts/quant/make_int8_gemm_cases.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "quant_int8_gemm")
rng = np.random.default_rng(20261127)


def i8(shape):
    v = rng.integers(-128, 128, size=shape, dtype=np.int64)
    v.flat[::7] = -128  # the extremes: -128 * -128 products
    return v.astype(np.int8)


def acc(a, b):
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def save(name, nodes, inputs, outputs, inits, feeds, refs, ms=False):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    ops = [helper.make_opsetid("", 13)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    m = helper.make_model(g, opset_imports=ops, producer_name="make_int8_gemm_cases")
    m.ir_version = 8
    d = os.path.join(OUT, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    onnx.save(m, os.path.join(d, "model.onnx"))
    for i, (n, v) in enumerate(feeds.items()):
        onnx.save_tensor(numpy_helper.from_array(v, n), os.path.join(d, "test_data_set_0", f"input_{i}.pb"))
    for i, (n, v) in enumerate(refs.items()):
        onnx.save_tensor(numpy_helper.from_array(v, n), os.path.join(d, "test_data_set_0", f"output_{i}.pb"))
    try:
        import onnxruntime as ort

        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        got = s.run(None, feeds)
        for (n, v), o in zip(refs.items(), got):
            print(f"{name}: {n} max |ours - onnxruntime| = {np.max(np.abs(v.astype(np.float64) - o)):g}")
    except Exception as e:  # noqa: BLE001 - only informative
        print(f"{name}: onnxruntime: {e}")


def vi(n, t, shape):
    return helper.make_tensor_value_info(n, t, shape)


# MatMulInteger, B a constant [K, N], A with batch dims
a, b = i8((2, 3, 16)), i8((16, 8))
save("mmi_s8", [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], [vi("a", TensorProto.INT8, [2, 3, 16])],
     [vi("y", TensorProto.INT32, [2, 3, 8])], [numpy_helper.from_array(b, "b")], {"a": a},
     {"y": acc(a, b).astype(np.int32)})

# MatMulInteger, batched B given at run time, zero points given as zeros
a, b = i8((2, 5, 12)), i8((2, 12, 4))
zero = numpy_helper.from_array(np.zeros((), np.int8), "z")
save("mmi_s8_batched", [helper.make_node("MatMulInteger", ["a", "b", "z", "z"], ["y"])],
     [vi("a", TensorProto.INT8, [2, 5, 12]), vi("b", TensorProto.INT8, [2, 12, 4])],
     [vi("y", TensorProto.INT32, [2, 5, 4])], [zero], {"a": a, "b": b}, {"y": acc(a, b).astype(np.int32)})

# MatMulInteger with k = 6: not a multiple of 4, the generated kernel
a, b = i8((3, 6)), i8((6, 8))
save("mmi_s8_k6", [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], [vi("a", TensorProto.INT8, [3, 6])],
     [vi("y", TensorProto.INT32, [3, 8])], [numpy_helper.from_array(b, "b")], {"a": a},
     {"y": acc(a, b).astype(np.int32)})

# QLinearMatMul int8 -> int8, per-row a_scale, per-column b_scale, y zero point 3
M, K, N = 5, 32, 12
a, b = i8((M, K)), i8((K, N))
sa = rng.uniform(0.01, 0.05, size=(M, 1)).astype(np.float32)
sb = rng.uniform(0.001, 0.01, size=(1, N)).astype(np.float32)
sy = np.array(0.05, np.float32)
zy = np.array(3, np.int8)
mul = ((sa * sb).astype(np.float32) / sy).astype(np.float32)
v = np.clip(np.rint(acc(a, b) * mul.astype(np.float64) + 3.0), -128, 127).astype(np.int8)
save("qlmm_s8", [helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])],
     [vi("a", TensorProto.INT8, [M, K])], [vi("y", TensorProto.INT8, [M, N])],
     [numpy_helper.from_array(sa.reshape(M), "sa"), numpy_helper.from_array(np.zeros((), np.int8), "za"),
      numpy_helper.from_array(b, "b"), numpy_helper.from_array(sb.reshape(N), "sb"),
      numpy_helper.from_array(np.zeros(N, np.int8), "zb"), numpy_helper.from_array(sy, "sy"),
      numpy_helper.from_array(zy, "zy")], {"a": a}, {"y": v})

# com.microsoft MatMulIntegerToFloat, per-column b_scale and a bias (kiln's static W8A8 layer)
M, K, N = 4, 24, 16
a, b = i8((2, M, K)), i8((K, N))
sa = np.array(0.02, np.float32)
sb = rng.uniform(0.001, 0.01, size=N).astype(np.float32)
bias = rng.uniform(-1, 1, size=N).astype(np.float32)
mul = (sa * sb).astype(np.float32)
v = (acc(a, b) * mul.astype(np.float64) + bias.astype(np.float64)).astype(np.float32)
save("mmitf_s8", [helper.make_node("MatMulIntegerToFloat", ["a", "b", "sa", "sb", "", "", "bias"], ["y"],
                                   domain="com.microsoft")],
     [vi("a", TensorProto.INT8, [2, M, K])], [vi("y", TensorProto.FLOAT, [2, M, N])],
     [numpy_helper.from_array(b, "b"), numpy_helper.from_array(sa, "sa"), numpy_helper.from_array(sb, "sb"),
      numpy_helper.from_array(bias, "bias")], {"a": a}, {"y": v}, ms=True)
