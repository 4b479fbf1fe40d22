"""A process-wide, thread-safe counter, for warnings that are shown a few times and then only counted."""
from __future__ import annotations

import threading

__all__ = ["EventCounter"]


class EventCounter:
    """Counts events across the threads of one process (each DataLoader worker process has its own).

    ``n = counter.next()`` returns the event's number (1, 2, ...), so a caller warns while ``n <= limit``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    def next(self) -> int:
        """Count one event; return how many there have been (this one included)."""
        with self._lock:
            self._n += 1
            return self._n
