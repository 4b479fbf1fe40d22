"""A CSV logger that continues a run's ``metrics.csv`` when the run is resumed.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a resumed run loses its earlier
rows. :class:`ResumableCSVLogger` keeps them: it reads the file it finds and writes old and new rows back together
(atomically, the whole file each time). Rows of steps that the resumed run logs again (the part of an epoch that was
trained after the checkpoint the run resumes from, e.g. after a kill) are dropped when the first new row arrives:
every old row whose step is at or after the first step the resumed run logs, so no step appears twice.
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from faceforge.utils.atomic import atomic_write_text

__all__ = ["ContinuingExperimentWriter", "ResumableCSVLogger"]


def _step_of(row: dict[str, Any]) -> int | None:
    try:
        return int(float(row.get("step", "")))
    except (TypeError, ValueError):
        return None


class ContinuingExperimentWriter(ExperimentWriter):
    """Lightning's CSV experiment writer, except that it keeps the rows of an existing ``metrics.csv``.

    Args:
        log_dir: the folder of ``metrics.csv`` (and ``hparams.yaml``).
    """

    def __init__(self, log_dir: str) -> None:
        self._rows: list[dict[str, Any]] = []
        self._keys: list[str] = []
        self._trim_pending = False
        super().__init__(log_dir=log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                self._keys = list(reader.fieldnames or [])
                self._rows = [dict(r) for r in reader]
            self._trim_pending = bool(self._rows)

    def _check_log_dir_exists(self) -> None:
        """Keep what is there (Lightning's writer deletes ``metrics.csv`` here)."""

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        """Record one row; the first row of a resumed run drops the old rows at or after its step."""
        if self._trim_pending and step is not None:
            self._rows = [r for r in self._rows if (_step_of(r) is None or _step_of(r) < int(step))]
            self._trim_pending = False
        super().log_metrics(metrics_dict, step)

    def save(self) -> None:
        """Write the old rows and the new ones into ``metrics.csv`` atomically (and ``hparams.yaml``)."""
        if not self.metrics and not self._rows:
            return
        for row in self.metrics:
            self._rows.append(row)
            for key in row:
                if key not in self._keys:
                    self._keys.append(key)
        self.metrics = []
        keys = sorted(self._keys)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._rows)
        atomic_write_text(self.metrics_file_path, buf.getvalue())


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` (same arguments) writing through :class:`ContinuingExperimentWriter`: a resumed run appends to
    the run's ``metrics.csv`` instead of starting it again. (Lightning's ``finalize`` saves whatever the status, so
    the rows of a run stopped by a signal are on disk.)"""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuingExperimentWriter:  # type: ignore[override]
        """The writer (made on first use)."""
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = ContinuingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
