"""Exact resume beyond Meso-4 (tests/test_resume.py): the 3DFaceGAN-style baseline (two optimisers and the BEGAN
equilibrium term k, training state kept in the checkpoint) and the ResNeXt-LSTM clip model (clips drawn per epoch)
stopped by SIGTERM mid-epoch and resumed with ``ckpt_path=last`` end with the weights, optimiser states, metrics and
CSV history of the uninterrupted run. Tiny networks on the embedded data, through train.py subprocesses."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.cli import run_cli
from tests.test_reproducibility import assert_same_run

pytestmark = pytest.mark.slow

FAMILIES = {
    # 19 training samples in batches of 4: 5 batches an epoch, two optimiser steps a batch (discriminator, generator)
    "facegan": (["model=facegan", "data.builder.num_samples=24", "data.batch_size=4", "data.image_size=32",
                 "data.volume_depth=32", "model.net.generator_features=16", "model.net.generator_depth=1",
                 "model.net.generator_stem_channels=[8,16]", "model.net.noise_channels=8",
                 "model.net.discriminator_channels=8", "model.net.levels=3", "model.net.latent_dim=16",
                 "model.net.hidden_dim=16", "model.num_val_meshes=0", "model.num_noise_meshes=0",
                 "model.mesh_nme=false", "model.lambda_k=0.05"], 14),
    "resnext_lstm": (["model=resnext_lstm", "model.net.backbone=tiny", "model.net.hidden_size=16",
                      "model.optimizer.lr=1e-3", "data.image_size=32", "data.builder.num_videos=12",
                      "data.builder.frames_per_video=6", "data.clip_length=4", "data.batch_size=2",
                      "data.clip_sampling=contiguous", "data.clips_per_video=2"], 6),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sigterm_mid_epoch_then_resume_equals_the_uninterrupted_run(family: str, tmp_path: Path,
                                                                    project_root: Path) -> None:
    overrides, step = FAMILIES[family]
    common = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}", "logger=csv",
              "trainer.max_epochs=4", *overrides]
    run_cli(project_root, "train.py", *common, "run_name=full")
    term = ["+callbacks.sig._target_=tests.signal_helpers.SignalAt", f"+callbacks.sig.step={step}",
            "+callbacks.sig.signum=SIGTERM"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "train.py", *common, "run_name=part", *term], cwd=project_root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    runs = tmp_path / "logs" / "train" / "runs"
    ckpt = torch.load(runs / "part" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == step  # written where the signal came, mid-epoch:
    assert any(isinstance(v, dict) and v.get("mid_epoch") for v in ckpt["callbacks"].values())
    if family == "facegan":
        k = ckpt["state_dict"]["equilibrium.k"]
        assert float(k) > 0 and len(ckpt["optimizer_states"]) == 2  # the BEGAN state travels with the weights
    run_cli(project_root, "train.py", *common, "run_name=part", "ckpt_path=last")
    assert_same_run(runs / "full", runs / "part")
