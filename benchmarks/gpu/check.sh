#!/usr/bin/env bash
# One GPU check for the H200 device machine (DESIGN.md, "GPU work without a GPU at hand"):
# builds ember._core and ember._cuda (Release, sm_90, ninja -j16, the developer layout that drops
# both modules into python/ember), prints the GPU, runs tests/cuda, then bench_cuda.py, and ends
# with one table. Every stage is time-boxed with `timeout`; the whole run stays under 8 minutes.
# Logs, bench_cuda.json and the table go to $OUT when it is set (the device tool brings $OUT
# back), else to /tmp/ember-gpu-check.
#   bash benchmarks/gpu/check.sh            env: PYTHON (python3), EMBER_GPU_BUILD_DIR (build/h200),
#                                           JOBS (16), SKIP_BENCH=1, BENCH_ARGS (extra bench_cuda.py flags)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
BUILD=${EMBER_GPU_BUILD_DIR:-build/h200}
JOBS=${JOBS:-16}
OUTDIR=${OUT:-/tmp/ember-gpu-check}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUTDIR/check.log") 2>&1
T0=$SECONDS

# Stage limits in seconds; they add up to 470 with the small ones.
LIMIT_CONFIGURE=60 LIMIT_BUILD=200 LIMIT_TESTS=100 LIMIT_BENCH=120

summary=()
record() {  # name rc seconds note
  local status=ok
  if [ "$2" -eq 124 ] || [ "$2" -eq 137 ]; then status="TIMEOUT"; elif [ "$2" -ne 0 ]; then status="FAILED rc=$2"; fi
  summary+=("$(printf '%-10s %-14s %5ss  %s' "$1" "$status" "$3" "$4")")
}
stage() { echo; echo "=== $1 ($(date -u +%H:%M:%S), +$((SECONDS - T0)) s)"; }

stage "machine"
nvidia-smi || true
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu \
  --format=csv || true
timeout 60 "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, \
'| cuda', torch.version.cuda, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU for torch')"
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
"$NVCC" --version | tail -n 2
cmake --version | head -n 1
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) changed paths"

stage "configure ($BUILD, Release, EMBER_CUDA=ON, sm_90)"
start=$SECONDS
timeout -k 5 $LIMIT_CONFIGURE cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DEMBER_CUDA=ON -DEMBER_CUDA_ARCHS=90 -DEMBER_BUILD_TESTS=OFF \
  -DPython_EXECUTABLE="$(command -v "$PY")" -DCMAKE_CUDA_COMPILER="$NVCC" > "$OUTDIR/build.log" 2>&1
rc=$?
record configure $rc $((SECONDS - start)) "$BUILD"
if [ $rc -eq 0 ]; then
  stage "build _core and _cuda (-j$JOBS)"
  start=$SECONDS
  timeout -k 5 $LIMIT_BUILD cmake --build "$BUILD" -j "$JOBS" --target _core _cuda >> "$OUTDIR/build.log" 2>&1
  rc=$?
  record build $rc $((SECONDS - start)) "log: build.log"
fi
grep -E "warning|error" "$OUTDIR/build.log" | grep -v "^--" | head -n 20
tail -n 5 "$OUTDIR/build.log"
built=$rc
ls -l python/ember/_core*.so python/ember/_cuda*.so 2>/dev/null

pytest_line="not run (build failed)"
if [ $built -eq 0 ]; then
  stage "ember sees"
  PYTHONPATH=python timeout 60 "$PY" -c "
import ember, ember._cuda as c
n = c.device_count()
print('devices', n, '| reason', repr(c.unavailable_reason()))
for i in range(n): print(i, c.device_name(i), 'sm_%d%d' % c.compute_capability(i))
print('ember.cuda.is_available()', ember.cuda.is_available(), '->', ember.cuda.device('cuda'))"

  stage "tests/cuda (limit ${LIMIT_TESTS}s)"
  start=$SECONDS
  PYTHONPATH=python timeout -k 10 $LIMIT_TESTS "$PY" -m pytest tests/cuda -q -x -p no:cacheprovider \
    -o faulthandler_timeout=$((LIMIT_TESTS - 10)) -rs 2>&1 | tee "$OUTDIR/pytest.log"
  rc=$?
  pytest_line=$(grep -E "(passed|failed|error|skipped|no tests ran)( |,|$)" "$OUTDIR/pytest.log" | tail -n 1)
  record tests $rc $((SECONDS - start)) "$pytest_line"

  if [ "${SKIP_BENCH:-0}" != 1 ]; then
    stage "bench_cuda.py (limit ${LIMIT_BENCH}s)"
    start=$SECONDS
    # The bench spreads its own --time-limit over its sections; `timeout` is the backstop.
    PYTHONPATH=python timeout -k 10 $LIMIT_BENCH "$PY" benchmarks/gpu/bench_cuda.py \
      --time-limit $((LIMIT_BENCH - 15)) --json "$OUTDIR/bench_cuda.json" \
      --table "$OUTDIR/bench_table.txt" ${BENCH_ARGS:-}
    rc=$?
    record bench $rc $((SECONDS - start)) "json: bench_cuda.json"
  fi
fi

stage "summary"
{
  echo "ember GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $((SECONDS - T0)) s in all"
  printf '%-10s %-14s %6s  %s\n' stage status time note
  printf '%s\n' "${summary[@]}"
  if [ -f "$OUTDIR/bench_table.txt" ]; then echo; cat "$OUTDIR/bench_table.txt"; fi
} | tee "$OUTDIR/summary.txt"
