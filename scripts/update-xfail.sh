#!/usr/bin/env bash
# Regenerates tests/conformance/xfail-*.txt: the conformance cases kiln is
# known to fail today, each with the runner's reason. ctest runs every case;
# a failure listed here does not fail the test, any other failure does.
# Review the diff before committing: a list that grows is a regression.
# usage: scripts/update-xfail.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
DATA=/usr/share/libonnx-testdata/data
for suite in node simple pytorch-converted pytorch-operator; do
    out=tests/conformance/xfail-$suite.txt
    {
        echo "# Known conformance failures in $DATA/$suite (regenerate: scripts/update-xfail.sh)"
        { "$BUILD/kiln-conformance" -q "$DATA/$suite" || true; } | sed -n 's/^FAIL\( (known)\)\? \([^:]*\): \(.*\)$/\2  \3/p' |
            sed -E 's#(error: )?/usr/share/libonnx-testdata/data/[^ ]*model.onnx: ##' | cut -c1-300
    } >"$out"
    echo "$out: $(grep -vc '^#' "$out" || true) known failures"
done
