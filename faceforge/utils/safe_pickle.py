"""Reading pickled NumPy data (3DDFA's ``tri.pkl``, ``bfm_noneck_v3.pkl``) without running code.

A pickle names the callables that rebuild its objects, so loading an untrusted one can run anything.
:func:`load_array_pickle` uses an unpickler whose ``find_class`` only allows what NumPy arrays, dtypes and scalars
are rebuilt from; dicts, lists, tuples, strings and numbers need no class lookup and load as usual. Anything else
is refused with :class:`pickle.UnpicklingError` naming the class.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["ArrayUnpickler", "load_array_pickle"]


class ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds NumPy arrays, dtypes and scalars (plus Python's built-in containers)."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
        ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        """The class a pickle names, only from the NumPy array allowlist.

        Raises:
            pickle.UnpicklingError: any other ``module.name`` (nothing outside the allowlist is imported).
        """
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only NumPy arrays are allowed)")


def load_array_pickle(path: str | Path) -> Any:
    """The object pickled in ``path``, rebuilt by :class:`ArrayUnpickler` (latin-1 for Python 2 pickles).

    Raises:
        OSError: the file cannot be read.
        pickle.UnpicklingError: the pickle needs a class other than NumPy's arrays (or is corrupt).
        EOFError, ValueError: a truncated or malformed pickle.
    """
    with open(path, "rb") as fh:
        return ArrayUnpickler(fh, encoding="latin1").load()
