"""Callbacks the resume tests add to ``train.py`` runs (``+callbacks.NAME._target_=tests.signal_helpers.X``) to stop
a run at a chosen training step the way a scheduler or a crash would."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import Callback


class SignalAt(Callback):
    """Send ``signum`` (a name: ``SIGKILL``, ``SIGTERM``, ``SIGUSR1``) to this process at the end of the training
    batch that makes ``global_step == step``, as a job scheduler would; or, with ``batch``, at the end of this
    process's ``batch``-th training batch (1-based; with gradient accumulation several batches share a step)."""

    def __init__(self, step: int = -1, signum: str = "SIGTERM", batch: int | None = None) -> None:
        self.step = int(step)
        self.signum = getattr(signal, signum)
        self.batch = batch
        self._batches = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._batches += 1
        if (self._batches == self.batch) if self.batch is not None else (trainer.global_step == self.step):
            os.kill(os.getpid(), self.signum)


class PauseAt(Callback):
    """At the end of the training batch that makes ``global_step == step``, write ``marker`` and sleep ``seconds``,
    so that a test can signal the process from outside while it is mid-epoch."""

    def __init__(self, step: int, marker: str, seconds: float = 3.0) -> None:
        self.step = int(step)
        self.marker = Path(marker)
        self.seconds = float(seconds)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            self.marker.write_text(str(os.getpid()))
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:  # a handled signal interrupts one sleep; keep waiting out the pause
                time.sleep(0.05)
