#!/usr/bin/env bash
# kiln compile --quantize with a calibration table, as a user meets it:
# GPTQ / AWQ / W8A8 from `kiln calibrate`'s table, the accuracy report
# (--eval, --eval-text, --quant-report) and the gates (exit code 3, no plan
# written); kiln calibrate --text (docs/quantization.md).
# usage: cli_quantize.sh KILN SOURCE_DIR
set -u
KILN=$1
SRC=$2
. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" # $TMP, pass/fail, expect, ok, bad

MLP=$SRC/tests/data/quant/mlp
LL=$SRC/tests/models/llama_gqa_tiny
TXT=$SRC/tests/data/text
"$KILN" calibrate "$MLP/model.onnx" --data "$MLP/calib" -o "$TMP/mlp.json" -q >/dev/null
"$KILN" calibrate "$LL/model.onnx" --data "$LL" -o "$TMP/ll.json" -q >/dev/null

# W8A8: QuantizeLinear + MatMulIntegerToFloat, per-layer and end-to-end report
expect 0 'quantize: 2 MatMul/Gemm weights to int8 W8A8' "$KILN" compile "$MLP/model.onnx" --quantize int8 \
    --calib "$TMP/mlp.json" -o "$TMP/m8.plan"
expect 0 'MatMulIntegerToFloat' "$KILN" inspect "$TMP/m8.plan"
expect 0 'QuantizeLinear' "$KILN" inspect "$TMP/m8.plan"
expect 0 '^h +MatMulIntegerToFloat +[0-9.e+-]+ +[0-9.]+$' "$KILN" compile "$MLP/model.onnx" --quantize int8 \
    --calib "$TMP/mlp.json" --eval "$MLP/calib" -o "$TMP/m8.plan" --quant-report "$TMP/m8.json"
expect 0 '"format": "kiln-quant-report"' cat "$TMP/m8.json"
expect 0 '"samples": 8' cat "$TMP/m8.json"
expect 0 '"passed": true' cat "$TMP/m8.json"
# --keep-fp keeps a layer float
expect 0 'quantize: 1 MatMul/Gemm weights to int8 W8A8' "$KILN" compile "$MLP/model.onnx" --quantize int8 \
    --calib "$TMP/mlp.json" --keep-fp fc2 -o "$TMP/k.plan"

# W8A8 with per-token dynamic activation scales: no table needed; the report names the layers
expect 0 'quantize: 15 MatMul/Gemm weights to int8 W8A8 \(per-channel weights, per-token dynamic activations\)' \
    "$KILN" compile "$LL/model.onnx" --quantize int8 --act-scale dynamic -o "$TMP/dyn.plan"
expect 0 'ReduceMax' "$KILN" inspect "$TMP/dyn.plan"
expect 0 'q_proj/MatMul_output_0 +MatMulIntegerToFloat' "$KILN" compile "$LL/model.onnx" --quantize int8 \
    --act-scale dynamic --eval "$LL" --max-nmse 0.01 -o "$TMP/dyn.plan"
expect 0 'int8 --group-size 128 --act-scale dynamic' "$KILN" inspect "$TMP/dyn.plan"
# ... with SmoothQuant: q/k/v, gate/up and lm_head share their norm's output, folded there; o_proj and down_proj
# get a Mul
expect 0 'weights to int8 W8A8 \(per-channel weights, per-token dynamic activations, SmoothQuant\): .*; 4 inputs scaled; 11 smoothed into a norm' \
    "$KILN" compile "$LL/model.onnx" --quantize int8 --act-scale dynamic --smooth 0.5 --calib "$TMP/ll.json" \
    -o "$TMP/sq.plan"
expect 0 'wrote' "$KILN" compile "$LL/model.onnx" --quantize int8 --smooth 0.8 --calib "$TMP/ll.json" --eval "$LL" \
    --max-nmse 0.01 -o "$TMP/sqs.plan"
# the CUDA target compiles the dynamic chain (where NVRTC is: no GPU needed)
if "$KILN" compile "$MLP/model.onnx" --target cuda -o "$TMP/cu.plan" >/dev/null 2>&1; then
    expect 0 'wrote .*target cuda' "$KILN" compile "$MLP/model.onnx" --quantize int8 --act-scale dynamic \
        --smooth 0.5 --calib "$TMP/mlp.json" --target cuda -o "$TMP/sqc.plan"
fi

# gates: a loose bound passes and writes the plan, a tight one exits 3 and writes no plan
expect 0 'wrote .*g.plan' "$KILN" compile "$LL/model.onnx" --quantize int4 --group-size 32 --eval "$LL" \
    --max-nmse 0.5 -o "$TMP/g.plan"
expect 3 "quality gate failed: output 'logits': NMSE [0-9.e-]+ > --max-nmse 1e-09" "$KILN" compile "$LL/model.onnx" \
    --quantize int4 --group-size 32 --eval "$LL" --max-nmse 1e-9 -o "$TMP/g3.plan" --quant-report "$TMP/g3.json"
expect 0 '' test ! -e "$TMP/g3.plan"
expect 0 '"passed": false' cat "$TMP/g3.json"

# GPTQ and AWQ from the table: both beat RTN on the calibration data
expect 0 'note: GPTQ: 15 layers; summed layer output error on the calibration data' "$KILN" compile "$LL/model.onnx" \
    --quantize int4 --group-size 32 --method gptq --calib "$TMP/ll.json" -o "$TMP/gptq.plan"
expect 0 'note: GPTQ, act-order: 15 layers' "$KILN" compile "$LL/model.onnx" --quantize int4 --group-size 32 \
    --method gptq --act-order --damp 0.05 --calib "$TMP/ll.json" -o "$TMP/gptqa.plan"
expect 0 'quantize: 15 MatMul/Gemm weights to 4-bit, group 32 \(AWQ\): .*; 15 inputs scaled' "$KILN" compile \
    "$LL/model.onnx" --quantize int4 --group-size 32 --method awq --calib "$TMP/ll.json" -o "$TMP/awq.plan"
expect 0 'input_scale' "$KILN" compile "$LL/model.onnx" --quantize int4 --group-size 32 --method awq \
    --calib "$TMP/ll.json" -o "$TMP/awq.plan" --dump-after=quantize --disable-pass kv-cache
expect 0 'logits' "$KILN" run "$TMP/awq.plan" --compare-to "$LL/test_data_set_0" --atol 5 --rtol 1
# the plans keep how they were built
expect 0 '--method gptq --act-order' "$KILN" inspect "$TMP/gptqa.plan"

# perplexity over a text (a byte-level tokenizer: ids < 256 fit the tiny vocabulary)
expect 0 'perplexity over 510 tokens \(2 windows\): float [0-9.]+, quantized [0-9.]+ \([+-][0-9.]+ %\)' \
    "$KILN" compile "$LL/model.onnx" --quantize int4 --group-size 32 --eval-text "$TXT/apache-2.0.txt" \
    --tokenizer "$TXT/byte_tokenizer.json" --eval-window 256 --eval-max 2 -o "$TMP/p.plan" --quant-report "$TMP/p.json"
expect 0 '"windows": 2' cat "$TMP/p.json"
expect 0 'wrote' "$KILN" compile "$LL/model.onnx" --quantize int4 --group-size 32 --eval-text "$TXT/apache-2.0.txt" \
    --tokenizer "$TXT/byte_tokenizer.json" --eval-window 64 --eval-max 1 --max-ppl-increase 1000 -o "$TMP/p.plan"
expect 3 'perplexity [0-9.]+ -> [0-9.]+: [+-][0-9.]+ % > --max-ppl-increase 0 %' "$KILN" compile "$LL/model.onnx" \
    --quantize int4 --group-size 32 --method awq --calib "$TMP/ll.json" --eval-text "$TXT/apache-2.0.txt" \
    --tokenizer "$TXT/byte_tokenizer.json" --eval-window 64 --eval-max 1 --max-ppl-increase 0 -o "$TMP/p0.plan"
expect 0 '' test ! -e "$TMP/p0.plan"

# kiln calibrate --text: windows of the text as samples
expect 0 'wrote .*\(minmax, 3 samples, 164 float tensors, 15 linear layers\)' "$KILN" calibrate "$LL/model.onnx" \
    --text "$TXT/gpl-3.0.txt" --tokenizer "$TXT/byte_tokenizer.json" --window 32 --max-samples 3 --method minmax \
    -o "$TMP/t.json" -q
expect 0 '"rows": 96' cat "$TMP/t.json"
expect 1 'no tokenizer for the text: .*/tests/models/llama_gqa_tiny/tokenizer.json does not exist' "$KILN" calibrate \
    "$LL/model.onnx" --text "$TXT/gpl-3.0.txt" -o "$TMP/t2.json"
expect 1 "the model's input 'input:0' is not input_ids" "$KILN" calibrate "$MLP/model.onnx" --text "$TXT/gpl-3.0.txt" \
    --tokenizer "$TXT/byte_tokenizer.json" -o "$TMP/t2.json"
expect 1 '--data and --text together' "$KILN" calibrate "$LL/model.onnx" --text "$TXT/gpl-3.0.txt" --data "$LL" -o "$TMP/t2.json"
expect 1 'index 761 out of range for axis size 512' "$KILN" compile "$LL/model.onnx" --quantize int4 \
    --eval-text "$TXT/apache-2.0.txt" --tokenizer "$SRC/tests/tokenizers/gpt2/tokenizer.json" --eval-max 1 -o "$TMP/v.plan"

# usage errors
expect 1 '--method gptq needs a calibration table' "$KILN" compile "$LL/model.onnx" --quantize int4 --method gptq -o "$TMP/x.plan"
expect 1 '--method awq needs a calibration table' "$KILN" compile "$LL/model.onnx" --quantize int4 --method awq -o "$TMP/x.plan"
expect 1 '--quantize int8 with static activation scales needs a calibration table .* or use --act-scale dynamic' \
    "$KILN" compile "$LL/model.onnx" --quantize int8 -o "$TMP/x.plan"
expect 1 "--act-scale must be static or dynamic, got 'token'" "$KILN" compile "$LL/model.onnx" --quantize int8 \
    --act-scale token -o "$TMP/x.plan"
expect 1 "--smooth must be a number in \(0, 1\] \(SmoothQuant's alpha\), got '1.5'" "$KILN" compile "$LL/model.onnx" \
    --quantize int8 --act-scale dynamic --smooth 1.5 --calib "$TMP/ll.json" -o "$TMP/x.plan"
expect 1 "--smooth must be a number in \(0, 1\]" "$KILN" compile "$LL/model.onnx" --quantize int8 --smooth 0 \
    --calib "$TMP/ll.json" -o "$TMP/x.plan"
expect 1 '--smooth needs a calibration table with the per-channel max' "$KILN" compile "$LL/model.onnx" \
    --quantize int8 --act-scale dynamic --smooth 0.5 -o "$TMP/x.plan"
expect 1 '--act-scale and --smooth are options of --quantize int8' "$KILN" compile "$LL/model.onnx" --quantize int4 \
    --act-scale dynamic -o "$TMP/x.plan"
mkdir -p "$TMP/old" && cp "$TMP/ll.xtx.bin" "$TMP/old/" && sed '/"max_abs":/d' "$TMP/ll.json" > "$TMP/old/ll.json"
expect 0 'wrote' "$KILN" compile "$LL/model.onnx" --quantize int8 --calib "$TMP/old/ll.json" -o "$TMP/old.plan"
expect 1 'no per-channel max \|x\| \(written by an older kiln calibrate\): calibrate again' "$KILN" compile \
    "$LL/model.onnx" --quantize int8 --act-scale dynamic --smooth 0.5 --calib "$TMP/old/ll.json" -o "$TMP/x.plan"
expect 1 "--method must be rtn, gptq or awq, got 'obq'" "$KILN" compile "$LL/model.onnx" --quantize int4 --method obq
expect 1 '--act-order and --damp are options of --method gptq' "$KILN" compile "$LL/model.onnx" --quantize int4 --act-order
expect 1 '--max-ppl-increase needs --eval-text' "$KILN" compile "$LL/model.onnx" --quantize int4 --eval "$LL" --max-ppl-increase 3
expect 1 '--quant-report, --max-nmse and --max-ppl-increase need --eval' "$KILN" compile "$LL/model.onnx" --quantize int4 --max-nmse 1
expect 1 'give --quantize' "$KILN" compile "$LL/model.onnx" --eval "$LL"
expect 1 "--max-nmse must be a number >= 0, got 'x'" "$KILN" compile "$LL/model.onnx" --quantize int4 --eval "$LL" --max-nmse x
# a table of another model: the error names the layer
expect 1 "--method gptq: layer '.*q_proj/MatMul' \(weight \[128, 128\]\) is not in the calibration table" "$KILN" compile \
    "$LL/model.onnx" --quantize int4 --method gptq --calib "$TMP/mlp.json" -o "$TMP/x.plan"
expect 1 "--quantize int8: layer 'fc1': the model's weight is \[K=16, N=32\], the calibration table .* records" \
    bash -c "sed 's/\"n\": 32,/\"n\": 31,/' '$TMP/mlp.json' > '$TMP/bad.json' && '$KILN' compile '$MLP/model.onnx' --quantize int8 --calib '$TMP/bad.json' -o '$TMP/x.plan'"
expect 0 '' test ! -e "$TMP/x.plan"

echo "cli_quantize: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
