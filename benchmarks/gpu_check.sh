#!/usr/bin/env bash
# The one accelerator check. It installs what is missing (the package with its dependencies,
# into the current Python), then writes into one folder (default outputs/gpu_check):
#   gpu_check.json/.txt  benchmarks/gpu_check.py: 8000 steps of the paper's GMM setting at 10^4
#                        and 10^5 walkers (d = 50), se.diagnose on the device, the digits
#                        example's default setting for one seed;
#   scaling.json/.png/.txt  benchmarks/scaling.py: time per step against walkers (10^3 to 10^6)
#                        and dimension (10 to 1000), with the fitted exponents;
#   overhead.txt, overhead_record1000.txt  benchmarks/overhead.py: fit against a bare lax.scan
#                        of the algorithm, side by side (records every 10 and every 1000 steps).
# On one H200 the whole script took 295 s (docs/quickstart.md, "On a GPU"; the bar is
# 8 minutes); the files of that run are benchmarks/results/*_h200.*.
#
#   bash benchmarks/gpu_check.sh [folder]
#
# On a machine without network access, put the missing packages' wheels on PYTHONPATH first.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-outputs/gpu_check}"
mkdir -p "$out"
python3 -c "import smc_ebm" 2>/dev/null || python3 -m pip install -q .
export PYTHONUNBUFFERED=1
python3 benchmarks/gpu_check.py --out "$out/gpu_check.json" 2>&1 | tee "$out/gpu_check.txt"
python3 benchmarks/scaling.py --steps 200 --reps 3 --devices 0 --out "$out/scaling" 2>&1 \
    | tee "$out/scaling.txt"
strategies="Jarzynski Jarzynski-nocorr Jarzynski-plain PCD Bare-Jarzynski Bare-PCD"
# shellcheck disable=SC2086
python3 benchmarks/overhead.py --strategies $strategies --reps 9 --min-seconds 0.1 2>&1 \
    | tee "$out/overhead.txt"
python3 benchmarks/overhead.py --strategies Jarzynski PCD Bare-Jarzynski Bare-PCD --reps 9 \
    --min-seconds 0.1 --record-every 1000 2>&1 | tee "$out/overhead_record1000.txt"
