#!/usr/bin/env bash
# Undefined behaviour: the C++ tests (ember_tests) and the emulated CUDA kernels
# (ember_cuda_emu_tests) built with -fsanitize=undefined and run; the first report fails the
# stage. Not checked: alignment (kernels pun registers and vectors through pointers, as CUDA
# and the SIMD code allow) and null (UBSan misreads thread_local access from the emulator's
# ucontext fibers). It found int64 Add / Sub / Mul overflowing (signed overflow is UB in C++).
# Usage: bash .ci/ubsan.sh. Stage of .ci/run.
# Env: EMBER_UBSAN_BUILD_DIR (default build/ubsan); EMBER_BUILD_LOCK, a file to flock around the
# build (shared dev machines).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${EMBER_UBSAN_BUILD_DIR:-build/ubsan}

stage() { echo; echo "=== ubsan: $1 ($(date -u +%H:%M:%S))"; }

stage "configure and build ember_tests, ember_cuda_emu_tests"
start=$SECONDS
timeout 300 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEMBER_BUILD_PYTHON=OFF -DEMBER_BUILD_TESTS=ON -DEMBER_CUDA=OFF \
  "-DCMAKE_CXX_FLAGS=-fsanitize=undefined -fno-sanitize-recover=undefined -fno-sanitize=alignment,null"
lock=()
if [ -n "${EMBER_BUILD_LOCK:-}" ]; then lock=(flock "$EMBER_BUILD_LOCK"); fi
targets=(ember_tests)
if grep -q "ember_cuda_emu_tests" "$build/build.ninja"; then targets+=(ember_cuda_emu_tests); fi
timeout 1500 "${lock[@]}" cmake --build "$build" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  --target "${targets[@]}"
echo "build: $((SECONDS - start)) s"

stage "run"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
timeout 900 "$build/ember_tests"
if [ -x "$build/cuda/emu/ember_cuda_emu_tests" ]; then timeout 600 "$build/cuda/emu/ember_cuda_emu_tests"; fi
