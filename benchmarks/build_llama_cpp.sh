#!/usr/bin/env bash
# Builds llama.cpp's llama-bench (the rival for benchmarks/bench_llm.py) from the source that
# ships inside the llama-cpp-python sdist on PyPI. Never run in CI. Usage:
#   bash benchmarks/build_llama_cpp.sh [DIR]     (default DIR: ~/.cache/ember/llama.cpp)
# Prints the path of llama-bench on its last line.
set -euo pipefail
dir=${1:-${EMBER_CACHE:-$HOME/.cache/ember}/llama.cpp}
mkdir -p "$dir"
cd "$dir"
if [ ! -d src ]; then
  python3 -m pip download --no-binary llama-cpp-python --no-deps -q llama-cpp-python -d sdist
  tar -xzf sdist/llama_cpp_python-*.tar.gz
  mv llama_cpp_python-*/vendor/llama.cpp src
fi
# Native build (this CPU's ISA, as llama.cpp's users build it), CPU only, benches only.
cmake -S src -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_TOOLS=ON >/dev/null
cmake --build build -j"${CMAKE_BUILD_PARALLEL_LEVEL:-2}" --target llama-bench >/dev/null
echo "$dir/build/bin/llama-bench"
