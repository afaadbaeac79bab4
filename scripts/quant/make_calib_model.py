#!/usr/bin/env python3
"""Makes tests/data/quant/mlp/: a two-layer MLP (MatMul 16→32, Relu,
Gemm 32→4 with transB) whose input is named 'input:0', and calib/input_0.npy,
a batch of 8 calibration samples (float32 [8, 1, 16]: one more leading axis
than the input) for the `kiln calibrate` tests in tests/cli_test.sh.
Deterministic (seeded).

usage: /work/venv-models/bin/python scripts/quant/make_calib_model.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = "tests/data/quant/mlp"


def main():
    rng = np.random.default_rng(5)
    w1 = (rng.standard_normal((16, 32)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((4, 32)) * 0.3).astype(np.float32)  # [N, K]: Gemm transB
    b2 = np.zeros(4, np.float32)
    nodes = [
        helper.make_node("MatMul", ["input:0", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input:0", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="kiln-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.join(OUT, "calib"), exist_ok=True)
    onnx.save(model, os.path.join(OUT, "model.onnx"))
    x = rng.standard_normal((8, 1, 16)).astype(np.float32)
    x[:, :, 3] *= 10  # one loud channel
    np.save(os.path.join(OUT, "calib", "input_0.npy"), x)


if __name__ == "__main__":
    main()
