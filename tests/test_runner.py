"""The shared resumable parallel runner (faceforge/data/core/runner.py): results reach the main process, done items
are skipped, errors are reported or stop the run, and workers die with their parent (kill -9)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from faceforge.data.core.runner import RunStats, run_parallel

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_OFFSET = 0


def _init(offset: int) -> None:
    global _OFFSET
    _OFFSET = offset


def _work(x: int) -> tuple[int, int, int]:
    if x < 0:
        raise ValueError(f"negative item {x}")
    return x, x * x + _OFFSET, os.getpid()


def test_in_process_order_skip_and_initializer():
    seen = []
    stats = run_parallel(range(6), _work, workers=1, initializer=_init, initargs=(100,),
                         on_result=lambda item, res: seen.append((item, res[1])), skip=lambda x: x % 3 == 0)
    assert seen == [(1, 101), (2, 104), (4, 116), (5, 125)]
    assert (stats.total, stats.skipped, stats.completed, stats.errors) == (6, 2, 4, 0)


def test_error_stops_the_run_without_on_error():
    seen = []
    with pytest.raises(ValueError, match="negative item -1"):
        run_parallel([1, -1, 2], _work, on_result=lambda item, res: seen.append(item))
    assert seen == [1]


def test_on_error_records_and_goes_on():
    errors = []
    stats = run_parallel([1, -1, 2], _work, on_error=lambda item, exc: errors.append((item, str(exc))))
    assert errors == [(-1, "negative item -1")]
    assert isinstance(stats, RunStats) and (stats.completed, stats.errors) == (2, 1)


def test_workers_must_be_an_integer():
    with pytest.raises(ValueError, match="workers must be an integer"):
        run_parallel([1], _work, workers="2")  # type: ignore[arg-type]


@pytest.mark.timeout(120)
def test_pool_hands_every_result_to_the_main_process():
    results: dict[int, tuple[int, int]] = {}
    errors = []
    stats = run_parallel(range(-1, 9), _work, workers=2, initializer=_init, initargs=(7,),
                         on_result=lambda item, res: results.__setitem__(item, (res[1], res[2])),
                         on_error=lambda item, exc: errors.append((item, type(exc).__name__)))
    assert {k: v[0] for k, v in results.items()} == {x: x * x + 7 for x in range(9)}  # initializer ran in workers
    assert all(pid != os.getpid() for _, pid in results.values())
    assert errors == [(-1, "ValueError")]
    assert (stats.completed, stats.errors) == (9, 1)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def kill_parent(proc: subprocess.Popen, workers: Iterable[int], timeout: float = 10.0) -> list[int]:
    """SIGKILL ``proc``, wait up to ``timeout`` s for ``workers`` to exit; return those still alive."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    return [p for p in workers if _alive(p)]


def reap(proc: subprocess.Popen, workers: Iterable[int]) -> None:
    """Kill whatever a test left running: the parent and any surviving worker."""
    if proc.poll() is None:
        proc.kill()
    for p in workers:
        if _alive(p):
            os.kill(p, signal.SIGKILL)


def kill_mid_run(argv: list[str], cwd: Path, in_the_middle: Callable[[], bool], what: str, workers: int = 2,
                 timeout: float = 200.0) -> None:
    """Start ``argv`` (a command running ``workers`` spawned workers), SIGKILL it as soon as ``in_the_middle()`` is
    true (e.g. a first done-marker exists), and assert that it was still running, that it had ``workers`` workers
    and that none of them outlived it. Whatever is left running is killed at the end."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            seen |= {p for p in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()}
            if len(seen) >= workers and in_the_middle():
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"{what} ended before it could be killed: {proc.stderr.read()!r}"
        assert len(seen) == workers, f"expected {workers} workers, saw {sorted(seen)}"
        assert not kill_parent(proc, seen, timeout=15), f"workers outlived the killed {what}"
    finally:
        reap(proc, seen)


def _children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is ``pid`` (from /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(entry.name))
    return kids


def clear_parent_death_signal() -> None:
    """Worker initializer of the tests: undo ``PR_SET_PDEATHSIG`` (runs after the runner set it)."""
    import ctypes
    import ctypes.util

    ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl(1, 0, 0, 0, 0)


def _kill_parent_and_list_survivors(use_prctl: bool, poll_seconds: float) -> list[int]:
    """Start a parent running 2 sleeping workers, SIGKILL it, return the workers still alive 10 s later."""
    init = "None" if use_prctl else "clear_parent_death_signal"
    script = textwrap.dedent(f"""
        import time
        from faceforge.data.core.runner import run_parallel
        from tests.test_runner import clear_parent_death_signal
        print("started", flush=True)
        run_parallel([60] * 4, time.sleep, workers=2, initializer={init}, poll_seconds={poll_seconds})
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        assert parent.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.2)
            workers = [p for p in _children(parent.pid)
                       if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) >= 2, "the pool did not start its workers"
        time.sleep(2.0)  # let the initializers run (they precede the first task)
        return kill_parent(parent, workers)
    finally:
        reap(parent, workers)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("use_prctl", [True, False], ids=["prctl", "poll-fallback"])
def test_kill_9_of_the_parent_ends_its_workers(use_prctl):
    # prctl alone (the watcher effectively off), or the watcher alone (the death signal cleared in the worker)
    left = _kill_parent_and_list_survivors(use_prctl, poll_seconds=1e6 if use_prctl else 0.2)
    assert not left, f"workers {left} outlived their parent"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.timeout(120)
def test_without_either_guard_workers_outlive_their_parent():
    """The control: the two guards above are what ends the workers (they would keep sleeping otherwise)."""
    assert len(_kill_parent_and_list_survivors(False, poll_seconds=1e6)) == 2


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_watcher_exits_when_the_parent_is_not_the_expected_one():
    code = "import os, faceforge.data.core.runner as r; r._watch_parent(os.getppid() + 1, 0.05)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, timeout=60)
    assert proc.returncode == 1
