#!/usr/bin/env bash
# Builds kiln if needed, then runs every test with CTest. Exits with ctest's
# status, so the last lines printed are ctest's summary.
#
# usage: scripts/test.sh [BUILD_DIR] [extra ctest args...]
#   BUILD_DIR  default "build"; a relative path is taken from the repository root
#   e.g.       scripts/test.sh build -R test_ir
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build_dir=build
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    build_dir=$1
    shift
fi

# Incremental: ninja rebuilds only what changed (nothing, usually).
bash "$root/scripts/build.sh" "$build_dir"

exec ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)" "$@"
