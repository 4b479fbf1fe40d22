"""Checkpoints that hold primitive data only, and rebuilding a task from one without running code from the file.

Lightning checkpoints written by faceforge tasks carry ``hyper_parameters`` made of primitives (the network's
Hydra config as a YAML string in ``net_spec``) and a ``faceforge`` entry naming the task by its registry name
(``task``; older checkpoints hold the class path in ``task_class``). :func:`load_task` reads the file with
``torch.load(weights_only=True)`` (tensors and primitive values only: no pickled objects) and rebuilds the network
and the task through faceforge's own registry (:mod:`faceforge.registry`): only registered classes are built, with
primitive keyword arguments, never with ``hydra.utils.instantiate`` and never from an import path or ``_target_``
that the file supplies. A crafted checkpoint naming ``builtins.open``, ``torch.load``, ``os.system`` or a class
outside faceforge is refused with a :class:`CheckpointError` before anything is imported or called.
"""
from __future__ import annotations

import inspect
import pickle
import re
from pathlib import Path
from typing import Any

import torch

import faceforge
from faceforge.errors import FaceforgeError
from faceforge.registry import RegistryError, build_model, check_primitive, registry_name, task_class

#: Longest ``net_spec`` YAML accepted (a real one is well under a kilobyte).
MAX_NET_SPEC_CHARS = 100_000

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_MAGIC = b"\x80"      # the legacy format starts with a pickle protocol byte
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class CheckpointError(FaceforgeError, ValueError):
    """A checkpoint is missing, unreadable, or lacks what faceforge needs to rebuild the task."""


class FaceforgeCheckpointMixin:
    """Adds a ``faceforge`` entry to every checkpoint (LightningModule mixin): the task's registry name (``task``,
    see :data:`faceforge.registry.TASKS`; empty for an unregistered class, whose checkpoints cannot be rebuilt), its
    class path (``task_class``, informative only: it is never imported), faceforge's version and the training
    dataset's name (``trained_on``, from the data module's ``name`` when there is one)."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        trainer = getattr(self, "_trainer", None)
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        checkpoint["faceforge"] = {"task": registry_name(cls) or "",
                                   "task_class": f"{cls.__module__}.{cls.__qualname__}",
                                   "version": faceforge.__version__,
                                   "trained_on": str(getattr(datamodule, "name", "") or "")}


def _not_a_checkpoint(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a checkpoint: {why}")


def read_checkpoint(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (tensors and primitive values only; no code run).

    Files that are not PyTorch checkpoints (empty, random bytes, an HDF5 file, a damaged archive) are reported
    as such; a checkpoint holding pickled Python objects is refused (it is never loaded another way). The messages
    never suggest ``weights_only=False``.

    Args:
        ckpt_path: the ``.ckpt`` file.
        map_location: device for the tensors.

    Returns:
        The checkpoint's top-level dict.

    Raises:
        CheckpointError: the file is missing, not a PyTorch checkpoint, damaged, holds pickled objects, or its
            top level is not a dict.
    """
    path = Path(ckpt_path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise _not_a_checkpoint(path, "it is not a file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc.strerror or exc}") from None
    if not head:
        raise _not_a_checkpoint(path, "the file is empty (0 bytes)")
    if head.startswith(_HDF5_MAGIC):
        raise _not_a_checkpoint(path, "it is an HDF5 file (the MesoNet authors' Keras weights are evaluated with "
                                      "`python evaluate.py ckpt_path=FILE.h5`)")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise _not_a_checkpoint(path, "it is not a PyTorch checkpoint file (no torch.save header)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise _not_a_checkpoint(path, "the file is damaged or of another kind (PyTorch cannot read it as "
                                          "tensors and primitive values)") from None
        raise CheckpointError(f"checkpoint {path} holds pickled Python objects (e.g. {found.group(1)}), not only "
                              "tensors and primitive values; faceforge reads checkpoints as data only and refuses "
                              "it (loading it would run code from the file)") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, ValueError, ... on bad files
        raise _not_a_checkpoint(path, f"the file is damaged or of another kind ({type(exc).__name__} while reading "
                                      "it as a PyTorch checkpoint)") from None
    if not isinstance(obj, dict):
        raise _not_a_checkpoint(path, f"it holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def parse_net_spec(net_spec: Any, where: str = "checkpoint") -> dict[str, Any]:
    """Parse a ``net_spec`` YAML string with ``yaml.safe_load`` (no tags, no interpolation) into a dict.

    Raises:
        CheckpointError: not a non-empty string, too long, not YAML, or not a mapping.
    """
    import yaml

    if not isinstance(net_spec, str) or not net_spec.strip():
        raise CheckpointError(f"{where}: 'net_spec' must be a non-empty YAML string, got {type(net_spec).__name__}")
    if len(net_spec) > MAX_NET_SPEC_CHARS:
        raise CheckpointError(f"{where}: 'net_spec' is {len(net_spec)} characters long (at most "
                              f"{MAX_NET_SPEC_CHARS})")
    try:
        spec = yaml.safe_load(net_spec)
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{where}: 'net_spec' is not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{where}: 'net_spec' must describe a mapping, got {type(spec).__name__}")
    return spec


#: hyperparameters holding an optimiser / scheduler spec (``discriminator_optimizer``: the GAN task's second one)
_OPTIM_SPEC_KEYS = ("optimizer", "discriminator_optimizer", "scheduler")


def _checked_optim_spec(spec: Any, key: str, where: str) -> dict[str, Any] | None:
    """An optimiser / scheduler spec from a checkpoint: None, or a primitive dict whose ``_target_`` (or legacy
    ``name``) is in :mod:`faceforge.tasks.optim`'s allowlist; nothing is imported.

    Raises:
        CheckpointError: a non-primitive value, a Hydra control key, or a ``_target_`` outside the allowlist.
        faceforge.registry.SpecError: from :func:`~faceforge.registry.check_primitive`.
    """
    from faceforge.tasks.optim import OptimConfigError, optimizer_class, scheduler_class

    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{where}: hyper_parameters.{key} must be a mapping or null, got {type(spec).__name__}")
    rest = check_primitive({k: v for k, v in spec.items() if k != "_target_"}, f"hyper_parameters.{key}")
    target = spec.get("_target_")
    if target is not None and not isinstance(target, str):
        raise CheckpointError(f"{where}: hyper_parameters.{key}._target_ must be a string")
    try:
        (scheduler_class if key == "scheduler" else optimizer_class)(spec)
    except OptimConfigError as exc:
        raise CheckpointError(f"{where}: hyper_parameters.{key}: _target_ {target or spec.get('name')!r}: "
                              f"{exc}") from None
    return spec if target is None else {"_target_": target, **rest}


def _task_kwargs(cls: type, hparams: dict[str, Any], where: str) -> dict[str, Any]:
    """The checkpoint's hyperparameters checked against ``cls.__init__``: primitives only, no ``_target_`` or
    other Hydra control key anywhere, and only parameters the task takes (``net`` excluded)."""
    hparams = dict(hparams)
    optim_specs = {key: hparams.pop(key) for key in _OPTIM_SPEC_KEYS if key in hparams}
    try:
        kwargs = check_primitive(hparams, "hyper_parameters")
        for key, spec in optim_specs.items():
            kwargs[key] = _checked_optim_spec(spec, key, where)
    except RegistryError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    params = inspect.signature(cls.__init__).parameters
    accepts = {n for n, p in params.items() if n not in ("self", "net")
               and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    unknown = sorted(set(kwargs) - accepts)
    if unknown:
        raise CheckpointError(f"{where}: hyperparameters {unknown} are not parameters of {cls.__name__} (it takes "
                              f"{sorted(accepts)})")
    return kwargs


def load_task(ckpt_path: str | Path | dict[str, Any], map_location: str | torch.device = "cpu",
              source: str | Path | None = None) -> Any:
    """Rebuild a faceforge task (network + weights) from a checkpoint through faceforge's registry.

    The file is read with ``torch.load(weights_only=True)``; the task class comes from
    :data:`faceforge.registry.TASKS` (the checkpoint's ``faceforge.task`` registry name, or for older checkpoints a
    ``task_class`` that is exactly a registered class path); the network is built by
    :func:`faceforge.registry.build_model` from ``net_spec`` (registered networks only, primitive keyword
    arguments, no Hydra); the other hyperparameters must be primitives the task's constructor takes.

    Args:
        ckpt_path: a ``.ckpt`` written by ``train.py``, or its contents already read by :func:`read_checkpoint`.
        map_location: device for the tensors.
        source: the file the contents came from, for messages (when ``ckpt_path`` is the contents).

    Returns:
        The task (a LightningModule) in eval mode.

    Raises:
        CheckpointError: the file is missing, not a checkpoint or unreadable as data only; it was not written by
            a faceforge task; it names a task or network outside the registry, a Hydra control key (``_args_``,
            ``_partial_``, ...), non-primitive or unknown arguments; or its weights do not fit the network.
    """
    if isinstance(ckpt_path, dict):
        ckpt, where = ckpt_path, (f"checkpoint {Path(source)}" if source is not None else "checkpoint (contents)")
    else:
        ckpt, where = read_checkpoint(ckpt_path, map_location), f"checkpoint {Path(ckpt_path)}"
    info = ckpt.get("faceforge")
    if not isinstance(info, dict) or not (info.get("task") or info.get("task_class")):
        raise CheckpointError(f"{where} was not written by a faceforge task (no 'faceforge' entry naming the task)")
    try:
        cls = task_class(info.get("task") or info.get("task_class"))
    except RegistryError as exc:
        raise CheckpointError(f"{where}: task: {exc}") from None
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{where} has no 'hyper_parameters' mapping: cannot rebuild the task")
    kwargs = _task_kwargs(cls, dict(hparams), where)
    if not kwargs.get("net_spec"):
        raise CheckpointError(f"{where} has no 'net_spec' hyperparameter: cannot rebuild the network")
    spec = parse_net_spec(kwargs["net_spec"], where)
    try:
        net = build_model(spec)
    except RegistryError as exc:
        raise CheckpointError(f"{where}: net_spec: {exc}") from None
    except FaceforgeError as exc:
        raise CheckpointError(f"{where}: net_spec builds no network: {exc}") from None
    try:
        task = cls(net=net, **kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: its hyperparameters do not build a {cls.__name__}: {exc}") from None
    state_dict = ckpt.get("state_dict")
    if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise CheckpointError(f"{where} has no 'state_dict' of named tensors")
    try:
        task.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit the network its net_spec builds: {exc}") from None
    return task.eval()
