"""Training run: seed, data module, task, callbacks, loggers, trainer; fit, then test the checkpoint chosen on
validation (never on test); write provenance and metrics into the run directory."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from faceforge.runs.common import RunConfigError, instantiate_group, metrics_to_floats, project_root
from faceforge.utils.atomic import atomic_write_json
from faceforge.utils.run_info import write_run_info

log = logging.getLogger(__name__)


def resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint to resume from: None, an explicit path, or ``last`` = ``<run dir>/checkpoints/last.ckpt``.

    Raises:
        RunConfigError: ``ckpt_path=last`` without an existing last checkpoint in the run named by ``run_name``
            (the message lists the runs that have one), or an explicit path that does not exist.
    """
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, ""):
        return None
    if str(ckpt) == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            return str(last)
        runs_dir = output_dir.parent
        resumable = sorted(p.parent.parent.name for p in runs_dir.glob("*/checkpoints/last.ckpt"))
        raise RunConfigError(
            f"ckpt_path=last: no checkpoint at {last}. Resume a run by naming it: "
            f"`python train.py run_name=NAME ckpt_path=last`; runs with a last checkpoint in {runs_dir}: "
            f"{resumable or 'none'}")
    if not Path(ckpt).is_file():
        raise RunConfigError(f"ckpt_path={ckpt}: no such file")
    return str(ckpt)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg`` (conf/train.yaml) and return its metrics.

    Returns:
        ``{"metrics": {name: float}, "best_checkpoint": path or None, "test_report": dict or None,
        "output_dir": str}``. The same metrics are written to ``<run dir>/metrics.json`` and the test report to
        ``<run dir>/test_report.json``.

    Raises:
        RunConfigError: an impossible request (see :func:`resolve_ckpt_path`).
    """
    output_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    ckpt_path = resolve_ckpt_path(cfg, output_dir)
    if pl.utilities.rank_zero.rank_zero_only.rank == 0:
        write_run_info(output_dir, OmegaConf.to_yaml(cfg, resolve=True), cfg.seed, project_root())

    log.info("Instantiating data <%s>", cfg.data._target_)
    datamodule = instantiate(cfg.data, _convert_="all")
    log.info("Instantiating task <%s> with network <%s>", cfg.model._target_, cfg.model.net._target_)
    task = instantiate(cfg.model, net_spec=OmegaConf.to_yaml(cfg.model.net, resolve=True), _convert_="all")
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True)})

    if cfg.get("train", True):
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = metrics_to_floats(trainer.callback_metrics)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""

    test_report = None
    if cfg.get("test", True) and _has_test_split(datamodule):
        if not best:
            log.warning("No best checkpoint was recorded: testing the current weights")
        trainer.test(task, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(metrics_to_floats(trainer.callback_metrics))
        test_report = task.test_report

    result = {"metrics": metrics, "best_checkpoint": best or None, "test_report": test_report,
              "output_dir": str(output_dir)}
    if trainer.is_global_zero:
        atomic_write_json(output_dir / "metrics.json", {"metrics": metrics, "best_checkpoint": best or None})
        if test_report is not None:
            atomic_write_json(output_dir / "test_report.json", test_report)
        data_report = getattr(datamodule, "report", None)
        if data_report:
            atomic_write_json(output_dir / "data_report.json", data_report)
    return result


def _has_test_split(datamodule: Any) -> bool:
    has = getattr(datamodule, "has_split", None)
    return bool(has("test")) if callable(has) else True
