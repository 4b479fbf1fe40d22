"""Small helpers over nested mappings (configs, settings records, checkpoint hyperparameters)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["flatten_dotted", "plain"]


def plain(value: Any) -> Any:
    """``value`` with every mapping turned into a ``dict`` with string keys and every tuple into a ``list``
    (recursively), as JSON would store it; other values unchanged."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def flatten_dotted(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one flat dict with dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}``.

    Lists and tuples are leaves (normalised by :func:`plain`), so two records can be compared key by key and
    their differences named (``data.image_size: 256 -> 128``).

    Args:
        value: a mapping (or a leaf).
        prefix: the key of ``value`` itself ("" at the top).

    Returns:
        ``{dotted key: leaf}``; a leaf at the top is returned as ``{prefix: leaf}``.
    """
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten_dotted(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: plain(value)}
