#!/usr/bin/env bash
# Nsight Compute on the kernels that missed their H200 targets (ncu_kernels.py): per kernel its
# duration, DRAM and SM throughput, occupancy and warp stall reasons, so the next change starts
# from a profile, not a guess. Needs the modules check.sh built (python/ember) and ncu.
#   bash benchmarks/gpu/ncu_kernels.sh LOG      env: PYTHON (python3), LIMIT (seconds per case, 40)
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
LOG=${1:-/tmp/ember-ncu.log}
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
if [ -z "$NCU" ]; then echo "ncu: not found" | tee "$LOG"; exit 0; fi
# One process per case: skip its first run's launches (plan compile, first touch), profile the
# second run's (the GEMV, which adds its K splits itself; the attention kernel; the AddNorm
# kernel): one matching launch a run each.
: > "$LOG"
for spec in "q4 q4_gemm 1" "sdpa attention_(mma|tc) 1" "rms add_norm 1"; do
  set -- $spec
  PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" timeout -k 5 "${LIMIT:-40}" "$NCU" --target-processes all -k "regex:$2" \
    --launch-skip "$3" --launch-count "$3" --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
    "$PY" benchmarks/gpu/ncu_kernels.py --case "$1" --runs 2 >> "$LOG" 2>&1
  echo "ncu $1: rc=$? (log: $(basename "$LOG"))"
done
# The headline lines of each profiled kernel.
grep -E "^  [a-z_].*\(|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per Thread|Stall|^    [A-Z]+ +.*(smsp__pcsamp|Warp Cycles)" "$LOG" |
  head -n 90
exit 0
