#!/usr/bin/env bash
# From a fresh Debian 12 checkout to a first result: installs the
# dependencies, builds kiln, compiles the bundled sample model into a plan
# and runs the plan on the CPU reference backend, comparing its output with
# the sample's reference output (it prints the output and PASS; a failed
# comparison makes this script fail).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

echo "== quickstart: dependencies (scripts/setup-deps.sh)"
bash scripts/setup-deps.sh
echo "== quickstart: build (scripts/build.sh)"
bash scripts/build.sh build
echo "== quickstart: build/kiln compile samples/hello_deepa/model.onnx -o build/hello_deepa.plan"
build/kiln compile samples/hello_deepa/model.onnx -o build/hello_deepa.plan
echo "== quickstart: build/kiln run build/hello_deepa.plan --compare-to samples/hello_deepa/test_data_set_0 --rtol 1e-3 --atol 1e-4"
build/kiln run build/hello_deepa.plan --compare-to samples/hello_deepa/test_data_set_0 --rtol 1e-3 --atol 1e-4
