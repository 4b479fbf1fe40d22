"""Callbacks every training run gets (``faceforge.runs.training`` adds them whatever ``callbacks=`` says).

* :class:`StepSeeder` reseeds torch's global generator before every training batch from ``(seed, epoch, batch,
  rank)``, so dropout (and any other draw a network makes from the global generator) is the same in an
  uninterrupted run and in a resumed one.
* :class:`GracefulStop` turns SIGTERM and SIGUSR1 during ``fit`` into a clean stop with a checkpoint: the training
  batch being run is finished (with ``trainer.accumulate_grad_batches`` > 1, the batches up to the end of the
  accumulation window too, whose gradients no checkpoint holds); if the epoch has more batches, ``last.ckpt`` is
  written there (mid-epoch: the loader position, the optimiser, and the epoch's partial training metrics go with
  it); if it was the epoch's last batch,
  the epoch is finished (validation, the epoch-end checkpoints) instead. Then :class:`RunInterrupted` is raised;
  ``train.py`` prints one line and exits with ``128 + signal``. ``python train.py run_name=NAME ckpt_path=last``
  continues from there with the weights and metrics of a run that was never stopped.

* :class:`PlateauCatchUp` gives ``ReduceLROnPlateau`` the epoch-end step that Lightning skips across a resume
  (checkpoints are written before that step, and the epoch a mid-epoch resume finishes does not take it).

Why not Lightning's own SIGTERM handling: it raises ``SIGTERMException`` after the batch without writing a
checkpoint unless a callback does, and it also aborts a running validation loop, which loses the epoch-end
checkpoint. Under SLURM with Lightning's auto-requeue, SIGUSR1 (the requeue signal) is left to Lightning.
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.callbacks import Callback

from faceforge.utils.seeding import DROPOUT, derive_seed

__all__ = ["GracefulStop", "PlateauCatchUp", "RunInterrupted", "StepSeeder"]

log = logging.getLogger(__name__)


class RunInterrupted(Exception):
    """Training was stopped by a signal after writing a checkpoint (not an error; ``train.py`` exits 128 + signal).

    Attributes:
        signum: the signal number.
        checkpoint: the checkpoint to resume from (None when the run stopped before its first one).
        epoch: the epoch (0-based) the run stopped in; step: the optimiser steps done.
    """

    def __init__(self, signum: int, checkpoint: str | None, epoch: int, step: int) -> None:
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.epoch = int(epoch)
        self.step = int(step)
        name = signal.Signals(self.signum).name
        where = (f"checkpoint {checkpoint} (epoch {epoch}, step {step})" if checkpoint
                 else "no checkpoint (stopped before the first epoch ended)")
        super().__init__(f"stopped by {name}; {where}")

    @property
    def signal_name(self) -> str:
        """``"SIGTERM"``, ``"SIGUSR1"``, ..."""
        return signal.Signals(self.signum).name


class StepSeeder(Callback):
    """Reseed torch's global generator (CPU and CUDA) before every training batch.

    The seed is ``derive_seed(seed, DROPOUT, epoch, batch_idx, global_rank)``, so the dropout masks of a batch do
    not depend on what drew from the generator before it (a resume, validation, another process).

    Args:
        seed: the run's seed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        torch.manual_seed(derive_seed(self.seed, DROPOUT, trainer.current_epoch, batch_idx, trainer.global_rank))


class GracefulStop(Callback):
    """Stop ``fit`` cleanly on SIGTERM / SIGUSR1 with a checkpoint to resume from (see the module docstring).

    Args:
        checkpoint_path: where the mid-epoch checkpoint goes: the run's ``checkpoints/last.ckpt``, the file that
            ``ckpt_path=last`` resumes from.
        signals: names of the signals to handle.

    The checkpoint's ``callbacks`` entry of this class holds ``trainer.callback_metrics`` (restored on resume:
    the last validation metrics, the learning rate logged at the epoch start) and, for a mid-epoch checkpoint, the
    accumulated epoch-level training metrics (Lightning does not save them), restored so that the epoch's means are
    those of an uninterrupted run.

    Attributes:
        plateau_due: the epoch whose ``ReduceLROnPlateau`` step Lightning skipped (set on resume, taken by
            :class:`PlateauCatchUp`), or None.
    """

    def __init__(self, checkpoint_path: str | Path, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1")) -> None:
        self.checkpoint_path = str(checkpoint_path)
        self.signal_names = tuple(signals)
        self._signum: int | None = None
        self._stop_agreed = False
        self._saved_mid_epoch = False
        self._saving = False
        self._previous: dict[int, Any] = {}
        self._trainer: pl.Trainer | None = None
        self._pending_tensors: dict[str, dict[str, Any]] = {}
        self._pending_metrics: dict[str, dict[str, Any]] = {}
        self._pending_callback_metrics: dict[str, torch.Tensor] = {}
        self._resumed_mid_epoch = False
        self.plateau_due: int | None = None

    # ------------------------------------------------------------------ signal handlers
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def _handled_signals(self, trainer: pl.Trainer) -> list[int]:
        env = trainer._accelerator_connector.cluster_environment
        slurm_requeue = isinstance(env, SLURMEnvironment) and env.auto_requeue
        out = []
        for name in self.signal_names:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            if slurm_requeue and signum == (env.requeue_signal or signal.SIGUSR1):
                continue  # Lightning's SLURM requeue handler
            out.append(int(signum))
        return out

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_callback_metrics:  # a resume: what the checkpointed run had in its callback metrics
            current = trainer.callback_metrics
            for key, value in self._pending_callback_metrics.items():
                current.setdefault(key, value)
            self._pending_callback_metrics = {}
        # after Lightning registered its own handlers (Trainer._run), so ours replace them during training
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self._handled_signals(trainer):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        first = self._signum is None
        if first:
            self._signum = int(signum)
            log.warning("received %s: finishing the current training batch, then saving a checkpoint and stopping",
                        signal.Signals(signum).name)
        trainer = self._trainer
        launcher = trainer.strategy.launcher if trainer is not None else None
        if first and launcher is not None:  # forward to the other local processes (DDP), as Lightning does
            launcher.kill(signum)

    def _restore_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    @property
    def stop_requested(self) -> bool:
        """Whether a handled signal arrived during training."""
        return self._signum is not None or self._stop_agreed

    def _agree(self, trainer: pl.Trainer) -> bool:
        """Whether any process received a signal (one collective per call when training on several processes)."""
        stop = self._signum is not None
        if trainer.world_size > 1:
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        if stop and self._signum is None:
            self._signum = int(signal.SIGTERM)
        self._stop_agreed = self._stop_agreed or stop
        return stop

    def interruption(self, trainer: pl.Trainer) -> RunInterrupted:
        """The :class:`RunInterrupted` describing where the run stopped."""
        last = Path(self.checkpoint_path)
        return RunInterrupted(self._signum or int(signal.SIGTERM), str(last) if last.is_file() else None,
                              trainer.current_epoch, trainer.global_step)

    # ------------------------------------------------------------------ stopping
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the previous epoch ended (validation, epoch-end checkpoints): stop before training on
        if self._agree(trainer):
            raise self.interruption(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._restore_metric_states(pl_module)
        if self._saved_mid_epoch:  # saved after the previous batch; its step metrics are logged by now
            raise self.interruption(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._restore_epoch_results(trainer)
        if not self._agree(trainer) or self._saved_mid_epoch:
            return
        epoch_loop = trainer.fit_loop.epoch_loop
        last = epoch_loop.batch_progress.is_last_batch or batch_idx + 1 >= trainer.num_training_batches
        if last:  # let the epoch end; on_train_epoch_start (or the end of fit) stops the run
            return
        if (batch_idx + 1) % max(1, int(trainer.accumulate_grad_batches)) != 0:
            return  # gradients of an unfinished accumulation window are in no checkpoint: stop after its last batch
        self._saving = True
        try:
            trainer.save_checkpoint(self.checkpoint_path)
        finally:
            self._saving = False
        self._saved_mid_epoch = True
        log.warning("mid-epoch checkpoint written to %s (epoch %d, step %d)", self.checkpoint_path,
                    trainer.current_epoch, trainer.global_step)

    # ------------------------------------------------------------------ epoch metrics across a resume
    def state_dict(self) -> dict[str, Any]:
        """``trainer.callback_metrics``; for the mid-epoch checkpoint also the epoch's accumulated training metrics
        (primitive tensors)."""
        if self._trainer is None:
            return {}
        # what callbacks logged outside the loops (e.g. the learning rate at the epoch start, which a mid-epoch
        # resume does not run again) and the monitored metrics: restored into trainer.callback_metrics
        callback_metrics = {k: v.detach().cpu().clone() for k, v in self._trainer.callback_metrics.items()
                            if isinstance(v, torch.Tensor)}
        if not self._saving:
            return {"callback_metrics": callback_metrics}
        results = getattr(self._trainer.fit_loop.epoch_loop, "_results", None)
        tensors: dict[str, dict[str, Any]] = {}
        metrics: dict[str, dict[str, Any]] = {}
        for key, rm in (results or {}).items():
            meta = rm.meta
            if not meta.on_epoch:
                continue
            if rm.is_tensor:
                entry: dict[str, Any] = {"value": rm.value.detach().cpu().clone(), "reduction": _reduction(meta)}
                if meta.is_mean_reduction:
                    entry["cumulated_batch_size"] = rm.cumulated_batch_size.detach().cpu().clone()
                tensors[key] = entry
            elif meta.metric_attribute:
                metric = rm.value
                states = {name: _to_cpu(getattr(metric, name)) for name in metric._defaults}
                metrics[meta.metric_attribute] = {"states": states, "update_count": int(metric._update_count)}
        return {"mid_epoch": True, "tensors": tensors, "metrics": metrics, "callback_metrics": callback_metrics}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the checkpoint's callback metrics (and a mid-epoch checkpoint's metric accumulations) to restore."""
        self._pending_callback_metrics = dict(state_dict.get("callback_metrics") or {})
        if state_dict.get("mid_epoch"):
            self._pending_tensors = dict(state_dict.get("tensors") or {})
            self._pending_metrics = dict(state_dict.get("metrics") or {})
            self._resumed_mid_epoch = True

    def _restore_metric_states(self, pl_module: pl.LightningModule) -> None:
        """Before the first resumed batch updates them: the torchmetrics objects logged per epoch."""
        if not self._pending_metrics:
            return
        for attr, saved in self._pending_metrics.items():
            metric = getattr(pl_module, attr, None)
            if metric is None:
                log.warning("cannot restore the epoch state of metric %r: the task has no such attribute", attr)
                continue
            for name, value in saved["states"].items():
                setattr(metric, name, _to_device(value, pl_module.device))
            metric._update_count = int(saved["update_count"])
            metric._computed = None
        self._pending_metrics = {}

    def _restore_epoch_results(self, trainer: pl.Trainer) -> None:
        """After the first resumed batch logged them: add the saved sums (x + S == S + x exactly)."""
        if not self._pending_tensors:
            return
        results = getattr(trainer.fit_loop.epoch_loop, "_results", None) or {}
        for key in list(self._pending_tensors):
            rm = results.get(key)
            if rm is None:
                continue  # not logged yet in this epoch: try again after the next batch
            saved = self._pending_tensors.pop(key)
            value = saved["value"].to(rm.value.device, rm.value.dtype)
            how = saved["reduction"]
            if how in ("mean", "sum"):
                rm.value = rm.value + value
                if how == "mean":
                    rm.cumulated_batch_size = rm.cumulated_batch_size + saved["cumulated_batch_size"].to(
                        rm.cumulated_batch_size.device)
            elif how == "max":
                rm.value = torch.maximum(rm.value, value)
            elif how == "min":
                rm.value = torch.minimum(rm.value, value)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """A resume: from an epoch-end checkpoint, that epoch's plateau step was not taken before it was written."""
        if trainer.state.fn != "fit":
            return
        mine = (checkpoint.get("callbacks") or {}).get(self.state_key) or {}
        if not mine.get("mid_epoch"):
            self.plateau_due = int(checkpoint.get("epoch", -1))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._resumed_mid_epoch:  # Lightning skips this epoch's plateau step (its loop is "restarting")
            self.plateau_due = trainer.current_epoch
            self._resumed_mid_epoch = False
        if self._pending_tensors:
            log.warning("epoch metrics %s of the interrupted epoch were not logged again after the resume; their "
                        "epoch values cover the resumed part only", sorted(self._pending_tensors))
            self._pending_tensors = {}


def _reduction(meta: Any) -> str:
    if meta.is_mean_reduction:
        return "mean"
    if meta.is_sum_reduction:
        return "sum"
    if meta.is_max_reduction:
        return "max"
    return "min"


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


class PlateauCatchUp(Callback):
    """Take the ``ReduceLROnPlateau`` step of the epoch before a resume, at the start of the next epoch.

    Lightning steps plateau schedulers at the very end of an epoch, after the epoch-end checkpoints are written, and
    not at all at the end of an epoch it resumed mid-way; so a resumed run would miss one step. This callback takes
    it (with the monitored value of that epoch, restored by :class:`GracefulStop`) before anything else of the next
    epoch runs: put it FIRST in the callback list, before ``LearningRateMonitor`` logs the epoch's learning rate.

    Args:
        graceful: the run's :class:`GracefulStop` (it knows whether and where the run resumed).
    """

    def __init__(self, graceful: GracefulStop) -> None:
        self.graceful = graceful

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch, self.graceful.plateau_due = self.graceful.plateau_due, None
        if epoch is None or epoch < 0 or not pl_module.automatic_optimization:
            return
        progress = trainer.fit_loop.epoch_loop.scheduler_progress
        for config in trainer.lr_scheduler_configs:
            if not config.reduce_on_plateau or config.interval != "epoch" or (epoch + 1) % config.frequency:
                continue
            value = trainer.callback_metrics.get(config.monitor) if config.monitor else None
            if value is None:
                log.warning("cannot take the plateau step of epoch %d after the resume: %r was not recorded",
                            epoch, config.monitor)
                continue
            progress.increment_ready()
            pl_module.lr_scheduler_step(config.scheduler, value)
            progress.increment_completed()
