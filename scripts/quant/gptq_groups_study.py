#!/usr/bin/env python3
"""GPTQ without act-order at group size 128 on real layers: where does its
error go? (docs/quantization.md, "GPTQ g128 without act-order").

For the chosen layers of a model and two calibration tables of it (kiln
calibrate: one on the calibration text, one on the evaluation text, both
with XᵀX), quantizes each weight to int4 asymmetric, group 128 along K,
with kiln's grid (float32 scales, round half to even, integer zero
point) four ways:

  rtn          round to nearest
  gptq         GPTQ, columns in order, each group's grid taken from the
               weights as updated when its first column is reached (what
               quant/gptq.c and the GPTQ reference implementation do)
  gptq-static  GPTQ, columns in order, grids from the original weights
  gptq-act     GPTQ with act-order and static groups (kiln --act-order)

and prints, per layer and method, the output error trace(ΔW H ΔWᵀ) /
trace(W H Wᵀ) on the calibration data (H_cal) and on the evaluation data
(H_eval), the growth of the weights GPTQ updates (max |updated W| / max |W|
per group, mean over rows, by group position), the ratio of its group
scales to RTN's, and the share of H_eval's error in the last group.

usage: [DAMP=0.01] [MODES=updated,static,act] python gptq_groups_study.py MODEL.onnx CAL.json EVAL.json
       [NODE_SUBSTRING...]
(default nodes: layers 0, 15, 29's q_proj and down_proj)
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def load_table(path):
    t = json.load(open(path))
    side = os.path.join(os.path.dirname(path), t["xtx_file"]["name"])
    mm = np.memmap(side, dtype="<f8", mode="r")
    inputs = {x["name"]: x for x in t["linear_inputs"]}
    return t, inputs, mm


def xtx(inputs, mm, name):
    x = inputs[name]
    k, off = x["k"], x["xtx_offset"]
    return np.array(mm[off // 8: off // 8 + k * k]).reshape(k, k)


def grid(seg):
    """kiln's asymmetric 4-bit grid of each row of seg: (scale, zero)."""
    mn = np.minimum(seg.min(1), 0.0)
    mx = np.maximum(seg.max(1), 0.0)
    scale = ((mx - mn) / 15).astype(np.float32).astype(np.float64)
    scale[scale == 0] = 1.0
    zero = np.clip(np.round(-mn / scale), 0, 15)
    return scale, zero


def qdq(x, scale, zero):
    q = np.clip(np.round(x / scale) + zero, 0, 15)
    return (q - zero) * scale


def rtn(w, gs):
    out = np.empty_like(w)
    scales = []
    for c0 in range(0, w.shape[1], gs):
        s, z = grid(w[:, c0:c0 + gs])
        out[:, c0:c0 + gs] = qdq(w[:, c0:c0 + gs], s[:, None], z[:, None])
        scales.append(s)
    return out, np.stack(scales, 1)


def gptq(w, h, gs, mode, damp=0.01):
    """mode: 'updated' | 'static' | 'act'. Returns (deq, scales [rows, groups], growth [rows, groups])."""
    rows, n = w.shape
    w = w.copy()
    h = h.copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    ng = (n + gs - 1) // gs
    scales = np.zeros((rows, ng))
    zeros = np.zeros((rows, ng))
    growth = np.ones((rows, ng))
    if mode in ("static", "act"):
        for g in range(ng):
            scales[:, g], zeros[:, g] = grid(w[:, g * gs:(g + 1) * gs])
    perm = np.argsort(-np.diag(h), kind="stable") if mode == "act" else np.arange(n)
    w0 = w.copy()
    w = w[:, perm]
    h = h[perm][:, perm]
    h = h + damp * np.mean(np.diag(h)) * np.eye(n)
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    deq = np.zeros((rows, n))
    for j in range(n):
        col = perm[j]
        g = col // gs
        if mode == "updated" and j % gs == 0:
            seg = w[:, j:j + gs]
            scales[:, g], zeros[:, g] = grid(seg)
            m0 = np.abs(w0[:, j:j + gs]).max(1)
            growth[:, g] = np.abs(seg).max(1) / np.where(m0 > 0, m0, 1)
        d = qdq(w[:, j], scales[:, g], zeros[:, g])
        deq[:, col] = d
        err = (w[:, j] - d) / u[j, j]
        w[:, j + 1:] -= np.outer(err, u[j, j + 1:])
    return deq, scales, growth


def rel_err(w, deq, h):
    dw = w - deq
    return np.einsum("ij,jk,ik->", dw, h, dw) / np.einsum("ij,jk,ik->", w, h, w)


def group_err(w, deq, h, gs):
    """Share of trace(ΔW H ΔWᵀ) from each group's columns (ΔW of the other columns zeroed)."""
    dw = w - deq
    tot = np.einsum("ij,jk,ik->", dw, h, dw)
    out = []
    for c0 in range(0, w.shape[1], gs):
        d = np.zeros_like(dw)
        d[:, c0:c0 + gs] = dw[:, c0:c0 + gs]
        out.append(np.einsum("ij,jk,ik->", d, h, dw) / tot)
    return out


DAMP = float(os.environ.get("DAMP", "0.01"))
MODES = os.environ.get("MODES", "updated,static,act").split(",")


def main():
    model, cal, ev = sys.argv[1:4]
    pats = sys.argv[4:] or ["layers.0/self_attn/q_proj", "layers.0/mlp/down_proj", "layers.15/self_attn/q_proj",
                            "layers.15/mlp/down_proj", "layers.29/self_attn/q_proj", "layers.29/mlp/down_proj"]
    tc, inc, mmc = load_table(cal)
    te, ine, mme = load_table(ev)
    m = onnx.load(model)
    inits = {t.name: t for t in m.graph.initializer}
    gs = 128
    for layer in tc["layers"]:
        if not any(p in layer["node"] for p in pats):
            continue
        wt = numpy_helper.to_array(inits[layer["weight"]]).astype(np.float64)
        w = wt.T if layer["weight_layout"] == "KN" else wt  # [N][K]
        hc, he = xtx(inc, mmc, layer["input"]), xtx(ine, mme, layer["input"])
        print(f"{layer['node']}  [N={w.shape[0]}, K={w.shape[1]}]  rows cal {inc[layer['input']]['rows']}, "
              f"eval {ine[layer['input']]['rows']}")
        r, rs = rtn(w, gs)
        res = {"rtn": (r, rs, None)}
        for mode in MODES:
            res[mode] = gptq(w, hc, gs, mode, DAMP)
        for name, (d, s, growth) in res.items():
            line = f"  {name:8s} err cal {rel_err(w, d, hc):.3e}  eval {rel_err(w, d, he):.3e}"
            if name != "rtn":
                line += "  scale/RTN by group " + " ".join(f"{x:.2f}" for x in (s / rs).mean(0))
            if growth is not None and name == "updated":
                line += "  |W| growth " + " ".join(f"{x:.2f}" for x in growth.mean(0))
            line += "  eval err share by group " + " ".join(f"{x:.2f}" for x in group_err(w, d, he, gs))
            print(line, flush=True)


if __name__ == "__main__":
    main()
