"""Training run: checks, seed, data module, task, callbacks, loggers, trainer; fit, then test the checkpoint chosen
on validation (never on test); write provenance and metrics into the run directory.

What a run guarantees (CPU, same command, same seed; see :mod:`faceforge.utils.seeding`,
:mod:`faceforge.data.core.sampler`, :mod:`faceforge.runs.callbacks`, :mod:`faceforge.runs.resume`):

* **Same seed, same numbers.** The network is initialised from the seed; the training order of epoch ``e`` comes
  from ``(seed, e)``, each sample's augmentation and clip offsets from ``(seed, e, index)``, dropout from ``(seed,
  e, batch, rank)``, whatever ``data.num_workers``; two runs give bit-identical checkpoints and metrics.
* **Exact resume.** ``ckpt_path=last`` continues a run stopped at an epoch end, by SIGTERM / SIGUSR1 (a mid-epoch
  checkpoint is written first) or killed (the partial epoch is redone from the last epoch-end checkpoint) to the
  weights and metrics of the uninterrupted run. The CSV metrics, the W&B run and ``run_info.json`` continue;
  nothing an earlier attempt wrote (``config.yaml``, ``.hydra/``) is overwritten; a resume that cannot work is
  refused in one line before anything is written.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from faceforge.runs.callbacks import GracefulStop, PlateauCatchUp, RunInterrupted, StepSeeder
from faceforge.runs.common import RunConfigError, instantiate_group, metrics_to_floats, project_root
from faceforge.runs.config_checks import (
    check_model_data_pairing,
    check_model_input_size,
    check_required_settings,
    hydra_choice,
)
from faceforge.runs.input_needs import apply_input_needs, command_line_keys
from faceforge.runs.resume import (
    check_fresh_run_folder,
    check_resume,
    checkpoint_position,
    finish_attempt,
    start_attempt,
)
from faceforge.tasks.checkpointing import read_checkpoint
from faceforge.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)


def resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint to resume from: None, an explicit path, ``last`` = ``<run dir>/checkpoints/last.ckpt``, or
    ``auto``: the newest of ``last.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt`` in the run folder when there is
    one, else None (a fresh run): what a job that a cluster may requeue should pass.

    Raises:
        RunConfigError: ``ckpt_path=last`` without an existing last checkpoint in the run named by ``run_name``
            (the message lists the runs that have one), or an explicit path that does not exist.
    """
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, ""):
        return None
    if str(ckpt) == "auto":  # a (re)queued cluster job: resume when the run folder has a checkpoint, else start
        candidates = [p for p in (output_dir / "checkpoints" / "last.ckpt", *output_dir.glob("hpc_ckpt_*.ckpt"))
                      if p.is_file()]
        return str(max(candidates, key=lambda p: p.stat().st_mtime_ns)) if candidates else None
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


def check_run_config(cfg: DictConfig) -> None:
    """The checks of the composed configuration alone, before anything is instantiated or written: the model fits
    the data (:func:`~faceforge.runs.config_checks.check_model_data_pairing`), and no mandatory setting is left
    unset (:func:`~faceforge.runs.config_checks.check_required_settings`).

    Raises:
        RunConfigError: the model needs another kind of data (the message names the data configs that fit), or
            a setting such as ``data.root`` is unset (the message shows a command that sets it).
    """
    model_choice, data_choice = hydra_choice("model"), hydra_choice("data")
    check_model_data_pairing(str(cfg.model.get("_target_", "")), str(cfg.data.get("_target_", "")),
                             model_label=f"model={model_choice}" if model_choice else None,
                             data_label=f"data={data_choice}" if data_choice else None)
    check_required_settings(cfg, "train.py")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg`` (conf/train.yaml) and return its metrics.

    Order: every check that can refuse the run (the checkpoint to resume from exists, is readable and fits the
    configuration; a new run does not overwrite another run's checkpoints) happens before anything is written into
    the run folder; then the attempt is recorded (:func:`faceforge.runs.resume.start_attempt`), the run trains and
    tests, and the attempt's end (finished, interrupted, failed) is recorded.

    Returns:
        ``{"metrics": {name: float}, "best_checkpoint": path or None, "test_report": dict or None,
        "output_dir": str}``. The same metrics are written to ``<run dir>/metrics.json`` and the test report to
        ``<run dir>/test_report.json``.

    Raises:
        RunConfigError: a model paired with data of another kind, a mandatory setting left unset (see
            :func:`check_run_config`), ``ckpt_path=last`` without a last checkpoint, or a missing explicit
            checkpoint (see :func:`resolve_ckpt_path`).
        faceforge.tasks.checkpointing.CheckpointError: the checkpoint cannot be read as data.
        faceforge.runs.resume.ResumeError: the checkpoint was trained with another model or data shape, or a new
            run would overwrite another run's checkpoints.
        RunConfigError: a network of one input size (MesoNet: 256) with another ``data.image_size``
            (:func:`~faceforge.runs.config_checks.check_model_input_size`).
        faceforge.runs.callbacks.RunInterrupted: SIGTERM / SIGUSR1 stopped the run after writing a checkpoint.
    """
    output_dir = Path(cfg.paths.output_dir)
    is_zero = pl.utilities.rank_zero.rank_zero_only.rank == 0
    # ---- checks: nothing is written (or logged into the run folder's train.log) before they pass
    check_run_config(cfg)
    if cfg.model.get("input") is not None:  # the model's input needs go to the data config (model.input)
        apply_input_needs(cfg, cfg.model.input, command_line_keys(), write_back=True)
    ckpt_path = resolve_ckpt_path(cfg, output_dir)
    position = None
    if ckpt_path is not None:
        ckpt = read_checkpoint(ckpt_path)
        check_resume(ckpt, cfg, ckpt_path)
        position = checkpoint_position(ckpt, ckpt_path)
        del ckpt
    elif cfg.get("train", True):
        check_fresh_run_folder(output_dir)
    net, model_choice = cfg.model.get("net"), hydra_choice("model")
    if isinstance(net, DictConfig) and "image_size" in cfg.data:  # after the resume checks: they say more
        check_model_input_size(str(net.get("_target_", "")), cfg.data.image_size,
                               model_label=f"model={model_choice}" if model_choice else None)

    attempt = start_attempt(output_dir, cfg, project_root(), ckpt_path, position) if is_zero else None
    status = "failed"
    try:
        result = _run(cfg, output_dir, ckpt_path, attempt)
        status = "finished"
        return result
    except RunInterrupted as exc:
        status = f"interrupted by {exc.signal_name}"
        raise
    except BaseException as exc:
        status = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
        raise
    finally:
        if attempt is not None:
            finish_attempt(output_dir, attempt["attempt"], status)


def build_task(model_cfg: DictConfig) -> pl.LightningModule:
    """The task of ``model_cfg`` (``cfg.model``): its network instantiated by Hydra from ``model_cfg.net``, every
    other setting handed to the task class as a plain value (so ``optimizer: {_target_: torch.optim.RMSprop, ...}``
    stays a primitive spec that :mod:`faceforge.tasks.optim` builds from its allowlist, never instantiated here),
    plus ``net_spec``, the network's resolved config as YAML (checkpoints rebuild the network from it).

    Raises:
        hydra.errors.InstantiationException: the network cannot be built from its config.
    """
    cls = get_class(str(model_cfg._target_))
    net = instantiate(model_cfg.net, _convert_="all")
    kwargs = OmegaConf.to_container(model_cfg, resolve=True)
    assert isinstance(kwargs, dict)
    for key in ("_target_", "net"):
        kwargs.pop(key, None)
    return cls(net=net, net_spec=OmegaConf.to_yaml(model_cfg.net, resolve=True), **kwargs)


def _instantiate_loggers(cfg: DictConfig, wandb_run_id: str | None) -> list[Any]:
    """The ``logger`` group; a W&B logger gets the run's id and ``resume="allow"``, so every attempt logs to one
    W&B run."""
    group = cfg.get("logger")
    if not group:
        return []
    loggers = []
    for entry in group.values():
        if not (isinstance(entry, DictConfig) and "_target_" in entry):
            continue
        extra: dict[str, Any] = {}
        if str(entry._target_).endswith("WandbLogger") and wandb_run_id:
            extra = {"id": wandb_run_id, "resume": "allow"}
        loggers.append(instantiate(entry, _convert_="all", **extra))
    return loggers


def _run(cfg: DictConfig, output_dir: Path, ckpt_path: str | None, attempt: dict[str, Any] | None) -> dict[str, Any]:
    log.info("Instantiating data <%s>", cfg.data._target_)
    datamodule = instantiate(cfg.data, _convert_="all")
    pl.seed_everything(cfg.seed, workers=True)  # right before the network is built: its initial weights
    log.info("Instantiating task <%s> with network <%s>", cfg.model._target_, cfg.model.net._target_)
    task = build_task(cfg.model)
    graceful = GracefulStop(output_dir / "checkpoints" / "last.ckpt")
    callbacks = [PlateauCatchUp(graceful), *instantiate_group(cfg.get("callbacks")), StepSeeder(cfg.seed), graceful]
    loggers = _instantiate_loggers(cfg, attempt.get("wandb_run_id") if attempt else None)
    if not loggers:  # logger=none: Lightning refuses a LearningRateMonitor without a logger
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True)})

    if cfg.get("train", True):
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if graceful.stop_requested:  # the signal came in the last epoch: it ended and was saved; skip testing
            raise graceful.interruption(trainer)
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
        loading = datamodule.load_report() if callable(getattr(datamodule, "load_report", None)) else {}
        if data_report and loading:
            data_report = {**data_report, "unreadable_while_loading": loading}
            bad = {s: r for s, r in loading.items() if r["unreadable_crops"]}
            if bad:
                log.warning("crops that could not be read while loading were replaced by readable ones: %s (see "
                            "data_report.json)", bad)
        if data_report:
            atomic_write_json(output_dir / "data_report.json", data_report)
        from faceforge.data.core.prepared import log_prepare_report

        log_prepare_report(datamodule, output_dir)  # the preparation's problems: a few log lines + a copy here
    return result


def _has_test_split(datamodule: Any) -> bool:
    has = getattr(datamodule, "has_split", None)
    return bool(has("test")) if callable(has) else True
