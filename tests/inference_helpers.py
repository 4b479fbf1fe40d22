"""Small trained checkpoints for the inference tests (``faceforge predict``, ``reconstruct``, ``serve``).

Each is trained once per test session (``python train.py ...`` on a little embedded synthetic data, a few steps)
into pytest's session temporary folder, and reused by every module that asks for it: a VRN and a ResNeXt-LSTM clip
model.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _trained_once(root: Path, pattern: str, *args: str) -> Path:
    """The newest checkpoint matching ``pattern`` under ``root``; runs ``train.py ARGS`` there first if none."""
    found = sorted(root.glob(pattern))
    if found:
        return found[-1]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "train.py", *args, f"paths.log_dir={root / 'logs'}",
                           f"paths.data_dir={root / 'data'}"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    found = sorted(root.glob(pattern))
    assert found, f"train.py wrote no {pattern} under {root}"
    return found[-1]


def trained_vrn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``.ckpt`` of a briefly trained ``model=vrn`` (64 px crops, 64 depth levels); trains it on first use."""
    return _trained_once(tmp_path_factory.getbasetemp() / "inference_vrn", "logs/**/checkpoints/*.ckpt",
                         "model=vrn", "run_name=vrn", "logger=csv", "callbacks=none", "trainer.max_epochs=2",
                         "data.builder.num_samples=48", "data.batch_size=8", "+trainer.limit_val_batches=1",
                         "+trainer.limit_test_batches=1")


#: Faces per clip of :func:`trained_clip_checkpoint`.
CLIP_LENGTH = 4


def trained_clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``.ckpt`` of a ResNeXt-LSTM (tiny backbone, 48 px, clips of :data:`CLIP_LENGTH`) trained for one short
    epoch on the embedded synthetic videos; trains it on first use."""
    return _trained_once(tmp_path_factory.getbasetemp() / "inference_clip", "logs/**/checkpoints/last.ckpt",
                         "model=resnext_lstm", "model.net.backbone=tiny", "model.net.hidden_size=32",
                         "model.optimizer.lr=1e-3", "data.image_size=48", "data.builder.num_videos=12",
                         "data.builder.frames_per_video=6", f"data.clip_length={CLIP_LENGTH}", "data.batch_size=4",
                         "trainer.max_epochs=1", "logger=csv")
