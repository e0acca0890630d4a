#!/usr/bin/env bash
# Builds ember._core and ember._cuda for the GPU checks (check.sh, check_quant.sh) and proves
# the pair runs with smoke.py before any test or benchmark does.
#   bash benchmarks/gpu/build.sh LOG     env: PYTHON (python3), EMBER_GPU_BUILD_DIR (build/h200),
#                                         JOBS (16), LIMIT_BUILD (seconds per build, 200)
# First try: the default C++ compiler, libstdc++ linked into each module with its symbols hidden
# (EMBER_STATIC_LIBSTDCXX). On 2026-11-29 the device machine's compiler was /opt/gcc/bin/g++ 13.3
# and modules linked the usual way segfaulted in their first Engine.run, inside std::ostream's
# number formatting (a locale facet of another libstdc++ copy). If the smoke run still fails,
# cuda-gdb prints the C++ backtrace and, where /usr/bin/g++ is another compiler, a second build
# with it (shared libstdc++) is tried. Build type RelWithDebInfo, so backtraces name lines.
# Exit 0: modules in python/ember passed the smoke run.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
BUILD=${EMBER_GPU_BUILD_DIR:-build/h200}
JOBS=${JOBS:-16}
LOG=${1:-/tmp/ember-gpu-build.log}
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
: > "$LOG"

build() {  # build dir, extra CMake arguments...
  local dir=$1 start=$SECONDS
  shift
  echo "-- building in $dir: $*"
  timeout -k 5 60 cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBER_CUDA=ON \
    -DEMBER_CUDA_ARCHS=90 -DEMBER_BUILD_TESTS=OFF -DPython_EXECUTABLE="$(command -v "$PY")" \
    -DCMAKE_CUDA_COMPILER="$NVCC" "$@" >> "$LOG" 2>&1 &&
    timeout -k 5 "${LIMIT_BUILD:-200}" cmake --build "$dir" -j "$JOBS" --target _core _cuda >> "$LOG" 2>&1
  local rc=$?
  grep -E "CMAKE_CXX_COMPILER:|CMAKE_CUDA_HOST_COMPILER:" "$dir/CMakeCache.txt" 2>/dev/null |
    sed 's/^/   /'
  echo "   build rc=$rc in $((SECONDS - start)) s (log: $(basename "$LOG"))"
  grep -E "error:|warning: " "$LOG" | tail -n 10
  for so in python/ember/_core*.so python/ember/_cuda*.so; do
    [ -f "$so" ] || continue
    echo "   $(basename "$so"): $(stat -c %s "$so") bytes, needs $(readelf -d "$so" | grep -o 'NEEDED.*' |
      grep -o '\[.*\]' | tr -d '[]' | tr '\n' ' ')"
  done
  return $rc
}

smoke() {
  PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 5 90 "$PY" benchmarks/gpu/smoke.py
  local rc=$?
  [ $rc -eq 0 ] && return 0
  echo "   smoke rc=$rc"
  if command -v cuda-gdb > /dev/null; then
    echo "-- the smoke run under cuda-gdb"
    PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 5 120 cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt \
      --args "$PY" benchmarks/gpu/smoke.py 2>&1 | grep -vE "^\[(New Thread|Thread .* exited|Detaching)" |
      tail -n 40
  fi
  return $rc
}

echo "-- C++ compiler: $(command -v c++) $(c++ --version 2>/dev/null | head -n 1)"
build "$BUILD" -DEMBER_STATIC_LIBSTDCXX=ON && smoke && exit 0
if [ -x /usr/bin/g++ ] && [ "$(readlink -f /usr/bin/g++)" != "$(readlink -f "$(command -v c++)")" ]; then
  echo "-- second try: /usr/bin/g++ ($(/usr/bin/g++ --version | head -n 1)), shared libstdc++"
  build "$BUILD-sys" -DCMAKE_CXX_COMPILER=/usr/bin/g++ -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++ &&
    smoke && exit 0
fi
exit 1
