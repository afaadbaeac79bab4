#!/usr/bin/env bash
# Runs one libFuzzer harness (tests/fuzz/fuzz_TARGET.c) for SECONDS.
# usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer options...]
#   TARGET: import | plan | tensor | run (seeds: corpus/import) | tokenizer | tokenize | chat_template
# Builds build-fuzz/ with clang (-DKN_FUZZ=ON) when needed. The seed
# corpus tests/fuzz/corpus/TARGET is read, never written: new inputs go to
# build-fuzz/corpus/TARGET (kept between runs), crashes, leaks and
# timeouts to build-fuzz/crashes/TARGET/. Add each crash, once fixed, to
# tests/fuzz/regressions/TARGET/ so that ctest replays it.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: scripts/fuzz.sh import|plan|tensor|run|tokenizer|tokenize|chat_template SECONDS [libFuzzer options...]" >&2
    exit 1
fi
target=$1
secs=$2
shift 2
case $target in import | plan | tensor | run | tokenizer | tokenize | chat_template) ;; *) echo "fuzz.sh: unknown target '$target'" >&2; exit 1 ;; esac
seeds=$target
[ "$target" = run ] && seeds=import
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bdir=$root/build-fuzz
jobs=${JOBS:-2}
if [ ! -f "$bdir/build.ninja" ]; then
    CC=${CC:-clang} cmake -S "$root" -B "$bdir" -G Ninja -DKN_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$bdir" -j"$jobs" --target "fuzz_$target"
work=$bdir/corpus/$target
crashes=$bdir/crashes/$target
mkdir -p "$work" "$crashes"
# ASan's default allocator_may_return_null=0, -rss_limit_mb and
# -malloc_limit_mb: a hostile size that makes kiln ask for
# more than this is a finding. -timeout: one input may take 10 s at most.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$bdir/fuzz_$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -max_len=65536 -artifact_prefix="$crashes/" -print_final_stats=1 "$@" \
    "$work" "$root/tests/fuzz/corpus/$seeds"
