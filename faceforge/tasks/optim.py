"""Optimisers and learning-rate schedules built from primitive config dicts.

Tasks receive ``optimizer`` / ``scheduler`` as plain dicts (``{"name": "adam", "lr": 1e-3}``), not Hydra
partials, so that their hyperparameters stay primitive and checkpoints load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from faceforge.errors import FaceforgeError

_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


class OptimConfigError(FaceforgeError, ValueError):
    """An optimiser or scheduler config names an unknown kind or an invalid option."""


def build_optimizer(params: Iterable[torch.nn.Parameter], spec: Mapping[str, Any] | None) -> torch.optim.Optimizer:
    """Build an optimiser from ``{"name": ..., **kwargs}``.

    Args:
        params: parameters to optimise.
        spec: ``name`` is one of adam, adamw, sgd, rmsprop; ``trainable_only`` (default True) keeps only the
            parameters with ``requires_grad`` (a frozen backbone's weights then get neither weight decay nor
            optimiser state); other keys go to the torch constructor (``lr``, ``weight_decay``, ``betas``,
            ``momentum``, ...). ``None`` means Adam with lr 1e-3.

    Raises:
        OptimConfigError: unknown name, a keyword the optimiser does not take, or no trainable parameter.
    """
    spec = dict(spec or {"name": "adam", "lr": 1e-3})
    name = str(spec.pop("name", "adam")).lower()
    params = list(params)
    if bool(spec.pop("trainable_only", True)):
        params = [p for p in params if p.requires_grad]
    if not params:
        raise OptimConfigError("no trainable parameter (all have requires_grad=False): unfreeze part of the "
                               "network, e.g. model.net.train_last_stage=true")
    if name not in _OPTIMIZERS:
        raise OptimConfigError(f"unknown optimizer {name!r}; choose one of {sorted(_OPTIMIZERS)}")
    if "betas" in spec:
        spec["betas"] = tuple(spec["betas"])
    try:
        return _OPTIMIZERS[name](params, **spec)
    except TypeError as exc:
        raise OptimConfigError(f"optimizer {name!r} rejected options {sorted(spec)}: {exc}") from exc


def build_scheduler(optimizer: torch.optim.Optimizer, spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Build a Lightning ``lr_scheduler_config`` dict from ``{"name": ..., **kwargs}``.

    Supported names: ``step`` (StepLR: step_size, gamma), ``multistep`` (MultiStepLR: milestones, gamma),
    ``cosine`` (CosineAnnealingLR: T_max), ``plateau`` (ReduceLROnPlateau on ``monitor``, default ``val/loss``).
    Schedules step once per epoch. ``None`` means a constant learning rate.

    Raises:
        OptimConfigError: unknown name or invalid options.
    """
    if not spec:
        return None
    spec = dict(spec)
    name = str(spec.pop("name")).lower()
    monitor = spec.pop("monitor", "val/loss")
    kinds = {
        "step": torch.optim.lr_scheduler.StepLR,
        "multistep": torch.optim.lr_scheduler.MultiStepLR,
        "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
        "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau,
    }
    if name not in kinds:
        raise OptimConfigError(f"unknown scheduler {name!r}; choose one of {sorted(kinds)}")
    if "milestones" in spec:
        spec["milestones"] = list(spec["milestones"])
    try:
        sched = kinds[name](optimizer, **spec)
    except TypeError as exc:
        raise OptimConfigError(f"scheduler {name!r} rejected options {sorted(spec)}: {exc}") from exc
    out: dict[str, Any] = {"scheduler": sched, "interval": "epoch", "frequency": 1}
    if name == "plateau":
        out["monitor"] = monitor
    return out


def configure_optimization(parameters: Iterable[torch.nn.Parameter], optimizer: Mapping[str, Any] | None,
                           scheduler: Mapping[str, Any] | None) -> Any:
    """What a task's ``configure_optimizers`` returns: the optimiser alone, or it with its schedule.

    Raises:
        OptimConfigError: see :func:`build_optimizer` and :func:`build_scheduler`.
    """
    opt = build_optimizer(parameters, optimizer)
    sched = build_scheduler(opt, scheduler)
    return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
