"""A resumable parallel map over work items, shared by every builder of prepared data.

:func:`run_parallel` runs ``work_fn(item)`` for each item, in this process (``workers <= 1``) or in a pool of
*spawned* processes, and hands every result back to the calling process through ``on_result``: workers compute,
the main process alone writes files. Resuming is the caller's business and stays simple: it passes ``skip`` (e.g.
"this item's done-marker exists"), and items that are done are not run again.

Workers exit when their parent dies. A worker blocked on its task queue does not notice that the process that
started it was killed (``kill -9`` of ``faceforge-extract-faces`` used to leave its workers alive at about 0.9 GB
each, stuck in ``futex_wait``). Each worker therefore

* asks Linux to send it ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through ctypes),
  then checks that its parent is still the process that started it (the parent may have died before the
  ``prctl`` call: the race the man page warns about), and
* everywhere (and as a second line on Linux, where the signal is tied to the *thread* that forked the worker)
  runs a daemon thread that polls ``os.getppid()`` and calls ``os._exit`` when the parent changed.

``PR_SET_PDEATHSIG`` is described in prctl(2); the ``getppid`` check after it follows the same man page.

Example::

    def on_result(item, result):
        write_outputs(item, result)            # main process only
    run_parallel(todo, process_one, workers=4, initializer=load_model, initargs=(cfg,),
                 on_result=on_result, skip=lambda item: marker(item).is_file(), progress="videos")
"""
from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from tqdm import tqdm

from faceforge.errors import BuilderSettingsError as SettingsError

__all__ = ["RunStats", "run_parallel"]

T = TypeVar("T")
R = TypeVar("R")

#: prctl(2) option: the signal sent to this process when its parent (thread) dies.
PR_SET_PDEATHSIG = 1
#: Seconds between two parent checks of the fallback watcher thread.
PARENT_POLL_SECONDS = 1.0
#: Tasks queued per worker beyond the one it runs (bounded, so huge item lists cost no memory up front).
QUEUED_PER_WORKER = 2


@dataclass
class RunStats:
    """What :func:`run_parallel` did.

    Attributes:
        total: items given.
        skipped: items ``skip`` said were already done (not run).
        completed: items whose result reached ``on_result``.
        errors: items whose ``work_fn`` raised (or whose worker died) and that ``on_error`` accepted.
        seconds: wall-clock time of the run.
    """

    total: int = 0
    skipped: int = 0
    completed: int = 0
    errors: int = 0
    seconds: float = 0.0


def _set_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; True if the kernel accepted it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0) == 0  # 9 = SIGKILL
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval: float) -> None:
    """Daemon-thread body: exit this process at once when its parent is no longer ``parent_pid``."""
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:
            os._exit(1)


def _worker_bootstrap(parent_pid: int, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...],
                      poll_seconds: float) -> None:
    """Initializer of every pool worker: tie its life to ``parent_pid``, then run the caller's initializer."""
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, poll_seconds), name="faceforge-parent-watch",
                     daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel queued tasks and end the workers now (they write nothing, so nothing is lost)."""
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public handle on the workers
        if proc.is_alive():
            proc.terminate()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.join(timeout=5)


def run_parallel(items: Iterable[T], work_fn: Callable[[T], R], *, workers: int = 1,
                 initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = (),
                 on_result: Callable[[T, R], None] | None = None,
                 on_error: Callable[[T, BaseException], None] | None = None,
                 skip: Callable[[T], bool] | None = None, progress: str | bool = False,
                 poll_seconds: float = PARENT_POLL_SECONDS) -> RunStats:
    """Run ``work_fn`` over ``items`` (in parallel), handing each result to ``on_result`` in this process.

    Args:
        items: work items; with ``workers > 1`` each must be picklable (send paths and settings, not tensors).
        work_fn: ``work_fn(item) -> result``; with ``workers > 1`` a module-level function (picklable), and its
            result picklable. It should not write the outputs itself: ``on_result`` does, in this process.
        workers: processes; ``<= 1`` runs everything in this process, in order (``initializer`` runs here too).
            The pool uses the ``spawn`` start method (no forked copy of the parent's threads, CUDA or locks) and
            never starts more workers than there are items to run.
        initializer: called once in each worker (``initializer(*initargs)``), e.g. to load a detector into a
            module-level global that ``work_fn`` uses.
        initargs: its arguments (picklable).
        on_result: ``on_result(item, result)``, called in this process in completion order (item order when
            ``workers <= 1``). An exception it raises stops the run (queued items are cancelled, workers end) and
            propagates.
        on_error: ``on_error(item, exc)`` for an item whose ``work_fn`` raised, or whose worker died
            (``BrokenProcessPool``); it may record the problem (the run goes on) or raise (the run stops). Without
            it, the first error stops the run and propagates.
        skip: ``skip(item) -> True`` for items already done by an earlier run (e.g. their done-marker exists);
            they are neither run nor passed to ``on_result``.
        progress: a description to show a tqdm progress bar on stderr (``True``: "items"); ``False`` for none.
        poll_seconds: how often a worker checks that its parent is alive (the fallback to ``PR_SET_PDEATHSIG``).

    Returns:
        :class:`RunStats` (counts and time).

    Raises:
        ValueError: if ``workers`` is not an integer.
        Whatever ``on_result`` or ``on_error`` raise, or ``work_fn``'s exception when there is no ``on_error``.
        KeyboardInterrupt: Ctrl-C; the workers are ended before it propagates.
    """
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise SettingsError(f"workers must be an integer, got {workers!r}")
    t0 = time.perf_counter()
    items = list(items)
    stats = RunStats(total=len(items))
    todo: Sequence[T] = [it for it in items if not skip(it)] if skip is not None else items
    stats.skipped = len(items) - len(todo)
    desc = "items" if progress is True else (progress or None)
    bar = tqdm(total=len(todo), desc=desc, unit="item", disable=desc is None, file=sys.stderr, dynamic_ncols=True)

    def _done(item: T, result: R) -> None:
        if on_result is not None:
            on_result(item, result)
        stats.completed += 1
        bar.update(1)

    def _failed(item: T, exc: BaseException) -> None:
        if on_error is None:
            raise exc
        on_error(item, exc)
        stats.errors += 1
        bar.update(1)

    try:
        if workers <= 1 or len(todo) <= 1:
            if initializer is not None and todo:
                initializer(*initargs)
            for item in todo:
                try:
                    result = work_fn(item)
                except Exception as exc:  # handed to on_error (or re-raised by _failed)
                    _failed(item, exc)
                    continue
                _done(item, result)
        elif todo:
            _run_pool(todo, work_fn, min(workers, len(todo)), initializer, initargs, poll_seconds, _done, _failed)
    finally:
        bar.close()
    stats.seconds = round(time.perf_counter() - t0, 3)
    return stats


def _run_pool(todo: Sequence[T], work_fn: Callable[[T], R], workers: int, initializer: Callable[..., Any] | None,
              initargs: tuple[Any, ...], poll_seconds: float, done: Callable[[T, R], None],
              failed: Callable[[T, BaseException], None]) -> None:
    """The ``workers > 1`` path of :func:`run_parallel`: a bounded window of tasks in a spawned pool."""
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_bootstrap,
                               initargs=(os.getpid(), initializer, tuple(initargs), poll_seconds))
    pending: dict[Future[R], int] = {}  # future -> position of its item in todo
    next_item = 0
    try:
        while next_item < len(todo) or pending:
            while next_item < len(todo) and len(pending) < workers * (1 + QUEUED_PER_WORKER):
                try:
                    pending[pool.submit(work_fn, todo[next_item])] = next_item
                except BrokenProcessPool as exc:  # a worker died earlier: the pool takes no more work
                    failed(todo[next_item], exc)
                next_item += 1
            if not pending:
                continue
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=pending.__getitem__):  # a deterministic order within one batch
                item = todo[pending.pop(fut)]
                try:
                    result = fut.result()
                except Exception as exc:  # work_fn raised, or a worker died (BrokenProcessPool)
                    failed(item, exc)
                    continue
                done(item, result)
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)
