"""What a model needs of its data (``model.input``), handed to the data config before the data module is built.

A model config declares the input its network takes, e.g. ``model=resnext_lstm``::

    input: {image_size: 112, clip_length: 10, batch_size: 4}

and a 3D model the volume shape it predicts, read from the data (``{image_size: ${data.image_size}, volume_depth:
${data.volume_depth}}``). Data configs hold no model hyperparameters: ``train.py`` copies these values into
``cfg.data`` (so ``data.faces_dir`` and the builder follow them by interpolation), except where the command line sets
``data.<key>`` itself (then the data's value wins and is written back into ``model.input``, so the checkpoint records
what the network was trained on). The task stores ``input`` as a primitive hyperparameter, and ``evaluate.py``
serves a checkpoint's network the same input without repeating the training options. Checkpoints written before
``model.input`` existed carry the same information in their data module's hyperparameters
(:func:`legacy_input_needs`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from faceforge.runs.common import RunConfigError

__all__ = ["INPUT_KEYS", "LEGACY_DATA_KEYS", "apply_input_needs", "command_line_keys", "legacy_input_needs",
           "plain_input_needs"]

#: Data-module hyperparameters of older checkpoints that described the network's input.
LEGACY_DATA_KEYS = ("image_size", "clip_length", "clip_sampling", "clips_per_video")
#: The only data settings an input need may set: the shape of what the network takes (a crop side, a clip length,
#: clips per batch, a volume depth) and, in older checkpoints, how clips were placed. Where data are read or
#: written (``root``, ``faces_dir``, the builder ...) is never a model's, least of all a checkpoint's, to decide.
INPUT_KEYS = ("image_size", "clip_length", "batch_size", "volume_depth", "clip_sampling", "clips_per_video")


def command_line_keys() -> set[str]:
    """Config keys set on the running Hydra job's command line (``data.clip_length=10`` -> ``data.clip_length``);
    empty outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task
    except ValueError:  # not running under Hydra
        return set()
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides}


def plain_input_needs(needs: Any, where: str) -> dict[str, Any]:
    """Check input needs read from a config or a checkpoint: a mapping of :data:`INPUT_KEYS` names to scalars (int,
    float, bool, str, None), no Hydra control key, no ``${...}`` interpolation in a string. Returns a plain dict.

    Raises:
        RunConfigError: anything else; the message names ``where`` (e.g. ``the checkpoint x.ckpt's input``).
    """
    if needs is None:
        return {}
    if OmegaConf.is_config(needs):
        needs = OmegaConf.to_container(needs, resolve=True)
    if not isinstance(needs, Mapping):
        raise RunConfigError(f"{where} must be a mapping of data settings, got {type(needs).__name__}")
    out: dict[str, Any] = {}
    for key, value in needs.items():
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            raise RunConfigError(f"{where}: {key!r} is not a data setting name")
        if key not in INPUT_KEYS:
            raise RunConfigError(f"{where}: {key!r} is not an input setting (allowed: {', '.join(INPUT_KEYS)}); "
                                 f"where data are read or written is the data config's, not the model's")
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise RunConfigError(f"{where}.{key} must be a plain value, got {type(value).__name__}")
        if isinstance(value, str) and "${" in value:
            raise RunConfigError(f"{where}.{key} holds a '${{...}}' interpolation; input settings must be plain values")
        out[key] = value
    return out


def legacy_input_needs(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The input needs of a checkpoint written before ``model.input``: its data module's ``image_size``,
    ``clip_length``, ``clip_sampling``, ``clips_per_video`` and, for 3D data, ``network.image_size`` /
    ``network.volume_depth`` (as ``image_size`` / ``volume_depth``). Empty when it holds none.

    Raises:
        RunConfigError: the saved values are not plain (see :func:`plain_input_needs`).
    """
    saved = ckpt.get("datamodule_hyper_parameters") or {}
    if not isinstance(saved, Mapping):
        raise RunConfigError(f"the checkpoint's datamodule_hyper_parameters is a {type(saved).__name__}, not a "
                             f"mapping")
    needs = {k: saved[k] for k in LEGACY_DATA_KEYS if k in saved}
    network = saved.get("network")
    if isinstance(network, Mapping):
        bad = [k for k in network if not isinstance(k, str) or k.startswith("_")]
        if bad:
            raise RunConfigError(f"the checkpoint's datamodule_hyper_parameters.network: key {bad[0]!r} is not "
                                 f"allowed (no _target_ or other Hydra control key)")
        needs.update({k: network[k] for k in ("image_size", "volume_depth") if k in network})
    return plain_input_needs(needs, "the checkpoint's datamodule_hyper_parameters")


def apply_input_needs(cfg: DictConfig, needs: Mapping[str, Any], explicit: set[str] | None = None,
                      where: str = "model.input", write_back: bool = False) -> dict[str, Any]:
    """Copy input needs into ``cfg.data`` before the data module is instantiated.

    Args:
        cfg: the run configuration (``cfg.data`` is changed in place).
        needs: setting -> plain value (see :func:`plain_input_needs`).
        explicit: keys set on the command line (:func:`command_line_keys`); ``data.<key>`` there wins.
        where: how messages name the needs (``model.input``, ``the checkpoint x.ckpt``).
        write_back: store the value finally served in ``cfg.model.input`` (training: the checkpoint then records
            what the network was trained on).

    Returns:
        The settings changed in ``cfg.data`` (key -> new value).

    Raises:
        RunConfigError: a need the data config has no setting for (the message names the data config).
    """
    explicit = explicit or set()
    changed: dict[str, Any] = {}
    for key, value in plain_input_needs(needs, where).items():
        if key not in cfg.data:
            raise RunConfigError(f"{where}.{key}: data={cfg.data.get('name', '?')} has no setting '{key}', so it "
                                 f"cannot serve this model's input; pair the model with data that has it")
        if f"data.{key}" in explicit:
            if write_back and cfg.data[key] != value:
                cfg.model.input[key] = cfg.data[key]
            continue
        if cfg.data[key] != value:
            cfg.data[key] = value
            changed[key] = value
    return changed
