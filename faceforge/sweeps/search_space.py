"""Search spaces of hyperparameter sweeps, written as Hydra-sweeper-style strings in ``conf/hparams_search/``.

One entry per config key (``model.optimizer.lr: log_interval(1e-4, 1e-2)``), parsed into Optuna distributions:

* ``interval(low, high)``: a float, uniform in [low, high];
* ``log_interval(low, high)``: a float, log-uniform in [low, high] (learning rates, weight decays);
* ``int_interval(low, high)``: an integer in [low, high] (both included);
* ``choice(a, b, ...)``: one of the listed values (numbers, ``true``/``false``, ``null`` or strings).

The strings are data: they are parsed here (numbers with :func:`float` / :func:`int`, nothing evaluated).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import optuna

from faceforge.errors import FaceforgeError

__all__ = ["SearchSpaceError", "format_override", "parse_search_space"]

_ENTRY = re.compile(r"^\s*(interval|log_interval|int_interval|choice)\s*\((.*)\)\s*$", re.DOTALL)


class SearchSpaceError(FaceforgeError, ValueError):
    """A ``sweep.params`` entry that is not one of the forms above (names the key and the text)."""


def _scalar(text: str) -> Any:
    """``"1e-3"`` -> 0.001, ``"32"`` -> 32, ``"true"`` -> True, ``"null"`` -> None, ``"'adam'"`` -> ``"adam"``,
    anything else the stripped string."""
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if t.lower() in ("null", "none"):
        return None
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            continue
    return t


def parse_search_space(params: Mapping[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions of a ``sweep.params`` mapping.

    Args:
        params: ``{config key: entry}``, each entry a string of one of the module docstring's forms, or a list
            (taken as ``choice(...)`` of its items).

    Returns:
        ``{config key: distribution}`` in the mapping's order.

    Raises:
        SearchSpaceError: an unknown form, a wrong number of bounds, bounds that are not numbers or not in order,
            a log interval that is not positive, or an empty choice.
    """
    space: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, entry in params.items():
        if isinstance(entry, (list, tuple)):
            entry = "choice(" + ", ".join(str(v) for v in entry) + ")"
        m = _ENTRY.match(str(entry))
        if not m:
            raise SearchSpaceError(f"sweep.params.{key}: {entry!r} is not interval(a, b), log_interval(a, b), "
                                   f"int_interval(a, b) or choice(...)")
        kind, args = m.group(1), [a for a in m.group(2).split(",") if a.strip()]
        if kind == "choice":
            if not args:
                raise SearchSpaceError(f"sweep.params.{key}: choice() needs at least one value")
            space[key] = optuna.distributions.CategoricalDistribution([_scalar(a) for a in args])
            continue
        if len(args) != 2:
            raise SearchSpaceError(f"sweep.params.{key}: {kind}() needs two bounds, got {entry!r}")
        try:
            low, high = (int(a) if kind == "int_interval" else float(a) for a in args)
        except ValueError as exc:
            raise SearchSpaceError(f"sweep.params.{key}: bounds of {entry!r} are not numbers") from exc
        if not low < high:
            raise SearchSpaceError(f"sweep.params.{key}: the low bound must be below the high one in {entry!r}")
        if kind == "int_interval":
            space[key] = optuna.distributions.IntDistribution(int(low), int(high))
        elif kind == "log_interval":
            if low <= 0:
                raise SearchSpaceError(f"sweep.params.{key}: a log interval needs a positive low bound: {entry!r}")
            space[key] = optuna.distributions.FloatDistribution(low, high, log=True)
        else:
            space[key] = optuna.distributions.FloatDistribution(low, high)
    return space


def format_override(key: str, value: Any) -> str:
    """A Hydra command-line override ``key=value`` for a sampled value (floats in full precision, strings
    quoted, None as ``null``).

    >>> format_override("model.optimizer.lr", 0.001)
    'model.optimizer.lr=0.001'
    >>> format_override("data.batch_size", 32)
    'data.batch_size=32'
    """
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int):
        text = str(value)
    else:
        text = "'" + str(value).replace("'", "\\'") + "'"
    return f"{key}={text}"
