#!/usr/bin/env bash
# One GPU session's checks and benchmarks, in one script (README "GPU"): run from the repository root on a machine
# with an NVIDIA GPU and the project installed (or its wheels in .whl/, see below). Writes logs and JSON to $OUT
# (default /tmp/faceforge_gpu).
#   1. training-step throughput of Meso-4 / VRN, fp32 vs bf16 autocast vs channels_last, GPU utilisation, and the
#      face loader's images/s per num_workers (benchmarks/bench_train_step.py);
#   2. face extraction in videos/s, CPU path vs MTCNN batched on the GPU, same videos (bench_extraction_devices.py);
#   3. `train.py` end to end on the GPU (trainer=gpu) for Meso-4 and VRN-Guided at 32-true and bf16-mixed: wall
#      time and test metrics beside the trivial baseline.
set -u
OUT=${OUT:-/tmp/faceforge_gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then  # an offline machine: the missing packages travel as wheels
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/.whl/pure:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)" | tee -a "$OUT/gpu.txt"
VIDEOS=${VIDEOS:-.whl/videos}

timeout 200 $PY benchmarks/bench_train_step.py --device cuda --steps 30 --loader --loader-workers 0,4,8 \
  --json "$OUT/train_step.json" 2>&1 | tee "$OUT/train_step.log"
timeout 120 $PY benchmarks/bench_extraction_devices.py --videos "$VIDEOS" --devices cpu,cuda --repeat 2 \
  --json "$OUT/extraction.json" 2>&1 | tee "$OUT/extraction.log"
for model in meso4 vrn_guided; do
  for precision in 32-true bf16-mixed; do
    name=${model}_${precision}
    start=$(date +%s.%N)
    timeout 150 $PY train.py model=$model trainer=gpu trainer.precision=$precision logger=csv \
      data.num_workers=8 paths.log_dir="$OUT/logs" hydra.run.dir="$OUT/logs/$name" > "$OUT/train_$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    echo "train.py model=$model trainer=gpu trainer.precision=$precision: rc=$rc, $(echo "$end - $start" | bc) s" \
      | tee -a "$OUT/train_e2e.txt"
    grep -E "test/(auc|iou|nme|baseline_iou|baseline_nme|baseline_auc|acc)\b" "$OUT/train_$name.log" | tail -8 \
      | tee -a "$OUT/train_e2e.txt"
    tail -3 "$OUT/train_$name.log"
  done
done
