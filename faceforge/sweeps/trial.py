"""The Lightning callback that ties one training run to its Optuna trial (used by :mod:`faceforge.sweeps.optuna_sweep`).

The sweep starts each trial as its own ``train.py`` process and adds this callback through overrides
(``+callbacks.optuna_trial=...``). After every validation the callback reports the monitored metric to the trial
(``trial.report(value, epoch)``, stored in the study's storage) and asks the study's pruner whether to stop
(``trial.should_prune()``); a pruned run stops at the end of that epoch like an early-stopped one. When the fit ends it
writes ``optuna_trial.json`` into the run folder: the best monitored value (the epoch the checkpoint is chosen on),
whether the run was pruned, and the reported values. The sweep reads that file and tells the study the result.

Why not optuna-integration's ``PyTorchLightningPruningCallback``: it is written against the ``lightning`` package,
and its callback class is not a ``pytorch_lightning`` callback, which this project's Trainer requires; the callback
here uses the same two Optuna calls (``report`` / ``should_prune``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from faceforge.errors import FaceforgeError
from faceforge.utils.atomic import atomic_write_json

__all__ = ["RESULT_FILENAME", "OptunaTrialCallback", "PrunerError", "build_pruner"]

RESULT_FILENAME = "optuna_trial.json"


class PrunerError(FaceforgeError, ValueError):
    """An unknown ``sweep.pruner.name``."""


def build_pruner(spec: Mapping[str, Any] | None) -> Any:
    """The Optuna pruner of a ``sweep.pruner`` block: ``{name: median, n_startup_trials, n_warmup_steps}`` or
    ``{name: none}`` (None too). A study's pruner is not kept in its storage, so the sweep and each trial's
    callback build it from the same block.

    Raises:
        PrunerError: another name.
    """
    import optuna

    spec = spec or {"name": "none"}
    name = str(spec.get("name", "none"))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(spec.get("n_startup_trials", 5)),
                                           n_warmup_steps=int(spec.get("n_warmup_steps", 0)))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise PrunerError(f"sweep.pruner.name={name!r}: use median or none")


class OptunaTrialCallback(pl.Callback):
    """Report a run's monitored metric to its Optuna trial after each validation, prune, and record the result.

    Args:
        storage: the study's storage URL (``sqlite:///...``).
        study_name: the study's name in that storage.
        trial_number: the trial's number in the study.
        monitor: the validation metric reported (``val/auc``, ``val/iou``...).
        mode: ``max`` or ``min``: which value of ``monitor`` is best.
        output_dir: the run folder, where ``optuna_trial.json`` is written.
        pruner: the sweep's ``sweep.pruner`` block (see :func:`build_pruner`).

    Only rank 0 talks to the storage; every rank stops together when the trial is pruned.
    """

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str, mode: str,
                 output_dir: str, pruner: Mapping[str, Any] | None = None) -> None:
        import optuna

        study = optuna.load_study(study_name=str(study_name), storage=str(storage), pruner=build_pruner(pruner))
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(trial_number))
        self.trial = optuna.trial.Trial(study, trial_id)
        self.monitor = str(monitor)
        self.mode = str(mode)
        self.output_dir = Path(output_dir)
        self.values: list[float] = []
        self.pruned = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if not math.isfinite(value):
            return
        self.values.append(value)
        prune = False
        if trainer.is_global_zero:
            self.trial.report(value, step=trainer.current_epoch)
            prune = self.trial.should_prune()
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned = True
            trainer.should_stop = True

    def best(self) -> float | None:
        """The best reported value (``max`` or ``min`` by ``mode``), None when nothing was reported."""
        if not self.values:
            return None
        return max(self.values) if self.mode == "max" else min(self.values)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            atomic_write_json(self.output_dir / RESULT_FILENAME, self.result())

    def result(self) -> dict[str, Any]:
        """``{"value": best or None, "pruned": bool, "values": [...], "monitor": str}``."""
        return {"value": self.best(), "pruned": self.pruned, "values": self.values, "monitor": self.monitor}
