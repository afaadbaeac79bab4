#!/usr/bin/env bash
# Output files never follow a planted symlink out of their folder: `kiln
# compile -o` and `kiln run --output-dir` write a temporary file next to
# the output and rename it over whatever is there (as does `kiln calibrate
# -o` for its table and side file), so a symlink at the
# output path is replaced, and the file it pointed to is left untouched.
# usage: cli_hardening.sh KILN SOURCE_DIR
set -u
KILN=$1
SRC=$2
MODEL=$SRC/samples/hello_deepa/model.onnx
. "$(dirname "${BASH_SOURCE[0]}")/cli_lib.sh" # $TMP, pass/fail, expect, ok, bad
# check_replaced LINK TARGET CONTENT: LINK is now a regular file, and
# TARGET outside still holds CONTENT (or still does not exist).
check_replaced() {
    local link=$1 target=$2 content=$3
    if [ -L "$link" ] || [ ! -f "$link" ]; then bad "$link is not a regular file after the write"; else ok; fi
    if [ -z "$content" ]; then
        if [ -e "$target" ]; then bad "$target was created through the symlink $link"; else ok; fi
    elif [ "$(cat "$target" 2>/dev/null)" != "$content" ]; then
        bad "$target was changed through the symlink $link"
    else
        ok
    fi
}

mkdir -p "$TMP/out" "$TMP/outside" "$TMP/res"
echo precious >"$TMP/outside/plan"
echo precious >"$TMP/outside/pb"
echo precious >"$TMP/outside/npy"

# compile -o onto a symlink to an existing file outside, then onto a dangling one
ln -s "$TMP/outside/plan" "$TMP/out/model.plan"
if "$KILN" compile "$MODEL" -o "$TMP/out/model.plan" >/dev/null 2>"$TMP/err"; then ok; else bad "compile: $(cat "$TMP/err")"; fi
check_replaced "$TMP/out/model.plan" "$TMP/outside/plan" precious
ln -s "$TMP/outside/none.plan" "$TMP/out/dangling.plan"
if "$KILN" compile "$MODEL" -o "$TMP/out/dangling.plan" >/dev/null 2>"$TMP/err"; then ok; else bad "compile: $(cat "$TMP/err")"; fi
check_replaced "$TMP/out/dangling.plan" "$TMP/outside/none.plan" ""
cmp -s "$TMP/out/model.plan" "$TMP/out/dangling.plan" && ok || bad "the two plans differ"

# run --output-dir: the model's one output is named '39'
ln -s "$TMP/outside/pb" "$TMP/res/39.pb"
ln -s "$TMP/outside/npy" "$TMP/res/39.npy"
if "$KILN" run "$TMP/out/model.plan" --device cpu --output-dir "$TMP/res" >/dev/null 2>"$TMP/err"; then ok; else bad "run: $(cat "$TMP/err")"; fi
check_replaced "$TMP/res/39.pb" "$TMP/outside/pb" precious
if "$KILN" run "$TMP/out/model.plan" --device cpu --output-dir "$TMP/res" --output-format npy >/dev/null 2>"$TMP/err"; then
    ok
else
    bad "run npy: $(cat "$TMP/err")"
fi
check_replaced "$TMP/res/39.npy" "$TMP/outside/npy" precious
# calibrate -o: the table and its XᵀX side file, both planted symlinks
MLP=$SRC/tests/data/quant/mlp
echo precious >"$TMP/outside/json"
echo precious >"$TMP/outside/xtx"
ln -s "$TMP/outside/json" "$TMP/out/c.json"
ln -s "$TMP/outside/xtx" "$TMP/out/c.xtx.bin"
if "$KILN" calibrate "$MLP/model.onnx" --data "$MLP/calib" -o "$TMP/out/c.json" -q >/dev/null 2>"$TMP/err"; then
    ok
else
    bad "calibrate: $(cat "$TMP/err")"
fi
check_replaced "$TMP/out/c.json" "$TMP/outside/json" precious
check_replaced "$TMP/out/c.xtx.bin" "$TMP/outside/xtx" precious
# nothing else was written outside, and no temporary file was left behind
if [ "$(ls "$TMP/outside" | tr '\n' ' ')" = "json npy pb plan xtx " ]; then ok; else bad "outside holds: $(ls "$TMP/outside")"; fi
if ls -A "$TMP/out" "$TMP/res" | grep -q '\.tmp'; then bad "temporary files left: $(ls "$TMP/out" "$TMP/res")"; else ok; fi

echo "cli_hardening: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
