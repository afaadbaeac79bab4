#!/usr/bin/env bash
# Configures (Ninja, RelWithDebInfo unless told otherwise) and builds kiln.
#
# usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
#   BUILD_DIR  default "build"; a relative path is taken from the repository root
#   e.g.       scripts/build.sh build-asan -DKN_SANITIZE=ON
#              scripts/build.sh build-dbg -DCMAKE_BUILD_TYPE=Debug
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build_dir=build
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    build_dir=$1
    shift
fi

args=(-S "$root" -B "$build_dir")
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    # First configure: pick the generator and build type. Later runs keep
    # what the cache holds (cmake refuses to switch generators in place).
    args+=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo)
fi

echo "build: cmake ${args[*]} $*"
cmake "${args[@]}" "$@"
echo "build: cmake --build $build_dir -j $(nproc)"
cmake --build "$build_dir" -j "$(nproc)"
