#!/usr/bin/env bash
# One short GPU session: the CUDA tests, then benchmarks 1-3 eager, compiled and with CUDA
# graphs, then 5 seeds batched against 5 single runs (bench_seed_batch.py, quick); everything
# printed is also kept in OUT_DIR (default $OUT or ./gpu-check-out)
# beside the benchmarks' JSON results. Needs a Python with a CUDA build of torch and the
# three packages installed (e.g. `nox -s gpu` does the install, or pip install -e each).
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu-check-out}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  MUJOCO_GL=egl "$PY" -m pytest -m gpu -x -q tests 2>&1 | tail -n 30
  "$PY" benchmarks/run_all.py --device cuda --quick --compile --cuda-graphs \
      --only rac_update,meta_iteration,dynamics
  "$PY" benchmarks/bench_seed_batch.py --device cuda --quick
} 2>&1 | tee "$OUT_DIR/gpu_check.log"
cp benchmarks/results/*_cuda.json "$OUT_DIR"/ 2>/dev/null || true
