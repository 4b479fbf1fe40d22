"""Evaluation run: rebuild a task from a checkpoint (``weights_only=True``), test it on a data module, and write
a reproducible results JSON (metrics, config, commit, checkpoint hash, data summary), a markdown table and a
per-video predictions CSV."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from faceforge.metrics.detection import aggregate_by_video
from faceforge.reporting.tables import csv_table, detection_rows, markdown_table, write_video_predictions
from faceforge.runs.common import RunConfigError, instantiate_group, project_root
from faceforge.tasks.checkpointing import load_task
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


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.data``'s test split; return the results dict that is also written.

    Raises:
        RunConfigError: no checkpoint given.
        faceforge.tasks.checkpointing.CheckpointError: the checkpoint cannot be rebuilt.
    """
    if not cfg.get("ckpt_path"):
        raise RunConfigError("evaluate.py needs ckpt_path=/path/to/checkpoint.ckpt")
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    write_run_info(output_dir, OmegaConf.to_yaml(cfg, resolve=True), cfg.seed, project_root())

    task = load_task(cfg.ckpt_path)
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
        "checkpoint": {"path": str(Path(cfg.ckpt_path).resolve()), "sha256": file_sha256(cfg.ckpt_path),
                       "hyper_parameters": {k: v for k, v in task.hparams.items()}},
        "data": {"name": cfg.data.name, "faces_dir": str(cfg.data.faces_dir),
                 "report": getattr(datamodule, "report", None)},
        "metrics": report,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": collect_run_info(cfg.seed, project_root()),
    }
    results_path = Path(cfg.results_path)
    atomic_write_json(results_path, results)
    rows = detection_rows(report, dataset=str(cfg.data.name))
    table = markdown_table(rows)
    atomic_write_text(results_path.with_suffix(".md"), table)
    atomic_write_text(results_path.with_suffix(".csv"), csv_table(rows))
    _write_video_predictions(task, datamodule, results_path.with_name("video_predictions.csv"))
    print(table)
    log.info("Results written to %s", results_path)
    return results


def _write_video_predictions(task: Any, datamodule: Any, path: Path) -> None:
    out = task.test_outputs
    video_ids = getattr(datamodule, "video_ids", None)
    method_names = getattr(datamodule, "method_names", None)
    if not out or video_ids is None or method_names is None or out["probs"].numel() == 0:
        return
    how = task.hparams.video_aggregation
    vprobs, vlabels, vidx = aggregate_by_video(out["probs"], out["labels"], out["video_idx"], how=how,
                                               threshold=task.hparams.threshold)
    frames = torch.bincount(out["video_idx"], minlength=int(vidx.max()) + 1)[vidx]
    first_row = {int(v): int(g) for v, g in zip(out["video_idx"].tolist(), out["group_idx"].tolist())}
    write_video_predictions(path, [video_ids[i] for i in vidx.tolist()],
                            [method_names[first_row[i]] for i in vidx.tolist()], vlabels, vprobs, frames,
                            threshold=task.hparams.threshold)
