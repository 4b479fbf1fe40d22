"""Checkpoints that hold primitive data only, and rebuilding a task from one.

Lightning checkpoints written by faceforge tasks carry ``hyper_parameters`` made of primitives (the network's
Hydra config as a YAML string in ``net_spec``) and a ``faceforge`` entry naming the task class, so that
:func:`load_task` rebuilds the task with ``torch.load(weights_only=True)``: no pickled objects, no code run on load.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

import faceforge
from faceforge.errors import FaceforgeError


class CheckpointError(FaceforgeError, ValueError):
    """A checkpoint is missing, unreadable, or lacks what faceforge needs to rebuild the task."""


class FaceforgeCheckpointMixin:
    """Adds the task's class path, faceforge's version and the training dataset's name (``trained_on``, from the
    data module's ``name`` when there is one) to every checkpoint (LightningModule mixin)."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        trainer = getattr(self, "_trainer", None)
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        checkpoint["faceforge"] = {"task_class": f"{cls.__module__}.{cls.__qualname__}",
                                   "version": faceforge.__version__,
                                   "trained_on": str(getattr(datamodule, "name", "") or "")}


def read_checkpoint(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (no pickled objects, no code run).

    Raises:
        CheckpointError: the file is missing or cannot be read that way.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} could not be read with weights_only=True: {exc}") from exc


def load_task(ckpt_path: str | Path | dict[str, Any], map_location: str | torch.device = "cpu") -> Any:
    """Rebuild a faceforge task (network + weights) from a checkpoint, loading it with ``weights_only=True``.

    Args:
        ckpt_path: a ``.ckpt`` written by ``train.py``, or its contents already read by :func:`read_checkpoint`.
        map_location: device for the tensors.

    Returns:
        The task (a LightningModule) in eval mode.

    Raises:
        CheckpointError: the file is missing or unreadable, was not written by a faceforge task, or its
            ``net_spec`` does not build a network whose weights match.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if isinstance(ckpt_path, dict):
        ckpt, path = ckpt_path, "(checkpoint contents)"
    else:
        ckpt, path = read_checkpoint(ckpt_path, map_location), Path(ckpt_path)
    info = ckpt.get("faceforge")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if not info or "task_class" not in info:
        raise CheckpointError(f"checkpoint {path} was not written by a faceforge task (no 'faceforge' entry)")
    if not hparams.get("net_spec"):
        raise CheckpointError(f"checkpoint {path} has no 'net_spec' hyperparameter: cannot rebuild the network")
    module_name, _, cls_name = info["task_class"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} names task class {info['task_class']!r}, not found") from exc
    net = instantiate(OmegaConf.create(hparams["net_spec"]), _convert_="all")
    task = cls(net=net, **hparams)
    try:
        task.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the network its net_spec builds: {exc}") \
            from exc
    return task.eval()
