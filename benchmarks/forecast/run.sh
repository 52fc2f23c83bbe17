#!/bin/bash
# The grokking forecast's calibration and held-out evaluation (README, "Forecasting grokking").
# About 75 min on 2 CPU cores.  calib = fig3-small (the only runs the options were chosen on).
set -euo pipefail
OUT=$(realpath -m "${OUT:-runs/forecast}")  # relative to where it is started
cd "$(dirname "$0")"
for s in calib heldA heldB heldC heldD; do
  latephase sweep "$s.toml" --executor ensemble --out "$OUT" --name "$s" --no-progress
done
# the defaults of latephase.forecast.ForecastOptions are what calibrate returns on calib:
python -c "import sys, latephase.forecast as f; print(f.calibrate([sys.argv[1]]))" "$OUT/calib"
latephase forecast-eval "$OUT"/held{A,B,C,D} --out "$OUT/forecast_eval"
