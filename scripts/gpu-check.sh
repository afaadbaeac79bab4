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

step "conformance on the CUDA backend, fp32 (same criteria as the CPU)"
for suite in node simple models samples; do
    [ -d "$D/$suite" ] || continue
    timeout 150 "$C" -q --target cuda --device cuda "$D/$suite" >"$OUT/conf-cuda-$suite.log" 2>&1
    say "  $suite: $(tail -1 "$OUT/conf-cuda-$suite.log")"
done

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

step "language-model benchmark: kiln bench (CPU session until the CUDA session exists) vs PyTorch peers"
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
