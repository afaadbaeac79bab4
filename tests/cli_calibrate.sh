#!/usr/bin/env bash
# kiln calibrate as a user meets it: a calibration table from .npy batches,
# backend-test folders and a decoder; deterministic bytes; bad options and
# data exit 1 with a message naming what is wrong (docs/quantization.md).
# usage: cli_calibrate.sh KILN SOURCE_DIR
set -u
KILN=$1
SRC=$2
SAMPLE=$SRC/samples/hello_deepa/model.onnx
. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" # $TMP, pass/fail, expect, ok, bad

# calibrate: a calibration table from .npy batches and from backend-test
# folders; deterministic; bad options and data exit 1 naming what is wrong
MLP=$SRC/tests/data/quant/mlp
expect 0 'calibrate MODEL.onnx' "$KILN" --help
expect 0 '^usage: kiln calibrate' "$KILN" calibrate --help
expect 0 "wrote $TMP/c.json \(entropy, 8 samples, 4 float tensors, 2 linear layers\)" \
    "$KILN" calibrate "$MLP/model.onnx" --data "$MLP/calib" -o "$TMP/c.json" -q
expect 0 '"method": "entropy"' cat "$TMP/c.json"
expect 0 '"name": "c.xtx.bin"' cat "$TMP/c.json"
expect 0 '"weight_layout": "NK"' cat "$TMP/c.json"
expect 0 '' test -s "$TMP/c.xtx.bin"
"$KILN" calibrate "$MLP/model.onnx" --data "$MLP/calib" -o "$TMP/c2.json" -q >/dev/null 2>&1
sed 's/c2\.xtx/c.xtx/' "$TMP/c2.json" >"$TMP/c2s.json"
expect 0 '' cmp "$TMP/c.json" "$TMP/c2s.json"
expect 0 '' cmp "$TMP/c.xtx.bin" "$TMP/c2.xtx.bin"
expect 0 'pass 2/2 .* 8/8 samples' "$KILN" calibrate "$MLP/model.onnx" --data "$MLP/calib" -o "$TMP/c3.json" \
    --method percentile --percentile 99.9
expect 0 '"percentile": 99.9' cat "$TMP/c3.json"
expect 0 'wrote .*minmax, 2 samples, .*3 linear layers' "$KILN" calibrate "$SAMPLE" --data "$SRC/samples/hello_deepa" \
    -o "$TMP/hd.json" --method minmax --max-samples 5
# a decoder: integer inputs and empty past_key_values; q/k/v share one input's statistics
LL=$SRC/tests/models/llama_gqa_tiny
expect 0 'wrote .*\(entropy, 2 samples, 164 float tensors, 15 linear layers\)' "$KILN" calibrate "$LL/model.onnx" --data "$LL" -o "$TMP/ll.json" -q
expect 0 '' test "$(grep -c '"k": 128,' "$TMP/ll.json")" -ge 10
expect 1 'no --data folder \(or --text file\) given' "$KILN" calibrate "$MLP/model.onnx" -o "$TMP/x.json"
expect 1 'no output given' "$KILN" calibrate "$MLP/model.onnx" --data "$MLP/calib"
expect 1 'no model given' "$KILN" calibrate --data "$MLP/calib" -o "$TMP/x.json"
expect 1 "--method must be minmax, percentile or entropy, got 'kl'" "$KILN" calibrate "$MLP/model.onnx" --data "$MLP/calib" -o "$TMP/x.json" --method kl
expect 1 '--bins must be 256 to 1048576' "$KILN" calibrate "$MLP/model.onnx" --data "$MLP/calib" -o "$TMP/x.json" --bins 12
expect 1 '--percentile must be a number' "$KILN" calibrate "$MLP/model.onnx" --data "$MLP/calib" -o "$TMP/x.json" --percentile 101
expect 1 "unknown or incomplete option '--frob'" "$KILN" calibrate "$MLP/model.onnx" --frob
expect 1 "error: calibrate: --data $TMP/none: No such file" "$KILN" calibrate "$MLP/model.onnx" --data "$TMP/none" -o "$TMP/x.json"
expect 1 "test_data_set_0/input_0.pb: input 'input:0' is float32\[1, 16\], the file holds float32\[1, 25, 96\]" \
    "$KILN" calibrate "$MLP/model.onnx" --data "$SRC/samples/hello_deepa" -o "$TMP/x.json"
mkdir -p "$TMP/empty" "$TMP/misnamed"
cp "$MLP/calib/input_0.npy" "$TMP/misnamed/x.npy"
expect 1 "note: the model's inputs are 'input:0'; the folder holds: x.npy" "$KILN" calibrate "$MLP/model.onnx" --data "$TMP/misnamed" -o "$TMP/x.json"
expect 1 "no file for input 'input:0' \(input_0.npy or input_0.pb\)" "$KILN" calibrate "$MLP/model.onnx" --data "$TMP/empty" -o "$TMP/x.json"
expect 1 'not a regular file' "$KILN" calibrate "$MLP/model.onnx" --data "$MLP/calib" -o "$TMP"
expect 0 '' test ! -e "$TMP/x.json"

echo "cli_calibrate: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
