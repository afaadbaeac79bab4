#!/usr/bin/env python3
"""Makes the pre-quantized test models in tests/data/quant_models/ with ONNX Runtime's
quantization tools, and their reference outputs from ONNX Runtime itself.

Run with the models venv (onnx, onnxruntime, numpy):
    /work/venv-models/bin/python scripts/quant/make_quant_models.py [OUT_DIR]

Every model folder has the backend-test layout: model.onnx and test_data_set_0/ with
input_<i>.pb / output_<i>.pb (serialized onnx.TensorProto). The float models are built here
with onnx.helper from seeded random weights, so the script reproduces the same files.

  qdq_mlp        MatMul+Add+Relu ×2, quantize_static QDQ: uint8 activations (asymmetric),
                 int8 weights per tensor, calibrated on 16 random batches (minmax)
  qdq_mlp_pc     the same MLP with per-channel int8 weights
  qdq_mlp_float_out  per channel, MatMul outputs not requantized (DQ -> MatMul -> float Add)
  qdq_conv       Conv+Relu → Conv+Relu → GlobalAveragePool → Flatten → MatMul, QDQ, per-channel
                 int8 weights, uint8 activations, int32 biases
  nbits_b32      MatMul [2,5,96]×[96,48] → MatMulNBits 4-bit, block 32, asymmetric (zero points)
  nbits_b128_sym MatMul [3,200]×[200,40] → MatMulNBits 4-bit, block 128 (K not a multiple of the
                 block: padded), symmetric (no zero points)
  nbits_b32_sym_odd  MatMul [1,7,33]×[33,20] → MatMulNBits 4-bit, block 32, symmetric, K odd
  nbits8_b32     MatMul [3,80]×[80,24] → MatMulNBits 8-bit, block 32, asymmetric (its float
                 model is tests/data/quant_float/mm_80x24/model.onnx)
  nbits_b32_rows40  MatMul [40,136]×[136,72] → MatMulNBits 4-bit, block 32, asymmetric: 40 rows
                 (the tensor-core kernel under --precision fp16)
  llama_nbits    tests/models/llama_gqa_tiny with every MatMul with a constant weight as
                 MatMulNBits 4-bit block 32 asymmetric (if the tiny model is present)
"""
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)
from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "quant_models")
TMP = os.path.join(OUT, "_tmp")


def w(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def save_case(name, model, feeds):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    onnx.save(model, os.path.join(d, "model.onnx"))
    so = ort.SessionOptions()
    # Basic optimizations only: ORT's reference is the QDQ graph's own arithmetic
    # (with its QDQ fusions that is what ORT ships as the model's output).
    sess = ort.InferenceSession(os.path.join(d, "model.onnx"), so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    ds = os.path.join(d, "test_data_set_0")
    for i, inp in enumerate(sess.get_inputs()):
        t = numpy_helper.from_array(feeds[inp.name], inp.name)
        open(os.path.join(ds, "input_%d.pb" % i), "wb").write(t.SerializeToString())
    for i, (o, v) in enumerate(zip(sess.get_outputs(), outs)):
        t = numpy_helper.from_array(np.asarray(v), o.name)
        open(os.path.join(ds, "output_%d.pb" % i), "wb").write(t.SerializeToString())
    ops = {}
    for n in model.graph.node:
        k = (n.domain + "." if n.domain else "") + n.op_type
        ops[k] = ops.get(k, 0) + 1
    print("%-18s %7d B  %s" % (name, os.path.getsize(os.path.join(d, "model.onnx")),
                               " ".join("%s:%d" % kv for kv in sorted(ops.items()))))


class Reader(CalibrationDataReader):
    def __init__(self, name, shape, n=16, seed=7):
        rng = np.random.default_rng(seed)
        self.data = [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.data):
            return None
        self.i += 1
        return self.data[self.i - 1]


def mlp_model(rng):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])
    inits = [numpy_helper.from_array(w(rng, 32, 64), "w1"), numpy_helper.from_array(w(rng, 64, scale=0.1), "b1"),
             numpy_helper.from_array(w(rng, 64, 10, scale=0.2), "w2"),
             numpy_helper.from_array(w(rng, 10, scale=0.1), "b2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Add", ["h1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("MatMul", ["r1", "w2"], ["h2"]),
             helper.make_node("Add", ["h2", "b2"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def conv_model(rng):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])
    inits = [numpy_helper.from_array(w(rng, 8, 3, 3, 3), "cw1"), numpy_helper.from_array(w(rng, 8, scale=0.1), "cb1"),
             numpy_helper.from_array(w(rng, 16, 8, 3, 3, scale=0.15), "cw2"),
             numpy_helper.from_array(w(rng, 16, scale=0.1), "cb2"),
             numpy_helper.from_array(w(rng, 16, 5), "fw")]
    nodes = [helper.make_node("Conv", ["x", "cw1", "cb1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "cw2", "cb2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]), helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "fw"], ["y"])]
    g = helper.make_graph(nodes, "convnet", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def matmul_model(rng, xshape, n):
    k = xshape[-1]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xshape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(xshape[:-1]) + [n])
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm", [x], [y],
                          [numpy_helper.from_array(w(rng, k, n), "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def drop_output_qdq(model, op_type):
    """Removes the Q -> DQ pair after every `op_type` node, so its float output feeds
    the next op directly (a QDQ graph with float-output MatMuls)."""
    g = model.graph
    prods = {o: n for n in g.node for o in n.output}
    drop, rename = set(), {}
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in prods:
            continue
        q = prods[n.input[0]]
        if q.op_type == "QuantizeLinear" and q.input[0] in prods and prods[q.input[0]].op_type == op_type:
            drop.update([id(n), id(q)])
            rename[n.output[0]] = q.input[0]
    keep = [n for n in g.node if id(n) not in drop]
    for n in keep:
        for i, v in enumerate(n.input):
            n.input[i] = rename.get(v, v)
    del g.node[:]
    g.node.extend(keep)
    return model


def qdq(name, model, xshape, per_channel, extra=None, edit=None, name_in="x"):
    os.makedirs(TMP, exist_ok=True)
    fp = os.path.join(TMP, name + "_fp32.onnx")
    qp = os.path.join(TMP, name + ".onnx")
    onnx.save(model, fp)
    quantize_static(fp, qp, Reader(name_in, xshape), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, extra_options=extra or {})
    rng = np.random.default_rng(123)
    q = onnx.load(qp)
    save_case(name, edit(q) if edit else q, {name_in: rng.standard_normal(xshape).astype(np.float32)})


def nbits(name, model, feeds, block, symmetric, bits=4):
    cfg = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric, bits=bits)
    q = MatMulNBitsQuantizer(model, algo_config=cfg)
    q.process()
    save_case(name, q.model.model, feeds)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(2026)
    mlp = mlp_model(rng)
    qdq("qdq_mlp", mlp, [4, 32], per_channel=False)
    qdq("qdq_mlp_pc", mlp, [4, 32], per_channel=True)
    qdq("qdq_mlp_float_out", mlp, [4, 32], per_channel=True, edit=lambda m: drop_output_qdq(m, "MatMul"))
    qdq("qdq_conv", conv_model(rng), [2, 3, 12, 12], per_channel=True)

    deepa = os.path.join(ROOT, "samples", "hello_deepa", "model.onnx")
    if os.path.exists(deepa):  # a real exported model: Gemm layers, decomposed LayerNorm
        qdq("qdq_hello_deepa", onnx.load(deepa), [1, 25, 96], per_channel=True, name_in="onnx::Flatten_0")

    r = np.random.default_rng(5)
    nbits("nbits_b32", matmul_model(rng, [2, 5, 96], 48), {"x": r.standard_normal([2, 5, 96]).astype(np.float32)},
          32, False)
    nbits("nbits_b128_sym", matmul_model(rng, [3, 200], 40), {"x": r.standard_normal([3, 200]).astype(np.float32)},
          128, True)
    nbits("nbits_b32_sym_odd", matmul_model(rng, [1, 7, 33], 20),
          {"x": r.standard_normal([1, 7, 33]).astype(np.float32)}, 32, True)
    # 8-bit, and its float model kept (outside the conformance folder) for
    # `kiln compile --quantize int8-weight-only` against onnxruntime's quantizer
    mm8 = matmul_model(rng, [3, 80], 24)
    fdir = os.path.join(os.path.dirname(OUT), "quant_float", "mm_80x24")
    os.makedirs(fdir, exist_ok=True)
    onnx.save(mm8, os.path.join(fdir, "model.onnx"))
    nbits("nbits8_b32", mm8, {"x": r.standard_normal([3, 80]).astype(np.float32)}, 32, False, bits=8)
    # 40 rows: the tensor-core kernel for float16 A (ctest cuda_codegen_quant_models_fp16
    # compiles it with --precision fp16); K 136 is not a multiple of the block
    rp = np.random.default_rng(77)
    nbits("nbits_b32_rows40", matmul_model(rp, [40, 136], 72),
          {"x": rp.standard_normal([40, 136]).astype(np.float32)}, 32, False)

    llama = os.path.join(ROOT, "tests", "models", "llama_gqa_tiny")
    if os.path.exists(os.path.join(llama, "model.onnx")):
        m = onnx.load(os.path.join(llama, "model.onnx"))
        feeds = {}
        sess = ort.InferenceSession(os.path.join(llama, "model.onnx"), providers=["CPUExecutionProvider"])
        for i, inp in enumerate(sess.get_inputs()):
            t = onnx.load_tensor(os.path.join(llama, "test_data_set_0", "input_%d.pb" % i))
            feeds[inp.name] = numpy_helper.to_array(t)
        nbits("llama_nbits", m, feeds, 32, False)
        # random-weight logits are ~1e-4: onnxruntime's float accumulation differs
        # from kiln's double sums by a few 1e-6 there (NMSE ~1e-12)
        open(os.path.join(OUT, "llama_nbits", "README.md"), "w").write(
            "# llama_nbits\n\ntests/models/llama_gqa_tiny with its 15 MatMuls as MatMulNBits (4-bit, block 32,\n"
            "zero points), made by scripts/quant/make_quant_models.py. Compared using rtol 1e-3, atol 1e-5:\n"
            "the random-weight logits are about 1e-4, where onnxruntime's float sums and kiln's double sums\n"
            "differ by a few 1e-6 (NMSE about 1e-12).\n")
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
