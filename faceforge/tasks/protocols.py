"""What a task may ask of its data module: one small typed protocol.

Tasks import no data internals: batches arrive ready (images as uint8, target volumes already decoded on the device
by the data module's ``on_after_batch_transfer``), and beyond the batches a task asks its data module only what
:class:`TaskData` declares, checked with ``isinstance`` (:func:`task_data`), never by reading attributes by name.
Both :class:`faceforge.data.detection.datamodule.FaceDataModule` and
:class:`faceforge.data.reconstruction.datamodule.VolumeDataModule` satisfy it (structurally: they do not import it).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["TaskData", "TrainStatistics", "task_data"]


class TrainStatistics(Protocol):
    """Statistics of a training split as stored (e.g. :class:`faceforge.data.reconstruction.statistics.
    TrainStatistics`): the trivial baseline a reconstruction task reports beside its model.

    Attributes:
        mean_occupancy: (D, S, S) float per-voxel occupancy frequency of the training volumes, in [0, 1].
        mean_landmarks: (68, 2) float mean training landmarks, crop pixels (NaN where unknown).
    """

    mean_occupancy: np.ndarray
    mean_landmarks: np.ndarray


@runtime_checkable
class TaskData(Protocol):
    """The questions a task may ask of its data module (after ``setup``)."""

    def item_names(self, split: str) -> Sequence[str] | None:
        """Names of the items a batch's item index points at in ``split``: the sample ids that 3D batches'
        ``index`` indexes, the video ids that detection batches' ``video_idx`` indexes; None when unknown."""

    def group_names(self) -> Sequence[str] | None:
        """Names that detection batches' ``method_idx`` indexes (manipulation methods, ``real`` included); None
        for data without groups."""

    def train_statistics(self) -> TrainStatistics | None:
        """Statistics of the training split as stored (no augmentation), or None (no training split, or data
        without such statistics)."""


def task_data(datamodule: Any) -> TaskData | None:
    """``datamodule`` when it satisfies :class:`TaskData` (an ``isinstance`` check on the runtime-checkable
    protocol), else None: a task then works without names and statistics."""
    return datamodule if isinstance(datamodule, TaskData) else None
