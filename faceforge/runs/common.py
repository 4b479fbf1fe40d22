"""Pieces shared by the training and evaluation runs: instantiating callbacks and loggers, run directories."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

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


def remove_empty_folder(path: str | Path) -> bool:
    """Remove ``path`` if it is an empty folder (the run folder Hydra made for a run refused by its checks).

    Returns:
        Whether it was removed; a folder holding anything, or a missing path, is left alone (never raises).
    """
    try:
        Path(path).rmdir()  # fails unless the folder is empty
        return True
    except OSError:
        return False


def metrics_to_floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Lightning's ``callback_metrics`` (0-d tensors) as a dict of Python floats."""
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out
