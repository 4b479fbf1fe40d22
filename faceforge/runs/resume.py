"""Resuming a run: what must match before anything is written, and the run folder's record of every attempt.

A run folder (``logs/train/runs/<run_name>``) can be trained by several *attempts*: the first ``python train.py
run_name=NAME``, then each ``python train.py run_name=NAME ckpt_path=last`` after a stop, a kill or a crash.

* :func:`check_resume` compares the checkpoint a run resumes from with the new configuration and refuses, in one
  line (:class:`ResumeError`), a resume that cannot work or would train something else: another task or network
  (``model.*``, the network spec stored in the checkpoint), another image size or clip length (frame and clip
  data), another volume size (3D data). It runs before anything is written into the run folder.
* :func:`check_fresh_run_folder` refuses to start a new run (no ``ckpt_path``) over a folder whose checkpoints an
  earlier run wrote (it would overwrite them).
* :func:`start_attempt` then records the attempt: ``run_info.json`` holds a list ``attempts`` (command, start time,
  git state, packages, what it resumed from, its config file, the settings it changed) and the W&B run id that
  every attempt logs to (``wandb_run_id``); the first attempt's resolved config is ``config.yaml`` and its Hydra
  record ``.hydra/``; attempt ``n > 1`` writes ``attempts/NNN/config.yaml`` and ``attempts/NNN/.hydra/``, so
  nothing of an earlier attempt is overwritten. :func:`finish_attempt` records how the attempt ended.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from faceforge.errors import FaceforgeError
from faceforge.utils.atomic import atomic_write_json, atomic_write_text
from faceforge.utils.mappings import flatten_dotted, plain
from faceforge.utils.run_info import collect_run_info

__all__ = ["ResumeError", "changed_settings", "check_fresh_run_folder", "check_resume", "checkpoint_position",
           "finish_attempt", "start_attempt", "write_hydra_record"]

log = logging.getLogger(__name__)

RUN_INFO = "run_info.json"
#: Task hyperparameters that may differ on a resume (paths used only when the network is first built).
_NET_KEYS_FREE = ("pretrained_weights",)
#: Settings whose change on a resume is expected and does not make it differ from an uninterrupted run.
_HARMLESS_PREFIXES = ("ckpt_path", "trainer.max_epochs", "trainer.min_epochs", "trainer.max_steps", "logger",
                      "data.num_workers", "data.pin_memory", "data.persistent_workers", "test", "tags", "paths",
                      "hydra", "trainer.enable_progress_bar")


class ResumeError(FaceforgeError, ValueError):
    """A resume that cannot work (another model, another data shape, a used run folder); the message says what
    differs and what to do, on one line."""


# ---------------------------------------------------------------------------------------------------- checks
def checkpoint_position(ckpt: Mapping[str, Any], where: str | Path = "the checkpoint") -> dict[str, Any]:
    """Where a checkpoint stands: ``{"epoch", "global_step", "mid_epoch"}`` (epoch 0-based, as Lightning stores).

    Args:
        ckpt: the checkpoint's contents.
        where: the checkpoint's path, for messages.

    Raises:
        ResumeError: ``epoch`` / ``global_step`` are not integers or ``callbacks`` is not a mapping.
    """
    callbacks = ckpt.get("callbacks") or {}
    epoch, step = ckpt.get("epoch", -1), ckpt.get("global_step", -1)
    if not isinstance(callbacks, Mapping) or any(not isinstance(v, int) or isinstance(v, bool) for v in (epoch, step)):
        raise ResumeError(f"{where}: its epoch ({epoch!r}), global_step ({step!r}) or callbacks "
                          f"({type(callbacks).__name__}) are not what Lightning writes: it cannot be resumed")
    mid = any(isinstance(v, Mapping) and v.get("mid_epoch") for v in callbacks.values())
    return {"epoch": epoch, "global_step": step, "mid_epoch": bool(mid)}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return float(a) == float(b)
    return plain(a) == plain(b)


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 60 else s[:57] + "..."


def _net_differences(ckpt: Mapping[str, Any], cfg: DictConfig) -> list[str]:
    hp = ckpt.get("hyper_parameters") or {}
    spec = hp.get("net_spec")
    if not isinstance(spec, str):
        return ["the checkpoint has no network spec (net_spec)"]
    try:
        stored = yaml.safe_load(spec) if len(spec) < 100_000 else None
    except yaml.YAMLError:
        stored = None
    if not isinstance(stored, Mapping):
        return ["the checkpoint's network spec (net_spec) cannot be read"]
    now = OmegaConf.to_container(cfg.model.net, resolve=True)
    old_flat, new_flat = flatten_dotted(stored), flatten_dotted(now)
    diffs = []
    for key in sorted(set(old_flat) | set(new_flat)):
        if key.split(".")[-1] in _NET_KEYS_FREE:
            continue
        a, b = old_flat.get(key, "<absent>"), new_flat.get(key, "<absent>")
        if not _same(a, b):
            diffs.append(f"model.net.{key}: {_short(a)} -> {_short(b)}")
    return diffs


def _task_differences(ckpt: Mapping[str, Any], cfg: DictConfig) -> list[str]:
    diffs = []
    info = ckpt.get("faceforge") or {}
    stored_cls = str(info.get("task_class") or info.get("task") or "")
    want_cls = str(cfg.model.get("_target_", ""))
    if not stored_cls:
        diffs.append("the checkpoint was not written by a faceforge task")
    elif stored_cls.rsplit(".", 1)[-1] != want_cls.rsplit(".", 1)[-1]:
        diffs.append(f"task: {stored_cls.rsplit('.', 1)[-1]} -> {want_cls.rsplit('.', 1)[-1]}")
    hp = ckpt.get("hyper_parameters") or {}
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    for key in sorted(set(hp) & set(model)):
        if key in ("net", "net_spec", "_target_"):
            continue
        old_flat, new_flat = flatten_dotted(hp[key], key), flatten_dotted(model[key], key)
        for k in sorted(set(old_flat) | set(new_flat)):
            a, b = old_flat.get(k, "<absent>"), new_flat.get(k, "<absent>")
            if not _same(a, b):
                diffs.append(f"model.{k}: {_short(a)} -> {_short(b)}")
    return diffs


def _data_shape(values: Mapping[str, Any]) -> dict[str, Any]:
    """``image_size``, ``clip_length`` and ``volume_depth`` of data settings; older 3D configs and checkpoints held
    the volume's shape in ``network.{image_size, volume_depth}``."""
    net = values.get("network") if isinstance(values.get("network"), Mapping) else {}
    out = {k: net[k] for k in ("image_size", "volume_depth") if k in net}
    out.update({k: values[k] for k in ("image_size", "clip_length", "volume_depth")
                if k in values and not (values[k] is None and k in out)})
    return out


def _data_differences(ckpt: Mapping[str, Any], cfg: DictConfig) -> list[str]:
    dhp = ckpt.get("datamodule_hyper_parameters") or {}
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(data, dict)
    diffs = []
    dhp, data = _data_shape(dhp), _data_shape(data)
    for key in ("image_size", "clip_length", "volume_depth"):  # frame / clip data, and the volumes' shape
        if key in dhp:
            a, b = dhp.get(key), data.get(key, "<absent>")
            if not _same(a, b):
                diffs.append(f"data.{key}: {_short(a)} -> {_short(b)}")
    return diffs


def check_resume(ckpt: Mapping[str, Any], cfg: DictConfig, ckpt_path: str | Path) -> None:
    """Refuse a resume whose checkpoint does not fit the configuration (before anything is written).

    Compared: the task (class and hyperparameters: loss, optimiser, scheduler, variant, ...), the network spec
    stored in the checkpoint (``hyper_parameters.net_spec``) against ``model.net``, and the data shape the network
    was trained on (``datamodule_hyper_parameters``: ``image_size`` and ``clip_length`` of face data, the volume's
    ``image_size`` / ``volume_depth`` of 3D data, ``network.*`` in older checkpoints).

    Args:
        ckpt: the checkpoint's contents (``torch.load(weights_only=True)``).
        cfg: the run's configuration (conf/train.yaml).
        ckpt_path: the checkpoint's path (for the message).

    Raises:
        ResumeError: naming each difference (``key: checkpoint -> now``) and the two ways out.
    """
    diffs = _task_differences(ckpt, cfg) + _net_differences(ckpt, cfg) + _data_differences(ckpt, cfg)
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise ResumeError(f"cannot resume from {ckpt_path}: it was trained with other settings ({shown}). Resume "
                          f"with the settings the run started with, or start a new run (another run_name, without "
                          f"ckpt_path); nothing was written")


def check_fresh_run_folder(output_dir: str | Path) -> None:
    """Refuse to start a new run in a folder whose checkpoints an earlier run wrote.

    Raises:
        ResumeError: when ``<output_dir>/checkpoints`` holds ``.ckpt`` files.
    """
    ckpts = sorted(p.name for p in (Path(output_dir) / "checkpoints").glob("*.ckpt"))
    if ckpts:
        raise ResumeError(f"{output_dir} already holds a run (checkpoints {ckpts[:3]}): resume it with "
                          f"ckpt_path=last, or give this run another run_name; nothing was written")


# ---------------------------------------------------------------------------------------------------- records
def _read_run_info(output_dir: Path) -> dict[str, Any]:
    path = output_dir / RUN_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(info, dict):
        return {}
    if "attempts" not in info:  # written before attempts were recorded: it describes attempt 1
        first = {k: info[k] for k in ("command", "git", "packages", "python", "platform", "seed", "started_utc")
                 if k in info}
        info["attempts"] = [{"attempt": 1, **first, "resumed_from": None, "config": "config.yaml",
                             "hydra": ".hydra"}] if first else []
    return info


def changed_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Flattened settings that differ between two resolved configs: ``{"a.b": [old, new]}``."""
    a, b = flatten_dotted(old), flatten_dotted(new)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if not _same(a.get(k), b.get(k))}


def _hydra_record() -> dict[str, str] | None:
    """The three files Hydra writes into ``.hydra/`` (config.yaml is written by the caller), or None outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    return {"hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg)})),
            "overrides.yaml": yaml.safe_dump(list(hydra_cfg.overrides.task), default_flow_style=False)}


def write_hydra_record(folder: str | Path, cfg: DictConfig) -> bool:
    """Write what Hydra would have put in ``<folder>/.hydra/`` (``config.yaml`` unresolved, ``hydra.yaml``,
    ``overrides.yaml``), atomically. For runs whose config sets ``hydra.output_subdir: null``, so that the record
    is written only once the run's checks have passed.

    Returns:
        Whether it was written (False outside a Hydra run: nothing is written).
    """
    hydra_files = _hydra_record()
    if hydra_files is None:
        return False
    folder = Path(folder)
    atomic_write_text(folder / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))
    for name, text in hydra_files.items():
        atomic_write_text(folder / ".hydra" / name, text)
    return True


def start_attempt(output_dir: str | Path, cfg: DictConfig, repo_dir: str | Path,
                  resumed_from: str | Path | None = None,
                  position: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Record a new attempt in the run folder (rank 0 only; after the checks).

    Writes, atomically: attempt 1: ``config.yaml`` (resolved) and ``.hydra/{config,hydra,overrides}.yaml``; attempt
    ``n > 1``: the same under ``attempts/NNN/``. Then ``run_info.json`` with the attempt appended to ``attempts``
    and, at the top level, the first attempt's provenance (``command``, ``git``, ``packages``, ``seed``, ...) and
    the run's ``wandb_run_id`` (made by the first attempt, reused by every later one).

    Args:
        output_dir: the run folder.
        cfg: the run's configuration.
        repo_dir: the project folder (for the git state).
        resumed_from: the checkpoint this attempt resumes from, or None.
        position: :func:`checkpoint_position` of that checkpoint.

    Returns:
        The attempt's record (``attempt`` is its number), with ``wandb_run_id`` added.
    """
    output_dir = Path(output_dir)
    info = _read_run_info(output_dir)
    attempts: list[dict[str, Any]] = list(info.get("attempts") or [])
    number = len(attempts) + 1
    resolved_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    folder = output_dir if number == 1 else output_dir / "attempts" / f"{number:03d}"
    atomic_write_text(folder / "config.yaml", resolved_yaml)
    wrote_hydra = write_hydra_record(folder, cfg)
    record: dict[str, Any] = {"attempt": number, **collect_run_info(cfg.get("seed"), repo_dir),
                              "resumed_from": None, "config": str((folder / "config.yaml").relative_to(output_dir)),
                              "hydra": str((folder / ".hydra").relative_to(output_dir)) if wrote_hydra else None,
                              "status": "running"}
    if resumed_from is not None:
        record["resumed_from"] = {"checkpoint": str(resumed_from), **dict(position or {})}
    if number > 1:
        first_cfg = output_dir / str(attempts[0].get("config", "config.yaml")) if attempts else None
        if first_cfg is not None and first_cfg.is_file():
            old = yaml.safe_load(first_cfg.read_text(encoding="utf-8")) or {}
            new = OmegaConf.to_container(cfg, resolve=True)
            changes = changed_settings(old, new)  # type: ignore[arg-type]
            record["config_changes"] = changes
            risky = sorted(k for k in changes if not k.startswith(_HARMLESS_PREFIXES))
            if risky:
                log.warning("this attempt changes %s against the run's first attempt: its results will not be those "
                            "of an uninterrupted run", risky)
    if not info.get("wandb_run_id"):
        info["wandb_run_id"] = _new_wandb_id()
    attempts.append(record)
    info["attempts"] = attempts
    for key in ("command", "git", "packages", "python", "platform", "seed", "started_utc"):
        info[key] = attempts[0].get(key, record.get(key))
    info["run_name"] = str(cfg.get("run_name", output_dir.name))
    atomic_write_json(output_dir / RUN_INFO, info)
    return {**record, "wandb_run_id": info["wandb_run_id"]}


def finish_attempt(output_dir: str | Path, number: int, status: str, **extra: Any) -> None:
    """Set the status (``finished``, ``interrupted by SIGTERM``, ``failed: ...``) and end time of attempt
    ``number`` in ``run_info.json`` (rank 0; does nothing if the record is gone)."""
    output_dir = Path(output_dir)
    info = _read_run_info(output_dir)
    for record in info.get("attempts") or []:
        if record.get("attempt") == number:
            record["status"] = status
            record["ended_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            record.update(extra)
            atomic_write_json(output_dir / RUN_INFO, info)
            return


def _new_wandb_id() -> str:
    try:
        from wandb.util import generate_id

        return str(generate_id())
    except ImportError:  # pragma: no cover - wandb is a dependency
        import secrets

        return secrets.token_hex(4)
