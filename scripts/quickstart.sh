#!/usr/bin/env bash
# From a fresh Debian 12 checkout to a first result: installs the
# dependencies, builds kiln, and inspects the bundled sample model.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

echo "== quickstart: dependencies (scripts/setup-deps.sh)"
bash scripts/setup-deps.sh
echo "== quickstart: build (scripts/build.sh)"
bash scripts/build.sh build
echo "== quickstart: build/kiln inspect samples/hello_deepa/model.onnx"
build/kiln inspect samples/hello_deepa/model.onnx
