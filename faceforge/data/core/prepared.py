"""Prepared data folders (face indexes, volume stores) and the settings they were built with.

A data module builds its folder once (face extraction, volume generation, a synthetic generator) and reuses it on
later runs. Reusing a folder built with other settings would silently change an experiment (32 frames per video
instead of 16, another crop margin, another synthetic seed), so the first build records the builder and its
keyword arguments in ``built_with.json``, and a later run whose builder asks for something else stops with a
message naming each difference. Arguments that do not change the output (worker counts, progress bars) are not
compared. Console commands record it too (:func:`build_prepared`); folders made by hand have no record and are not
checked.

The prepared-dataset contract (face extraction, volume generation and both synthetic builders follow it):

1. **A builder configured by Hydra**: ``data.builder`` is a ``_partial_: true`` spec of a function called as
   ``builder(output_dir=folder)``. ``train.py`` (through the data module's ``prepare_data``), ``python prepare.py
   data=...`` and the console commands (``faceforge-extract-faces``) all build from that one config, so no default
   is written twice.
2. **One settings record**: ``built_with.json`` (:func:`builder_settings`), written after a successful build and
   compared on every later use (:func:`ensure_built`).
3. **The runner**: the work is a :func:`faceforge.data.core.runner.run_parallel` map whose done-markers make a
   rerun resume.
4. **An index written last**: a folder counts as built only when its index exists and holds rows.
5. **One report**: ``prepare_report.json`` (:data:`PREPARE_REPORT`, see :func:`make_report`) lists every problem
   the reader and the builder met; ``train.py`` prints it in a few lines and saves a copy in the run folder
   (:func:`log_prepare_report`).
"""
from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from faceforge.errors import FaceforgeError
from faceforge.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)

BUILD_RECORD = "built_with.json"
#: The report of the last build of a prepared folder (see :func:`make_report`).
PREPARE_REPORT = "prepare_report.json"
#: Attributes naming a data module's prepared folder, checked in this order by :func:`prepared_folder`.
PREPARED_DIR_ATTRIBUTES = ("faces_dir", "volumes_dir")
#: Problems listed per kind by :func:`report_lines` (the JSON holds all of them).
MAX_LISTED = 3
#: The project's Hydra configs (``conf/`` beside the package).
CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"


class PreparedDataError(FaceforgeError, RuntimeError):
    """A builder run by a console command did not leave a complete prepared folder (no index, or no row)."""


def compose_config(overrides: Sequence[str], config_dir: str | Path | None = None) -> Any:
    """``conf/train.yaml`` composed with ``overrides`` through Hydra's compose API (nothing runs, no run folder);
    the console commands read ``cfg.data`` from it, so their defaults are the configs'.

    Args:
        overrides: Hydra overrides, e.g. ``["data=ffpp", "data.root=/data/FF++"]``.
        config_dir: the config folder (default: the project's ``conf/``).

    Returns:
        The composed ``DictConfig`` (unresolved).

    Raises:
        hydra.errors.ConfigCompositionException, hydra.errors.OverrideParseException: an unknown config or a
            malformed override.
    """
    import os

    from hydra import compose, initialize_config_dir

    os.environ.setdefault("FACEFORGE_ROOT", str(CONFIG_DIR.parent))  # paths.root_dir, as train.py sets it
    with initialize_config_dir(str(Path(config_dir or CONFIG_DIR).resolve()), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def override_value(value: Any) -> str:
    """``value`` written in Hydra's override grammar (strings quoted, so paths with spaces or ``=`` survive)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    # Hydra's quoted strings: backslashes before a quote or at the end are doubled, quotes escaped, others literal
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(value)).replace("'", "\\'")
    return f"'{text}'"
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
            try:
                recorded = json.loads(record.read_text(encoding="utf-8"))
                if not isinstance(recorded, dict) or not isinstance(recorded.get("builder"), str) \
                        or not isinstance(recorded.get("kwargs", {}), dict):
                    raise ValueError('not a JSON object {"builder": "...", "kwargs": {...}}')
            except (OSError, ValueError) as exc:
                raise error(f"{record} is unreadable ({exc}): the settings {folder} was built with are unknown. "
                            f"Point {setting_name} to a new folder, or delete {folder} to rebuild it") from exc
            diffs = _differences(recorded, builder_settings(builder))
            if diffs:
                raise error(f"{folder} was built with other settings than this run asks for ("
                            + "; ".join(diffs) + f"). Point {setting_name} to a new folder, or delete {folder} "
                            "to rebuild it")
        return
    if builder is None:
        raise error(missing_message)
    log.info("%s absent: building it with %r", index, builder)
    build_prepared(folder, names, builder, error)


def build_prepared(folder: Path, index_name: str | Sequence[str], builder: Callable[..., Any],
                   error: Callable[[str], Exception]) -> Path:
    """Run ``builder(output_dir=folder)``, check that it wrote an index with rows, then record its settings.

    Used by :func:`ensure_built` and by the console commands, which always run the builder (it resumes from its
    done-markers and rewrites the index).

    Args:
        folder: the prepared-data folder (created).
        index_name: the index file name, or the names it may have (preferred first).
        builder: the (Hydra partial) builder.
        error: exception factory for the messages below.

    Returns:
        The index file written.

    Raises:
        whatever ``error`` makes: the builder wrote no index, or one without rows; and whatever the builder raises.
    """
    names = (index_name,) if isinstance(index_name, str) else tuple(index_name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    builder(output_dir=folder)
    index = _index_file(folder, names)
    if not index.is_file():
        raise error(f"the builder {builder!r} ran but did not write {index}")
    if not index_has_rows(index):
        raise error(f"the builder {builder!r} wrote {index} without any row; delete it, fix the input and run again")
    atomic_write_json(folder / BUILD_RECORD, builder_settings(builder))
    return index


# ----------------------------------------------------------------------------------------------- the report
def make_report(builder: str, counts: Mapping[str, int], problems: Iterable[Mapping[str, Any]],
                summary: Sequence[str] = (), **details: Any) -> dict[str, Any]:
    """The content of ``prepare_report.json``: one shape for every builder.

    Args:
        builder: ``module.function`` of the builder.
        counts: what was built and skipped (``{"videos": 120, "faces": 3800, ...}``).
        problems: one ``{"kind": ..., "item": ..., "reason": ...}`` per problem the reader or the builder met
            (``kind`` e.g. ``unreadable``, ``truncated``, ``reader:unsafe_name``; ``item`` the file or sample id).
        summary: the builder's own human-readable lines (printed by the console commands).
        **details: builder-specific fields, kept as they are (JSON-able).

    Returns:
        ``{"builder", "counts", "problems", "problem_counts", "summary", **details}`` (JSON-normalised).
    """
    problems = [{"kind": str(p.get("kind", "problem")), "item": str(p.get("item", "")),
                 "reason": str(p.get("reason", ""))} for p in problems]
    kinds: dict[str, int] = {}
    for p in problems:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    report = {**details, "builder": builder, "counts": dict(counts), "problems": problems,
              "problem_counts": dict(sorted(kinds.items())), "summary": list(summary)}
    return json.loads(json.dumps(report, default=str))


def read_prepare_report(folder: str | Path) -> dict[str, Any] | None:
    """The ``prepare_report.json`` of ``folder``, or None when there is none, it is unreadable or not shaped like a
    report (warned).

    Reads only that one file and never instantiates anything from it.
    """
    path = Path(folder) / PREPARE_REPORT
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): no preparation report", path, exc)
        return None
    shapes = {"counts": dict, "problems": list, "problem_counts": dict}
    if not isinstance(report, dict) or any(not isinstance(report.get(k, t()), t) for k, t in shapes.items()) \
            or any(not isinstance(p, dict) for p in report.get("problems", [])):
        log.warning("%s is not a preparation report (a JSON object with counts, problems, problem_counts): "
                    "no preparation report", path)
        return None
    return report


def report_lines(report: Mapping[str, Any], folder: str | Path | None = None) -> list[str]:
    """A few lines about a ``prepare_report.json``: counts, then each kind of problem with a few examples."""
    where = f" of {folder}" if folder is not None else ""
    counts = report.get("counts") or {}
    lines = [f"preparation{where} ({report.get('builder', '?')}): "
             + (", ".join(f"{v} {k}" for k, v in counts.items()) or "no counts")]
    problems = report.get("problems") or []
    kinds = report.get("problem_counts") or {}
    if not kinds:
        lines.append("  no problem met")
    for kind, n in kinds.items():
        examples = [f"{p.get('item')} ({p.get('reason')})" for p in problems if p.get("kind") == kind][:MAX_LISTED]
        more = f" ... (+{n - len(examples)})" if n > len(examples) else ""
        lines.append(f"  {n} {kind}: " + "; ".join(examples) + more)
    return lines


def prepared_folder(datamodule: Any) -> Path | None:
    """The prepared folder a data module reads (its ``faces_dir`` or ``volumes_dir``), or None."""
    for attr in PREPARED_DIR_ATTRIBUTES:
        value = getattr(datamodule, attr, None)
        if value:
            return Path(value)
    return None


def log_prepare_report(datamodule: Any, run_dir: str | Path) -> dict[str, Any] | None:
    """Log a few lines of the data module's ``prepare_report.json`` and save a copy in ``run_dir``.

    Called by ``train.py`` once the data is prepared. A folder without a report (built before the contract, or
    by hand) is skipped silently.

    Args:
        datamodule: the data module (its prepared folder: :func:`prepared_folder`).
        run_dir: the run folder; the copy is ``run_dir/prepare_report.json`` (written atomically).

    Returns:
        The report, or None.
    """
    folder = prepared_folder(datamodule)
    report = read_prepare_report(folder) if folder is not None else None
    if report is None:
        return None
    lines = report_lines(report, folder)
    log.log(logging.WARNING if report.get("problems") else logging.INFO, "%s", "\n".join(lines))
    atomic_write_json(Path(run_dir) / PREPARE_REPORT, report)
    return report
