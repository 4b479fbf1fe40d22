"""Evaluation run: rebuild a task from a checkpoint (``weights_only=True``), test it on a data module, and write
a reproducible results JSON (metrics, config, commit, checkpoint hash, data summary), a markdown and CSV table,
and the task's own test outputs (per-video predictions for detection).

A task used here provides ``test_report`` (filled by ``trainer.test``), ``result_table(report, dataset) ->
(rows, columns)`` and ``write_test_outputs(output_dir, datamodule) -> list[Path]``."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from faceforge.reporting.tables import csv_table, markdown_table
from faceforge.runs.common import RunConfigError, instantiate_group, project_root
from faceforge.tasks.checkpointing import load_task, read_checkpoint
from faceforge.utils.atomic import atomic_write_json, atomic_write_text
from faceforge.utils.run_info import collect_run_info, write_run_info

log = logging.getLogger(__name__)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: Data settings a model depends on (input size, clip length, 3D network sizes): evaluation takes them from the
#: checkpoint's training data module unless the command line sets them.
INHERITED_DATA_KEYS = ("image_size", "clip_length", "clip_sampling", "clips_per_video", "network")


def _command_line_keys() -> set[str]:
    """Config keys set on the command line (``data.clip_length=10`` -> ``data.clip_length``)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task
    except ValueError:  # not running under Hydra
        return set()
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides}


def inherit_data_settings(cfg: DictConfig, ckpt: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """Copy :data:`INHERITED_DATA_KEYS` from a checkpoint's saved data-module hyperparameters into ``cfg.data``.

    A key is copied only where ``cfg.data`` has it and ``explicit`` (keys set on the command line) does not name
    it, so a Meso-4 checkpoint is evaluated at 256 px and a ResNeXt-LSTM one on 10-frame 112 px clips without
    repeating the training options. Returns the settings copied.
    """
    saved = ckpt.get("datamodule_hyper_parameters") or {}
    copied: dict[str, Any] = {}
    for key in INHERITED_DATA_KEYS:
        if key in saved and key in cfg.data and f"data.{key}" not in explicit:
            value = saved[key]
            if OmegaConf.is_config(cfg.data[key]) and isinstance(value, dict):
                value = OmegaConf.merge(cfg.data[key], value)
            if cfg.data[key] != value:
                cfg.data[key] = value
                copied[key] = saved[key]
    return copied


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.data``'s test split; return the results dict that is also written.

    Raises:
        RunConfigError: no checkpoint given.
        faceforge.tasks.checkpointing.CheckpointError: the checkpoint cannot be rebuilt.
    """
    if not cfg.get("ckpt_path"):
        raise RunConfigError("evaluate.py needs ckpt_path=/path/to/checkpoint.ckpt")
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    ckpt = read_checkpoint(cfg.ckpt_path)
    inherited = inherit_data_settings(cfg, ckpt, _command_line_keys())
    if inherited:
        log.info("data settings taken from the checkpoint's training data: %s", inherited)
    write_run_info(output_dir, OmegaConf.to_yaml(cfg, resolve=True), cfg.seed, project_root())

    task = load_task(ckpt)
    if cfg.get("video_aggregation"):
        task.hparams.video_aggregation = str(cfg.video_aggregation)
    datamodule = instantiate(cfg.data, _convert_="all")
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=instantiate_group(cfg.get("logger")) or False,
                                      callbacks=[], default_root_dir=str(output_dir))
    trainer.test(task, datamodule=datamodule)
    report = task.test_report
    if report is None:
        raise RunConfigError(f"data {cfg.data.name}: the test split produced no predictions")

    results = {
        "trained_on": ckpt.get("faceforge", {}).get("trained_on", ""),
        "tested_on": str(cfg.data.name),
        "checkpoint": {"path": str(Path(cfg.ckpt_path).resolve()), "sha256": file_sha256(cfg.ckpt_path),
                       "hyper_parameters": {k: v for k, v in task.hparams.items()}},
        "data": {"name": cfg.data.name,
                 "data_dir": str(cfg.data.get("faces_dir", cfg.data.get("volumes_dir", ""))),
                 "report": getattr(datamodule, "report", None)},
        "metrics": report,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": collect_run_info(cfg.seed, project_root()),
    }
    results_path = Path(cfg.results_path)
    atomic_write_json(results_path, results)
    rows, columns = task.result_table(report, str(cfg.data.name))
    table = markdown_table(rows, columns)
    atomic_write_text(results_path.with_suffix(".md"), table)
    atomic_write_text(results_path.with_suffix(".csv"), csv_table(rows, columns))
    task.write_test_outputs(results_path.parent, datamodule)
    print(table)
    log.info("Results written to %s", results_path)
    return results
