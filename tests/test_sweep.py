"""Sweeps: Optuna studies over train.py runs (sweep.py) that persist, resume and prune, and a Hydra grid multirun."""
from __future__ import annotations

import csv
import json
import socket
from types import SimpleNamespace

import optuna
import pytest
import yaml

from faceforge.sweeps.search_space import SearchSpaceError, format_override, parse_search_space
from faceforge.sweeps.trial import OptunaTrialCallback
from tests.cli import run_cli

TINY = ["trainer.max_epochs=1", "logger=csv", "data.builder.num_videos=12", "data.builder.frames_per_video=2"]


def test_search_space_forms_become_optuna_distributions() -> None:
    space = parse_search_space({"a": "interval(0.1, 0.5)", "b": "log_interval(1e-4, 1e-2)", "c": "int_interval(1, 4)",
                                "d": "choice(16, 32, 'adam', true, null)", "e": [0.3, 0.5]})
    assert space["a"] == optuna.distributions.FloatDistribution(0.1, 0.5)
    assert space["b"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert space["c"] == optuna.distributions.IntDistribution(1, 4)
    assert space["d"].choices == (16, 32, "adam", True, None)
    assert space["e"].choices == (0.3, 0.5)
    for bad in ("uniform(0, 1)", "interval(1)", "interval(2, 1)", "log_interval(0, 1)", "choice()",
                "interval(a, b)"):
        with pytest.raises(SearchSpaceError, match="sweep.params.x"):
            parse_search_space({"x": bad})
    assert format_override("model.optimizer.lr", 1e-4) == "model.optimizer.lr=0.0001"
    assert format_override("model.optimizer.name", "adam") == "model.optimizer.name='adam'"
    assert format_override("data.max_samples", None) == "data.max_samples=null"


def _stub_trainer(value: float, epoch: int) -> SimpleNamespace:
    return SimpleNamespace(sanity_checking=False, callback_metrics={"val/auc": value}, is_global_zero=True,
                           current_epoch=epoch, should_stop=False,
                           strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj))


def test_the_trial_callback_reports_each_epoch_and_prunes_a_poor_trial(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1))
    good = study.ask()
    for epoch, v in enumerate((0.8, 0.9, 0.95)):
        good.report(v, epoch)
    study.tell(good, 0.95)
    poor = study.ask()
    cb = OptunaTrialCallback(storage, "s", poor.number, "val/auc", "max", str(tmp_path / "run"),
                             pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 1})
    first = _stub_trainer(0.5, 0)
    cb.on_validation_end(first, None)
    assert not first.should_stop  # epoch 0 is a warm-up step: never pruned
    second = _stub_trainer(0.6, 1)
    cb.on_validation_end(second, None)
    assert second.should_stop and cb.pruned  # 0.6 is below the median 0.9 of epoch 1
    stored = study.trials[poor.number].intermediate_values
    assert stored == {0: 0.5, 1: 0.6}
    (tmp_path / "run").mkdir()
    cb.on_fit_end(second, None)
    result = json.loads((tmp_path / "run" / "optuna_trial.json").read_text())
    assert result == {"value": 0.6, "pruned": True, "values": [0.5, 0.6], "monitor": "val/auc"}


@pytest.mark.slow
def test_a_stopped_sweep_resumes_adds_trials_and_records_the_best(tmp_path, project_root) -> None:
    common = ["hparams_search=meso_optuna", "sweep.sampler.n_startup_trials=2", f"paths.log_dir={tmp_path / 'logs'}",
              f"paths.data_dir={tmp_path / 'data'}", *TINY]
    run_cli(project_root, "sweep.py", *common, "sweep.n_trials=3", timeout=900)
    sweep_dir = tmp_path / "logs" / "sweeps" / "meso_optuna"
    storage = f"sqlite:///{sweep_dir / 'study.db'}"
    study = optuna.load_study(study_name="meso_optuna", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    first_params = [t.params for t in study.trials]
    # a sweep killed during its 4th trial leaves that trial RUNNING, owned by a process that no longer exists
    orphan = study.ask()
    orphan.set_user_attr("worker", f"{socket.gethostname()}:999999999")

    proc = run_cli(project_root, "sweep.py", *common, "sweep.n_trials=5", timeout=900)
    study = optuna.load_study(study_name="meso_optuna", storage=storage)
    states = [t.state for t in study.trials]
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 5  # resumed: the 3 earlier trials kept, 2 added
    assert [t.params for t in study.trials[:3]] == first_params
    best = yaml.safe_load((sweep_dir / "best_trial.yaml").read_text())
    assert best["finished_trials"] == 5
    assert best["best"]["value"] == max(t.value for t in finished) == study.best_value
    assert best["best"]["number"] == study.best_trial.number
    params = best["best"]["params"]
    assert set(params) == {"model.optimizer.lr", "data.batch_size", "model.net.dropout"}
    assert f"model.optimizer.lr={params['model.optimizer.lr']!r}" in best["best"]["overrides"]
    assert best["best"]["command"].startswith("python train.py hparams_search=meso_optuna")
    assert f"trial {study.best_trial.number}" in proc.stdout
    # every trial is a complete run folder with the value it reported, and trials.csv lists every trial
    for t in finished:
        run_dir = sweep_dir / f"trial_{t.number:03d}"
        assert (run_dir / "run_info.json").is_file() and list((run_dir / "checkpoints").glob("*.ckpt"))
        assert json.loads((run_dir / "optuna_trial.json").read_text())["value"] == t.value
    rows = list(csv.DictReader((sweep_dir / "trials.csv").open()))
    assert [r["state"] for r in rows] == [s.name for s in states]


def test_grid_multirun(tmp_path, project_root):
    run_cli(project_root, "train.py", "-m", "model=meso4,mesoinception4", f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={tmp_path / 'data'}", "run_name=grid", "test=false", "data.batch_size=8", *TINY)
    sweep_dir = tmp_path / "logs" / "train" / "multiruns" / "grid"
    nets = sorted(yaml.safe_load((sweep_dir / str(i) / "config.yaml").read_text())["model"]["net"]["_target_"]
                  for i in (0, 1))
    assert nets == ["faceforge.models.meso.Meso4", "faceforge.models.meso.MesoInception4"]


def test_a_sweep_without_a_search_is_one_clear_line(tmp_path, project_root) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "sweep.py", f"paths.log_dir={tmp_path}"], cwd=project_root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "faceforge: SweepError: no sweep: block in the config: give a search, e.g. `python sweep.py "
        "hparams_search=meso_optuna` (conf/hparams_search/)"]


@pytest.mark.parametrize("args,code,start", [
    (["hparams_search=nosuch"], 2, "faceforge: MissingConfigException: In 'train': Could not find"),
    (["hparams_search=meso_optuna", "sweep.ntrials=3"], 2, "faceforge: ConfigCompositionException: Could not override"),
    (["hparams_search=meso_optuna", "sweep.n_trials=abc"], 1, "faceforge: SweepError: sweep.n_trials='abc'"),
    (["hparams_search=meso_optuna", "sweep.n_trials=0"], 1, "faceforge: SweepError: sweep.n_trials=0"),
])
def test_command_line_mistakes_are_one_line(tmp_path, project_root, args, code, start) -> None:
    """Hydra's config errors and a bad trial count: one line and a usage exit status, no traceback, nothing run."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "sweep.py", *args, f"paths.log_dir={tmp_path}"], cwd=project_root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), proc.stderr
    assert not (tmp_path / "sweeps").exists()


def test_the_wandb_sweep_spec_drives_train_py_with_overrides_hydra_accepts(project_root) -> None:
    """experiments/sweeps/wandb_meso4.yaml: its fixed command overrides and one value of each swept parameter (as
    the agent passes them through ${args_no_hyphens}) compose with conf/train.yaml; runs report to W&B online."""
    import yaml

    from faceforge.data.core.prepared import compose_config

    spec = yaml.safe_load((project_root / "experiments" / "sweeps" / "wandb_meso4.yaml").read_text())
    assert spec["program"] == "train.py" and "${args_no_hyphens}" in spec["command"]
    fixed = [c for c in spec["command"] if not c.startswith("${")]
    assert "logger.wandb.offline=false" in fixed  # the controller needs each run's val/auc online
    sampled = []
    for key, values in spec["parameters"].items():
        value = values["values"][0] if "values" in values else values["min"]
        sampled.append(f"{key}={value}")
    cfg = compose_config([*fixed, *sampled])
    assert cfg.model.monitor == spec["metric"]["name"] and cfg.logger.wandb.offline is False
    assert cfg.data.batch_size == spec["parameters"]["data.batch_size"]["values"][0]
