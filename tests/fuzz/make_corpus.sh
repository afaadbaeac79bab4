#!/usr/bin/env bash
# Regenerates the seed corpora in tests/fuzz/corpus/ from Debian's ONNX
# backend node tests: small models (import), plans compiled from some of
# them (plan), and their .pb tensors plus .npy copies (tensor). Needs a
# built `kiln` and python3 with numpy (for the .npy files).
# usage: tests/fuzz/make_corpus.sh [KILN] [TESTDATA]
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
kiln=${1:-$src/build/kiln}
data=${2:-/usr/share/libonnx-testdata/data/node}
out=$src/tests/fuzz/corpus
rm -rf "$out"
mkdir -p "$out/import" "$out/plan" "$out/tensor"

# import: every third model of at most 8 KiB (sorted by name, so each op
# family is represented), named after its test
i=0
for d in "$data"/*/; do
    m=$d/model.onnx
    [ -f "$m" ] && [ "$(stat -c %s "$m")" -le 8192 ] || continue
    i=$((i + 1))
    [ $((i % 3)) -eq 0 ] || continue
    cp "$m" "$out/import/$(basename "$d").onnx"
done

# plan: every 12th model that compiles, as long as its plan is <= 16 KiB
i=0
for m in "$out"/import/*.onnx; do
    i=$((i + 1))
    [ $((i % 12)) -eq 0 ] || continue
    p=$out/plan/$(basename "${m%.onnx}").plan
    if "$kiln" compile "$m" -o "$p" >/dev/null 2>&1 && [ "$(stat -c %s "$p")" -le 16384 ]; then :; else rm -f "$p"; fi
done

# tensor: the first input of every 10th model's data set, <= 4 KiB, and a
# .npy copy of each
i=0
for m in "$out"/import/*.onnx; do
    i=$((i + 1))
    [ $((i % 10)) -eq 0 ] || continue
    t=$data/$(basename "${m%.onnx}")/test_data_set_0/input_0.pb
    [ -f "$t" ] && [ "$(stat -c %s "$t")" -le 4096 ] || continue
    cp "$t" "$out/tensor/$(basename "${m%.onnx}").pb"
done
python3 - "$out/tensor" <<'PY'
import sys, numpy as np
d = sys.argv[1]
arrays = {
    'f32_2x3': np.arange(6, dtype='<f4').reshape(2, 3), 'f64_scalar': np.array(1.5, dtype='<f8'),
    'i64_4': np.arange(4, dtype='<i8'), 'u8_2x2x2': np.ones((2, 2, 2), dtype='|u1'),
    'bool_3': np.array([True, False, True]), 'f16_0': np.zeros((0,), dtype='<f2'),
    'i32_1x1': np.array([[7]], dtype='<i4'), 'c64_2': np.array([1 + 2j, 3 - 4j], dtype='<c8'),
}
for k, a in arrays.items():
    np.save(f'{d}/{k}.npy', a)
PY
du -sh "$out"/*
