#!/usr/bin/env bash
# One accelerator check: install what is missing (the package with its dependencies, into the
# current Python), then run benchmarks/gpu_check.py, which writes gpu_check.json (8000 steps at
# 10^4 and 10^5 walkers, d = 50; meant to take under 8 minutes on one GPU, not yet measured).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import smc_ebm" 2>/dev/null || python3 -m pip install -q .
python3 benchmarks/gpu_check.py --out "${1:-gpu_check.json}"
