#!/usr/bin/env python3
"""kiln against what users would otherwise run, on the same machine in the same
run: the same random-initialised decoder in transformers' PyTorch eager mode and
with torch.compile over a static cache, at the same prompt / generation lengths
and batch sizes, and kiln's numbers read from `kiln bench --json` run by this
script. Prints a table of kiln / peer ratios (and writes it as JSON with --json).

Meant for the GPU machine (torch with CUDA, transformers, onnx), called by
scripts/gpu-check.sh; it runs on a CPU too (--device cpu, for a smoke test).

  python3 bench/peers.py --model smollm2|llama1b|tiny [--device cuda] [--dtype fp16]
      [--prompt-len 128] [--gen-len 128] [--batch 1 8]
      [--kiln build/kiln] [--kiln-plan MODEL.plan | --export-onnx DIR]
      [--kiln-device cpu|cuda] [--skip-compile] [--json OUT.json]

Models (random weights, seeded, so no download):
  tiny     tests/models/llama_gqa_tiny's config (2 layers, 128 wide)
  smollm2  SmolLM2-135M's architecture (30 layers, 576 wide, GQA 9/3, vocab 49152)
  llama1b  a TinyLlama-1.1B-like config (22 layers, 2048 wide, GQA 32/4, vocab 32000)

--export-onnx DIR exports the same model (fp32, past/present KV inputs/outputs,
as scripts/models/export_decoders.py does) to DIR/model.onnx and compiles it
with `kiln compile` into DIR/model.plan, so kiln runs the very weights the peers
run. Timing method (each the best of --repeat runs after warm-up):
  ttft      generate(max_new_tokens=1): the prompt's forward + the first token
  prefill   B * P / ttft (the same run: a compiled forward is only timed as
            generate calls it, so a static-cache graph is not recompiled)
  decode    generate(max_new_tokens=G) minus generate(max_new_tokens=1):
            G - 1 decode steps; tokens/s = B * (G - 1) / that time
kiln's figures are those of `kiln bench` (its own prefill / decode split) on
--kiln-device (the table says which device each column ran on; for cuda the
exported model is compiled with --target cuda and --decode-batch covering
--batch). kiln's batch B decodes the B sequences together in each step (one
run on the CPU, the [B, 1] decode program on CUDA); the notes under the table
say so per batch from the bench's `batched_decode`.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def config(name):
    common = dict(hidden_act="silu", rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=None,
                  eos_token_id=None, pad_token_id=None, initializer_range=0.02)
    if name == "tiny":
        return LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                           tie_word_embeddings=False, **common)
    if name == "smollm2":
        return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                           num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                           tie_word_embeddings=True, **common)
    if name == "llama1b":
        return LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                           num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=4096,
                           tie_word_embeddings=False, **common)
    raise SystemExit(f"unknown model {name}")


def build(name, dtype, device, attn="sdpa"):
    cfg = config(name)
    cfg._attn_implementation = attn
    torch.manual_seed(7)
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model.to(device=device, dtype=dtype), cfg


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def best(fn, repeat, device):
    t = float("inf")
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        t = min(t, time.perf_counter() - t0)
    return t


def gen(model, ids, n, static):
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    if static:
        kw["cache_implementation"] = "static"
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), **kw)


def measure_peer(model, cfg, batch, P, G, device, static, repeat):
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, cfg.vocab_size, (batch, P), generator=g).to(device)
    for _ in range(2 if static else 1):   # warm-up (torch.compile traces here)
        gen(model, ids, G, static)
        gen(model, ids, 1, static)

    t_one = best(lambda: gen(model, ids, 1, static), repeat, device)
    t_all = best(lambda: gen(model, ids, G, static), repeat, device)
    dec = t_all - t_one
    ok = dec > 0 and G > 1
    if not ok:
        print(f"# {'compile' if static else 'eager'}, batch {batch}: generate({G}) was not slower than "
              f"generate(1) ({t_all:.4f} s vs {t_one:.4f} s): no decode figure")
    return {"prefill_tokens_per_s": batch * P / t_one, "decode_tokens_per_s": batch * (G - 1) / dec if ok else None,
            "ttft_ms": t_one * 1e3, "decode_ms_per_step": dec / (G - 1) * 1e3 if ok else None}


def export_onnx(model, cfg, out_dir):
    sys.path.insert(0, os.path.join(ROOT, "scripts", "models"))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # gpu-carry/scripts/ holds a copy
    import export_decoders as ed  # the same wrapper and interface as the test models
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.onnx")
    m32 = model.to(device="cpu", dtype=torch.float32)
    m32.config._attn_implementation = "eager"
    ed.export("peer", m32, cfg, path)
    return path


def kiln_bench(kiln, plan, batch, P, G, device):
    cmd = [kiln, "bench", plan, "--prompt-len", str(P), "--gen-len", str(G), "--batch", str(batch), "--json"]
    if device != "cpu":
        cmd += ["--device", device]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
    j = json.loads(r.stdout)
    return {"prefill_tokens_per_s": j["prefill_tokens_per_s"], "decode_tokens_per_s": j["decode_tokens_per_s"],
            "ttft_ms": j["ttft_ms"]["median"], "decode_ms_per_step": j["decode_latency_ms"]["mean"],
            "roofline_fraction": j.get("roofline_fraction"), "batched_decode": j.get("batched_decode", False)}, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", choices=["tiny", "smollm2", "llama1b"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=128)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"))
    ap.add_argument("--kiln-plan")
    ap.add_argument("--export-onnx", metavar="DIR")
    ap.add_argument("--kiln-device", default="cpu")
    ap.add_argument("--skip-compile", action="store_true", help="no torch.compile column")
    ap.add_argument("--json", metavar="OUT")
    a = ap.parse_args()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
        a.dtype or ("fp16" if a.device == "cuda" else "fp32")]
    P, G = a.prompt_len, a.gen_len
    dev_name = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    print(f"# peers: {a.model}, {dtype}, prompt {P}, gen {G}, on {dev_name}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}", flush=True)

    plan = a.kiln_plan
    if a.export_onnx and not plan:
        model, cfg = build(a.model, torch.float32, "cpu", attn="eager")
        onnx_path = export_onnx(model, cfg, a.export_onnx)
        plan = os.path.join(a.export_onnx, "model.plan")
        cmd = [a.kiln, "compile", onnx_path, "-o", plan, "--max-seq-len", str(P + G + 16)]
        if a.kiln_device == "cuda":  # a decoder plan whose batched decode programs cover every --batch
            sizes = sorted({b for b in a.batch if 1 < b <= 256})[:4]
            cmd += ["--target", "cuda", "--decode-batch", ",".join(str(b) for b in [1] + sizes)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"# kiln compile failed: {r.stderr.strip()[-400:]}")
            plan = None
        del model

    model, cfg = build(a.model, dtype, a.device)
    eager = {b: measure_peer(model, cfg, b, P, G, a.device, False, a.repeat) for b in a.batch}
    compiled = {}
    if not a.skip_compile:
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
        for b in a.batch:
            try:
                compiled[b] = measure_peer(model, cfg, b, P, G, a.device, True, a.repeat)
            except Exception as e:  # a peer that cannot run is reported, not fatal
                print(f"# torch.compile, batch {b}: {type(e).__name__}: {str(e)[:200]}")
    kiln = {}
    for b in a.batch:
        if not plan:
            break
        kiln[b], err = kiln_bench(a.kiln, plan, b, P, G, a.kiln_device)
        if err:
            print(f"# kiln bench, batch {b}: {err}")

    rows = []
    hdr = (f"{'batch':>5} {'metric':<22} {'kiln':>12} {'eager':>12} {'compile':>12} "
           f"{'kiln/eager':>10} {'kiln/compile':>12}")
    print(f"# kiln on {a.kiln_device}, peers on {a.device}")
    print(hdr)
    for b in a.batch:
        for key, label in (("prefill_tokens_per_s", "prefill tokens/s"), ("decode_tokens_per_s", "decode tokens/s"),
                           ("ttft_ms", "time to first token ms")):
            k, e, c = (kiln.get(b) or {}).get(key), eager[b][key], (compiled.get(b) or {}).get(key)
            higher = not key.endswith("_ms")

            def ratio(x, y):
                if x is None or y is None or x == 0 or y == 0:
                    return None
                return x / y if higher else y / x   # > 1: kiln is better

            r_e, r_c = ratio(k, e), ratio(k, c)
            fmt = lambda v, w, p: f"{v:>{w}.{p}f}" if v is not None else f"{'-':>{w}}"
            print(f"{b:>5} {label:<22} {fmt(k, 12, 1)} {fmt(e, 12, 1)} {fmt(c, 12, 1)} {fmt(r_e, 10, 2)} "
                  f"{fmt(r_c, 12, 2)}")
            rows.append({"batch": b, "metric": key, "kiln": k, "eager": e, "compile": c,
                         "kiln_over_eager": r_e, "kiln_over_compile": r_c})
    print("# ratios > 1: kiln better (higher tokens/s, lower time to first token)")
    for b in a.batch:
        if b > 1 and kiln.get(b):
            how = ("B sequences decoded together, one run per step" if kiln[b]["batched_decode"]
                   else "B sequences stepped in turn (this session does not batch its decode steps)")
            print(f"# kiln's batch {b}: {how}")
    print("# kiln's time to first token is one sequence's prefill; the peers run the B prompts as one batch")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "dtype": str(dtype), "device": dev_name, "kiln_device": a.kiln_device,
                       "prompt_len": P, "gen_len": G, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
