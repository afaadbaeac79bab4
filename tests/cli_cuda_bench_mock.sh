#!/usr/bin/env bash
# kiln run / kiln bench --device cuda against the host mock of the driver
# (LD_LIBRARY_PATH set by CTest; it runs no kernels, so every token sampled
# on the device is id 0 and its event clock advances 0.25 ms per record):
# the plumbing of sampling on the device, --no-cuda-graph, and the bench's
# roofline figures (the copy bandwidth measured, the fraction, JSON fields).
# usage: cli_cuda_bench_mock.sh KILN SOURCE_DIR
set -u
KILN=$1
SRC=$2
. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" # $TMP, pass/fail, expect, ok, bad

plan=$TMP/llama.cuda.plan
expect 0 'a decoder' "$KILN" compile "$SRC/tests/models/llama_gqa_tiny/model.onnx" --target cuda --prefill-chunk 4 \
    -o "$plan"
a=$("$KILN" run "$plan" --prompt-ids 1,15,200,42,7 --max-new-tokens 4 --device cuda 2>/dev/null)
b=$("$KILN" run "$plan" --prompt-ids 1,15,200,42,7 --max-new-tokens 4 --device cuda --no-cuda-graph 2>/dev/null)
c=$("$KILN" run "$plan" --prompt-ids 1,15,200,42,7 --max-new-tokens 4 --device cuda --temperature 0.8 --top-p 0.9 \
    --seed 3 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" = "$c" ] && ok || bad "mock: tokens '$a' / --no-cuda-graph '$b' / top-p '$c'"
expect 0 'roofline: .*% of the device.s copy bandwidth .* GB/s .*CUDA graph replays' "$KILN" bench "$plan" \
    --prompt-len 9 --gen-len 4 --device cuda
expect 0 'kernel by kernel' "$KILN" bench "$plan" --prompt-len 9 --gen-len 4 --device cuda --no-cuda-graph
expect 0 '"peak_gb_per_s": [0-9.]+, "roofline_fraction": [0-9.]+, "cuda_graph": true' "$KILN" bench "$plan" \
    --prompt-len 9 --gen-len 4 --device cuda --json
expect 0 '"roofline_fraction": null, "cuda_graph": false' "$KILN" bench "$plan" --prompt-len 9 --gen-len 4 \
    --device cpu --json
# batch 3: the plan's batched decode programs (the [8, 1] one of --decode-batch 1,8), 3 tokens per step
expect 0 'each step runs all sequences through the plan.s batched decode programs' "$KILN" bench "$plan" \
    --prompt-len 9 --gen-len 4 --batch 3 --device cuda
expect 0 '"decode_steps": 4, "batched_decode": true' "$KILN" bench "$plan" --prompt-len 9 --gen-len 4 --batch 3 \
    --device cuda --json
expect 0 'decode: +[0-9.]+ tokens/s \(4 steps of 3 tokens' "$KILN" bench "$plan" --prompt-len 9 --gen-len 4 \
    --batch 3 --device cuda --no-cuda-graph
# --prefill-batch 4: a [4, 4] prefill program; bench --batch 3 prefills the 3 prompts in its runs
pb=$TMP/llama.pb.cuda.plan
expect 0 'a decoder' "$KILN" compile "$SRC/tests/models/llama_gqa_tiny/model.onnx" --target cuda --prefill-chunk 4 \
    --prefill-batch 4 -o "$pb"
expect 0 'cuda batched prefill: .* steps' "$KILN" inspect "$pb"
expect 0 'the prompts together through the plan.s batched prefill programs' "$KILN" bench "$pb" --prompt-len 9 \
    --gen-len 4 --batch 3 --device cuda
expect 0 '"batched_decode": true, "batched_prefill": true' "$KILN" bench "$pb" --prompt-len 9 --gen-len 4 --batch 3 \
    --device cuda --json --no-cuda-graph
expect 0 '"batched_prefill": false' "$KILN" bench "$plan" --prompt-len 9 --gen-len 4 --batch 3 --device cuda --json
expect 1 'decode-batch and --prefill-batch: at most 4 batch sizes above 1 together' "$KILN" compile \
    "$SRC/tests/models/llama_gqa_tiny/model.onnx" --target cuda --decode-batch 2,3,4 --prefill-batch 2,4 -o "$TMP/x.plan"
echo "cli_cuda_bench_mock: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
