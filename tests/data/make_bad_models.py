#!/usr/bin/env python3
"""Writes the small malformed ONNX models under tests/data/bad/ that the CLI
tests feed to `kiln inspect` (each must give exit code 1 and a message).
Needs the onnx PyPI package; the outputs are committed, so tests do not."""
import os

import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "bad")


def model(nodes, inputs, outputs, inits=(), opset=13, **kw):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="kiln-tests", **kw)
    m.ir_version = 8
    return m


def x(name="x", shape=(2, 3)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def save(name, m):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(m.SerializeToString())


def main():
    os.makedirs(OUT, exist_ok=True)
    # attribute of the wrong kind on a known op
    n = helper.make_node("Softmax", ["x"], ["y"], name="sm0")
    n.attribute.append(helper.make_attribute("axis", "one"))
    save("attr_kind.onnx", model([n], [x()], [x("y")]))
    # required attribute missing
    save("missing_attr.onnx", model([helper.make_node("Cast", ["x"], ["y"], name="cast0")], [x()], [x("y")]))
    # a cycle
    save("cycle.onnx", model([helper.make_node("Relu", ["b"], ["a"], name="r1"),
                              helper.make_node("Relu", ["a"], ["b"], name="r2")], [x()], [x("a")]))
    # an input nothing defines
    save("undefined_input.onnx", model([helper.make_node("Add", ["x", "nope"], ["y"], name="add0")], [x()], [x("y")]))
    # a value assigned twice
    save("twice.onnx", model([helper.make_node("Relu", ["x"], ["y"], name="r1"),
                              helper.make_node("Relu", ["x"], ["y"], name="r2")], [x()], [x("y")]))
    # negative dim in an initializer
    t = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], [0.0] * 6)
    t.dims[1] = -3
    save("negative_dim.onnx", model([helper.make_node("Add", ["x", "w"], ["y"], name="add0")], [x()], [x("y")], [t]))
    # raw_data shorter than the dims say
    t = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], b"\0" * 24, raw=True)
    t.raw_data = b"\0" * 20
    save("raw_size.onnx", model([helper.make_node("Add", ["x", "w"], ["y"], name="add0")], [x()], [x("y")], [t]))
    # external data escaping the model's folder
    for tag, loc in (("abs", "/etc/passwd"), ("dotdot", "../secret.bin")):
        t = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], b"\0" * 24, raw=True)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", loc
        save("external_%s.onnx" % tag, model([helper.make_node("Add", ["x", "w"], ["y"], name="add0")],
                                             [x()], [x("y")], [t]))
    # a graph output nothing produces
    save("no_producer.onnx", model([helper.make_node("Relu", ["x"], ["y"], name="r1")], [x()], [x("z")]))
    # not a model: a serialized tensor and random bytes
    with open(os.path.join(OUT, "tensor_not_model.onnx"), "wb") as f:
        f.write(helper.make_tensor("t", TensorProto.FLOAT, [4], [1, 2, 3, 4]).SerializeToString())
    with open(os.path.join(OUT, "random.onnx"), "wb") as f:
        f.write(bytes((i * 73 + 41) % 256 for i in range(512)))
    # a valid model cut in half
    good = model([helper.make_node("Relu", ["x"], ["y"], name="r1")], [x()], [x("y")]).SerializeToString()
    with open(os.path.join(OUT, "truncated.onnx"), "wb") as f:
        f.write(good[: len(good) // 2])
    open(os.path.join(OUT, "empty.onnx"), "wb").close()
    # well-formed, but with ops kiln does not know: compile must name them all at once
    nodes = [helper.make_node("Frobnicate", ["x"], ["a"], name="f1", domain="my.domain"),
             helper.make_node("Frobnicate", ["a"], ["b"], name="f2", domain="my.domain"),
             helper.make_node("Twiddle", ["b"], ["y"], name="t1", domain="my.domain")]
    m = model(nodes, [x()], [x("y")])
    m.opset_import.append(helper.make_opsetid("my.domain", 1))
    save("unsupported_ops.onnx", m)


if __name__ == "__main__":
    main()
