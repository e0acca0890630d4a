#!/usr/bin/env bash
# One device call for both GPU checks: check.sh (build + smoke run, tests/cuda, bench_cuda.py),
# then check_quant.sh on the same modules (bench_quant_cuda.py; check.sh ran its tests), then
# bench_llm_cuda.py and ncu_kernels.sh with the time left. $OUT gets back two files, within the
# device tool's limits: summary.txt (every table) and logs.tgz (every log and JSON).
#   run(command="bash benchmarks/gpu/h200.sh", carry=[".whl", ".h200"], timeout_s=BUDGET + 40)
# (BUDGET=$((T - 40)) for a call given T seconds: the packing must run before the tool's timeout.)
# Carried, both optional: .whl/*.whl (nanobind, pinned to the version built here; tokenizers,
# gguf and pyyaml for the LLM tests: on the device, pip can only install carried wheels) and
# .h200/commit (`git rev-parse --short HEAD > .h200/commit` just before the call: the device's
# copy of .git can be stale).
# Env: the stage limits LIMIT_* of check.sh / check_quant.sh; QUANT=0 skips check_quant.sh,
# LLM=0 bench_llm_cuda.py, NCU=0 the Nsight Compute profiles (ncu_kernels.sh) at the end.
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL=${OUT:-/tmp/ember-h200}
WORK=/tmp/ember-h200-work
rm -rf "$WORK"; mkdir -p "$FINAL" "$WORK/check" "$WORK/quant"
T0=$SECONDS
commit=$(cat .h200/commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo '?')
echo "commit $commit"

if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
# BUDGET (seconds, default 500) bounds both checks, so the packing below always runs: give the
# device call a timeout_s about 40 s above it.
deadline=$((SECONDS + ${BUDGET:-500}))
OUT="$WORK/check" LIMIT_LLM=0 timeout -k 5 $((deadline - SECONDS)) bash benchmarks/gpu/check.sh
# check_quant.sh takes check.sh's modules, and only when they passed the smoke run.
# Its bench gets what is left, less 20 s for its summary, so the outer timeout never cuts it.
left=$((deadline - SECONDS))
grep -qE "^build +ok" "$WORK/check/summary.txt" 2>/dev/null && [ "${QUANT:-1}" = 1 ] &&
  [ $left -gt 60 ] && SKIP_BUILD=1 SKIP_TESTS=1 OUT="$WORK/quant" \
  LIMIT_BENCH=$((left - 20 < ${LIMIT_BENCH:-150} ? left - 20 : ${LIMIT_BENCH:-150})) \
  timeout -k 5 $left bash benchmarks/gpu/check_quant.sh

# Then the GGUF LLM bench (bench_llm_cuda.py) with up to 90 s of what is left.
left=$((deadline - SECONDS))
mkdir -p "$WORK/llm"
grep -qE "^build +ok" "$WORK/check/summary.txt" 2>/dev/null && [ "${LLM:-1}" = 1 ] && [ $left -gt 50 ] &&
  lim=$((left - 10 < 90 ? left - 10 : 90)) &&
  PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 5 $lim python3 benchmarks/gpu/bench_llm_cuda.py \
    --time-limit $((lim - 20)) --json "$WORK/llm/bench_llm.json" --table "$WORK/llm/table.txt" \
    > "$WORK/llm/bench_llm.log" 2>&1

# Then Nsight Compute on the kernels that missed their targets, with what time is left
# (ncu_kernels.sh: three cases; the attention case runs the default mma.sync kernel).
left=$((deadline - SECONDS))
grep -qE "^build +ok" "$WORK/check/summary.txt" 2>/dev/null && [ "${NCU:-1}" = 1 ] && [ $left -gt 45 ] &&
  LIMIT=$(((left - 10) / 3)) \
  bash benchmarks/gpu/ncu_kernels.sh "$WORK/ncu.log" > "$WORK/ncu_summary.txt" 2>&1

{ echo "commit $commit"; cat "$WORK/check/summary.txt"; echo; cat "$WORK/quant/summary.txt" 2>/dev/null
  echo; cat "$WORK/llm/table.txt" 2>/dev/null || tail -5 "$WORK/llm/bench_llm.log" 2>/dev/null
  echo; cat "$WORK/ncu_summary.txt" 2>/dev/null; } > "$FINAL/summary.txt"
tar czf "$FINAL/logs.tgz" -C "$WORK" .
ls -l "$FINAL"
echo "h200.sh: $((SECONDS - T0)) s in all"
