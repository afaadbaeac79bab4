#!/usr/bin/env python3
"""Independent numpy reference of kiln's GPTQ (docs/quantization.md), and
the test data tests/test_quant_lib.c compares quant/gptq.c with.

Straightforward form of the algorithm: after each column is quantized its
error is pushed into every later column at once (no lazy blocks), the
inverse Hessian comes from np.linalg.inv, its upper Cholesky factor from
np.linalg.cholesky. The quantization grid is kiln's (kiln/quant.h): float32
scales, round half to even, symmetric restricted range [-qmax, qmax] or
asymmetric [0, 2^bits - 1] with zero = round(-min / scale) over
[min(x, 0), max(x, 0)].

Writes to tests/data/quant/ (run from the repository root):
  gptq_w.npy   float32 [64, 32]   weights (rows = output channels)
  gptq_h.npy   float64 [32, 32]   XᵀX of 256 calibration rows
  gptq_<case>_deq.npy    float32 [64, 32]  dequantized weights
  gptq_<case>_codes.npy  int8 [64, 32]     codes minus zero point
  gptq_<case>_scales.npy float32 [64, n_groups]
for the cases in CASES. Deterministic (seeded).

usage: /work/venv-models/bin/python scripts/quant/gptq_ref.py [OUT_DIR]
"""
import os
import sys

import numpy as np

# name: (bits, symmetric, group size (0: per row), act_order)
CASES = {
    "g8_asym": (4, False, 8, False),
    "g16_sym_act": (4, True, 16, True),
    "ch_int8": (8, True, 0, False),
}


def grid(mn, mx, bits, sym):
    """(scale, zero, qmin, qmax) for a group spanning [mn, mx]."""
    if sym:
        qmax = 2 ** (bits - 1) - 1
        amax = max(abs(mn), abs(mx))
        scale = float(np.float32(amax / qmax)) if amax > 0 else 1.0
        return scale, 0, -qmax, qmax
    levels = 2 ** bits - 1
    mn, mx = min(mn, 0.0), max(mx, 0.0)
    scale = float(np.float32((mx - mn) / levels)) if mx > mn else 1.0
    zero = int(np.clip(np.round(-mn / scale), 0, levels))
    return scale, zero, 0, levels


def quantize(x, g):
    scale, zero, qmin, qmax = g
    q = np.clip(np.round(x / scale) + zero, qmin, qmax)
    return q - zero, (q - zero) * scale


def gptq(w, h, bits, sym, gs, act_order, percdamp=0.01):
    rows, n = w.shape
    gs = gs if gs and gs < n else n
    n_groups = (n + gs - 1) // gs
    w = w.astype(np.float64).copy()
    h = h.copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    grids = [[None] * n_groups for _ in range(rows)]
    if act_order:  # static groups, from the unmodified weights
        for r in range(rows):
            for g in range(n_groups):
                seg = w[r, g * gs:(g + 1) * gs]
                grids[r][g] = grid(seg.min(), seg.max(), bits, sym)
        perm = np.argsort(-np.diag(h), kind="stable")
    else:
        perm = np.arange(n)
    w = w[:, perm]
    h = h[perm][:, perm]
    h = h + percdamp * np.mean(np.diag(h)) * np.eye(n)
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: inv(H) = Uᵀ U
    deq = np.zeros((rows, n))
    codes = np.zeros((rows, n), dtype=np.int8)
    for j in range(n):
        col = perm[j]
        for r in range(rows):
            if not act_order and j % gs == 0:
                seg = w[r, j:j + gs]
                grids[r][j // gs] = grid(seg.min(), seg.max(), bits, sym)
            q, dq = quantize(w[r, j], grids[r][col // gs])
            codes[r, col] = q
            deq[r, col] = dq
        err = (w[:, j] - deq[:, col]) / u[j, j]
        w[:, j + 1:] -= np.outer(err, u[j, j + 1:])
    scales = np.array([[g[0] for g in row] for row in grids], dtype=np.float32)
    return deq.astype(np.float32), codes, scales


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/quant"
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(9)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    mix = np.eye(32) + 0.5 * rng.standard_normal((32, 32)) / np.sqrt(32)
    chan = np.ones(32)
    chan[[3, 17, 29]] = [6.0, 4.0, 8.0]  # a few loud input channels
    x = (rng.standard_normal((256, 32)) @ mix * chan).astype(np.float32)
    x64 = x.astype(np.float64)
    h = x64.T @ x64
    np.save(os.path.join(out, "gptq_w.npy"), w)
    np.save(os.path.join(out, "gptq_h.npy"), h)
    for name, (bits, sym, gs, act) in CASES.items():
        deq, codes, scales = gptq(w, h, bits, sym, gs, act)
        np.save(os.path.join(out, f"gptq_{name}_deq.npy"), deq)
        np.save(os.path.join(out, f"gptq_{name}_codes.npy"), codes)
        np.save(os.path.join(out, f"gptq_{name}_scales.npy"), scales)
        e = np.trace((w - deq) @ h @ (w - deq).T)
        print(f"{name}: layer error {e:.6g}")


if __name__ == "__main__":
    main()
