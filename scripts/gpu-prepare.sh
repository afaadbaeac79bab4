#!/usr/bin/env bash
# Run HERE (the build machine) before a GPU check. The GPU machine has the
# CUDA toolkit and a driver but no Debian packages (no protobuf-c, cmocka,
# libonnx-testdata), and ctest files hold this machine's paths. So this
# builds kiln and assembles gpu-carry/ (git-ignored, < 64 MiB): the
# binaries, the two libraries they need, and the test data. Then one
# device call:  carry ["gpu-carry"], command "bash scripts/gpu-check.sh $OUT"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh build >/dev/null
rm -rf gpu-carry
mkdir -p gpu-carry/bin gpu-carry/lib gpu-carry/data
for bin in build/kiln build/kiln-conformance build/kiln-attn-check build/kiln-quant-check build/kiln-gemv-check \
           build/tests/test_cuda_runtime build/tests/test_cuda_paged build/tests/test_cuda_decoder \
           build/tests/test_cuda_norm build/tests/test_cuda_prefill_batch; do
    cp "$bin" gpu-carry/bin/
    ldd "$bin" | awk '/=> \// {print $3}' | { grep -E 'libprotobuf-c|libcmocka' || true; } | xargs -r -I{} cp -L {} gpu-carry/lib/
done
strip gpu-carry/bin/* 2>/dev/null || true
DATA=/usr/share/libonnx-testdata/data
cp -r "$DATA/node" "$DATA/simple" gpu-carry/data/
[ -d ../shared/models ] && cp -r ../shared/models gpu-carry/data/models
cp -r samples gpu-carry/data/samples
cp -r tests/data/quant_int8_gemm gpu-carry/data/quant_int8_gemm
mkdir -p gpu-carry/data/llm gpu-carry/scripts
cp -r tests/models/llama_gqa_tiny tests/models/gpt2_tiny tests/models/qwen2_tiny gpu-carry/data/llm/
cp bench/peers.py gpu-carry/scripts/
cp scripts/models/export_decoders.py gpu-carry/scripts/
du -sh gpu-carry
