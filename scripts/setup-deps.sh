#!/usr/bin/env bash
# Installs the Debian 12 packages kiln needs to build and test. Idempotent:
# packages already installed are left alone, and apt is only touched when
# something is missing (so a machine that has everything needs no root).
#
# CUDA is optional and not installed here: when a CUDA toolkit is present,
# CMake's find_package(CUDAToolkit) picks it up and NVRTC is loaded at run
# time for target cuda; without one kiln builds and tests its CPU side (the
# target-cuda tests then report that NVRTC is missing and skip).
set -euo pipefail

packages=(
    cmake
    ninja-build
    gcc
    g++                  # kiln-cuda-emu builds generated CUDA kernels for the host
    pkg-config
    protobuf-c-compiler  # protoc-c, compiles onnx.proto at build time
    libprotobuf-c-dev
    libonnx-dev          # /usr/include/onnx/onnx.proto
    libcmocka-dev        # unit tests
    libjansson-dev       # tokenizer.json parsing (runtime/tokenizer)
    libpcre2-dev         # tokenizer pre-tokenizer regexes (\p{L}, \p{N})
    libutf8proc-dev      # tokenizer NFC/NFKC normalizers
    libonnx-testdata     # ONNX backend node tests (import sweep)
)

# `dpkg -s` also succeeds for a removed package whose config files remain,
# so look at its Status line. (Read into a variable, not piped to grep -q,
# which under pipefail can fail on dpkg's SIGPIPE.)
installed() {
    local info
    info=$(dpkg -s "$1" 2>/dev/null) || return 1
    [[ $'\n'$info$'\n' == *$'\nStatus: install ok installed\n'* ]]
}

missing=()
for p in "${packages[@]}"; do
    if installed "$p"; then
        echo "setup-deps: $p is installed"
    else
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup-deps: all ${#packages[@]} packages are installed; nothing to do"
    exit 0
fi

echo "setup-deps: missing: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        echo "setup-deps: not root; running again with sudo"
        exec sudo -- bash "${BASH_SOURCE[0]}" "$@"
    fi
    echo "setup-deps: error: installing packages needs root, and sudo is not available." >&2
    echo "setup-deps: run this script as root, or install: ${missing[*]}" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-deps: error: apt-get not found; this script is for Debian 12 (bookworm)." >&2
    echo "setup-deps: install these packages by other means: ${missing[*]}" >&2
    exit 1
fi

echo "setup-deps: apt-get update"
DEBIAN_FRONTEND=noninteractive apt-get update
echo "setup-deps: apt-get install ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

for p in "${missing[@]}"; do
    if ! installed "$p"; then
        echo "setup-deps: error: $p is still not installed" >&2
        exit 1
    fi
done
echo "setup-deps: installed ${#missing[@]} package(s): ${missing[*]}"
