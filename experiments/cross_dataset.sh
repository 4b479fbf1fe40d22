#!/usr/bin/env bash
# Cross-dataset protocol: train MODEL on each dataset, evaluate each checkpoint on every test set, build the tables.
#   experiments/cross_dataset.sh meso4 /data/FaceForensics++ /data/dfdc /data/Celeb-DF-v2 [extra Hydra overrides]
# A thin wrapper over the experiment command (experiment.py experiments/cross_dataset.yaml), which it now calls:
# resumable (rerun the same command to continue), provenance in provenance.json, failures reported with their log.
# Besides the experiment's table (frame and video AUC), faceforge-cross-dataset writes the matrices of every metric
# (AUC, EER, AP, accuracy, precision, recall, F1) from the same evaluations.
# Needs a GPU for reasonable run times (the spec sets trainer=gpu; pass trainer=cpu to override).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1; shift
export FFPP_ROOT=$1 DFDC_ROOT=$2 CELEBDF_ROOT=$3; shift 3
py=${PYTHON:-.venv/bin/python}
out="experiments/tables/xdata_${model}"
extra=(-o "model=$model")
for o in "$@"; do extra+=(-o "$o"); done

status=0
"$py" experiment.py experiments/cross_dataset.yaml --out "$out" "${extra[@]}" || status=$?
if [ -d "$out/runs/eval/runs" ]; then
  "${py%python}faceforge-cross-dataset" "$out/runs/eval/runs" --out "$out/all_metrics" || status=$?
fi
exit "$status"
