#!/usr/bin/env bash
# Install everything and run the main job end to end on a BOP dataset (default: the golden toy
# dataset beside the checkout; override with DATASET_DIR=...). Outputs go to results/oracle/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true EGL_PLATFORM=surfaceless
DATASET_DIR=${DATASET_DIR:-../shared/golden/bop/dataset/goldtoy}
name=$(basename "$DATASET_DIR")
out=results/oracle/$name
.venv/bin/repro methods
.venv/bin/repro data info --dataset-dir "$DATASET_DIR"
.venv/bin/repro infer --method oracle --dataset-dir "$DATASET_DIR" --out "$out"
.venv/bin/python - "$out" <<'PY'
import sys
from repro.results import read_bop_csv
rows = read_bop_csv(f"{sys.argv[1]}/estimates.csv")
print(f"main job: {len(rows)} oracle estimates written to {sys.argv[1]}/estimates.csv and read back")
PY
