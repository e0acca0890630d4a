#!/usr/bin/env bash
# The quantized-GEMM GPU check for the H200 device machine, under 8 minutes: builds _core and
# _cuda with build.sh as check.sh does (same build dir, so either script reuses the other's
# build; SKIP_BUILD=1 takes the modules already in python/ember), runs tests/cuda/test_cuda_q8.py
# and test_cuda_q4.py (the quantized kernels against the CPU), then
# bench_quant_cuda.py (Llama-3-8B shapes, ember int8 / int4 vs torch fp16 and torch._int_mm).
# Logs, bench_quant.json and the table go to $OUT when set, else /tmp/ember-gpu-quant.
#   bash benchmarks/gpu/check_quant.sh [--dry-run]   env: PYTHON, EMBER_GPU_BUILD_DIR (build/h200),
#                                                    JOBS (16), BENCH_ARGS (extra bench flags),
#                                                    SKIP_TESTS=1 (check.sh ran them), LIMIT_*
# --dry-run: no build, no GPU: the tests collect (and skip) and the bench runs tiny on the CPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
BUILD=${EMBER_GPU_BUILD_DIR:-build/h200}
JOBS=${JOBS:-16}
OUTDIR=${OUT:-/tmp/ember-gpu-quant}
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUTDIR/check_quant.log") 2>&1
T0=$SECONDS
LIMIT_BUILD=${LIMIT_BUILD:-200} LIMIT_TESTS=${LIMIT_TESTS:-60} LIMIT_BENCH=${LIMIT_BENCH:-150}

summary=()
record() {  # name rc seconds note
  local status=ok
  if [ "$2" -eq 124 ] || [ "$2" -eq 137 ]; then status="TIMEOUT"; elif [ "$2" -ne 0 ]; then status="FAILED rc=$2"; fi
  summary+=("$(printf '%-10s %-14s %5ss  %s' "$1" "$status" "$3" "$4")")
}
stage() { echo; echo "=== $1 ($(date -u +%H:%M:%S), +$((SECONDS - T0)) s)"; }

built=0
if [ $DRY -eq 0 ]; then
  stage "machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    stage "build _core and _cuda, then smoke.py (benchmarks/gpu/build.sh, as check.sh)"
    start=$SECONDS
    PYTHON="$PY" EMBER_GPU_BUILD_DIR="$BUILD" JOBS=$JOBS LIMIT_BUILD=$LIMIT_BUILD \
      bash benchmarks/gpu/build.sh "$OUTDIR/build.log"
    built=$?
    record build $built $((SECONDS - start)) "with smoke.py; log: build.log"
  fi
fi

if [ $built -eq 0 ] && [ "${SKIP_TESTS:-0}" != 1 ]; then
  stage "tests/cuda/test_cuda_q8.py, test_cuda_q4.py (limit ${LIMIT_TESTS}s)"
  start=$SECONDS
  PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 $LIMIT_TESTS "$PY" -m pytest tests/cuda/test_cuda_q8.py tests/cuda/test_cuda_q4.py -q -p no:cacheprovider \
    -o faulthandler_timeout=$((LIMIT_TESTS - 10)) -rfEs 2>&1 | tee "$OUTDIR/pytest_q8.log"
  rc=$?
  record tests $rc $((SECONDS - start)) "$(grep -E "(passed|failed|error|skipped)( |,|$)" "$OUTDIR/pytest_q8.log" | tail -n 1)"
fi

if [ $built -eq 0 ]; then
  stage "bench_quant_cuda.py (limit ${LIMIT_BENCH}s)"
  start=$SECONDS
  dry=(); [ $DRY -eq 1 ] && dry=(--dry-run)
  PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 $LIMIT_BENCH "$PY" benchmarks/gpu/bench_quant_cuda.py "${dry[@]}" \
    --time-limit $((LIMIT_BENCH - 30)) --json "$OUTDIR/bench_quant.json" \
    --table "$OUTDIR/bench_quant_table.txt" ${BENCH_ARGS:-} 2>&1 | grep --line-buffered -v "^WARNING:root"
  rc=${PIPESTATUS[0]}
  record bench $rc $((SECONDS - start)) "json: bench_quant.json"
fi

stage "summary"
{
  echo "ember quant GPU check$([ $DRY -eq 1 ] && echo ' (DRY RUN)'), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $((SECONDS - T0)) s in all"
  printf '%s\n' "${summary[@]}"
  if [ -f "$OUTDIR/bench_quant_table.txt" ]; then echo; cat "$OUTDIR/bench_quant_table.txt"; fi
} | tee "$OUTDIR/summary.txt"
