#!/usr/bin/env bash
# One device call for both GPU checks: check.sh (build, tests/cuda, bench_cuda.py), then
# check_quant.sh on the same build (bench_quant_cuda.py). $OUT gets back three files within the
# device tool's limits: summary.txt (both tables), logs.tgz (every log and JSON) and build.tgz
# (the build folder, so that a second call recompiles only what changed).
#   run(command="bash benchmarks/gpu/h200.sh", carry=[".whl", ".h200"], timeout_s=...)
# Carried, both optional: .whl/*.whl (nanobind, pinned to the version built here) and
# .h200/build.tgz with .h200/changed (paths edited since that build). Every other source is dated
# 2020 so ninja keeps the unpacked objects; the changed ones are dated now and recompile.
# Env: the stage limits LIMIT_* of check.sh / check_quant.sh; QUANT=0 skips check_quant.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL=${OUT:-/tmp/ember-h200}
WORK=/tmp/ember-h200-work
rm -rf "$WORK"; mkdir -p "$FINAL" "$WORK/check" "$WORK/quant"
T0=$SECONDS
echo "commit $(cat .h200/commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo '?')"

if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  find /tmp/site -exec touch -h -d 2020-01-01 {} +
fi
if [ -f .h200/build.tgz ]; then
  find . -path ./build -prune -o -path ./.git -prune -o -exec touch -h -d 2020-01-01 {} +
  mkdir -p build && tar xzf .h200/build.tgz -C build
  if ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$PWD" build/h200/CMakeCache.txt; then
    echo "build.tgz was made in another folder: building from scratch"; rm -rf build/h200
  fi
  [ -f .h200/changed ] && xargs -r touch < .h200/changed
  echo "unpacked build/h200; recompiling after: $(tr '\n' ' ' < .h200/changed 2>/dev/null)"
fi

# BUDGET (seconds, default 500) bounds both checks, so the packing below always runs: give the
# device call a timeout_s about 40 s above it.
deadline=$((SECONDS + ${BUDGET:-500}))
OUT="$WORK/check" timeout -k 5 $((deadline - SECONDS)) bash benchmarks/gpu/check.sh
[ "${QUANT:-1}" = 1 ] && [ $((deadline - SECONDS)) -gt 30 ] &&
  OUT="$WORK/quant" timeout -k 5 $((deadline - SECONDS)) bash benchmarks/gpu/check_quant.sh

{ echo "commit $(cat .h200/commit 2>/dev/null || echo '?')"; cat "$WORK/check/summary.txt"; echo; cat "$WORK/quant/summary.txt" 2>/dev/null; } > "$FINAL/summary.txt"
tar czf "$FINAL/logs.tgz" -C "$WORK" .
tar czf "$FINAL/build.tgz" --exclude='*.so' -C build h200
ls -l "$FINAL"
echo "h200.sh: $((SECONDS - T0)) s in all"
