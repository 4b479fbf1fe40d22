"""Pieces shared by the training and evaluation runs: instantiating callbacks and loggers, run directories."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from faceforge.errors import FaceforgeError


class RunConfigError(FaceforgeError, ValueError):
    """The run's configuration asks for something that cannot be done (the message says what to change)."""


def project_root() -> Path:
    """The project folder (``FACEFORGE_ROOT``, set by train.py / evaluate.py; else the current directory)."""
    return Path(os.environ.get("FACEFORGE_ROOT", ".")).resolve()


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a ``_target_`` (callbacks, loggers), in order."""
    if not group:
        return []
    return [instantiate(entry, _convert_="all") for entry in group.values()
            if isinstance(entry, DictConfig) and "_target_" in entry]


def to_primitive(value: Any) -> Any:
    """OmegaConf containers to plain dicts/lists (resolved); other values unchanged."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def metrics_to_floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Lightning's ``callback_metrics`` (0-d tensors) as a dict of Python floats."""
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out
