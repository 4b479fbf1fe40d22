"""The root of faceforge's own exceptions.

Every error faceforge raises for bad input or an impossible request (a dataset root with the wrong layout, a
malformed label file, a checkpoint it cannot rebuild, ...) derives from :class:`FaceforgeError` as well as from the
matching built-in class (``ValueError``, ``OSError``, ...). Its message names the file or setting and what is wrong,
so ``train.py`` and ``evaluate.py`` print it on one line and exit with status 2 instead of showing a traceback.
"""
from __future__ import annotations


class FaceforgeError(Exception):
    """Base class of faceforge's user-facing errors (bad input, impossible configuration)."""


class BuilderSettingsError(FaceforgeError, ValueError):
    """A data builder's setting out of range or unknown (``data.builder.*`` in a data config, or the flag that sets
    it); the message names the setting and its allowed values. Raised before anything is written."""
