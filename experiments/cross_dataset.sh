#!/usr/bin/env bash
# Cross-dataset protocol: train MODEL on each dataset, evaluate each checkpoint on every test set, build the tables.
#   experiments/cross_dataset.sh meso4 /data/FaceForensics++ /data/dfdc /data/Celeb-DF-v2 [extra Hydra overrides]
# Needs a GPU for reasonable run times (trainer=gpu is set below; pass trainer=cpu to override).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1; ffpp=$2; dfdc=$3; celebdf=$4; shift 4
py=${PYTHON:-.venv/bin/python}
tag="xdata_${model}_$(date +%Y%m%d_%H%M%S)"
declare -A roots=([ffpp]=$ffpp [dfdc]=$dfdc [celebdf]=$celebdf)

ckpts=()
for train_on in ffpp dfdc celebdf; do
  run="${tag}_train_${train_on}"
  "$py" train.py model="$model" data="$train_on" data.root="${roots[$train_on]}" trainer=gpu run_name="$run" "$@"
  ckpts+=("$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" \
      "logs/train/runs/$run/metrics.json")")
done

for ckpt in "${ckpts[@]}"; do
  for test_on in ffpp dfdc celebdf; do
    "$py" evaluate.py ckpt_path="$ckpt" data="$test_on" data.root="${roots[$test_on]}" trainer=gpu \
        run_name="${tag}/$(basename "$(dirname "$(dirname "$ckpt")")")_on_${test_on}"
  done
done

"${py%python}faceforge-cross-dataset" "logs/eval/runs/${tag}" --out "experiments/tables/${tag}"
