#!/usr/bin/env python3
"""ONNX Runtime (CPU) over a decoder exported with past/present KV-cache
inputs and outputs (scripts/models/export_*.py): prefill a prompt, then
greedy-decode N tokens feeding each step's present back as the past; prints
the prefill time and tokens/s and the decode time per token and tokens/s,
for each thread count asked. With --kiln-plan it also times kiln's CPU
backend (`kiln bench`) on the same shapes (prefill of the prompt; one
decode step with a past as long as the prompt), so the two can be compared
on the same machine in the same run.

Run by developers, with the models venv (numpy, onnxruntime):

  /work/venv-models/bin/python bench/ort_decode.py \\
      [--model models-big/smollm2-135m/model.onnx] [--prompt-len 32] \\
      [--new-tokens 32] [--threads 1 2] [--repeat 3] [--opt all|none] \\
      [--kiln build/kiln --kiln-plan smollm2.plan]

Times are the best of --repeat runs: wall clock (time.perf_counter) and,
in the "(cpu ms)" columns, the CPU time of the process (all its threads):
on a busy machine the CPU time of a one-thread run is the steadier number.
kiln's CPU time per run is the difference between a bench of 1 + repeat
runs and a bench of 1 (so plan loading cancels out).
"""
import argparse
import json
import os
import re
import resource
import subprocess
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT_MODEL = os.path.join(ROOT, "models-big", "smollm2-135m", "model.onnx")
DEFAULT_REF = os.path.join(ROOT, "tests", "models", "smollm2_135m", "reference.json")


def past_specs(sess):
    """[(name, kv_heads, head_dim)] for the past_key_values.* inputs."""
    out = []
    for i in sess.get_inputs():
        if i.name.startswith("past_key_values."):
            _, h, _, d = i.shape
            out.append((i.name, int(h), int(d)))
    return out


def feeds(specs, ids, past, total):
    b, s = ids.shape
    d = {"input_ids": ids.astype(np.int64),
         "attention_mask": np.ones((b, total), np.int64),
         "position_ids": np.tile(np.arange(total - s, total, dtype=np.int64), (b, 1))}
    for k, (name, h, hd) in enumerate(specs):
        d[name] = past[k] if past is not None else np.zeros((b, h, 0, hd), np.float32)
    return d


def prompt_ids(n, vocab):
    """n ids: the reference prompts' ids one after another (SmolLM2), else
    seeded random ids."""
    if os.path.exists(DEFAULT_REF):
        with open(DEFAULT_REF) as f:
            ids = [i for p in json.load(f)["prompts"] for i in p["prompt_ids"]]
        if all(i < vocab for i in ids):
            return np.array([(ids * (n // len(ids) + 1))[:n]], np.int64)
    return np.random.default_rng(0).integers(0, vocab, (1, n)).astype(np.int64)


def run_ort(model, threads, opt, prompt, new_tokens, repeat):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if opt == "all"
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    specs = past_specs(sess)
    outs = [o.name for o in sess.get_outputs()]
    best = {"prefill": float("inf"), "decode": float("inf"), "prefill_cpu": float("inf"),
            "decode_cpu": float("inf")}
    tokens = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        o = sess.run(outs, feeds(specs, prompt, None, prompt.shape[1]))
        best["prefill"] = min(best["prefill"], time.perf_counter() - t0)
        best["prefill_cpu"] = min(best["prefill_cpu"], time.process_time() - c0)
        toks = [int(np.argmax(o[0][0, -1]))]
        total = prompt.shape[1]
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(new_tokens - 1):
            total += 1
            o = sess.run(outs, feeds(specs, np.array([[toks[-1]]], np.int64), o[1:], total))
            toks.append(int(np.argmax(o[0][0, -1])))
        if new_tokens > 1:
            best["decode"] = min(best["decode"], (time.perf_counter() - t0) / (new_tokens - 1))
            best["decode_cpu"] = min(best["decode_cpu"], (time.process_time() - c0) / (new_tokens - 1))
        tokens = toks
    return best, tokens


def kiln_bench_once(kiln, plan, shapes, iterations, env_threads):
    """(min latency s, CPU s of the whole process) of one `kiln bench`."""
    cmd = [kiln, "bench", plan, "--device", "cpu", "--warmup", "1", "--iterations", str(iterations), "--json"]
    for k, v in shapes.items():
        cmd += ["--shape", f"{k}={'x'.join(map(str, v))}"]
    env = dict(os.environ, KILN_CPU_THREADS=str(env_threads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(f"kiln bench failed ({r.returncode}):\n{r.stderr}")
    try:
        return float(json.loads(r.stdout)["latency_ms"]["min"]) / 1000.0, cpu
    except (ValueError, KeyError, TypeError):
        m = re.search(r"latency \(ms\):\s+min ([0-9.]+)", r.stdout + r.stderr)
        if not m:
            raise SystemExit(f"cannot read kiln bench's output:\n{r.stdout}")
        return float(m.group(1)) / 1000.0, cpu


def kiln_bench(kiln, plan, shapes, repeat, env_threads):
    """Min wall latency, and CPU time per run: the difference between a
    bench of 1 + repeat runs and one of 1 run (plan loading and the warm-up
    cancel out)."""
    wall, cpu_long = kiln_bench_once(kiln, plan, shapes, 1 + repeat, env_threads)
    _, cpu_short = kiln_bench_once(kiln, plan, shapes, 1, env_threads)
    return wall, max(cpu_long - cpu_short, 0.0) / repeat


def row(engine, threads, prompt_len, pre, pre_cpu, dec, dec_cpu):
    print(f"{engine:<20} {threads:>7} {pre * 1e3:>11.1f} {pre_cpu * 1e3:>9.1f} {prompt_len / pre:>14.1f} "
          f"{dec * 1e3:>14.2f} {dec_cpu * 1e3:>9.2f} {1 / dec:>13.2f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--opt", choices=["all", "none"], default="all",
                    help="onnxruntime graph optimisations (default all, what users get)")
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln"), help="the kiln binary")
    ap.add_argument("--kiln-plan", help="also time this plan (compiled from --model) with kiln bench")
    a = ap.parse_args()

    probe = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    specs = past_specs(probe)
    vocab = probe.get_outputs()[0].shape[2]
    vocab = vocab if isinstance(vocab, int) else 49152
    del probe
    prompt = prompt_ids(a.prompt_len, vocab)
    print(f"model {a.model}: {len(specs) // 2} layers; prompt {a.prompt_len} ids, {a.new_tokens} new tokens, "
          f"best of {a.repeat}; onnxruntime {ort.__version__} (opt {a.opt})")
    print(f"{'engine':<20} {'threads':>7} {'prefill ms':>11} {'(cpu ms)':>9} {'prefill tok/s':>14} "
          f"{'decode ms/tok':>14} {'(cpu ms)':>9} {'decode tok/s':>13}")
    for t in a.threads:
        b, toks = run_ort(a.model, t, a.opt, prompt, a.new_tokens, a.repeat)
        row(f"onnxruntime CPU", t, a.prompt_len, b["prefill"], b["prefill_cpu"], b["decode"], b["decode_cpu"])
    print("onnxruntime greedy tokens:", toks)
    if a.kiln_plan:
        p = a.prompt_len
        pre_shapes = {"input_ids": [1, p], "attention_mask": [1, p], "position_ids": [1, p]}
        dec_shapes = {"input_ids": [1, 1], "attention_mask": [1, p + 1], "position_ids": [1, 1]}
        for name, h, hd in specs:
            pre_shapes[name] = [1, h, 0, hd]
            dec_shapes[name] = [1, h, p, hd]
        for t in a.threads:
            pre, pre_cpu = kiln_bench(a.kiln, a.kiln_plan, pre_shapes, a.repeat, t)
            dec, dec_cpu = kiln_bench(a.kiln, a.kiln_plan, dec_shapes, max(a.repeat, 5), t)
            row("kiln CPU reference", t, p, pre, pre_cpu, dec, dec_cpu)
        print(f"(kiln: `kiln bench` of the prefill, and of one decode step with a past of {p})")


if __name__ == "__main__":
    main()
