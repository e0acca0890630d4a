#!/usr/bin/env bash
# CUDA without a GPU: compile ember._cuda (EMBER_CUDA=ON, PTX only for compute_80, so every
# kernel goes through nvcc and ptxas-free codegen fast), run its host-logic tests
# (ember_cuda_host_tests: plans, the allocator, the cuBLASLt loader) and the Python tests of
# tests/cuda against this build (module import, clear errors; kernel tests skip without a
# device). Stage of .ci/run; needs the venv with the test dependencies active.
# Env: EMBER_CUDA_BUILD_DIR (default build/ci-cuda); EMBER_BUILD_LOCK, a file to flock around
# the build.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${EMBER_CUDA_BUILD_DIR:-build/ci-cuda}

stage() { echo; echo "=== cuda: $1 ($(date -u +%H:%M:%S))"; }

stage "toolchain"
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
"$nvcc" --version | tail -n 1
python -c "import nanobind" 2>/dev/null || timeout 300 python -m pip install -q "nanobind>=2.0"

stage "configure and build _core, _cuda, ember_cuda_host_tests"
start=$SECONDS
timeout 300 cmake -S . -B "$build" -G Ninja -DEMBER_CUDA=ON -DEMBER_CUDA_ARCHS=80-virtual \
  -DEMBER_BUILD_TESTS=ON -DPython_EXECUTABLE="$(command -v python)" \
  -DCMAKE_CUDA_COMPILER="$nvcc"
lock=()
if [ -n "${EMBER_BUILD_LOCK:-}" ]; then lock=(flock "$EMBER_BUILD_LOCK"); fi
timeout 1500 "${lock[@]}" cmake --build "$build" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  --target _core _cuda ember_cuda_host_tests
echo "build: $((SECONDS - start)) s"

stage "host-logic tests"
timeout 300 "$build/cuda/ember_cuda_host_tests"

stage "tests/cuda and device placement against this build"
# The build dropped _core and _cuda into python/ember: this tree's ember, with CUDA compiled.
PYTHONPATH=python timeout 900 python -m pytest -q -p no:cacheprovider tests/cuda \
  tests/runtime/test_device_placement.py
