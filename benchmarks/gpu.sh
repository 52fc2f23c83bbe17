#!/usr/bin/env bash
# Ensemble throughput on the GPU and the projected training time of the paper's Figure 3
# grid (30 runs stacked in one process, data resident on the device); see
# benchmarks/ensemble_throughput.py.  Usage: benchmarks/gpu.sh [extra options]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
"$python" benchmarks/ensemble_throughput.py --device cuda --members 30 --steps 500 "$@"
"$python" benchmarks/ensemble_throughput.py --device cuda --members 6 --steps 500 "$@"
