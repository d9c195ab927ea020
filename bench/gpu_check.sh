#!/usr/bin/env bash
# The GPU check of issue 21, for a machine with an NVIDIA GPU, torch (a CUDA build) and transformers
# installed, and no package registry. About 8 minutes at most (a time limit per step).
#
#   bench/gpu_check.sh [WHEELS]     # WHEELS: the folder `make gpu-wheels` made (default shared/wheels)
#
# 1. the GPU and torch's view of it (stops here when torch sees no CUDA GPU);
# 2. installs what the machine lacks from WHEELS, offline (`pip install --no-index`), torch pinned to
#    the machine's own build so pip never replaces it;
# 3. `pytest -m gpu` on the test files that have GPU tests;
# 4. bench/bench_sizes.py --device cuda --json (float16; sizes over --max-seconds are skipped and say so).
# Every step's output goes to $OUT (default bench/results/gpu_check): <step>.log, summary.txt,
# sizes_cuda.json and sizes_cuda.md (the table for the README). Exit status: the first failed step's.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=${1:-${GPU_WHEELS:-shared/wheels}}
OUT=${OUT:-bench/results/gpu_check}
PY=${PYTHON:-python3}
MAX_SECONDS=${MAX_SECONDS:-60}   # per model in the size bench
# REHEARSE=1: a dry run on a machine without a GPU (the install and the script's plumbing): no CUDA
# needed, the GPU tests skip, and the bench runs its tiny configs on the CPU.
REHEARSE=${REHEARSE:-0}
BENCH_ARGS=(--device cuda)
[ "$REHEARSE" = 1 ] && BENCH_ARGS=(--device cpu --tiny)
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
STATUS=0

# step NAME LIMIT_SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, say how it went.
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "==> $name (limit ${limit} s): $*" | tee -a "$SUMMARY"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  [ $rc -eq 124 ] && echo "    $name: TIMED OUT after ${limit} s" | tee -a "$SUMMARY"
  echo "    $name: exit $rc after $((SECONDS - start)) s" | tee -a "$SUMMARY"
  tail -n 25 "$OUT/$name.log"
  [ $rc -ne 0 ] && [ $STATUS -eq 0 ] && STATUS=$rc
  return $rc
}

step gpu 20 nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
step torch 60 "$PY" -c "
import torch, sys
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)
assert torch.cuda.is_available() or '$REHEARSE' == '1', 'torch sees no CUDA GPU'
for i in range(torch.cuda.device_count()):
    free, total = torch.cuda.mem_get_info(i)
    print(f'cuda:{i}', torch.cuda.get_device_name(i), f'{free / 2**30:.1f} of {total / 2**30:.1f} GiB free')
" || { echo "no CUDA GPU for torch: stopping"; exit $STATUS; }

"$PY" -c "import torch; print(f'torch=={torch.__version__}')" > "$OUT/torch-pin.txt"
if [ -f "$WHEELS/requirements.txt" ]; then
  step install 90 "$PY" -m pip install --disable-pip-version-check --no-index --find-links "$WHEELS" \
    -c "$OUT/torch-pin.txt" -r "$WHEELS/requirements.txt" || { echo "install failed: stopping"; exit $STATUS; }
else
  echo "==> install: no $WHEELS/requirements.txt (make gpu-wheels); using what is installed" | tee -a "$SUMMARY"
fi
"$PY" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE "^(torch|transformers|diffusers|accelerate) " \
  | tee -a "$SUMMARY"

GPU_TESTS=$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')
# shellcheck disable=SC2086  # one word per test file
step tests 150 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider $GPU_TESTS

step bench 240 "$PY" bench/bench_sizes.py "${BENCH_ARGS[@]}" --json --max-seconds "$MAX_SECONDS" --results-dir "$OUT"
for results in "$OUT"/sizes_*.json; do
  [ -f "$results" ] || continue
  "$PY" bench/bench_sizes.py --markdown "$results" > "${results%.json}.md" && cat "${results%.json}.md"
done
echo "==> done: exit $STATUS; outputs in $OUT" | tee -a "$SUMMARY"
exit $STATUS
