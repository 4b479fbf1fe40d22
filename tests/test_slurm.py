"""Many nodes through SLURM: the submitit launcher config takes its shape from the trainer config, and a job that
the cluster requeues resumes from the newest checkpoint in its run folder (``ckpt_path=auto``)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from faceforge.runs.training import resolve_ckpt_path


def test_the_slurm_launcher_runs_one_task_per_gpu_on_every_node(project_root: Path) -> None:
    with initialize_config_dir(str(project_root / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                          "trainer.num_nodes=2"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert launcher["additional_parameters"]["signal"] == "USR1@120"  # Lightning's SLURM requeue signal
    assert launcher["max_num_timeout"] > 0
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.precision == "bf16-mixed"


def test_ckpt_path_auto_resumes_from_the_newest_checkpoint_or_starts_fresh(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"ckpt_path": "auto"})
    assert resolve_ckpt_path(cfg, tmp_path) is None  # nothing yet: a fresh run
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    assert resolve_ckpt_path(cfg, tmp_path) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # Lightning's SLURM requeue checkpoint, written later
    hpc.write_bytes(b"y")
    later = time.time() + 10
    os.utime(hpc, (later, later))
    assert resolve_ckpt_path(cfg, tmp_path) == str(hpc)
