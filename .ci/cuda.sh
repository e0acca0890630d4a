#!/usr/bin/env bash
# CUDA without a GPU: compile ember._cuda (EMBER_CUDA=ON, PTX only for compute_80, so every
# kernel goes through nvcc and ptxas-free codegen fast), run its host-logic tests
# (ember_cuda_host_tests: plans, the allocator, the cuBLASLt and cuDNN loaders, and the real
# libraries from their pip wheels against ember's descriptors) and the Python tests of
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
# EMBER_STATIC_LIBSTDCXX as the GPU check builds (benchmarks/gpu/build.sh): each module with its
# own hidden libstdc++, so the tests below also cover errors thrown in one module and caught in
# the other.
timeout 300 cmake -S . -B "$build" -G Ninja -DEMBER_CUDA=ON -DEMBER_CUDA_ARCHS=80-virtual \
  -DEMBER_BUILD_TESTS=ON -DEMBER_STATIC_LIBSTDCXX=ON -DPython_EXECUTABLE="$(command -v python)" \
  -DCMAKE_CUDA_COMPILER="$nvcc"
lock=()
if [ -n "${EMBER_BUILD_LOCK:-}" ]; then lock=(flock "$EMBER_BUILD_LOCK"); fi
timeout 1500 "${lock[@]}" cmake --build "$build" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  --target _core _cuda ember_cuda_host_tests
echo "build: $((SECONDS - start)) s"

stage "modules keep their libstdc++ to themselves"
for so in python/ember/_core*.so python/ember/_cuda*.so; do
  # No std::locale symbol may be exported: another libstdc++ in the process could bind to it.
  n=$(nm -D --defined-only "$so" | grep -c "_ZNSt6locale" || true)
  echo "$(basename "$so"): $n exported std::locale symbols; needs $(readelf -d "$so" | grep -o 'NEEDED.*' | grep -o '\[.*\]' | tr -d '[]' | tr '\n' ' ')"
  if [ "$n" -ne 0 ]; then echo "FAIL: $so exports std::locale"; exit 1; fi
done

stage "host-logic tests"
timeout 300 "$build/cuda/ember_cuda_host_tests"

stage "the real cuBLASLt 13 and cuDNN 9 accept ember's descriptors (no GPU needed)"
# The libraries come from their pip wheels (no deps), partly unpacked; where a download fails
# the two cases skip themselves, as on any machine without the libraries.
libs=$build/nvidia-libs
lt="" dnn=""
mkdir -p "$libs"
if timeout 300 python -m pip download -q --no-deps --only-binary=:all: -d "$libs" \
     "nvidia-cublas>=13,<14" "nvidia-cudnn-cu13>=9,<10"; then
  (cd "$libs" && python - <<'PY'
import glob, zipfile
wanted = ("libcublasLt.so.13", "libcudnn.so.9", "libcudnn_ops.so.9", "libcudnn_graph.so.9",
          "libcudnn_cnn.so.9")
for whl in glob.glob("nvidia_cu*.whl"):
    z = zipfile.ZipFile(whl)
    for n in z.namelist():
        if n.rsplit("/", 1)[-1] in wanted:
            z.extract(n, "lib")
PY
  ) && rm -f "$libs"/*.whl
  lt=$(ls "$libs"/lib/nvidia/*/lib/libcublasLt.so.13 2>/dev/null | head -n 1 || true)
  dnn=$(ls "$libs"/lib/nvidia/cudnn/lib/libcudnn.so.9 2>/dev/null | head -n 1 || true)
else
  echo "download failed: the library cases skip"
fi
echo "cuBLASLt: ${lt:-none}; cuDNN: ${dnn:-none}"
# Only for these cases: the Python tests below check the loaders' own defaults and errors.
EMBER_CUBLASLT="$lt" EMBER_CUDNN="$dnn" timeout 300 "$build/cuda/ember_cuda_host_tests" \
  -tc="cublaslt: a real library*,cudnn*"

stage "tests/cuda and device placement against this build"
# The build dropped _core and _cuda into python/ember: this tree's ember, with CUDA compiled.
PYTHONPATH=python timeout 900 python -m pytest -q -p no:cacheprovider tests/cuda \
  tests/runtime/test_device_placement.py
