# Backend-test cases for ONNX Attention-23 (kiln-conformance / kiln-cuda-emu):
# random inputs, expected outputs from onnx.reference.
# python3 tests/data/attention/make_cases.py tests/data/attention
import numpy as np, onnx, os, sys
from onnx import helper as h, TensorProto as TP, numpy_helper as nh
from onnx.reference import ReferenceEvaluator
out = sys.argv[1]
rng = np.random.default_rng(0)
def case(name, shapes, attrs, mask=None, past=False, outs=1, mask_bool=False):
    ins = {}
    names = ["Q", "K", "V"]
    for n, s in zip(names, shapes):
        ins[n] = rng.standard_normal(s).astype(np.float32)
    node_in = ["Q", "K", "V"]
    if mask is not None:
        ins["M"] = (rng.random(mask) > 0.3) if mask_bool else rng.standard_normal(mask).astype(np.float32)
        node_in.append("M")
    if past:
        if mask is None: node_in.append("")
        b, kh, _, d = shapes[1] if len(shapes[1]) == 4 else (shapes[1][0], attrs["kv_num_heads"], 0, shapes[1][2] // attrs["kv_num_heads"])
        dv = shapes[2][3] if len(shapes[2]) == 4 else shapes[2][2] // attrs["kv_num_heads"]
        ins["PK"] = rng.standard_normal((b, kh, 3, d)).astype(np.float32)
        ins["PV"] = rng.standard_normal((b, kh, 3, dv)).astype(np.float32)
        node_in += ["PK", "PV"]
    onames = ["Y", "PKo", "PVo", "QK"][:outs]
    node = h.make_node("Attention", node_in, onames, **attrs)
    vi = lambda n, a: h.make_tensor_value_info(n, TP.BOOL if a.dtype == bool else TP.FLOAT, a.shape)
    g = h.make_graph([node], name, [vi(n, ins[n]) for n in ins], [h.make_tensor_value_info(o, TP.FLOAT, None) for o in onames])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 23)], ir_version=10)
    res = ReferenceEvaluator(m).run(None, ins)
    d = os.path.join(out, name); os.makedirs(d + "/test_data_set_0", exist_ok=True)
    onnx.save(m, d + "/model.onnx")
    for i, n in enumerate(ins):
        t = nh.from_array(ins[n], n); open(f"{d}/test_data_set_0/input_{i}.pb", "wb").write(t.SerializeToString())
    for i, (n, r) in enumerate(zip(onames, res)):
        t = nh.from_array(r, n); open(f"{d}/test_data_set_0/output_{i}.pb", "wb").write(t.SerializeToString())
case("attn_basic", [(2,3,4,8),(2,3,6,8),(2,3,6,5)], {})
case("attn_scale_mask", [(2,3,4,8),(2,3,6,8),(2,3,6,8)], {"scale": 0.3}, mask=(2,1,4,6))
case("attn_bool_mask_short", [(1,2,4,8),(1,2,6,8),(1,2,6,8)], {}, mask=(4,5), mask_bool=True)
case("attn_gqa_causal", [(2,4,5,8),(2,2,5,8),(2,2,5,8)], {"is_causal": 1})
case("attn_past_causal", [(1,4,2,8),(1,2,2,8),(1,2,2,6)], {"is_causal": 1}, past=True, outs=3)
case("attn_3d", [(2,4,12),(2,5,6),(2,5,8)], {"q_num_heads": 4, "kv_num_heads": 2}, mask=(4,5))
case("attn_softcap_qk2", [(1,2,3,4),(1,2,5,4),(1,2,5,4)], {"softcap": 2.0, "qk_matmul_output_mode": 2}, mask=(1,2,3,5), outs=4)
case("attn_qk3_past", [(1,2,3,4),(1,2,5,4),(1,2,5,4)], {"qk_matmul_output_mode": 3}, past=True, outs=4)
case("attn_qk0", [(1,2,3,4),(1,2,5,4),(1,2,5,4)], {"scale": 0.5}, outs=4)
