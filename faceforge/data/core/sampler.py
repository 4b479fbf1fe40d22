"""Training sample order that is a function of (seed, epoch), and a DataLoader Lightning can stop and resume.

:class:`EpochSampler` draws the order of epoch ``e`` from a generator seeded with ``(seed, e)`` alone (a
permutation, or class-balanced draws with replacement), so epoch ``e`` has the same order whether it is the first
epoch of the process or the fifth, and it yields ``(epoch, index)`` pairs: the dataset then derives each sample's
augmentation from ``(seed, epoch, index)`` (see :func:`split_key`) instead of from a generator that lives in one
DataLoader worker. Batches are therefore the same with any ``num_workers``, persistent workers or not.

:class:`ResumableDataLoader` counts the batches it has handed to the training loop in the current epoch and gives
that count to Lightning's checkpoints (``state_dict`` / ``load_state_dict``, which Lightning calls for a loader that
has them), so a run stopped mid-epoch resumes with the batch that follows the last one trained, not with the
epoch's first batch. It also starts its worker processes only at the first batch request, after Lightning has
called ``set_epoch``, so the first epoch after a resume gets that epoch's order even with worker processes.

Multi-process training (DDP): :class:`EpochSampler` is a ``DistributedSampler`` (so Lightning does not wrap it) and
gives rank ``r`` of ``R`` every ``R``-th entry of the epoch's order, padded by wrapping around to a multiple of
``R`` as PyTorch's ``DistributedSampler`` does. Evaluation must not repeat samples (a repeated sample would count
twice in every metric), so validation and test loaders use :class:`EvalSampler` instead: rank ``r`` of ``R`` gets
the indices ``r, r + R, r + 2R, ...`` of the dataset in order, without padding; ranks may get one sample more than
others, and the tasks' metrics (torchmetrics states, gathered with their uneven sizes) see every sample once.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from faceforge.utils.seeding import SHUFFLE, derive_seed

__all__ = ["EpochSampler", "EvalSampler", "ResumableDataLoader", "build_eval_loader", "build_train_loader",
           "split_key"]


def split_key(key: Any, default_epoch: int = 0) -> tuple[int, int]:
    """``(epoch, index)`` of a dataset key: an int index (epoch ``default_epoch``) or an ``(epoch, index)`` pair.

    Args:
        key: what a sampler handed to ``Dataset.__getitem__``: an integer (NumPy and 0-d tensors included) or a
            pair from :class:`EpochSampler`.
        default_epoch: the epoch of a bare integer key.

    Returns:
        ``(epoch, index)`` as Python ints.

    Raises:
        TypeError: for anything else.
    """
    if isinstance(key, (tuple, list)) and len(key) == 2:
        return int(key[0]), int(key[1])
    try:
        return int(default_epoch), int(key)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a dataset key is an index or an (epoch, index) pair, got {key!r}") from exc


class EpochSampler(DistributedSampler):
    """Seeded per-epoch sample order; yields ``(epoch, index)`` pairs.

    Epoch ``e``'s order comes from ``torch.Generator().manual_seed(derive_seed(seed, SHUFFLE, e))``:
    ``torch.randperm(num_samples)`` when shuffling, ``torch.multinomial(weights, num_draws, replacement=True)`` for
    class-balanced sampling, ``0 .. num_samples - 1`` otherwise. Lightning calls :meth:`set_epoch` at every epoch
    start (also after a resume). :meth:`skip_next` makes the next pass start further in (a mid-epoch resume).

    Args:
        num_samples: the dataset's length (>= 0).
        seed: the run's seed.
        shuffle: a new permutation per epoch (ignored when ``weights`` is given).
        weights: float ``(num_samples,)`` non-negative sampling weights (e.g. 1 / class count): draws WITH
            replacement; None for a permutation.
        num_draws: draws per epoch with ``weights`` (default ``num_samples``).
        num_replicas, rank: the distributed split; None reads them from ``torch.distributed`` when a process group
            is initialised at iteration time (1 and 0 otherwise).
        drop_last: in a distributed split, drop the tail instead of padding to a multiple of ``num_replicas``.

    Raises:
        ValueError: negative ``num_samples``, ``weights`` of another length or without a positive entry, or a
            ``rank`` outside ``[0, num_replicas)``.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True,
                 weights: torch.Tensor | np.ndarray | None = None, num_draws: int | None = None,
                 num_replicas: int | None = None, rank: int | None = None, drop_last: bool = False) -> None:
        # DistributedSampler.__init__ needs a process group: the split is resolved when iterating instead
        num_samples = int(num_samples)
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if weights is not None:
            weights = torch.as_tensor(np.asarray(weights), dtype=torch.double)
            if weights.shape != (num_samples,) or not bool((weights > 0).any()) or bool((weights < 0).any()):
                raise ValueError(f"weights must be ({num_samples},) non-negative with a positive entry, got "
                                 f"shape {tuple(weights.shape)}")
        if num_replicas is not None and rank is not None and not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.dataset_size = num_samples
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.weights = weights
        self.num_draws = int(num_draws) if num_draws is not None else num_samples
        self.drop_last = bool(drop_last)
        self._num_replicas = num_replicas
        self._rank = rank
        self.epoch = 0
        self._skip: tuple[int, int] | None = None

    # ------------------------------------------------------------------ distributed split
    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        """Processes sharing the epoch (explicit, or the process group's size, or 1)."""
        if self._num_replicas is not None:
            return int(self._num_replicas)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size()
        return 1

    @property
    def rank(self) -> int:  # type: ignore[override]
        """This process's rank in the split."""
        if self._rank is not None:
            return int(self._rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return 0

    @property
    def epoch_length(self) -> int:
        """Entries of one epoch's order before the distributed split."""
        return self.num_draws if self.weights is not None else self.dataset_size

    @property
    def num_samples(self) -> int:  # type: ignore[override]
        """Entries this rank yields per epoch (``DistributedSampler``'s meaning)."""
        n, r = self.epoch_length, self.num_replicas
        return n // r if self.drop_last else math.ceil(n / r)

    def __len__(self) -> int:
        return self.num_samples

    # ------------------------------------------------------------------ order
    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order for the next pass (Lightning calls this at every epoch start)."""
        self.epoch = int(epoch)

    def skip_next(self, epoch: int, samples: int) -> None:
        """Start the next pass at entry ``samples`` of this rank's order, if that pass is epoch ``epoch``.

        A mid-epoch resume: the first ``samples`` entries were trained on before the stop. The skip applies to one
        pass only; if the next pass is another epoch it is dropped with a warning.
        """
        self._skip = (int(epoch), int(samples))

    def order(self, epoch: int) -> np.ndarray:
        """int64 indices this rank serves in epoch ``epoch`` (a fixed function of seed, epoch and the split)."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, SHUFFLE, epoch))
        if self.weights is not None:
            full = torch.multinomial(self.weights, self.num_draws, replacement=True, generator=g)
        elif self.shuffle:
            full = torch.randperm(self.dataset_size, generator=g)
        else:
            full = torch.arange(self.dataset_size)
        order = full.numpy().astype(np.int64)
        r = self.num_replicas
        if r > 1:
            total = self.num_samples * r
            if total > len(order) and len(order) > 0:
                order = np.resize(order, total)  # wrap around, as DistributedSampler pads
            order = order[:total][self.rank::r]
        return order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        start = 0
        if self._skip is not None:
            skip_epoch, samples = self._skip
            self._skip = None
            if skip_epoch == epoch:
                start = samples
            else:
                warnings.warn(f"a resume position for epoch {skip_epoch} was given but the pass is epoch {epoch}; "
                              f"starting the epoch from its first sample", stacklevel=2)
        for i in self.order(epoch)[start:].tolist():
            yield epoch, i


class EvalSampler(DistributedSampler):
    """Evaluation order: every index once, in order, split across processes without padding.

    Rank ``r`` of ``R`` yields ``r, r + R, r + 2R, ...`` (ranks ``< num_samples % R`` get one more); with one process
    it yields ``0 .. num_samples - 1``. A ``DistributedSampler`` subclass, so Lightning keeps it instead of wrapping
    the loader in its own (padding) ``DistributedSampler``. The split is resolved when iterating, like
    :class:`EpochSampler`'s.

    Args:
        num_samples: the dataset's length (>= 0).
        num_replicas, rank: the distributed split; None reads them from ``torch.distributed`` at iteration time.

    Raises:
        ValueError: negative ``num_samples``, or a ``rank`` outside ``[0, num_replicas)``.
    """

    def __init__(self, num_samples: int, num_replicas: int | None = None, rank: int | None = None) -> None:
        if int(num_samples) < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if num_replicas is not None and rank is not None and not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.dataset_size = int(num_samples)
        self._num_replicas = num_replicas
        self._rank = rank
        self.epoch = 0
        self.shuffle = False
        self.drop_last = False

    num_replicas = EpochSampler.num_replicas
    rank = EpochSampler.rank

    @property
    def num_samples(self) -> int:  # type: ignore[override]
        """Indices this rank yields."""
        r, rank = self.num_replicas, self.rank
        return len(range(rank, self.dataset_size, r))

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Kept for Lightning (the order does not depend on the epoch)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_size, self.num_replicas))


class _LazyCountingIterator:
    """The iterator of :class:`ResumableDataLoader`: makes the real one at the first ``next`` and counts batches."""

    def __init__(self, loader: ResumableDataLoader) -> None:
        self.loader = loader
        self.it: Iterator[Any] | None = None

    def __iter__(self) -> _LazyCountingIterator:
        return self

    def __len__(self) -> int:
        return len(self.loader)

    def __next__(self) -> Any:
        if self.it is None:
            self.it = self.loader._start()
        batch = next(self.it)
        self.loader._batches += 1
        return batch


class ResumableDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` whose position in the epoch is saved in Lightning checkpoints.

    Takes the arguments of :class:`torch.utils.data.DataLoader`; ``sampler`` must be an :class:`EpochSampler` and
    ``batch_size`` an int (no ``batch_sampler``). ``state_dict()`` is ``{"epoch": e, "batches": n}``: the epoch of
    the current pass and the batches handed out in it (Lightning fetches one batch at a time when the loader has a
    length, so that is the number of batches trained on when a checkpoint is written in a training-batch hook).
    ``load_state_dict`` makes the next pass of the same epoch skip those batches. Worker processes are started at
    the first batch request, not when ``iter()`` is called.

    Raises:
        TypeError: if ``sampler`` is not an :class:`EpochSampler` or ``batch_size`` is None.
    """

    def __init__(self, dataset: Dataset, *args: Any, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        if not isinstance(self.sampler, EpochSampler) or self.batch_size is None:
            raise TypeError("ResumableDataLoader needs an EpochSampler as sampler and an int batch_size")
        self._batches = 0
        self._pass_epoch = self.sampler.epoch
        self._pending: dict[str, int] | None = None

    def __iter__(self) -> _LazyCountingIterator:  # type: ignore[override]
        return _LazyCountingIterator(self)

    def _start(self) -> Iterator[Any]:
        sampler: EpochSampler = self.sampler  # type: ignore[assignment]
        self._pass_epoch = sampler.epoch
        self._batches = 0
        pending, self._pending = self._pending, None
        if pending and pending.get("batches", 0) > 0 and int(pending["epoch"]) == sampler.epoch:
            self._batches = int(pending["batches"])
            sampler.skip_next(sampler.epoch, self._batches * int(self.batch_size))  # type: ignore[arg-type]
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": epoch of the current pass, "batches": batches handed out in it}`` (primitive ints)."""
        return {"epoch": int(self._pass_epoch), "batches": int(self._batches)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the epoch ``state_dict["epoch"]`` after its first ``state_dict["batches"]`` batches (next pass)."""
        self._pending = {"epoch": int(state_dict.get("epoch", -1)), "batches": int(state_dict.get("batches", 0))}


def build_train_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, pin_memory: bool = False,
                       persistent_workers: bool = False, weights: torch.Tensor | np.ndarray | None = None,
                       drop_last: bool | None = None) -> ResumableDataLoader:
    """The training loader of both data modules: :class:`EpochSampler` + :class:`ResumableDataLoader`.

    Args:
        dataset: a map-style dataset whose ``__getitem__`` accepts ``(epoch, index)`` keys (:func:`split_key`).
        batch_size: samples per batch.
        seed: the run's seed.
        num_workers, pin_memory, persistent_workers: as for DataLoader (persistent only with workers).
        weights: per-sample weights for class-balanced draws with replacement; None shuffles.
        drop_last: drop the last partial batch; None drops it when there is more than one batch.

    Returns:
        The loader.
    """
    n = len(dataset)  # type: ignore[arg-type]
    sampler = EpochSampler(n, seed=seed, shuffle=True, weights=weights)
    if drop_last is None:
        drop_last = n > batch_size
    return ResumableDataLoader(dataset, batch_size=int(batch_size), sampler=sampler, num_workers=int(num_workers),
                               pin_memory=bool(pin_memory), drop_last=bool(drop_last),
                               persistent_workers=bool(persistent_workers) and int(num_workers) > 0)


def build_eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
                      persistent_workers: bool = False) -> DataLoader:
    """The validation / test loader of both data modules: every sample once, in order, over :class:`EvalSampler`.

    Args:
        dataset: a map-style dataset (bare integer keys: evaluation items carry no augmentation).
        batch_size: samples per batch.
        num_workers, pin_memory, persistent_workers: as for DataLoader (persistent only with workers).

    Returns:
        The loader (the last batch may be smaller; nothing is dropped).
    """
    return DataLoader(dataset, batch_size=int(batch_size), sampler=EvalSampler(len(dataset)),  # type: ignore[arg-type]
                      num_workers=int(num_workers), pin_memory=bool(pin_memory), drop_last=False,
                      persistent_workers=bool(persistent_workers) and int(num_workers) > 0)
