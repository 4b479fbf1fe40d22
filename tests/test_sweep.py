"""Sweeps: a Hydra multirun over a grid and an Optuna search both run trainings and report their metric."""
from __future__ import annotations

import yaml

from tests.cli import run_cli

TINY = ["trainer.max_epochs=1", "logger=csv", "data.builder.num_videos=12", "data.builder.frames_per_video=2"]


def test_optuna_search_runs_trials_and_records_the_best(tmp_path, project_root):
    run_cli(project_root, "train.py", "-m", "hparams_search=meso_optuna", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=1", f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={tmp_path / 'data'}", "run_name=search", *TINY)
    sweep_dir = tmp_path / "logs" / "train" / "multiruns" / "search"
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.optimizer.lr", "data.batch_size", "model.net.dropout"}
    assert 0.0 <= best["best_value"] <= 1.0
    # every trial is a complete run with its own provenance and checkpoint
    trials = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(trials) == 2
    for trial in trials:
        assert (trial / "run_info.json").is_file() and list((trial / "checkpoints").glob("*.ckpt"))


def test_grid_multirun(tmp_path, project_root):
    run_cli(project_root, "train.py", "-m", "model=meso4,mesoinception4", f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={tmp_path / 'data'}", "run_name=grid", "test=false", "data.batch_size=8", *TINY)
    sweep_dir = tmp_path / "logs" / "train" / "multiruns" / "grid"
    nets = sorted(yaml.safe_load((sweep_dir / str(i) / "config.yaml").read_text())["model"]["net"]["_target_"]
                  for i in (0, 1))
    assert nets == ["faceforge.models.meso.Meso4", "faceforge.models.meso.MesoInception4"]
