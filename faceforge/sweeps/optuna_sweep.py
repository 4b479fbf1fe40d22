"""Hyperparameter sweeps on Optuna's own API (Optuna 4/5) and Hydra's compose API: ``python sweep.py
hparams_search=meso_optuna``.

Why not the Hydra plugin: hydra-optuna-sweeper's last release (1.2.0) pins optuna<3 (2021), and its maintained line
needs Hydra 1.4 pre-releases. This sweeper is small: it composes ``conf/train.yaml`` with the command line's
overrides, reads the ``sweep:`` block that a ``conf/hparams_search/`` config adds, and then, until the study holds
``sweep.n_trials`` finished trials (complete or pruned):

1. asks the study for the next parameters (``study.ask`` over the search space of
   :mod:`faceforge.sweeps.search_space`);
2. runs ``train.py`` with the same overrides plus the sampled ones in its own process, into
   ``<sweep dir>/trial_NNN/`` (a complete run folder: config, provenance, checkpoints), with
   :class:`~faceforge.sweeps.trial.OptunaTrialCallback` reporting the monitored validation metric after each epoch
   and pruning through the study's pruner;
3. tells the study the trial's value (the best monitored validation value, the one the checkpoint is chosen on),
   ``PRUNED`` or ``FAIL``;
4. rewrites ``best_trial.yaml`` (value, parameters, the overrides and the command that reproduce it) and
   ``trials.csv``.

Persistence and resuming: the study lives in ``sweep.storage`` (by default SQLite, ``<sweep dir>/study.db``). Running
the same command again loads it and adds trials until ``sweep.n_trials`` are finished, so a stopped sweep resumes
(and ``sweep.n_trials=30`` extends a finished one). A trial left RUNNING by a sweep process of this machine that no
longer exists is marked FAIL first. Several ``sweep.py`` processes (on one or many machines, with an RDB storage URL
they all reach) share one study. The sampler's seed is ``sweep.sampler.seed`` plus the number of trials already in
the study, so a resumed sweep does not repeat the first trials' random draws.

Layout: ``<paths.log_dir>/sweeps/<study_name>/`` holds ``study.db``, ``best_trial.yaml``, ``trials.csv``,
``trial_NNN/`` (run folders) and ``trial_NNN.out`` (each trial's console output).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from omegaconf import DictConfig, OmegaConf

from faceforge.errors import FaceforgeError
from faceforge.sweeps.search_space import format_override, parse_search_space
from faceforge.sweeps.trial import RESULT_FILENAME, build_pruner
from faceforge.utils.atomic import atomic_write_bytes

__all__ = ["SweepError", "compose_sweep_config", "run_sweep"]

log = logging.getLogger(__name__)

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 3


class SweepError(FaceforgeError, RuntimeError):
    """A sweep that cannot run: no ``sweep:`` block, ``n_trials`` not an integer >= 1, an unknown sampler, a study
    stored with another direction, or too many failed trials in a row (names the trial's log)."""


def compose_sweep_config(overrides: Sequence[str], config_dir: Path) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` through Hydra's compose API (nothing is run).

    Raises:
        SweepError: the composed config has no ``sweep:`` block (no ``hparams_search=...`` given).
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(config_dir), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    if cfg.get("sweep") is None:
        raise SweepError("no sweep: block in the config: give a search, e.g. `python sweep.py "
                         "hparams_search=meso_optuna` (conf/hparams_search/)")
    return cfg


def _sampler(spec: Mapping[str, Any], offset: int) -> optuna.samplers.BaseSampler:
    name = str(spec.get("name", "tpe"))
    seed = spec.get("seed")
    seed = None if seed is None else int(seed) + offset
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(spec.get("n_startup_trials", 10)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SweepError(f"sweep.sampler.name={name!r}: use tpe or random")


def _override_dict(spec: Mapping[str, Any] | None) -> str:
    """A flat mapping of primitives as a Hydra override value: ``{name:median,n_startup_trials:5}``."""
    items = ",".join(f"{k}:{v}" for k, v in (spec or {"name": "none"}).items())
    return "{" + items + "}"


def _direction(sweep: Mapping[str, Any], cfg: DictConfig) -> str:
    direction = sweep.get("direction")
    if direction is None:
        direction = "minimize" if str(cfg.model.get("monitor_mode", "max")) == "min" else "maximize"
    if direction not in ("maximize", "minimize"):
        raise SweepError(f"sweep.direction={direction!r}: use maximize or minimize")
    return str(direction)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials that a sweep process of this machine started and that no longer runs.

    Returns:
        The numbers of the trials marked.
    """
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        worker_host, _, pid = worker.rpartition(":")
        if worker_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            failed.append(trial.number)
    return failed


def _write_reports(study: optuna.Study, sweep_dir: Path, base: Sequence[str], metric: str) -> None:
    """``best_trial.yaml`` and ``trials.csv`` of the study's trials (atomic writes)."""
    keys = sorted({k for t in study.trials for k in t.params})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["number", "state", "value", *keys, "run_dir"])
    for t in study.trials:
        writer.writerow([t.number, t.state.name, "" if t.value is None else repr(t.value),
                         *[t.params.get(k, "") for k in keys], t.user_attrs.get("run_dir", "")])
    atomic_write_bytes(sweep_dir / "trials.csv", out.getvalue().encode())
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return
    best = study.best_trial
    overrides = [*base, *(format_override(k, v) for k, v in best.params.items())]
    record = {"study_name": study.study_name, "direction": study.direction.name.lower(), "metric": metric,
              "finished_trials": len([t for t in study.trials if t.state in FINISHED]),
              "best": {"number": best.number, "value": best.value, "params": dict(best.params),
                       "overrides": overrides, "run_dir": best.user_attrs.get("run_dir"),
                       "command": "python train.py " + " ".join(overrides)}}
    atomic_write_bytes(sweep_dir / "best_trial.yaml", yaml.safe_dump(record, sort_keys=False).encode())


def run_sweep(overrides: Sequence[str], project_root: Path, python: str = sys.executable) -> dict[str, Any]:
    """Run (or resume) the sweep that ``overrides`` describe; see the module docstring.

    Args:
        overrides: Hydra overrides of ``conf/train.yaml``, including ``hparams_search=<search>``; ``sweep.*``
            overrides change the search (``sweep.n_trials=30``) and are not passed to the trials.
        project_root: the folder of ``train.py`` and ``conf/``.
        python: the interpreter that runs the trials.

    Returns:
        ``{"sweep_dir": str, "finished": int, "best": dict or None}`` (``best`` as in ``best_trial.yaml``).

    Raises:
        SweepError: see the class; also a stored study whose direction differs from the configured one.
        optuna.exceptions.StorageInternalError: the storage cannot be opened.
    """
    cfg = compose_sweep_config(overrides, project_root / "conf")
    sweep = OmegaConf.to_container(cfg.sweep, resolve=True)
    assert isinstance(sweep, dict)
    n_trials = sweep.get("n_trials", 20)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise SweepError(f"sweep.n_trials={n_trials!r}: give the number of finished trials the study should hold "
                         f"(an integer >= 1)")
    study_name = str(sweep.get("study_name") or "sweep")
    sweep_dir = Path(str(cfg.paths.log_dir)).resolve() / "sweeps" / study_name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage = str(sweep.get("storage") or f"sqlite:///{sweep_dir / 'study.db'}")
    direction = _direction(sweep, cfg)
    space = parse_search_space(sweep.get("params") or {})
    monitor, mode = str(cfg.model.monitor), "min" if direction == "minimize" else "max"
    existing = 0
    try:
        existing = len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:
        pass
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, direction=direction,
                                sampler=_sampler(sweep.get("sampler") or {}, existing),
                                pruner=build_pruner(sweep.get("pruner")))
    if study.direction.name.lower() != direction:
        raise SweepError(f"study {study_name!r} in {storage} was created to {study.direction.name.lower()}, this "
                         f"sweep asks to {direction}: use another sweep.study_name")
    orphans = fail_orphaned_trials(study)
    if orphans:
        log.warning("trials %s were left running by a stopped sweep: marked FAIL", orphans)
    base = [o for o in overrides if not o.lstrip("+~").startswith("sweep.")]
    failures = 0
    while len(study.get_trials(deepcopy=False, states=FINISHED)) < n_trials:
        trial = study.ask(space)
        run_dir = sweep_dir / f"trial_{trial.number:03d}"
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("run_dir", str(run_dir))
        sampled = [format_override(k, v) for k, v in trial.params.items()]
        cb = "+callbacks.optuna_trial"
        command = [python, str(project_root / "train.py"), *base, *sampled, f"hydra.run.dir='{run_dir}'",
                   f"run_name={study_name}_trial_{trial.number:03d}",
                   f"{cb}._target_=faceforge.sweeps.trial.OptunaTrialCallback", f"{cb}.storage='{storage}'",
                   f"{cb}.study_name='{study_name}'", f"{cb}.trial_number={trial.number}",
                   f"{cb}.monitor='{monitor}'", f"{cb}.mode={mode}", f"{cb}.output_dir='{run_dir}'",
                   f"{cb}.pruner={_override_dict(sweep.get('pruner'))}"]
        out_path = sweep_dir / f"trial_{trial.number:03d}.out"
        log.info("trial %d: %s", trial.number, " ".join(sampled))
        try:
            with out_path.open("wb") as out:
                rc = subprocess.run(command, cwd=project_root, stdout=out, stderr=subprocess.STDOUT).returncode
        except KeyboardInterrupt:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            _write_reports(study, sweep_dir, base, monitor)
            raise
        result_file = run_dir / RESULT_FILENAME
        result = json.loads(result_file.read_text()) if rc == 0 and result_file.is_file() else None
        if result is None or (result["value"] is None and not result["pruned"]):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            failures += 1
            log.warning("trial %d failed (exit code %d): see %s", trial.number, rc, out_path)
            if failures >= MAX_CONSECUTIVE_FAILURES:
                _write_reports(study, sweep_dir, base, monitor)
                raise SweepError(f"{failures} trials failed in a row; the last one's output is {out_path}")
        elif result["pruned"]:
            failures = 0
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            log.info("trial %d pruned after %d epochs", trial.number, len(result["values"]))
        else:
            failures = 0
            study.tell(trial, float(result["value"]))
            log.info("trial %d: %s = %.6g", trial.number, monitor, result["value"])
        _write_reports(study, sweep_dir, base, monitor)
    _write_reports(study, sweep_dir, base, monitor)
    best_file = sweep_dir / "best_trial.yaml"
    best = yaml.safe_load(best_file.read_text())["best"] if best_file.is_file() else None
    return {"sweep_dir": str(sweep_dir), "finished": len(study.get_trials(deepcopy=False, states=FINISHED)),
            "best": best}
