#!/usr/bin/env python3
"""Writes a large, simple ONNX model for measuring kiln's build cost (peak
memory of `kiln compile` against the weight bytes): an MLP of N Gemm+Relu
layers of width W, weights random, stored (a) inside the .onnx and (b) as
external data. Output goes to models-big/ (git-ignored).
usage: make_big_mlp.py [--layers 8] [--width 4096]"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "models-big"))
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev = "x"
    for i in range(a.layers):
        w = (rng.standard_normal((a.width, a.width), dtype=np.float32) / np.sqrt(a.width)).astype(np.float32)
        b = np.zeros(a.width, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"], name=f"gemm{i}"))
        nodes.append(helper.make_node("Relu", [f"g{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, a.width])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, a.width])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-bench")
    m.ir_version = 8
    os.makedirs(a.out, exist_ok=True)
    inside = os.path.join(a.out, "mlp.onnx")
    onnx.save(m, inside)
    ext_dir = os.path.join(a.out, "mlp_ext")
    os.makedirs(ext_dir, exist_ok=True)
    onnx.save(m, os.path.join(ext_dir, "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin")
    wb = a.layers * (a.width * a.width + a.width) * 4
    print(f"wrote {inside} and {ext_dir}/model.onnx: {wb / 2**20:.0f} MiB of weights")


if __name__ == "__main__":
    main()
