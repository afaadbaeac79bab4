#!/usr/bin/env bash
# ../shared/models in W8A8 (docs/quantization.md, "Figures"): each model is
# calibrated (entropy) on its test_data_set_N folders and compiled with
# --quantize int8, evaluated on the same folders and gated at the
# documented end-to-end NMSE (every graph output <= 1e-2).
# usage: quantize_shared_models.sh KILN MODELS_DIR
set -u
KILN=$1
DIR=$2
if [ ! -d "$DIR" ]; then
    echo "skipped: $DIR is absent"
    exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
for m in "$DIR"/*/; do
    name=$(basename "$m")
    [ -f "$m/model.onnx" ] || continue
    if ! "$KILN" calibrate "$m/model.onnx" --data "$m" -o "$TMP/$name.json" -q >/dev/null; then
        echo "FAIL: $name: calibrate"
        fail=1
        continue
    fi
    if out=$("$KILN" compile "$m/model.onnx" --quantize int8 --calib "$TMP/$name.json" --eval "$m" \
        --max-nmse 1e-2 -o "$TMP/$name.plan" 2>&1); then
        echo "ok: $name: $(grep -A100 '^graph output' <<<"$out" | sed -n 2p)"
    else
        echo "FAIL: $name"
        sed 's/^/    /' <<<"$out" | tail -5
        fail=1
    fi
done
exit $fail
