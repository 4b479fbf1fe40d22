"""End to end through the real command lines: train.py on the embedded synthetic data, evaluate.py on its
checkpoint, resuming a named run, and the provenance every run writes."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from faceforge.data.detection.face_index import FaceIndex
from tests.cli import run_cli

TINY_SYNTHETIC = ["data.builder.num_videos=24", "data.builder.frames_per_video=2", "data.batch_size=8"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, project_root):
    """One tiny Meso-4 training run on synthetic data (2 epochs), shared by the tests of this module."""
    base = tmp_path_factory.mktemp("train")
    overrides = [f"paths.log_dir={base / 'logs'}", f"paths.data_dir={base / 'data'}", "run_name=tiny",
                 "trainer.max_epochs=2", "logger=wandb", *TINY_SYNTHETIC]
    run_cli(project_root, "train.py", *overrides)
    return base, base / "logs" / "train" / "runs" / "tiny", overrides


def test_training_writes_provenance_checkpoints_and_reports(trained_run):
    _, run_dir, _ = trained_run
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["seed"] == 42 and len(info["git"]["commit"]) in (40, 7) or info["git"]["commit"] == "unknown"
    assert info["packages"]["torch"] != "not installed" and "train.py" in " ".join(info["command"])
    assert "model:" in (run_dir / "config.yaml").read_text() and "${" not in (run_dir / "config.yaml").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = Path(metrics["best_checkpoint"])
    assert best.is_file() and best.parent == run_dir / "checkpoints" and (run_dir / "checkpoints/last.ckpt").is_file()
    # checkpoints are primitive: they load without unpickling arbitrary objects
    ckpt = torch.load(best, weights_only=True)
    assert ckpt["faceforge"]["task_class"] == "faceforge.tasks.detection.DetectionTask"
    assert ckpt["faceforge"]["trained_on"] == "synthetic"
    assert "_target_: faceforge.models.meso.Meso4" in ckpt["hyper_parameters"]["net_spec"]
    report = json.loads((run_dir / "test_report.json").read_text())
    assert set(report) == {"frame", "video", "per_method", "baseline"}
    assert report["baseline"]["frame"]["auc"] == 0.5  # the best constant predictor beside the model
    assert report["baseline"]["frame"]["n"] == report["frame"]["n"]
    # FaceForensics++-style breakdown: one entry per fake method present in the test split (when two or more)
    base = run_dir.parents[3]
    index = FaceIndex.read(next((base / "data").rglob("face_index.parquet")))
    test_methods = set(index.where(split="test", label=1).columns["method"].tolist())
    assert set(report["per_method"]) == (test_methods if len(test_methods) > 1 else set())
    assert 0.0 <= report["frame"]["auc"] <= 1.0 and report["video"]["n"] < report["frame"]["n"]
    assert (run_dir / "plots" / "test_roc_curve.png").stat().st_size > 1000
    assert (run_dir / "plots" / "test_confusion_matrix.png").stat().st_size > 1000
    # W&B ran offline into the run directory, with the CSV logger beside it
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run written"
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/auc" in header and "val/video_auc" in header and "val/eer" in header


def test_evaluate_reproduces_test_numbers_and_writes_tables(trained_run, project_root):
    base, run_dir, overrides = trained_run
    best = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    data_overrides = [o for o in overrides if o.startswith(("paths.", "data."))]
    proc = run_cli(project_root, "evaluate.py", f"ckpt_path={best}", "run_name=ev", *data_overrides)
    assert "| dataset | subset | level | AUC" in proc.stdout
    ev_dir = base / "logs" / "eval" / "runs" / "ev"
    results = json.loads((ev_dir / "results.json").read_text())
    train_report = json.loads((run_dir / "test_report.json").read_text())
    assert results["metrics"]["frame"]["auc"] == pytest.approx(train_report["frame"]["auc"], abs=1e-6)
    assert results["checkpoint"]["sha256"] and results["provenance"]["git"]["commit"]
    assert results["config"]["ckpt_path"] == best
    assert (results["trained_on"], results["tested_on"]) == ("synthetic", "synthetic")
    with open(ev_dir / "video_predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == int(results["metrics"]["video"]["n"])
    assert {r["label"] for r in rows} == {"0", "1"} and all(0 <= float(r["p_fake"]) <= 1 for r in rows)
    assert all(r["video_id"].startswith("synthetic/") for r in rows)


def test_resume_named_run_from_last_checkpoint(trained_run, project_root):
    _, run_dir, overrides = trained_run
    resumed = [o for o in overrides if not o.startswith(("trainer.max_epochs", "logger"))]
    first = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    steps_two_epochs = first["global_step"]
    # last.ckpt is the latest epoch even when the monitored checkpoint did not improve in it
    assert first["epoch"] == 1  # 0-based: the second of two epochs
    run_cli(project_root, "train.py", *resumed, "logger=csv", "ckpt_path=last", "trainer.max_epochs=3", "test=false")
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # the same run directory continued for exactly one more epoch (no restart in a new timestamped folder)
    assert last["global_step"] == steps_two_epochs * 3 // 2
    assert [p.name for p in run_dir.parent.iterdir()] == ["tiny"]


def test_resume_without_a_checkpoint_names_the_fix(tmp_path, project_root):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, "train.py", f"paths.log_dir={tmp_path}", "run_name=never_ran",
                           "ckpt_path=last", "logger=csv"], cwd=project_root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "run_name=NAME ckpt_path=last" in proc.stderr
