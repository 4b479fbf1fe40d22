"""Per-sample result rows gathered across batches and processes, in dataset order.

A task's test report lists every test sample (its IoU, NME, yaw, predicted landmarks...). Kept in plain Python
lists, those rows would hold only the samples of one process under DDP. :class:`SampleRows` keeps them as
torchmetrics states with ``dist_reduce_fx="cat"``, so :meth:`~SampleRows.compute` on any rank returns the rows of
every rank (uneven counts included), sorted by the samples' dataset index: the same rows, in the same order, as a
one-process run.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["SampleRows"]


class SampleRows(Metric):
    """Named per-sample columns, gathered with ``cat`` and sorted by the ``index`` column.

    Args:
        columns: the column names besides ``index`` (e.g. ``("iou", "nme", "yaw", "landmarks")``); each column's
            values are tensors whose first dimension is the batch (any trailing shape and dtype, fixed per
            column).
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: an ``index`` column in ``columns``, or (in :meth:`update`) a missing or extra column or a
            column whose first dimension differs from ``index``'s.

    Example:
        >>> rows = SampleRows(("iou",))
        >>> rows.update(index=torch.tensor([3, 1]), iou=torch.tensor([0.5, 0.7]))
        >>> rows.update(index=torch.tensor([2]), iou=torch.tensor([0.6]))
        >>> out = rows.compute()
        >>> out["index"].tolist(), out["iou"].tolist()
        ([1, 2, 3], [0.699999988079071, 0.6000000238418579, 0.5])
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, columns: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns = tuple(str(c) for c in columns)
        if "index" in self.columns:
            raise ValueError("SampleRows: 'index' is the sort column and is always present; leave it out of columns")
        for name in ("index", *self.columns):
            self.add_state(f"col_{name}", default=[], dist_reduce_fx="cat")

    def update(self, index: Tensor, **values: Tensor) -> None:
        """Append a batch of rows: ``index`` (B,) int dataset indices and one (B, ...) tensor per column."""
        if set(values) != set(self.columns):
            raise ValueError(f"SampleRows.update: expected the columns {sorted(self.columns)}, got {sorted(values)}")
        index = torch.as_tensor(index).reshape(-1).to(torch.int64)
        self.col_index.append(index.detach())
        for name in self.columns:
            v = torch.as_tensor(values[name])
            if v.shape[:1] != index.shape:
                raise ValueError(f"SampleRows.update: column {name!r} has {tuple(v.shape)} rows, index has "
                                 f"{tuple(index.shape)}")
            getattr(self, f"col_{name}").append(v.detach())

    def compute(self) -> dict[str, Tensor]:
        """``{"index": (N,) int64, column: (N, ...)}`` over every rank, sorted by ``index`` (stable); an empty
        dict when nothing was seen."""
        state = self.col_index
        if isinstance(state, list) and len(state) == 0:
            return {}
        out = {name: dim_zero_cat(getattr(self, f"col_{name}")) for name in ("index", *self.columns)}
        order = torch.sort(out["index"], stable=True).indices
        return {name: t[order] for name, t in out.items()}
