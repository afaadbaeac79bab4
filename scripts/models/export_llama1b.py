#!/usr/bin/env python3
"""Exports the ~1.1B-parameter Llama-architecture decoder of bench/peers.py
(`--model llama1b`: a TinyLlama-1.1B-like config, random weights seeded as
peers.py seeds them) to ONNX the way scripts/models/export_decoders.py
exports the test decoders (same wrapper, past/present KV inputs/outputs,
opset 17), with its weights in one external data file. Used to time
`kiln compile` on a 1B model (the compile-time target) and as the
headline model of the GPU benchmarks.

Written to the git-ignored folder models-big/llama1b/ (~4.4 GB, float32;
`kiln compile --precision fp16` makes the fp16 plan):
  model.onnx, model.onnx.data

Run by developers, not by CI (needs torch, transformers, onnx from PyPI):
  /work/venv-models/bin/python scripts/models/export_llama1b.py [--out DIR]
"""
import argparse
import glob
import os
import sys

import onnx
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "scripts", "models"))
import export_decoders as ed  # noqa: E402
import peers  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "models-big", "llama1b"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    model, cfg = peers.build("llama1b", torch.float32, "cpu", attn="eager")
    n_params = sum(p.numel() for p in model.parameters())
    raw = os.path.join(a.out, "raw")
    os.makedirs(raw, exist_ok=True)
    raw_path = os.path.join(raw, "model.onnx")
    wrapper, _, _ = ed.export("llama1b", model, cfg, raw_path, check=False)
    del wrapper, model
    m = onnx.load(raw_path, load_external_data=True)
    path = os.path.join(a.out, "model.onnx")
    for f in (path, path + ".data"):
        if os.path.exists(f):
            os.remove(f)
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=1024)
    for f in glob.glob(os.path.join(raw, "*")):
        os.remove(f)
    os.rmdir(raw)
    onnx.checker.check_model(path)
    print(f"{path}: {n_params / 1e9:.3f} B parameters, "
          f"{os.path.getsize(path + '.data') / 2**30:.2f} GiB of weights in model.onnx.data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
