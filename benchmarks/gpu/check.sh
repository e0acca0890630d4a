#!/usr/bin/env bash
# One GPU check for the H200 device machine (DESIGN.md, "GPU work without a GPU at hand"):
# prints the GPU, builds ember._core and ember._cuda with build.sh (RelWithDebInfo, sm_90, ninja
# -j16, the developer layout that drops both modules into python/ember; a smoke run proves them),
# runs tests/cuda (one process per file), then bench_cuda.py and bench_llm_cuda.py (GGUF LLMs
# of random weights on the GPU vs the CPU engine), and ends with their tables. Every
# stage is time-boxed with `timeout`; the whole run stays under 8 minutes.
# Logs, bench_cuda.json and the table go to $OUT when it is set (the device tool brings $OUT
# back), else to /tmp/ember-gpu-check.
#   bash benchmarks/gpu/check.sh            env: PYTHON (python3), EMBER_GPU_BUILD_DIR (build/h200),
#                                           JOBS (16), SKIP_BENCH=1, BENCH_ARGS (extra bench_cuda.py flags)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
BUILD=${EMBER_GPU_BUILD_DIR:-build/h200}
JOBS=${JOBS:-16}
PYTEST_JOBS=${PYTEST_JOBS:-4}
OUTDIR=${OUT:-/tmp/ember-gpu-check}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUTDIR/check.log") 2>&1
T0=$SECONDS

# Stage limits in seconds (environment overrides); under 8 minutes with the small stages.
LIMIT_BUILD=${LIMIT_BUILD:-200} LIMIT_TESTS=${LIMIT_TESTS:-150} LIMIT_BENCH=${LIMIT_BENCH:-120}
LIMIT_LLM=${LIMIT_LLM:-90}

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

stage "build _core and _cuda, then smoke.py (benchmarks/gpu/build.sh)"
start=$SECONDS
PYTHON="$PY" EMBER_GPU_BUILD_DIR="$BUILD" JOBS=$JOBS LIMIT_BUILD=$LIMIT_BUILD \
  bash benchmarks/gpu/build.sh "$OUTDIR/build.log"
built=$?
record build $built $((SECONDS - start)) "with smoke.py; log: build.log"

pytest_line="not run (build or smoke run failed)"
if [ $built -eq 0 ]; then
  stage "ember sees"
  PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout 60 "$PY" -c "
import ember, ember._cuda as c
n = c.device_count()
print('devices', n, '| reason', repr(c.unavailable_reason()))
for i in range(n): print(i, c.device_name(i), 'sm_%d%d' % c.compute_capability(i))
print('ember.cuda.is_available()', ember.cuda.is_available(), '->', ember.cuda.device('cuda'))
print('cuDNN for Conv (ok, error, path, version):', c.load_cudnn(ember.cuda._cudnn_path()))"

  stage "tests/cuda, one process per file, $PYTEST_JOBS at a time (limit ${LIMIT_TESTS}s)"
  # A CUDA error such as an illegal address poisons its process's context: one pytest process per
  # file keeps the other files' results. CUDA_LAUNCH_BLOCKING names the failing launch.
  start=$SECONDS
  rm -f "$OUTDIR"/pytest_*.log
  # LIMIT_TESTS bounds each file; the stage as a whole gets 1.6x that.
  ls tests/cuda/test_*.py | CUDA_LAUNCH_BLOCKING=1 PY="$PY" OUTDIR="$OUTDIR" LIMIT=$LIMIT_TESTS \
    timeout -k 5 $((LIMIT_TESTS * 8 / 5)) xargs -P "$PYTEST_JOBS" -I{} bash -c 'n=$(basename {} .py); PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 $LIMIT \
      "$PY" -m pytest {} -q -p no:cacheprovider -o faulthandler_timeout=$((LIMIT - 10)) -rfEs \
      > "$OUTDIR/pytest_$n.log" 2>&1'
  # The conv file again on the im2col + cuBLASLt path (cuDNN takes the convs where it loads).
  EMBER_CUDA_CONV=im2col CUDA_LAUNCH_BLOCKING=1 PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 $LIMIT_TESTS \
    "$PY" -m pytest tests/cuda/test_cuda_conv.py -q -p no:cacheprovider -rfEs \
    > "$OUTDIR/pytest_test_cuda_conv_im2col.log" 2>&1
  # The attention file again with the wmma kernel (the mma.sync one is the default).
  EMBER_CUDA_ATTN_KERNEL=wmma CUDA_LAUNCH_BLOCKING=1 PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 $LIMIT_TESTS \
    "$PY" -m pytest tests/cuda/test_cuda_attention.py -q -p no:cacheprovider -rfEs \
    > "$OUTDIR/pytest_test_cuda_attention_wmma.log" 2>&1
  summary_re="(passed|failed|error|skipped|no tests ran)( |,|$)"  # pytest's last line
  # The LLM file again without the tensor-core prefill kernel, only if it did not pass: a
  # failure then tells whether paged_prefill_kernel (no GPU has run it yet) is the cause.
  llm_log="$OUTDIR/pytest_test_cuda_llm.log"
  llm_last=$(grep -E "$summary_re" "$llm_log" 2>/dev/null | tail -n 1)
  if [ -f "$llm_log" ] && { [ -z "$llm_last" ] || echo "$llm_last" | grep -qE "failed|error"; }; then
    EMBER_CUDA_PAGED_PREFILL=0 CUDA_LAUNCH_BLOCKING=1 PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 $LIMIT_TESTS \
      "$PY" -m pytest tests/cuda/test_cuda_llm.py -q -p no:cacheprovider -rfEs \
      > "$OUTDIR/pytest_test_cuda_llm_no_prefill_kernel.log" 2>&1
  fi
  rc=0
  for log in "$OUTDIR"/pytest_test_*.log; do
    last=$(grep -E "$summary_re" "$log" | tail -n 1)
    printf '%-28s %s\n' "$(basename "$log" .log | sed 's/^pytest_//')" "${last:-(no summary: crashed or timed out)}"
  done | tee "$OUTDIR/pytest.log"
  grep -q "(no summary\| failed\| error" "$OUTDIR/pytest.log" && rc=1
  grep -hE "^(FAILED|ERROR) " "$OUTDIR"/pytest_test_*.log | head -n 40
  pytest_line=$(awk '{for(i=2;i<=NF;i++){k=$(i); gsub(/,/,"",k); if(k~/^(passed|failed|skipped|error|errors)$/) t[k]+=$(i-1)}} \
    END{for(k in t) printf "%d %s ", t[k], k}' "$OUTDIR/pytest.log")
  record tests $rc $((SECONDS - start)) "$pytest_line"

  # A file that died of a CUDA memory error (or with no summary) runs again under
  # compute-sanitizer, up to two files and LIMIT_SANITIZE seconds each: the next call then starts
  # from the faulting kernel and address, not from a guess.
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  sanitized=0
  for log in "$OUTDIR"/pytest_test_*.log; do
    [ $sanitized -lt 2 ] && [ -x "$SAN" ] || break
    if grep -qiE "illegal (memory )?address|misaligned address|unspecified launch failure|Segmentation fault|Fatal Python error" "$log" ||
       ! grep -qE "$summary_re" "$log"; then
      n=$(basename "$log" .log | sed 's/^pytest_//')
      stage "compute-sanitizer memcheck: $n (limit ${LIMIT_SANITIZE:-90}s)"
      PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 5 "${LIMIT_SANITIZE:-90}" "$SAN" --tool memcheck --print-limit 10 \
        "$PY" -m pytest "tests/cuda/$n.py" -x -q -p no:cacheprovider > "$OUTDIR/sanitize_$n.log" 2>&1
      grep -E "^========= " "$OUTDIR/sanitize_$n.log" | head -n 30
      sanitized=$((sanitized + 1))
    fi
  done

  if [ "${SKIP_BENCH:-0}" != 1 ]; then
    stage "bench_cuda.py (limit ${LIMIT_BENCH}s)"
    start=$SECONDS
    # The bench spreads its own --time-limit over its sections; `timeout` is the backstop.
    PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 $LIMIT_BENCH "$PY" benchmarks/gpu/bench_cuda.py \
      --time-limit $((LIMIT_BENCH - 15)) --json "$OUTDIR/bench_cuda.json" \
      --table "$OUTDIR/bench_table.txt" ${BENCH_ARGS:-}
    rc=$?
    record bench $rc $((SECONDS - start)) "json: bench_cuda.json"
    # SDPA and BERT again with the wmma attention kernel (the mma.sync one is the default).
    stage "bench_cuda.py sdpa, bert with EMBER_CUDA_ATTN_KERNEL=wmma (limit 60s)"
    start=$SECONDS
    EMBER_CUDA_ATTN_KERNEL=wmma PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 60 "$PY" benchmarks/gpu/bench_cuda.py \
      --sections copy,sdpa,bert --time-limit 45 --json "$OUTDIR/bench_cuda_wmma.json" \
      --table "$OUTDIR/bench_table_wmma.txt" ${BENCH_ARGS:-}
    record bench_wmma $? $((SECONDS - start)) "json: bench_cuda_wmma.json"
    # GGUF LLMs (random weights, real shapes) on the GPU against ember on the CPU (LIMIT_LLM=0:
    # not here; h200.sh runs it after check_quant.sh with the time left).
    if [ "$LIMIT_LLM" -gt 0 ]; then
      stage "bench_llm_cuda.py (limit ${LIMIT_LLM}s)"
      start=$SECONDS
      PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 $LIMIT_LLM "$PY" benchmarks/gpu/bench_llm_cuda.py \
        --time-limit $((LIMIT_LLM - 25)) --json "$OUTDIR/bench_llm.json" --table "$OUTDIR/bench_llm_table.txt"
      record bench_llm $? $((SECONDS - start)) "json: bench_llm.json"
    fi
  fi
fi

stage "summary"
{
  echo "ember GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $((SECONDS - T0)) s in all"
  printf '%-10s %-14s %6s  %s\n' stage status time note
  printf '%s\n' "${summary[@]}"
  if [ -f "$OUTDIR/bench_table.txt" ]; then echo; cat "$OUTDIR/bench_table.txt"; fi
  if [ -f "$OUTDIR/bench_table_wmma.txt" ]; then echo; echo "EMBER_CUDA_ATTN_KERNEL=wmma:"; cat "$OUTDIR/bench_table_wmma.txt"; fi
  if [ -f "$OUTDIR/bench_llm_table.txt" ]; then echo; cat "$OUTDIR/bench_llm_table.txt"; fi
} | tee "$OUTDIR/summary.txt"
