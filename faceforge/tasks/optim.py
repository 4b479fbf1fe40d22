"""Optimisers and learning-rate schedules built from primitive ``_target_`` specs.

Tasks receive ``optimizer`` / ``scheduler`` as plain dicts, e.g. ``{"_target_": "torch.optim.RMSprop", "lr": 1e-4}``
and ``{"_target_": "torch.optim.lr_scheduler.MultiStepLR", "milestones": [40], "gamma": 0.1}``, not Hydra partials:
their hyperparameters stay primitive, so checkpoints load with ``torch.load(weights_only=True)``. A ``_target_`` is
looked up in an ALLOWLIST of ``torch.optim`` / ``torch.optim.lr_scheduler`` classes (:data:`OPTIMIZERS`,
:data:`SCHEDULERS`); nothing is imported from the spec, so a spec read from a checkpoint cannot run code. Specs of
older checkpoints (``{"name": "rmsprop", ...}``, ``{"name": "multistep", ...}``) map to the same classes.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from faceforge.errors import FaceforgeError

__all__ = ["LEGACY_NAMES", "OPTIMIZERS", "SCHEDULERS", "OptimConfigError", "build_optimizer", "build_scheduler",
           "configure_optimization", "optimizer_class", "scheduler_class"]

_O = torch.optim
_S = torch.optim.lr_scheduler

#: The optimisers a spec may name, by their full ``_target_`` path.
OPTIMIZERS: dict[str, type] = {f"torch.optim.{c.__name__}": c for c in (
    _O.Adam, _O.AdamW, _O.SGD, _O.RMSprop, _O.Adagrad, _O.Adadelta, _O.Adamax, _O.NAdam, _O.RAdam)}

#: The learning-rate schedulers a spec may name, by their full ``_target_`` path. They step once per epoch.
SCHEDULERS: dict[str, type] = {f"torch.optim.lr_scheduler.{c.__name__}": c for c in (
    _S.StepLR, _S.MultiStepLR, _S.ExponentialLR, _S.CosineAnnealingLR, _S.CosineAnnealingWarmRestarts,
    _S.ReduceLROnPlateau, _S.LinearLR, _S.ConstantLR, _S.PolynomialLR)}

#: The ``name`` values of the older ``{"name": ...}`` specs (checkpoints written before ``_target_`` specs).
LEGACY_NAMES: dict[str, str] = {
    "adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW", "sgd": "torch.optim.SGD",
    "rmsprop": "torch.optim.RMSprop", "step": "torch.optim.lr_scheduler.StepLR",
    "multistep": "torch.optim.lr_scheduler.MultiStepLR", "cosine": "torch.optim.lr_scheduler.CosineAnnealingLR",
    "plateau": "torch.optim.lr_scheduler.ReduceLROnPlateau",
}

DEFAULT_OPTIMIZER: dict[str, Any] = {"_target_": "torch.optim.Adam", "lr": 1.0e-3}


class OptimConfigError(FaceforgeError, ValueError):
    """An optimiser or scheduler spec names a class outside the allowlist or an invalid option."""


def _lookup(spec: dict[str, Any], table: Mapping[str, type], what: str) -> tuple[str, type]:
    """Pop ``_target_`` (or the legacy ``name``) from ``spec`` and return (target, allowlisted class)."""
    if "_target_" in spec:
        target = str(spec.pop("_target_"))
        spec.pop("name", None)
    elif "name" in spec:
        name = str(spec.pop("name")).lower()
        target = LEGACY_NAMES.get(name, name)
    else:
        raise OptimConfigError(f"{what} spec {sorted(spec)} has no _target_ (e.g. {next(iter(table))})")
    for bad in ("_partial_", "_args_", "_recursive_", "_convert_"):
        if bad in spec:
            raise OptimConfigError(f"{what} spec of {target}: the Hydra key {bad!r} is not allowed (options are plain "
                                   f"keyword arguments)")
    cls = table.get(target)
    if cls is None:
        short = {t.rsplit(".", 1)[-1]: t for t in table}
        cls = table.get(short.get(target, ""))  # a bare class name ("RMSprop") is accepted too
        if cls is None:
            raise OptimConfigError(f"{what} {target!r} is not allowed; choose one of {sorted(table)}")
        target = short[target]
    return target, cls


def optimizer_class(spec: Mapping[str, Any]) -> type:
    """The allowlisted optimiser class a spec names (``_target_`` or a legacy ``name``).

    Raises:
        OptimConfigError: no target, a target outside :data:`OPTIMIZERS`, or a Hydra control key.
    """
    return _lookup(dict(spec), OPTIMIZERS, "optimizer")[1]


def scheduler_class(spec: Mapping[str, Any]) -> type:
    """The allowlisted scheduler class a spec names (``_target_`` or a legacy ``name``).

    Raises:
        OptimConfigError: no target, a target outside :data:`SCHEDULERS`, or a Hydra control key.
    """
    return _lookup(dict(spec), SCHEDULERS, "scheduler")[1]


def build_optimizer(params: Iterable[torch.nn.Parameter], spec: Mapping[str, Any] | None) -> torch.optim.Optimizer:
    """Build an optimiser from ``{"_target_": "torch.optim.X", **kwargs}``.

    Args:
        params: parameters to optimise.
        spec: ``_target_`` one of :data:`OPTIMIZERS` (or a legacy ``name``: adam, adamw, sgd, rmsprop);
            ``trainable_only`` (default True) keeps only the parameters with ``requires_grad`` (a frozen backbone's
            weights then get neither weight decay nor optimiser state); other keys go to the torch constructor
            (``lr``, ``weight_decay``, ``betas``, ``momentum``, ...). ``None`` means Adam with lr 1e-3.

    Raises:
        OptimConfigError: a class outside the allowlist, a keyword the optimiser does not take, or no trainable
            parameter.
    """
    spec = dict(spec or DEFAULT_OPTIMIZER)
    target, cls = _lookup(spec, OPTIMIZERS, "optimizer")
    params = list(params)
    if bool(spec.pop("trainable_only", True)):
        params = [p for p in params if p.requires_grad]
    if not params:
        raise OptimConfigError("no trainable parameter (all have requires_grad=False): unfreeze part of the "
                               "network, e.g. model.net.train_last_stage=true")
    if "betas" in spec:
        spec["betas"] = tuple(spec["betas"])
    try:
        return cls(params, **spec)
    except (TypeError, ValueError) as exc:
        raise OptimConfigError(f"optimizer {target} rejected options {sorted(spec)}: {exc}") from exc


def build_scheduler(optimizer: torch.optim.Optimizer, spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Build a Lightning ``lr_scheduler_config`` dict from ``{"_target_": "torch.optim.lr_scheduler.X", **kwargs}``.

    ``_target_`` is one of :data:`SCHEDULERS` (or a legacy ``name``: step, multistep, cosine, plateau); ``monitor``
    (ReduceLROnPlateau only, default ``val/loss``) names the metric it follows. Schedules step once per epoch.
    ``None`` (or an empty spec) means a constant learning rate.

    Raises:
        OptimConfigError: a class outside the allowlist or invalid options.
    """
    if not spec:
        return None
    spec = dict(spec)
    target, cls = _lookup(spec, SCHEDULERS, "scheduler")
    monitor = spec.pop("monitor", "val/loss")
    if "milestones" in spec:
        spec["milestones"] = [int(m) for m in spec["milestones"]]
    try:
        sched = cls(optimizer, **spec)
    except (TypeError, ValueError) as exc:
        raise OptimConfigError(f"scheduler {target} rejected options {sorted(spec)}: {exc}") from exc
    out: dict[str, Any] = {"scheduler": sched, "interval": "epoch", "frequency": 1}
    if cls is _S.ReduceLROnPlateau:
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
