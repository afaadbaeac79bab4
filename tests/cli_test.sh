#!/usr/bin/env bash
# The kiln command as a user meets it: help, version, exit codes (0 ok,
# 1 bad input or usage, 2 internal) and error messages naming the file.
# usage: cli_test.sh KILN SOURCE_DIR
set -u
KILN=$1
SRC=$2
SAMPLE=$SRC/samples/hello_deepa/model.onnx
BAD=$SRC/tests/data/bad
. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" # $TMP, pass/fail, expect, ok, bad

expect 0 '^usage: kiln' "$KILN" --help
expect 0 '^kiln [0-9]+\.[0-9]+\.[0-9]+$' "$KILN" --version
expect 1 'usage: kiln' "$KILN"
expect 1 "unknown command 'frobnicate'" "$KILN" frobnicate
expect 0 '^usage: kiln inspect' "$KILN" inspect --help
expect 1 'no model given' "$KILN" inspect
expect 1 "unknown option '--bogus'" "$KILN" inspect --bogus "$SAMPLE"
expect 1 'more than one model' "$KILN" inspect "$SAMPLE" "$SAMPLE"
expect 1 "error: $TMP/none.onnx: cannot open" "$KILN" inspect "$TMP/none.onnx"
expect 1 "error: $TMP: not a regular file" "$KILN" inspect "$TMP"

# a real model: text, JSON, IR
expect 0 'producer: +pytorch' "$KILN" inspect "$SAMPLE"
expect 0 'Gemm +3' "$KILN" inspect "$SAMPLE"
expect 0 'unsupported: none' "$KILN" inspect "$SAMPLE"
expect 0 '"op": "Gemm"' "$KILN" inspect --json "$SAMPLE"
expect 0 '"ir_version": [0-9]+' "$KILN" inspect --json "$SAMPLE"
expect 0 "^graph '" "$KILN" inspect --graph "$SAMPLE"
expect 1 'cannot be combined' "$KILN" inspect --graph --json "$SAMPLE"
"$KILN" inspect --graph "$SAMPLE" >"$TMP/a.txt" && "$KILN" inspect --graph "$SAMPLE" >"$TMP/b.txt"
expect 0 '' cmp "$TMP/a.txt" "$TMP/b.txt"

# symbolic dims are shown by name
if [ -f "$SRC/../shared/models/silero_vad_legacy/model.onnx" ]; then
    expect 0 'float32\[batch, sequence\]' "$KILN" inspect "$SRC/../shared/models/silero_vad_legacy/model.onnx"
    expect 0 '"shape": \[' "$KILN" inspect --json "$SRC/../shared/models/silero_vad_legacy/model.onnx"
fi

# malformed models: exit 1, a message naming the file and what is wrong
expect 1 "error: .*attr_kind.onnx: node 'sm0' \(Softmax, opset 13\): attribute 'axis' is string, expected int" "$KILN" inspect "$BAD/attr_kind.onnx"
expect 1 "node 'cast0' \(Cast, opset 13\): required attribute 'to' is missing" "$KILN" inspect "$BAD/missing_attr.onnx"
expect 1 'cycle' "$KILN" inspect "$BAD/cycle.onnx"
expect 1 "input 'nope' is not defined" "$KILN" inspect "$BAD/undefined_input.onnx"
expect 1 "output 'y' is already defined" "$KILN" inspect "$BAD/twice.onnx"
expect 1 "initializer 'w': dimension 1 is negative" "$KILN" inspect "$BAD/negative_dim.onnx"
expect 1 'raw_data has 20 bytes' "$KILN" inspect "$BAD/raw_size.onnx"
expect 1 "'/etc/passwd' is an absolute path" "$KILN" inspect "$BAD/external_abs.onnx"
expect 1 "leaves the model's folder" "$KILN" inspect "$BAD/external_dotdot.onnx"
expect 1 "output 'z' is not produced" "$KILN" inspect "$BAD/no_producer.onnx"
expect 1 'not a valid ONNX model' "$KILN" inspect "$BAD/random.onnx"
expect 1 'not a valid ONNX model' "$KILN" inspect "$BAD/tensor_not_model.onnx"
expect 1 'not a valid ONNX model' "$KILN" inspect "$BAD/truncated.onnx"
expect 1 'the file is empty' "$KILN" inspect "$BAD/empty.onnx"

# compile and run: a plan built twice is byte-identical, runs, compares
ID=/usr/share/libonnx-testdata/data/node/test_identity
if [ -f "$ID/model.onnx" ]; then
    expect 0 "wrote $TMP/id.plan" "$KILN" compile "$ID/model.onnx" -o "$TMP/id.plan"
    expect 0 "wrote $TMP/id2.plan" "$KILN" compile "$ID/model.onnx" -o "$TMP/id2.plan"
    expect 0 '' cmp "$TMP/id.plan" "$TMP/id2.plan"
    expect 0 'compare y: max abs 0, max rel 0: PASS' "$KILN" run "$TMP/id.plan" --compare-to "$ID/test_data_set_0"
    expect 0 'y: float32\[1, 1, 2, 2\]' "$KILN" run "$TMP/id.plan" --seed 7 --output-dir "$TMP/out" --output-format npy
    expect 0 '' test -f "$TMP/out/y.npy"
    expect 0 'y: float32' "$KILN" run "$TMP/id.plan" --input "x=$TMP/out/y.npy"
    expect 0 '' "$KILN" run "$TMP/id.plan" --seed 7 --output-dir "$TMP/out2"
    expect 0 '' test -f "$TMP/out2/y.pb"
    expect 1 "no input named 'nope'" "$KILN" run "$TMP/id.plan" --input "nope=$TMP/out/y.npy"
    expect 1 'no CUDA backend' "$KILN" run "$TMP/id.plan" --device cuda
    expect 1 'not a kiln plan' "$KILN" run "$ID/model.onnx"
    expect 1 'cannot open' "$KILN" run "$TMP/none.plan"
    # a flipped byte anywhere is a clean error
    cp "$TMP/id.plan" "$TMP/bad.plan"
    printf '\x5a' | dd of="$TMP/bad.plan" bs=1 seek=300 conv=notrunc status=none
    expect 1 'corrupted plan: checksum mismatch' "$KILN" run "$TMP/bad.plan"
    head -c 1000 "$TMP/id.plan" >"$TMP/cut.plan"
    expect 1 'truncated' "$KILN" run "$TMP/cut.plan"
    # a failed write leaves nothing behind
    expect 1 'cannot create the plan' "$KILN" compile "$ID/model.onnx" -o "$TMP/no/such/dir/x.plan"
    expect 0 '' test -z "$(ls "$TMP" | grep tmp)"
fi
expect 1 "3 nodes use 2 ops kiln does not support on target cpu" "$KILN" compile "$BAD/unsupported_ops.onnx" -o "$TMP/u.plan"
expect 1 "Frobnicate \(my.domain, opset 1\) x2: 'f1', 'f2'" "$KILN" compile "$BAD/unsupported_ops.onnx" -o "$TMP/u.plan"
expect 1 "Twiddle \(my.domain, opset 1\) x1: 't1'" "$KILN" compile "$BAD/unsupported_ops.onnx" -o "$TMP/u.plan"
expect 0 '' test ! -e "$TMP/u.plan"
expect 1 "unknown target 'tpu'" "$KILN" compile "$BAD/unsupported_ops.onnx" --target tpu
expect 0 '^ *[0-9]+  infer-shapes' "$KILN" compile --passes
expect 0 'bn-fold +-O2' "$KILN" compile --passes
expect 1 "unknown pass 'nope'; the passes are: canon-ms infer-shapes fuse-qdq fold" "$KILN" compile "$SAMPLE" -o "$TMP/o.plan" --disable-pass nope
expect 1 "unknown pass 'nope'" "$KILN" compile "$SAMPLE" -o "$TMP/o.plan" --dump-after=nope
expect 0 "# after pass [0-9]+ 'dce'" "$KILN" compile "$SAMPLE" -o "$TMP/o.plan" --dump-after=dce --verify-each
mkdir -p "$TMP/dump"
expect 0 'wrote' "$KILN" compile "$SAMPLE" -o "$TMP/o.plan" -O0 --dump-after=all:"$TMP/dump" --disable-pass cse
expect 0 '^graph' cat "$TMP"/dump/[0-9][0-9]-infer-shapes.txt "$TMP"/dump/[0-9][0-9]-precision.txt
expect 0 'wrote' "$KILN" compile "$SAMPLE" -o "$TMP/o.plan" -O1 --report "$TMP/r.json"
expect 0 '"name": "bn-fold"' cat "$TMP/r.json"
expect 0 '"after": \{' cat "$TMP/r.json"

# precision: fp16/bf16 plans keep the model's interface and stay close to fp32
for p in fp16 bf16; do
    expect 0 "wrote $TMP/$p.plan" "$KILN" compile "$SAMPLE" -o "$TMP/$p.plan" --precision $p
    expect 0 '39: float32\[1, 1\]' "$KILN" run "$TMP/$p.plan" --compare-to "$SRC/samples/hello_deepa/test_data_set_0" --rtol 3e-2 --atol 1e-2
    expect 0 'PASS' "$KILN" run "$TMP/$p.plan" --compare-to "$SRC/samples/hello_deepa/test_data_set_1" --rtol 3e-2 --atol 1e-2
    expect 0 "float16|bfloat16" "$KILN" inspect --graph "$TMP/$p.plan"
done
expect 0 'wrote' "$KILN" compile "$SAMPLE" -o "$TMP/keep.plan" --precision fp16 --keep-fp32 Gemm --keep-fp32 '/layernorm1/*'
expect 0 "Gemm<13>\(%/relu1/Relu_output_0/f32" "$KILN" inspect --graph "$TMP/keep.plan"
expect 0 'PASS' "$KILN" run "$TMP/keep.plan" --compare-to "$SRC/samples/hello_deepa/test_data_set_0" --rtol 3e-2 --atol 1e-2
expect 1 'must be fp32, fp16 or bf16' "$KILN" compile "$SAMPLE" --precision fp8
# weight-only quantization: Gemm weights become MatMulNBits; bad modes and group sizes refused
expect 0 'quantize: 3 MatMul/Gemm weights to 4-bit, group 32' "$KILN" compile "$SAMPLE" -o "$TMP/q4.plan" --quantize int4-weight-only --group-size 32
expect 0 'MatMulNBits' "$KILN" inspect --graph "$TMP/q4.plan"
expect 0 'quantize: 2 MatMul/Gemm weights to 8-bit' "$KILN" compile "$SAMPLE" -o "$TMP/q8.plan" --quantize int8-weight-only --keep-fp '/layer1/*'
expect 1 'must be int8, int4-weight-only \(int4\) or int8-weight-only' "$KILN" compile "$SAMPLE" --quantize int3
expect 1 'must be a power of two from 16' "$KILN" compile "$SAMPLE" --quantize int4-weight-only --group-size 48

# bench: latency and throughput of the test_identity plan on the CPU backend
if [ -f "$TMP/id.plan" ]; then
    expect 0 '^usage: kiln bench' "$KILN" bench --help
    expect 0 'bench MODEL.plan' "$KILN" --help
    expect 0 'backend: +CPU reference backend' "$KILN" bench "$TMP/id.plan" --iterations 3 --warmup 1
    expect 0 'note: running on the CPU reference backend \(the plan has no CUDA code' "$KILN" bench "$TMP/id.plan" --iterations 2
    expect 0 'inputs: +x: float32\[1, 1, 2, 2\]' "$KILN" bench "$TMP/id.plan" --iterations 2 --device cpu
    expect 0 'timed: +5 runs in' "$KILN" bench "$TMP/id.plan" --iterations 5
    expect 0 'latency \(ms\): +min [0-9.]+ +max [0-9.]+ +mean [0-9.]+ +median [0-9.]+ +p99 [0-9.]+' "$KILN" bench "$TMP/id.plan"
    expect 0 'throughput: +[0-9.]+ inferences/s' "$KILN" bench "$TMP/id.plan" --seed 3
    expect 0 'timed: +[1-9][0-9]* runs' "$KILN" bench "$TMP/id.plan" --duration 0.05 --warmup 0
    expect 0 '"iterations": 4,' "$KILN" bench "$TMP/id.plan" --json --iterations 4
    expect 0 '"device": "cpu",' "$KILN" bench "$TMP/id.plan" --json --device cpu
    expect 0 '"p99": [0-9.e+-]+' "$KILN" bench "$TMP/id.plan" --json
    expect 0 '"throughput_per_s": [0-9.e+-]+,' "$KILN" bench "$TMP/id.plan" --json
    expect 0 '"gpu_compute_ms": null' "$KILN" bench "$TMP/id.plan" --json --device cpu
    expect 0 '"shape": \[' "$KILN" bench "$TMP/id.plan" --json
    expect 0 'times steps on the CUDA backend only' "$KILN" bench "$TMP/id.plan" --profile --device cpu --iterations 1
    expect 1 'no CUDA backend for this plan' "$KILN" bench "$TMP/id.plan" --device cuda
    expect 1 'give --iterations or --duration, not both' "$KILN" bench "$TMP/id.plan" --iterations 3 --duration 1
    expect 1 '--iterations expects a whole number' "$KILN" bench "$TMP/id.plan" --iterations 0
    expect 1 '--warmup expects a whole number' "$KILN" bench "$TMP/id.plan" --warmup x
    expect 1 '--duration expects seconds' "$KILN" bench "$TMP/id.plan" --duration -1
    expect 1 "no input named 'nope'" "$KILN" bench "$TMP/id.plan" --shape nope=1x2
    expect 1 "input 'x' must have shape" "$KILN" bench "$TMP/id.plan" --shape x=1x1x3x2
    expect 1 '--device must be auto, cpu or cuda' "$KILN" bench "$TMP/id.plan" --device tpu
    expect 1 "unknown or incomplete option '--bogus'" "$KILN" bench "$TMP/id.plan" --bogus
    expect 1 'no plan given' "$KILN" bench
    expect 1 'not a kiln plan' "$KILN" bench "$ID/model.onnx"
    expect 1 'cannot open' "$KILN" bench "$TMP/none.plan"
fi

# target cuda (needs NVRTC, not a GPU): kernels for every arch + PTX, deterministic
if "$KILN" compile "$SAMPLE" --target cuda -o "$TMP/cu.plan" >/dev/null 2>&1; then
    expect 0 "wrote $TMP/cu2.plan \(target cuda" "$KILN" compile "$SAMPLE" --target cuda --no-cache -o "$TMP/cu2.plan"
    expect 0 '' cmp "$TMP/cu.plan" "$TMP/cu2.plan"
    expect 0 'cuda: .* kernels x archs sm_80,sm_86,sm_89,sm_90,ptx90' "$KILN" inspect "$TMP/cu.plan"
    expect 0 'memory: +planned pool' "$KILN" inspect "$TMP/cu.plan"
    expect 0 'Gemm +/layer1/Gemm .*\[gemm\]' "$KILN" inspect --layers "$TMP/cu.plan"
    expect 0 'LayerNormalization .*\[1 kernel\]  <- 9: /layernorm1/ReduceMean' "$KILN" inspect --layers "$TMP/cu.plan"
    expect 0 '"runs": "gemm"' "$KILN" inspect --json "$TMP/cu.plan"
    expect 0 'PASS' "$KILN" run "$TMP/cu.plan" --device cpu --compare-to "$SRC/samples/hello_deepa/test_data_set_0" --rtol 1e-3 --atol 1e-4
    expect 0 'wrote' "$KILN" compile "$SAMPLE" --target cuda --arch sm_75 -o "$TMP/cu75.plan" --no-cache
    expect 0 'cuda: .* sm_75,ptx75' "$KILN" inspect "$TMP/cu75.plan"
    expect 1 "--arch expects a list" "$KILN" compile "$SAMPLE" --target cuda --arch fast
    # --report with target cuda: the lowered plan's steps and kernels, after the pipeline and at -O0
    expect 0 'wrote' "$KILN" compile "$SAMPLE" --target cuda -o "$TMP/cur.plan" --report "$TMP/cur.json"
    cuda_report() { python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["cuda"]
keys = ("steps", "launches", "gemms", "gemms_int8", "copies", "host", "kernels")
b, a = r["before"], r["after"]
assert all(isinstance(x[k], int) for x in (a, b) for k in keys), r
assert a["steps"] == a["launches"] + a["gemms"] + a["copies"] + a["host"], r
assert a["gemms_int8"] == 0 and b["gemms_int8"] == 0, r  # a float model
assert a["steps"] <= b["steps"] and a["launches"] <= b["launches"] and a["kernels"] <= b["kernels"], r
assert (b == a) if sys.argv[2] == "same" else (b["steps"] > a["steps"] and a["kernels"] >= 1), r
print("cuda report ok", b["steps"], a["steps"], b["kernels"], a["kernels"])' "$@"; }
    expect 0 '^cuda report ok' cuda_report "$TMP/cur.json" fewer
    expect 0 'wrote' "$KILN" compile "$SAMPLE" --target cuda -O0 -o "$TMP/cur0.plan" --report "$TMP/cur0.json"
    expect 0 '^cuda report ok' cuda_report "$TMP/cur0.json" same
    # int8 products: the int8 GEMM step counted in the report and by inspect; k = 6 keeps the kernel
    I8="$SRC/tests/data/quant_int8_gemm"
    expect 0 'wrote' "$KILN" compile "$I8/qlmm_s8/model.onnx" --target cuda -o "$TMP/i8.plan" --report "$TMP/i8.json"
    expect 0 '"gemms_int8": 1,' cat "$TMP/i8.json"
    expect 0 'read back: 2 launches, 1 GEMMs \(1 int8\)' "$KILN" inspect "$TMP/i8.plan"
    expect 0 'wrote' "$KILN" compile "$I8/mmi_s8_k6/model.onnx" --target cuda -o "$TMP/k6.plan"
    expect 0 'read back: 1 launches, 0 GEMMs \(0 int8\)' "$KILN" inspect "$TMP/k6.plan"
    if [ -f "$SRC/../shared/models/ppocr_cls/model.onnx" ]; then
        expect 1 "needs the shape of input 'x'|dimension 0 .* has no size" "$KILN" compile "$SRC/../shared/models/ppocr_cls/model.onnx" --target cuda -o "$TMP/pp.plan"
        expect 0 'wrote' "$KILN" compile "$SRC/../shared/models/ppocr_cls/model.onnx" --target cuda --shape x=1x3x48x192 -o "$TMP/pp.plan"
        expect 0 'PASS' "$KILN" run "$TMP/pp.plan" --device cpu --compare-to "$SRC/../shared/models/ppocr_cls/test_data_set_0" --rtol 1e-3 --atol 1e-4
    fi
else
    echo "note: target cuda checks skipped (no NVRTC here)"
fi

# layers of a plan after fusion, and the fusion report (issue 6 item 4)
flat() { "$@" | tr -d ' \n'; } # JSON on one line, without blanks
expect 0 'wrote' "$KILN" compile "$SAMPLE" -o "$TMP/l.plan" --report "$TMP/l.json"
expect 0 '^ +2  LayerNormalization +/layernorm1/LayerNormalization -> .*<- 9: /layernorm1/ReduceMean, /layernorm1/Sub, .* \+3 more$' "$KILN" inspect --layers "$TMP/l.plan"
expect 0 '^layers \(8\):' "$KILN" inspect "$TMP/l.plan"
expect 0 '"layers":\[\{"index":0,"op":"Flatten","domain":"ai.onnx","name":"/flatten/Flatten","outputs":\[\{"name":' flat "$KILN" inspect --json "$TMP/l.plan"
expect 0 '"origins":\["/layernorm1/ReduceMean","/layernorm1/Sub",' flat "$KILN" inspect --json "$TMP/l.plan"
expect 0 '"origins":\[\]' flat "$KILN" inspect --json --layers "$SAMPLE"
expect 1 '--graph and --layers cannot be combined' "$KILN" inspect --graph --layers "$SAMPLE"
expect 0 '"fuse-norm":\{"ran":true,"nodes":2,"replaced":18,"ops":\{"LayerNormalization":\{"nodes":2,"replaced":18\}\}\}' flat cat "$TMP/l.json"
expect 0 '"kernels":\{"before":25,"after":8\}' flat cat "$TMP/l.json"
expect 1 '' grep -q '"cuda"' "$TMP/l.json" # target cpu: no lowered plan
expect 0 'wrote' "$KILN" compile "$SAMPLE" -o "$TMP/l1.plan" -O1 --report "$TMP/l1.json"
expect 0 '"fuse-act":\{"ran":false,"nodes":0' flat cat "$TMP/l1.json"

# language models: the paged KV cache and generation (issue 7)
LLAMA=$SRC/tests/models/llama_gqa_tiny
GPT2TOK=$SRC/tests/tokenizers/gpt2/tokenizer.json
ref_ids() { python3 -c "import json,sys; p=json.load(open(sys.argv[1]))['prompts'][int(sys.argv[2])]; print(','.join(map(str,p[sys.argv[3]])))" "$@"; }
expect 0 'kv-cache: 2 layers use the runtime.s paged cache: 2 kv heads x 32, 13 blocks of 8 tokens, max sequence length 100' \
    "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/llm.plan" --max-seq-len 100 --kv-block-size 8
expect 0 '^kv cache: +paged, 2 layers x 2 kv heads x head dim 32 \(float32\); 13 blocks of 8 tokens, max sequence length 100; 104.0 KiB \(106496 bytes\)' "$KILN" inspect "$TMP/llm.plan"
expect 0 'PagedAttention' "$KILN" inspect --layers "$TMP/llm.plan"
expect 0 'mask causal \(in the attention kernel: no mask input\)' "$KILN" inspect "$TMP/llm.plan"
expect 0 'kv-mask: 2 of 2 PagedAttention nodes causal without a mask .*5 inputs removed \(attention_mask among them\)' \
    "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/x.plan" --max-seq-len 100
expect 0 'wrote' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/llm_mask.plan" --max-seq-len 100 --disable-pass kv-mask
expect 0 'attention_mask +int64' "$KILN" inspect "$TMP/llm_mask.plan"
expect 0 '64 blocks of 16 tokens, max sequence length 1024, 1048576 bytes' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/llm2.plan" --kv-cache-mem 1M
expect 1 'does not hold one block' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/x.plan" --kv-cache-mem 1K
expect 1 '--kv-cache-mem expects a size' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/x.plan" --kv-cache-mem lots
expect 1 '--max-seq-len expects a positive integer' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/x.plan" --max-seq-len 0
expect 0 'wrote' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/llm0.plan" -O0
expect 0 'present.1.value +float32' "$KILN" inspect "$TMP/llm0.plan"
expect 0 'kv-cache: 4 past / 4 present values kept as graph inputs/outputs: no fused Attention' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/x.plan" --disable-pass fuse-attention
if command -v python3 >/dev/null; then
    IDS=$(ref_ids "$LLAMA/reference.json" 2 prompt_ids)
    WANT=$(ref_ids "$LLAMA/reference.json" 2 new_tokens | tr ',' ' ')
    expect 0 "^$WANT\$" "$KILN" run "$TMP/llm.plan" --prompt-ids "$IDS"
    expect 0 "^$WANT\$" "$KILN" run "$TMP/llm.plan" --prompt-ids "$IDS" --no-kv-cache
    expect 0 "^$WANT\$" "$KILN" run "$TMP/llm_mask.plan" --prompt-ids "$IDS"
    expect 0 "^$WANT\$" "$KILN" run "$TMP/llm0.plan" --prompt-ids "$IDS"
    expect 0 'prefill: [0-9.]+ tokens/s .*decode: [0-9.]+ tokens/s \(63 steps' "$KILN" run "$TMP/llm.plan" --prompt-ids "$IDS"
    expect 0 '17 prompt tokens, 64 new tokens' "$KILN" run "$TMP/llm.plan" --prompt-ids "$IDS"
    expect 0 'KV cache: paged, 2 layers x 2 kv heads x 32, 13 blocks of 8 tokens' "$KILN" run "$TMP/llm.plan" --prompt-ids "$IDS"
    expect 0 'KV cache: present tensors fed back' "$KILN" run "$TMP/llm0.plan" --prompt-ids "$IDS"
fi
    expect 0 'wrote' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/llm16.plan" --precision fp16
    expect 0 '^([0-9]+ ){15}[0-9]+$' "$KILN" run "$TMP/llm16.plan" --prompt-ids "$IDS" --max-new-tokens 16
# fp16/bf16: the attention and the KV cache in that dtype (kiln.kv.dtype), half the float32 cache's bytes,
# the reference's greedy tokens; --keep-fp32 PagedAttention keeps the float32 cache
expect 0 '^kv cache: +paged, 2 layers x 2 kv heads x head dim 32 \(float16\); 128 blocks of 16 tokens, max sequence length 2048; 1.0 MiB \(1048576 bytes\)' "$KILN" inspect "$TMP/llm16.plan"
expect 0 'PagedAttention +/model/model/layers.0/self_attn/MatMul_1/PagedAttention -> float16' "$KILN" inspect --layers "$TMP/llm16.plan"
expect 0 'wrote' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/llmb16.plan" --precision bf16
expect 0 '\(bfloat16\); 128 blocks of 16 tokens, max sequence length 2048; 1.0 MiB' "$KILN" inspect "$TMP/llmb16.plan"
expect 0 'wrote' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/llm16k.plan" --precision fp16 --keep-fp32 PagedAttention
expect 0 '\(float32\); 128 blocks of 16 tokens, max sequence length 2048; 2.0 MiB' "$KILN" inspect "$TMP/llm16k.plan"
# a pattern naming one projection keeps the merged Q|K|V product (merge-proj's _origins) in float32
expect 0 'precision float16: 1 casts inserted' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/llm16p.plan" --precision fp16
expect 0 'precision float16: 7 casts inserted' "$KILN" compile "$LLAMA/model.onnx" -o "$TMP/llm16p.plan" --precision fp16 --keep-fp32 '*/k_proj/*'
if command -v python3 >/dev/null; then
    WANT16=$(cut -d' ' -f1-16 <<<"$WANT")
    for p in llm16 llmb16 llm16k; do
        expect 0 "^$WANT16\$" "$KILN" run "$TMP/$p.plan" --prompt-ids "$IDS" --max-new-tokens 16
    done
    expect 0 '128 blocks of 16 tokens, max sequence length 2048, 1048576 bytes of float16; CPU' "$KILN" run "$TMP/llm16.plan" --prompt-ids "$IDS" --max-new-tokens 2
fi
expect 0 '^usage: kiln run' "$KILN" run --help
expect 0 '--prompt TEXT' "$KILN" run --help
expect 0 '^([0-9]+ ){9}[0-9]+$' "$KILN" run "$TMP/llm.plan" --prompt-ids 1,2,3 --max-new-tokens 10 --temperature 0.8 --top-k 40 --top-p 0.9 --seed 7
"$KILN" run "$TMP/llm.plan" --prompt-ids 1,2,3 --max-new-tokens 10 --temperature 0.8 --seed 7 >"$TMP/s1.txt" 2>/dev/null
"$KILN" run "$TMP/llm.plan" --prompt-ids 1,2,3 --max-new-tokens 10 --temperature 0.8 --seed 7 >"$TMP/s2.txt" 2>/dev/null
expect 0 '' cmp "$TMP/s1.txt" "$TMP/s2.txt"
printf '1,2,3\n\n4,5,6,7,8\n' >"$TMP/prompts.txt"
expect 0 '^--- prompt 1 \(5 tokens\) ---$' "$KILN" run "$TMP/llm.plan" --prompts-file "$TMP/prompts.txt" --max-new-tokens 4
expect 0 '2 prompts: 8 prompt tokens, 8 new tokens' "$KILN" run "$TMP/llm.plan" --prompts-file "$TMP/prompts.txt" --max-new-tokens 4
expect 0 'new tokens \(sequence full\)' "$KILN" run "$TMP/llm.plan" --prompt-ids 1,2,3 --max-new-tokens 0 --max-seq-len 20
expect 1 'prompt 0 has 17 tokens, more than the cache holds per sequence \(max sequence length 10\)' "$KILN" run "$TMP/llm.plan" --prompt-ids "$(seq -s, 1 17)" --max-seq-len 10
expect 1 'token id 512 at position 1 is outside the vocabulary \(0..511\)' "$KILN" run "$TMP/llm.plan" --prompt-ids 1,512
expect 1 'prompt 0 is empty' "$KILN" run "$TMP/llm.plan" --prompt-ids ","
expect 1 'prompt ids must be integers' "$KILN" run "$TMP/llm.plan" --prompt-ids "1,x"
expect 1 '--prompt needs a tokenizer: the plan has none embedded .*give --tokenizer tokenizer.json' "$KILN" run "$TMP/llm.plan" --prompt "hello"
expect 1 '--stop needs a tokenizer' "$KILN" run "$TMP/llm.plan" --prompt-ids 1,2 --stop x
expect 1 'give one of --prompt, --prompt-ids and --prompts-file' "$KILN" run "$TMP/llm.plan" --prompt-ids 1 --prompt hi
expect 1 'needs a plan with a CUDA prefill and decode program' "$KILN" run "$TMP/llm.plan" --prompt-ids 1 --device cuda
expect 1 'KV cache full' "$KILN" run "$TMP/llm.plan" --prompts-file "$TMP/prompts.txt" --max-new-tokens 20 --kv-cache-mem 16384
expect 1 'KV cache full' "$KILN" run "$TMP/llm.plan" --prompts-file "$TMP/prompts.txt" --max-new-tokens 20 --kv-cache-mem 16K
expect 0 '^.+$' "$KILN" run "$TMP/llm.plan" --prompt "the cat" --tokenizer "$GPT2TOK" --max-new-tokens 8
expect 0 '5 prompt tokens, 8 new tokens' "$KILN" run "$TMP/llm.plan" --prompt "the cat" --tokenizer "$GPT2TOK" --max-new-tokens 8
# the tokenizer and the eos ids embedded in the plan
mkdir -p "$TMP/llmtok"
printf '{"eos_token_id": 245}' >"$TMP/llmtok/generation_config.json"
cp "$LLAMA/model.onnx" "$GPT2TOK" "$TMP/llmtok/"
expect 0 'embedded tokenizer.json \(27 kB, 1000 ids\), generation_config.json' "$KILN" compile "$TMP/llmtok/model.onnx" -o "$TMP/llmt.plan"
rm "$TMP/llmtok/tokenizer.json"
expect 0 '5 prompt tokens, 8 new tokens \(max new tokens\)' "$KILN" run "$TMP/llmt.plan" --prompt "the cat" --max-new-tokens 8
expect 0 '3 prompt tokens, 2 new tokens \(stop id\)' "$KILN" run "$TMP/llmt.plan" --prompt-ids 1,2,3 --max-new-tokens 8
expect 0 '3 prompt tokens, 8 new tokens' "$KILN" run "$TMP/llmt.plan" --prompt-ids 1,2,3 --max-new-tokens 8 --ignore-eos
expect 0 '5 prompt tokens, 4 new tokens \(stop string\)' "$KILN" run "$TMP/llmt.plan" --prompt "the cat" --max-new-tokens 30 --stop e --ignore-eos
# --chat: the prompt rendered by the embedded chat template (BOS + text: 6 ids)
mkdir -p "$TMP/llmchat"
cp "$LLAMA/model.onnx" "$GPT2TOK" "$TMP/llmchat/"
printf '{"chat_template": "{{ bos_token }}{{ messages[0][\\"content\\"] }}", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}' >"$TMP/llmchat/tokenizer_config.json"
expect 0 'tokenizer_config.json \([0-9]+ bytes, chat template\)' "$KILN" compile "$TMP/llmchat/model.onnx" -o "$TMP/llmc.plan"
expect 0 '6 prompt tokens, 5 new tokens' "$KILN" run "$TMP/llmc.plan" --prompt "the cat" --chat --max-new-tokens 5
expect 1 '--chat needs the chat template' "$KILN" run "$TMP/llmt.plan" --prompt "the cat" --chat
expect 1 "unknown special token '<\\|nope\\|>'" "$KILN" run "$TMP/llmc.plan" --prompt "the cat" --stop-token "<|nope|>"
expect 0 '6 prompt tokens, [0-9]+ new tokens' "$KILN" run "$TMP/llmc.plan" --prompt "the cat" --chat --max-new-tokens 5 --stop-token "<|im_end|>"
expect 1 '--stop-token needs a tokenizer' "$KILN" run "$TMP/llm.plan" --prompt-ids 1,2 --stop-token "<|im_end|>"
expect 0 '^ of\*$' sh -c "'$KILN' run '$TMP/llmt.plan' --prompt 'the cat' --max-new-tokens 30 --stop e --ignore-eos 2>/dev/null | head -c 4"

# tokenizer files embedded in the plan: found next to the model, given, or left out
TOKD=$TMP/tok
mkdir -p "$TOKD/other"
cp "$SAMPLE" "$TOKD/model.onnx"
cp "$SRC/tests/tokenizers/qwen2/tokenizer.json" "$TOKD/"
printf '{"chat_template": "{{ bos_token }}", "bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}}' >"$TOKD/tokenizer_config.json"
printf '{"eos_token_id": 2}' >"$TOKD/generation_config.json"
expect 0 'embedded tokenizer.json \(42 kB, 1002 ids\), tokenizer_config.json \([0-9]+ bytes, chat template\), generation_config.json' "$KILN" compile "$TOKD/model.onnx" -o "$TMP/t.plan"
expect 0 'tokenizer.json +43323 bytes' "$KILN" inspect "$TMP/t.plan"
expect 0 'tokenizer:   BPE, 1002 ids, 3 special tokens: <\|endoftext\|> \(0\), <\|im_start\|> \(1\), <\|im_end\|> \(2\)' "$KILN" inspect "$TMP/t.plan"
expect 0 "chat:        template \(15 bytes\), bos '<\|im_start\|>', eos '<\|im_end\|>'" "$KILN" inspect "$TMP/t.plan"
expect 0 '"tokenizer":\{"model":"BPE","vocab_size":1002,"n_special":3,' flat "$KILN" inspect --json "$TMP/t.plan"
expect 0 '"has_chat_template":true' flat "$KILN" inspect --json "$TMP/t.plan"
expect 0 'float32\[1, 1\]  min' "$KILN" run "$TMP/t.plan" --seed 1
expect 0 'wrote [^;]*nodes\)$' "$KILN" compile "$TOKD/model.onnx" -o "$TMP/t0.plan" --no-tokenizer
expect 0 '^absent$' sh -c "'$KILN' inspect '$TMP/t0.plan' | grep -q '^embedded' && echo present || echo absent"
cp "$SRC/tests/tokenizers/gpt2/tokenizer.json" "$TOKD/other/"
expect 0 'embedded tokenizer.json \(27 kB, 1000 ids\)\)$' "$KILN" compile "$TOKD/model.onnx" -o "$TMP/t1.plan" --tokenizer "$TOKD/other/tokenizer.json"
expect 1 "$TOKD/none.json: --tokenizer: cannot open" "$KILN" compile "$TOKD/model.onnx" -o "$TMP/t2.plan" --tokenizer "$TOKD/none.json"
printf '{"model": {"type": "WordPiece"}}' >"$TOKD/other/bad.json"
expect 1 "$TOKD/other/bad.json: cannot embed it in the plan \(--no-tokenizer" "$KILN" compile "$TOKD/model.onnx" -o "$TMP/t2.plan" --tokenizer "$TOKD/other/bad.json"
printf '{"chat_template": "{%% macro m() %%}{%% endmacro %%}"}' >"$TOKD/tokenizer_config.json"
expect 0 "warning: $TOKD/tokenizer_config.json: kiln cannot render its chat template \(chat template: offset 3: unsupported statement 'macro'\)" "$KILN" compile "$TOKD/model.onnx" -o "$TMP/t3.plan"
expect 0 'chat template not renderable' "$KILN" compile "$TOKD/model.onnx" -o "$TMP/t3.plan"
printf '{"chat_template": 3}' >"$TOKD/tokenizer_config.json"
expect 1 "$TOKD/tokenizer_config.json: \"chat_template\" must be a string" "$KILN" compile "$TOKD/model.onnx" -o "$TMP/t2.plan"
expect 0 '' test ! -e "$TMP/t2.plan"
expect 1 'together' "$KILN" compile "$TOKD/model.onnx" -o "$TMP/t2.plan" --no-tokenizer --tokenizer x

# kiln bench for language models (tools/bench_llm.c), CPU backend
LLM="$SRC/tests/models/llama_gqa_tiny/model.onnx"
expect 0 'wrote' "$KILN" compile "$LLM" -o "$TMP/llm.plan" --max-seq-len 64
expect 0 'prefill: +[0-9.]+ tokens/s \(.* for 24 tokens\)' "$KILN" bench "$TMP/llm.plan" --prompt-len 12 --gen-len 5 --batch 2
expect 0 'decode: +[0-9.]+ tokens/s \(5 steps of 2 tokens' "$KILN" bench "$TMP/llm.plan" --prompt-len 12 --gen-len 5 --batch 2
expect 0 'decode latency: +p50 [0-9.]+ ms, p99 [0-9.]+ ms' "$KILN" bench "$TMP/llm.plan" --prompt-len 4 --gen-len 3
expect 0 'KV cache: paged' "$KILN" bench "$TMP/llm.plan" --prompt-len 4 --gen-len 3
expect 0 '"prompt_len": 8, "gen_len": 2, "batch": 3, "prefill_tokens_per_s": [0-9.]+' "$KILN" bench "$TMP/llm.plan" --prompt-len 8 --gen-len 2 --batch 3 --json
expect 0 '"roofline_fraction": null' "$KILN" bench "$TMP/llm.plan" --prompt-len 8 --gen-len 2 --json
expect 0 'each step runs all sequences in one run' "$KILN" bench "$TMP/llm.plan" --prompt-len 5 --gen-len 2 --batch 3
expect 0 '"decode_steps": 2, "batched_decode": true' "$KILN" bench "$TMP/llm.plan" --prompt-len 5 --gen-len 2 --batch 3 --json
expect 0 'decode: +[0-9.]+ tokens/s \(8 steps of 3 tokens' "$KILN" bench "$TMP/llm.plan" --prompt-len 50 --gen-len 8 --batch 3
expect 1 'exceed the plan.s max sequence length 64' "$KILN" bench "$TMP/llm.plan" --prompt-len 60 --gen-len 8
expect 1 '--gen-len expects an integer from 1' "$KILN" bench "$TMP/llm.plan" --gen-len 0
expect 1 'needs a plan with a CUDA prefill and decode program' "$KILN" bench "$TMP/llm.plan" --gen-len 2 --device cuda
expect 1 'no plan given' "$KILN" bench --gen-len 2
expect 0 'usage: kiln bench MODEL.plan --prompt-len' "$KILN" bench --prompt-len 1 --help
expect 1 '--attn-kernel must be fast, simple or tc' "$KILN" compile "$LLM" -o "$TMP/x.plan" --target cuda --attn-kernel tiled

# never replace a device or a folder with an output file
expect 1 'not a regular file' "$KILN" compile "$SAMPLE" -o /dev/null
expect 0 '' test -c /dev/null
expect 1 'not a regular file' "$KILN" compile "$SAMPLE" -o "$TMP"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
