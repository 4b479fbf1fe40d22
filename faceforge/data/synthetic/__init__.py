"""Synthetic data built by the project's own code (DESIGN.md "The embedded default").

:func:`build_synthetic_detection` (in :mod:`.detection`) writes a small detection dataset (procedural faces,
pristine and manipulated) in the face-index format that face extraction writes, so ``data=synthetic`` exercises
the real code paths. Imported lazily, so ``python -m faceforge.data.synthetic.detection`` runs cleanly.
"""
from __future__ import annotations

from typing import Any

__all__ = ["METHODS", "build_synthetic_detection"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from faceforge.data.synthetic import detection

        return getattr(detection, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
