"""Prepared data folders (face indexes, volume stores) and the settings they were built with.

A data module builds its folder once (face extraction, volume generation, a synthetic generator) and reuses it on
later runs. Reusing a folder built with other settings would silently change an experiment (32 frames per video
instead of 16, another crop margin, another synthetic seed), so the first build records the builder and its
keyword arguments in ``built_with.json``, and a later run whose builder asks for something else stops with a
message naming each difference. Arguments that do not change the output (worker counts, progress bars) are not
compared. Folders made outside a data module (e.g. by ``faceforge-extract-faces``) have no record and are not
checked.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from faceforge.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)

BUILD_RECORD = "built_with.json"
#: Builder arguments that change how fast a folder is built, not what it holds.
OUTPUT_NEUTRAL_KEYS = frozenset({"workers", "progress", "num_threads", "torch_threads"})
#: Builders recorded under their module path before the data layer was split by domain: the same code, so a folder
#: they built is still a match.
RENAMED_BUILDERS = {
    "faceforge.data.preprocess.extract.extract_dataset": "faceforge.data.detection.extraction.extract.extract_dataset",
    "faceforge.data.synthetic.detection.build_synthetic_detection":
        "faceforge.data.detection.synthetic.build_synthetic_detection",
    "faceforge.data.synthetic.reconstruction.build_synthetic_reconstruction":
        "faceforge.data.reconstruction.synthetic.build_synthetic_reconstruction",
    "faceforge.data.volume_datamodule.build_w300lp_volumes":
        "faceforge.data.reconstruction.builders.build_w300lp_volumes",
    "faceforge.data.reconstruction.datamodule.build_w300lp_volumes":
        "faceforge.data.reconstruction.builders.build_w300lp_volumes",
}


def builder_settings(builder: Callable[..., Any]) -> dict[str, Any]:
    """``{"builder": "module.function", "kwargs": {...}}`` of a (Hydra partial) builder, JSON-normalised."""
    func = builder.func if isinstance(builder, functools.partial) else builder
    kwargs = dict(builder.keywords) if isinstance(builder, functools.partial) else {}
    kwargs = {k: v for k, v in kwargs.items() if k not in OUTPUT_NEUTRAL_KEYS}
    name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
    return json.loads(json.dumps({"builder": name, "kwargs": kwargs}, sort_keys=True, default=str))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    if RENAMED_BUILDERS.get(old.get("builder"), old.get("builder")) != new.get("builder"):
        diffs.append(f"builder {old.get('builder')} -> {new.get('builder')}")
    old_kw, new_kw = old.get("kwargs", {}), new.get("kwargs", {})
    for key in sorted(set(old_kw) | set(new_kw)):
        if key in OUTPUT_NEUTRAL_KEYS or old_kw.get(key) == new_kw.get(key):
            continue
        diffs.append(f"{key}: built with {old_kw.get(key)!r}, now {new_kw.get(key)!r}")
    return diffs


def index_has_rows(index: Path) -> bool:
    """Whether the index file ``index`` holds at least one row.

    Args:
        index: an existing index file: Parquet (``face_index.parquet``: its footer's row count; an unreadable file
            has no rows) or CSV (``face_index.csv``, ``volume_index.csv``: a non-empty line after the header).

    Raises:
        OSError: if the file cannot be read.
    """
    if index.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_metadata(index).num_rows > 0
        except pa.ArrowInvalid:
            return False
    with index.open("r", encoding="utf-8", errors="replace") as fh:
        fh.readline()  # the header
        return any(line.strip() for line in fh)


def _index_file(folder: Path, names: Sequence[str]) -> Path:
    """The first of ``names`` present in ``folder``, else ``folder / names[0]``."""
    return next((folder / n for n in names if (folder / n).is_file()), folder / names[0])


def ensure_built(folder: Path, index_name: str | Sequence[str], builder: Callable[..., Any] | None,
                 error: Callable[[str], Exception], missing_message: str, setting_name: str) -> None:
    """Build ``folder`` with ``builder(output_dir=folder)`` unless its index exists; refuse a stale folder.

    Args:
        folder: the prepared-data folder (``data.faces_dir``, ``data.volumes_dir``).
        index_name: the file whose presence means "built" (``face_index.parquet``, ``volume_index.csv``), or the
            names it may have, preferred first (``("face_index.parquet", "face_index.csv")``).
        builder: the builder, or None when the folder must already exist.
        error: exception factory of the calling data module (its own error class).
        missing_message: the message when there is no index and no builder.
        setting_name: the config key that names the folder, for messages (``data.faces_dir``).

    An index that holds no row (only a header: the trace of a failed or empty build) is not a built folder: it is
    rebuilt when there is a builder, and refused otherwise.

    Raises:
        whatever ``error`` makes: no index (or an empty one) and no builder; the builder did not write the index,
        or wrote one without rows; the folder was built with other settings than ``builder`` now asks for.
    """
    names = (index_name,) if isinstance(index_name, str) else tuple(index_name)
    index = _index_file(folder, names)
    record = folder / BUILD_RECORD
    if index.is_file() and not index_has_rows(index):
        if builder is None:
            raise error(f"{index} holds no rows (left by a failed or empty build, e.g. no face found): it does not "
                        f"count as prepared data. Delete it and prepare {folder} again. ({missing_message})")
        log.warning("%s holds no rows (a failed or empty build): building %s again", index, folder)
        index.unlink()
    if index.is_file():
        if builder is not None and record.is_file():
            recorded = json.loads(record.read_text(encoding="utf-8"))
            diffs = _differences(recorded, builder_settings(builder))
            if diffs:
                raise error(f"{folder} was built with other settings than this run asks for ("
                            + "; ".join(diffs) + f"). Point {setting_name} to a new folder, or delete {folder} "
                            "to rebuild it")
        return
    if builder is None:
        raise error(missing_message)
    log.info("%s absent: building it with %r", index, builder)
    folder.mkdir(parents=True, exist_ok=True)
    builder(output_dir=Path(folder))
    index = _index_file(folder, names)
    if not index.is_file():
        raise error(f"the builder {builder!r} ran but did not write {index}")
    if not index_has_rows(index):
        raise error(f"the builder {builder!r} wrote {index} without any row; delete it, fix the input and run again")
    atomic_write_json(record, builder_settings(builder))
