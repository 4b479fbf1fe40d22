"""End-to-end runs of the 3D reconstruction commands (subprocesses of train.py / evaluate.py).

* The headline command, ``python train.py model=vrn_guided`` on the embedded synthetic 3D data, with small
  overrides (one epoch of two batches) so that it runs by default.
* Real input (slow, needs the fixtures): the 300W-LP sample ``IBUG_image_008_1_0`` in a 300W-LP-style folder and the
  AFLW2000-3D samples in a flat folder go through volume generation with the fixture mean-shape model;
  ``train.py model=vrn_guided data=w300lp`` (small network) trains a few steps and ``evaluate.py ... data=aflw2000``
  reports the 68-landmark NME per yaw bin.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from faceforge.tasks.checkpointing import load_task
from faceforge.tasks.reconstruction import VolumeRegressionTask

# 64 px data (w300lp's default shape is the paper's 192 x 200) and a network smaller than vrn_guided's defaults
SMALL_NETWORK = ["data.image_size=64", "data.volume_depth=64", "model.net.vrn.features=32",
                 "model.net.landmark_net.features=32"]


def _run(project_root: Path, script: str, args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, script, *args], check=False, cwd=project_root, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _common(tmp_path: Path, run_name: str) -> list[str]:
    return [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}", f"run_name={run_name}",
            "logger=csv"]


def test_headline_command_smoke(project_root: Path, tmp_path: Path) -> None:
    _run(project_root, "train.py", ["model=vrn_guided", *_common(tmp_path, "smoke"), "trainer.max_epochs=1",
                                    "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                                    "+trainer.limit_test_batches=1", "data.builder.num_samples=24",
                                    "data.batch_size=4"])
    run = tmp_path / "logs" / "train" / "runs" / "smoke"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["val/iou"] <= 1.0 and "val/nme" in metrics["metrics"]
    assert "test/iou" in metrics["metrics"] and "test/nme" in metrics["metrics"]
    report = json.loads((run / "test_report.json").read_text())
    assert report["variant"] == "guided" and {"iou", "nme", "nme_0_30", "nme_balanced"} <= set(report)
    assert {"baseline_iou", "baseline_nme"} <= set(report)  # the trivial baseline beside the model
    data_report = json.loads((run / "data_report.json").read_text())
    assert data_report["dataset"] == "synthetic_3d" and data_report["size"] == 64
    assert data_report["augment"]["rotation_deg"] == 45.0
    assert list((run / "meshes" / "gt").glob("*.glb"))  # validation meshes (ground truth at least) are saved
    # the embedded data was built in the form volume generation writes
    built = list((tmp_path / "data" / "synthetic").glob("reconstruction_*/volume_index.csv"))
    assert len(built) == 1
    # the checkpoint chosen on val/iou rebuilds the task with weights_only=True
    task = load_task(metrics["best_checkpoint"])
    assert isinstance(task, VolumeRegressionTask) and task.hparams.variant == "guided"
    assert task.hparams.monitor == "val/iou" and task.hparams.optimizer["_target_"] == "torch.optim.RMSprop"
    with torch.no_grad():
        out = task(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    assert out.volume.shape == (1, 64, 64, 64)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vrn_guided", "vrn", "vrn_multitask"])
def test_the_3d_models_learn_more_than_the_mean_volume(project_root: Path, tmp_path: Path, model: str) -> None:
    """The headline command (and its two siblings) as a user runs it, on the embedded data with every default:
    its test IoU must beat the trivial baseline (the mean training volume thresholded at 0.5, scored on the same
    test samples) by at least 0.05. It can fail: a network that learns only the mean face scores the baseline."""
    _run(project_root, "train.py", [f"model={model}", *_common(tmp_path, model)], timeout=1800)
    run = tmp_path / "logs" / "train" / "runs" / model
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    report = json.loads((run / "test_report.json").read_text())
    assert report["iou"] == pytest.approx(metrics["test/iou"], abs=1e-6)
    assert 0.4 < report["baseline_iou"] < 0.75  # the embedded data varies: the mean volume is no good answer
    assert report["iou"] >= report["baseline_iou"] + 0.05, report
    assert metrics["val/iou"] > metrics["val/baseline_iou"]
    if model != "vrn":  # the landmark branch beats the mean training landmarks too
        assert report["nme"] < report["baseline_nme"], report


@pytest.mark.slow
def test_w300lp_train_and_aflw2000_evaluate(project_root: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    w300lp = tmp_path / "300W_LP"
    (w300lp / "IBUG").mkdir(parents=True)
    for ext in ("jpg", "mat"):
        shutil.copy(fixtures_dir / "face3d_300wlp" / f"IBUG_image_008_1_0.{ext}", w300lp / "IBUG")
    aflw = tmp_path / "AFLW2000"
    aflw.mkdir()
    for path in sorted((fixtures_dir / "prnet_aflw2000").glob("image*")):
        shutil.copy(path, aflw)
    model = [f"data.model_dir={fixtures_dir / '3ddfa'}", f"data.noneck_dir={fixtures_dir / '3ddfa_v2' / 'configs'}"]

    _run(project_root, "train.py", ["model=vrn_guided", "data=w300lp", f"data.root={w300lp}", *model, *SMALL_NETWORK,
                                    *_common(tmp_path, "w300lp"), "data.same_split_for_all=true", "data.batch_size=1",
                                    "data.num_workers=0", "trainer.max_epochs=2"])
    run = tmp_path / "logs" / "train" / "runs" / "w300lp"
    data_report = json.loads((run / "data_report.json").read_text())
    assert data_report["dataset"] == "w300lp" and data_report["samples_in_index"] == 1
    assert data_report["mesh_sources"] == {"landmark_warp": 1}
    assert data_report["source"]["root"] == str(w300lp)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "val/iou" in metrics["metrics"] and metrics["best_checkpoint"]
    assert (run / "test_report.json").is_file()

    _run(project_root, "evaluate.py", [f"ckpt_path={metrics['best_checkpoint']}", "data=aflw2000", f"data.root={aflw}",
                                       *model, *_common(tmp_path, "aflw")[:3]])  # 64 x 64: the checkpoint's input
    out = tmp_path / "logs" / "eval" / "runs" / "aflw"
    results = json.loads((out / "results.json").read_text())
    m = results["metrics"]
    stored = results["data"]["report"]["splits"]["test"]
    assert stored >= 8  # the AFLW2000-3D samples whose fits match their annotation
    assert m["n"] == stored and m["n_landmarks"] == stored
    for key in ("nme", "nme_0_30", "nme_30_60", "nme_60_90", "nme_balanced", "n_0_30", "n_30_60", "n_60_90"):
        assert key in m
    assert m["nme"] > 0 and m["n_0_30"] + m["n_30_60"] + m["n_60_90"] == stored
    assert m["n_60_90"] >= 1  # image00475 has a yaw of +66 degrees
    assert "NME" in (out / "results.md").read_text()
    # the trivial baseline of the training set (kept in the checkpoint) is scored on AFLW2000-3D beside the model
    assert 0.0 <= m["baseline_iou"] <= 1.0 and m["baseline_nme"] > 0
    assert "IoU trivial" in (out / "results.md").read_text()
    rows = (out / "reconstruction_predictions.csv").read_text().splitlines()
    assert len(rows) == stored + 1 and rows[1].startswith("image")
