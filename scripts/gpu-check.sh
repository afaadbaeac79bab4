#!/usr/bin/env bash
# Every GPU check and benchmark in one go, on a machine with an NVIDIA GPU
# (see ../shared/gpu/README.md), from gpu-carry/ made by
# scripts/gpu-prepare.sh. Writes logs and summary.txt into OUTDIR.
# Budget: about 8 minutes on an H100.
# usage: scripts/gpu-check.sh OUTDIR
set -uo pipefail
OUT=${1:?usage: scripts/gpu-check.sh OUTDIR}
cd "$(dirname "$0")/.."
G=$PWD/gpu-carry
[ -x "$G/bin/kiln" ] || { echo "gpu-carry/ is missing: run scripts/gpu-prepare.sh on the build machine" >&2; exit 1; }
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$G/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export XDG_CACHE_HOME="$OUT/cache"
K=$G/bin/kiln
C=$G/bin/kiln-conformance
D=$G/data
SUM="$OUT/summary.txt"
: >"$SUM"
say() { echo "$*" | tee -a "$SUM"; }
step() { echo "== $*" | tee -a "$SUM"; }
t0=$(date +%s)

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1 | tee -a "$SUM"

step "CUDA runtime tests against the CPU backend (test_cuda_runtime --gpu)"
timeout 180 "$G/bin/test_cuda_runtime" --gpu >"$OUT/gpu-tests.log" 2>&1
say "  exit $?: $(grep -E 'PASSED|FAILED|SKIPPED' "$OUT/gpu-tests.log" | tail -2 | tr '\n' ' ')"

step "kiln.PagedAttention plans over the device KV cache against the CPU (test_cuda_paged --gpu)"
timeout 120 "$G/bin/test_cuda_paged" --gpu >"$OUT/paged-gpu.log" 2>&1
say "  exit $?: $(grep -E 'max abs error|PASSED|FAILED|SKIPPED' "$OUT/paged-gpu.log" | tail -3 | tr '\n' ' ')"
step "the CUDA decoder session (kn_session_create_cuda) against the CPU session (test_cuda_decoder --gpu)"
timeout 120 "$G/bin/test_cuda_decoder" --gpu >"$OUT/decoder-gpu.log" 2>&1
say "  exit $?: $(grep -E 'GPU session|PASSED|FAILED|SKIPPED' "$OUT/decoder-gpu.log" | tail -3 | tr '\n' ' ')"

step "batched prefill + batched decode on the device vs the CPU session's tokens (test_cuda_prefill_batch --gpu)"
timeout 120 "$G/bin/test_cuda_prefill_batch" --gpu >"$OUT/prefill-batch-gpu.log" 2>&1
say "  exit $?: $(grep -E 'PASSED|FAILED|SKIPPED' "$OUT/prefill-batch-gpu.log" | tail -3 | tr '\n' ' ')"

step "the block-per-row norm kernels against the CPU (test_cuda_norm --gpu)"
timeout 180 "$G/bin/test_cuda_norm" --gpu >"$OUT/norm-gpu.log" 2>&1
say "  exit $?: $(grep -E 'cases within|PASSED|FAILED|SKIPPED' "$OUT/norm-gpu.log" | tail -4 | tr '\n' ' ')"

step "conformance on the CUDA backend, fp32 (same criteria as the CPU)"
for suite in node simple models samples; do
    [ -d "$D/$suite" ] || continue
    timeout 150 "$C" -q --target cuda --device cuda "$D/$suite" >"$OUT/conf-cuda-$suite.log" 2>&1
    say "  $suite: $(tail -1 "$OUT/conf-cuda-$suite.log")"
done

step "int8 products through the cuBLASLt int8 GEMM step (exact references)"
timeout 60 "$C" --target cuda --device cuda "$D/quant_int8_gemm" >"$OUT/conf-cuda-int8.log" 2>&1
say "  quant_int8_gemm: $(tail -1 "$OUT/conf-cuda-int8.log")"

step "reduced precision on the CUDA backend (per-case NMSE against the fp32 reference data)"
for p in fp16:1e-4 bf16:1e-3; do
    IFS=: read -r prec nmse <<<"$p"
    timeout 100 "$C" -q --target cuda --device cuda --precision "$prec" --nmse "$nmse" "$D/node" \
        >"$OUT/conf-cuda-node-$prec.log" 2>&1
    say "  node $prec (NMSE <= $nmse): $(tail -1 "$OUT/conf-cuda-node-$prec.log")"
    say "    $(grep '^worst NMSE' "$OUT/conf-cuda-node-$prec.log")"
    timeout 60 "$C" --target cuda --device cuda --precision "$prec" --nmse "$nmse" "$D/models" "$D/samples" \
        >"$OUT/conf-cuda-models-$prec.log" 2>&1
    say "  models $prec: $(tail -1 "$OUT/conf-cuda-models-$prec.log")"
done

step "compute-sanitizer memcheck"
PLANS=()
"$K" compile "$D/samples/hello_deepa/model.onnx" --target cuda -o "$OUT/hello.plan" >/dev/null 2>&1 &&
    PLANS+=("$OUT/hello.plan")
[ -f "$D/models/ppocr_cls/model.onnx" ] &&
    "$K" compile "$D/models/ppocr_cls/model.onnx" --target cuda --shape x=1x3x48x192 -o "$OUT/ppocr.plan" \
        >/dev/null 2>&1 && PLANS+=("$OUT/ppocr.plan")
for plan in "${PLANS[@]}"; do
    log="$OUT/memcheck-$(basename "$plan").log"
    timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$K" run "$plan" --device cuda >"$log" 2>&1
    say "  $(basename "$plan"): exit $?, $(grep -o 'ERROR SUMMARY: [0-9]* errors' "$log" | head -1)"
done

step "benchmarks (same plan, CPU vs CUDA, same run)"
for plan in "${PLANS[@]}"; do
    for dev in cpu cuda; do
        j="$OUT/bench-$(basename "$plan" .plan)-$dev.json"
        timeout 60 "$K" bench "$plan" --device $dev --warmup 5 --iterations 50 --json >"$j" 2>>"$OUT/bench.err"
        say "  $(basename "$plan") $dev: $(grep -E '"(mean|median|p99)_ms"' "$j" | tr -d ' \n')"
    done
done
step "attention kernels on the GPU against the reference (kiln-attn-check --gpu --bench)"
timeout 120 "$G/bin/kiln-attn-check" --gpu --bench >"$OUT/attn-kernels.log" 2>&1
say "  exit $?: $(tail -1 "$OUT/attn-kernels.log")"
grep -E '^(FAIL|BENCH)' "$OUT/attn-kernels.log" | head -20 | sed 's/^/  /' | tee -a "$SUM" >/dev/null
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 "$G/bin/kiln-attn-check" --gpu \
    >"$OUT/attn-racecheck.log" 2>&1
say "  racecheck: exit $?, $(grep -oE 'RACECHECK SUMMARY: [0-9]+ hazards?[^)]*' "$OUT/attn-racecheck.log" | tail -1)"

step "MatMulNBits (GEMV, tensor cores) and sampling kernels on the GPU (kiln-quant-check --gpu --bench)"
timeout 90 "$G/bin/kiln-quant-check" --gpu --bench >"$OUT/quant-kernels.log" 2>&1
say "  exit $?: $(tail -1 "$OUT/quant-kernels.log")"
grep -E '^(FAIL|BENCH)' "$OUT/quant-kernels.log" | head -24 | sed 's/^/  /' | tee -a "$SUM" >/dev/null
timeout 60 compute-sanitizer --tool racecheck --error-exitcode 9 "$G/bin/kiln-quant-check" --gpu \
    >"$OUT/quant-racecheck.log" 2>&1
say "  racecheck: exit $?, $(grep -oE 'RACECHECK SUMMARY: [0-9]+ hazards?[^)]*' "$OUT/quant-racecheck.log" | tail -1)"

step "the dense GEMV on the GPU, and its timings against cuBLASLt per decode shape (kiln-gemv-check --gpu --bench)"
timeout 60 "$G/bin/kiln-gemv-check" --gpu --bench >"$OUT/gemv.log" 2>&1
say "  exit $?: $(tail -1 "$OUT/gemv.log")"
grep -E '^(FAIL|BENCH|TABLE)' "$OUT/gemv.log" | head -90 | sed 's/^/  /' | tee -a "$SUM" >/dev/null

step "kiln run --prompt-ids --device cuda (one target-cuda plan: prefill + decode programs) vs --device cpu"
# greedy tokens must match; the big models (models-big/, git-ignored) only when present on this machine
cuda_vs_cpu() { # NAME ONNX [compile options...]
    local name=$1 onnx=$2 plan="$OUT/dec-$1.plan"
    shift 2
    if ! timeout 240 "$K" compile "$onnx" --target cuda "$@" -o "$plan" >"$OUT/dec-$name-compile.log" 2>&1; then
        say "  $name: compile failed: $(tail -1 "$OUT/dec-$name-compile.log")"
        return 1
    fi
    local ids=1,15,200,42,7,99,250,3,8,77,5,6,9,11,13,17,19,23,29,31,37,41,43,47,53,59,61,67,71,73,79,83,89,97,101,103,107,109,113,127,131,137,139,149,151,157,163,167,173,179,181,191,193,197,199,211,223,227,229,233,239,241,251,2,4,10,12,14,16,18
    local want got nog
    want=$(timeout 120 "$K" run "$plan" --prompt-ids $ids --max-new-tokens 16 --device cpu 2>"$OUT/dec-$name-cpu.err")
    got=$(timeout 120 "$K" run "$plan" --prompt-ids $ids --max-new-tokens 16 --device cuda 2>"$OUT/dec-$name-cuda.err")
    nog=$(timeout 120 "$K" run "$plan" --prompt-ids $ids --max-new-tokens 16 --device cuda --no-cuda-graph \
        2>"$OUT/dec-$name-cuda-nograph.err")
    if [ -n "$want" ] && [ "$want" = "$got" ] && [ "$got" = "$nog" ]; then
        say "  $name: 70-token prompt (2 prefill chunks) + 16 greedy tokens: cuda (graphs on and off) = cpu ($got)"
    else
        say "  $name: MISMATCH cuda '$got' / --no-cuda-graph '$nog' vs cpu '$want' ($(tail -1 "$OUT/dec-$name-cuda.err"))"
    fi
    # seeded top-p sampling on the device: the draws of the CPU sampler's stream
    local smp="--temperature 0.8 --top-p 0.9 --seed 5"
    want=$(timeout 120 "$K" run "$plan" --prompt-ids $ids --max-new-tokens 16 --device cpu $smp 2>/dev/null)
    got=$(timeout 120 "$K" run "$plan" --prompt-ids $ids --max-new-tokens 16 --device cuda $smp 2>/dev/null)
    nog=$(timeout 120 "$K" run "$plan" --prompt-ids $ids --max-new-tokens 16 --device cuda --no-cuda-graph $smp \
        2>/dev/null)
    if [ -n "$want" ] && [ "$want" = "$got" ] && [ "$got" = "$nog" ]; then
        say "  $name: top-p 0.9 seed 5, 16 tokens: cuda (graphs on and off) = cpu"
    else
        say "  $name: top-p MISMATCH cuda '$got' / --no-cuda-graph '$nog' vs cpu '$want' (logits differ in the last" \
            "bits between devices: a draw near a boundary may fall the other way)"
    fi
}
for m in llama_gqa_tiny gpt2_tiny qwen2_tiny; do
    [ -f "$D/llm/$m/model.onnx" ] && cuda_vs_cpu "$m" "$D/llm/$m/model.onnx"
done
# W8A8 (15 int8 GEMM steps per program)
[ -f "$D/llm/llama_gqa_tiny/model.onnx" ] &&
    cuda_vs_cpu llama_w8a8 "$D/llm/llama_gqa_tiny/model.onnx" --quantize int8 --act-scale dynamic
SMOL=models-big/smollm2-135m/model.onnx
[ -f "$SMOL" ] && cuda_vs_cpu smollm2 "$SMOL"
step "kiln bench --device cuda on the decoders (fp16 plans, prefill chunk 64)"
for m in smollm2:models-big/smollm2-135m/model.onnx llama1b:models-big/llama1b/model.onnx; do
    IFS=: read -r name onnx <<<"$m"
    if [ ! -f "$onnx" ]; then
        say "  $name: $onnx not present on this machine, skipped"
        continue
    fi
    plan="$OUT/bench-$name-fp16.plan"
    timeout 300 "$K" compile "$onnx" --target cuda --precision fp16 --max-seq-len 512 -o "$plan" \
        >"$OUT/bench-$name-compile.log" 2>&1 || { say "  $name: compile failed"; continue; }
    timeout 90 "$K" bench "$plan" --device cuda --prompt-len 128 --gen-len 64 >"$OUT/bench-$name-cuda.txt" 2>&1
    say "  $name fp16 cuda: exit $?, $(grep -E '^(prefill|decode|roofline)' "$OUT/bench-$name-cuda.txt" | tr '\n' ' ')"
    timeout 90 "$K" bench "$plan" --device cuda --prompt-len 128 --gen-len 64 --batch 8 >"$OUT/bench-$name-cuda-b8.txt" 2>&1
    say "  $name fp16 cuda batch 8: exit $?, $(grep -E '^(shape|decode|roofline)' "$OUT/bench-$name-cuda-b8.txt" | tr '\n' ' ')"
    timeout 90 "$K" bench "$plan" --device cuda --prompt-len 128 --gen-len 64 --no-cuda-graph \
        >"$OUT/bench-$name-cuda-nograph.txt" 2>&1
    say "  $name fp16 cuda --no-cuda-graph: exit $?, $(grep -E '^(decode latency|roofline)' \
        "$OUT/bench-$name-cuda-nograph.txt" | tr '\n' ' ')"
done
if [ -f "$D/llm/llama_gqa_tiny/model.onnx" ]; then
    timeout 60 "$K" bench "$OUT/dec-llama_gqa_tiny.plan" --device cuda --prompt-len 128 --gen-len 64 \
        >"$OUT/bench-llama-tiny-cuda.txt" 2>&1
    say "  llama_gqa_tiny fp32 cuda: exit $?, $(grep -E '^(prefill|decode)' "$OUT/bench-llama-tiny-cuda.txt" | tr '\n' ' ')"
fi

step "language-model benchmark: kiln bench on the CPU session vs PyTorch peers"
LLMP="$OUT/llama_tiny.plan"
"$K" compile "$D/llm/llama_gqa_tiny/model.onnx" -o "$LLMP" --max-seq-len 512 >/dev/null 2>&1
timeout 60 "$K" bench "$LLMP" --prompt-len 128 --gen-len 64 --batch 1 >"$OUT/bench-llm.txt" 2>&1
say "  $(grep -E '^(prefill|decode)' "$OUT/bench-llm.txt" | tr '\n' ' ')"
if python3 -c 'import torch, transformers' 2>/dev/null; then
    # SmolLM2-135M architecture, fp16, batch 1 and 8: eager and torch.compile; kiln on the same weights
    timeout 300 python3 "$G/scripts/peers.py" --model smollm2 --device cuda --prompt-len 128 --gen-len 32 \
        --batch 1 8 --repeat 2 --kiln "$K" --export-onnx "$OUT/peer-smollm2" --json "$OUT/peers.json" \
        >"$OUT/peers.txt" 2>"$OUT/peers.err"
    say "  peers.py exit $?"
    sed 's/^/  /' "$OUT/peers.txt" | tee -a "$SUM" >/dev/null
else
    say "  peers skipped: no torch/transformers in this python3"
fi
say "total: $(( $(date +%s) - t0 )) s"
