#!/usr/bin/env python3
"""Checks that SmolLM2-135M's exported weights are a dequantized 4-bit
(GGUF Q4_1, blocks of 32 along K) model: counts the distinct values in each
32- and 64-element block of every constant MatMul/Gemm weight (<= 16 per
32-block means 4-bit codes) and whether the gaps inside a 32-block are whole
multiples of its smallest gap (one scale per block). docs/quantization.md
("int4 on this export") quotes its output.

Run by developers from the repository root, with the models venv:
  /work/venv-models/bin/python scripts/quant/check_q4_origin.py
"""
import numpy as np
import onnx
from onnx import numpy_helper
m = onnx.load("models-big/smollm2-135m/model.onnx")
inits = {i.name: i for i in m.graph.initializer}
mm = [(n.name, n.input[1]) for n in m.graph.node if n.op_type in ("MatMul","Gemm") and n.input[1] in inits]
print("matmuls with const B:", len(mm))
tot = {32:[0,0],64:[0,0]}
worst = 0
for name, b in mm:
    w = numpy_helper.to_array(inits[b]).astype(np.float32)
    K, N = w.shape
    for g in (32, 64):
        blocks = np.sort(w.T.reshape(N, K//g, g), axis=-1)
        nd = 1 + (np.diff(blocks, axis=-1) != 0).sum(-1)
        tot[g][0] += (nd <= 16).sum(); tot[g][1] += nd.size
        if name.endswith(("q_proj/MatMul","down_proj/MatMul","lm_head/MatMul")) and ("layers.0/" in name or "layers.29/" in name or "lm_head" in name):
            print(f"{name:45s} K={K} N={N} g={g}: distinct/block max={nd.max()} mean={nd.mean():.2f}")
    blocks = w.T.reshape(N, K//32, 32).astype(np.float64)
    mn = blocks.min(-1, keepdims=True); mx = blocks.max(-1, keepdims=True)
    step = (mx - mn)
    # smallest nonzero gap per block; all gaps multiple of it?
    s = np.sort(blocks, -1); gaps = np.diff(s, axis=-1)
    gmin = np.where(gaps > 0, gaps, np.inf).min(-1, keepdims=True)
    gmin[~np.isfinite(gmin)] = 1
    r = gaps / gmin
    worst = max(worst, np.abs(r - np.round(r)).max())
for g in tot: print(f"g{g}: blocks with <=16 distinct values: {tot[g][0]}/{tot[g][1]}")
print("g32 gaps integer multiples of smallest gap: max deviation", worst)
