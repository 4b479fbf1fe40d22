"""DFDC reader (Dolhansky et al., "The DeepFake Detection Challenge (DFDC) Dataset", arXiv:2006.07397; layout of
the Kaggle release).

Layout under ``root``::

    metadata.json, *.mp4                          a single train part unpacked at the root (optional)
    dfdc_train_part_<k>/metadata.json, *.mp4      train parts
    test/labels.csv, test[/videos]/*.mp4          the public test set (optional): columns filename,label; 1 = fake

``metadata.json`` (official form) maps each file name to ``{"label": "FAKE"|"REAL", "split": "train",
"original": "y.mp4"|null}``, where ``original`` is the real video a fake was made from. The ``split`` field is
``train`` throughout the train parts and is ignored.

Splits: the train parts have no official val/test, so each *group* (``original`` for a fake, the video itself
for a real one, by file stem) is assigned by :func:`~faceforge.data.detection.readers.assign_split` with
``(seed, val_fraction, test_fraction)``: an original and all its fakes land in the same split, in any part.
Videos of the public test set (``test/labels.csv``) are ``test``. Where the public test set is used, pass
``test_fraction=0`` to keep every train-part video for train/val.

Ids: ``video_id = dfdc/<part folder>/<stem>`` (``dfdc/<stem>`` for a metadata.json at the root;
``dfdc/test/<stem>`` for the public test set);
``source_id = dfdc/<group stem>``; ``method`` is ``DFDC`` for fakes and ``original`` for reals.

Problems are reported, not raised: a file named by metadata but absent -> ``report.missing``; an mp4 that no
metadata names -> ``report.unlabelled`` (skipped); an unknown label or malformed JSON/CSV -> ``report.errors``
(naming the file). A name that is not a plain file name of its folder (``../x.mp4``, ``/etc/hosts``, ``a/b.mp4``)
is never opened: it is counted in ``report.skipped["outside_root"]``, with a warning naming the metadata file. A
metadata file that is not JSON, or not a mapping of names to ``{"label": "REAL"|"FAKE", ...}``, is counted in
``report.skipped["bad_metadata"]`` (with a warning) when other label files are usable, and is an error when it
is the only one.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from faceforge.data.core.records import ReaderReport, VideoRecord
from faceforge.data.detection.readers import (
    DatasetLayoutError,
    assign_split,
    check_fractions,
    list_videos,
    require_root,
)

log = logging.getLogger(__name__)

DATASET = "dfdc"
_EXPECTED = ("metadata.json (with the videos beside it) at the root and/or in dfdc_train_part_*/ folders, "
             "and/or test/labels.csv with the public test videos")


def read_dfdc(root: str | Path, val_fraction: float = 0.1, test_fraction: float = 0.1,
              seed: int = 0) -> tuple[list[VideoRecord], ReaderReport]:
    """Read the DFDC layout (see the module docstring for layout, splits and ids).

    Args:
        root: DFDC root folder.
        val_fraction: expected fraction of train-part groups assigned to ``val``.
        test_fraction: expected fraction of train-part groups assigned to ``test`` (0 to keep the public test
            set as the only test data).
        seed: split seed (stable across machines and runs).

    Returns:
        ``(records, report)``: records sorted by ``video_id``, labels 1 = fake (``FAKE``), 0 = real (``REAL``).

    Raises:
        ValueError: if the fractions are out of range.
        DatasetLayoutError: if ``root`` is missing, or holds neither a ``metadata.json`` (at the root or in a
            ``dfdc_train_part_*`` folder) nor ``test/labels.csv``, or if every ``metadata.json`` is invalid (not
            JSON, or not a mapping of names to entries with a REAL/FAKE label) and there is no ``test/labels.csv``
            (the message names each file and what is wrong).
    """
    check_fractions(val_fraction, test_fraction)
    root = require_root(root, "DFDC", _EXPECTED)
    part_dirs = ([root] if (root / "metadata.json").is_file() else []) + sorted(
        p for p in root.glob("dfdc_train_part_*") if p.is_dir())
    labels_csv = root / "test" / "labels.csv"
    if not any((d / "metadata.json").is_file() for d in part_dirs) and not labels_csv.is_file():
        raise DatasetLayoutError(f"DFDC root {root} holds no metadata.json and no test/labels.csv; "
                                 f"expected {_EXPECTED}")

    report = ReaderReport()
    records: list[VideoRecord] = []
    bad: list[str] = []
    for folder in part_dirs:
        part = "" if folder == root else folder.name
        part_records, problem = _read_part(root, folder, part, val_fraction, test_fraction, seed, report)
        records.extend(part_records)
        if problem is not None:
            bad.append(problem)
    if bad:
        if len(bad) == len(part_dirs) and not labels_csv.is_file():
            raise DatasetLayoutError("DFDC metadata unusable: " + "; ".join(bad))
        report.skipped["bad_metadata"] = len(bad)
        log.warning("DFDC %s: %d of %d metadata files are unusable, their videos are skipped: %s", root, len(bad),
                    len(part_dirs), "; ".join(bad))
    if labels_csv.is_file():
        records.extend(_read_test(root, labels_csv, report))
    elif (root / "test").is_dir():
        report.errors.append(f"{labels_csv}: missing; videos in {root / 'test'} are not read")
    records.sort(key=lambda r: r.video_id)
    return records, report


def _make(root: Path, path: Path, video_id: str, fake: bool, split: str, group: str) -> VideoRecord:
    return VideoRecord(video_id=video_id, path=path, rel_path=path.relative_to(root).as_posix(), dataset=DATASET,
                       label=int(fake), method="DFDC" if fake else "original", compression="", split=split,
                       source_id=f"{DATASET}/{group}")


def safe_member(folder: Path, name: Any) -> Path | None:
    """``folder / name`` if ``name`` is a plain file name that stays directly inside ``folder``, else None.

    Refuses names that are not strings, are empty, ``.``/``..``, absolute, hold a path separator (``/`` or
    ``\\``), or whose resolved path (symbolic links followed) leaves ``folder``. Nothing is opened.

    Args:
        folder: the folder the name must stay in (absolute).
        name: a file name read from metadata.

    Returns:
        The path, or None when the name is refused.
    """
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name:
        return None
    path = folder / name
    if path.parent != folder or not path.resolve().is_relative_to(folder.resolve()):
        return None
    return path


def _read_part(root: Path, folder: Path, part: str, val_fraction: float, test_fraction: float, seed: int,
               report: ReaderReport) -> tuple[list[VideoRecord], str | None]:
    """Records of one metadata.json, and a message naming the file when it is unusable as a whole."""
    meta_path = folder / "metadata.json"
    videos = list_videos(folder)
    if not meta_path.is_file():
        report.errors.append(f"{meta_path}: missing; the {len(videos)} videos of {folder} are not labelled")
        report.unlabelled.extend(str(p) for p in videos)
        return [], None
    try:
        meta: Any = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"expected a JSON object mapping file names to entries, got {type(meta).__name__}")
        if not any(isinstance(e, dict) and str(e.get("label", "")).upper() in ("FAKE", "REAL")
                   for e in meta.values()):
            raise ValueError("no entry maps a file name to an object with label REAL or FAKE "
                             "(expected {\"x.mp4\": {\"label\": \"FAKE\", \"original\": \"y.mp4\"}, ...})")
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        problem = f"{meta_path} is not valid DFDC metadata ({exc})"
        report.errors.append(f"{problem}; the videos of {folder} are not labelled")
        report.unlabelled.extend(str(p) for p in videos)
        return [], problem

    out: list[VideoRecord] = []
    outside = 0
    for fname in sorted(meta):
        entry = meta[fname]
        if not isinstance(entry, dict):
            report.errors.append(f"{meta_path}: entry {fname!r} is {entry!r}, expected an object with a label")
            continue
        label = str(entry.get("label", "")).upper()
        if label not in ("FAKE", "REAL"):
            report.errors.append(f"{meta_path}: {fname} has label {entry.get('label')!r} (expected FAKE or REAL); "
                                 f"skipped")
            continue
        path = safe_member(folder, fname)
        if path is None:
            outside += 1
            report.skip("outside_root", f"{meta_path}: name {fname!r} is not a file name inside {folder}; skipped")
            continue
        if not path.is_file():
            report.missing.append(str(path))
            continue
        stem = Path(fname).stem
        original = entry.get("original")
        group = Path(original).stem if label == "FAKE" and isinstance(original, str) and original else stem
        split = assign_split(f"{DATASET}/{group}", seed, val_fraction, test_fraction)
        video_id = f"{DATASET}/{part}/{stem}" if part else f"{DATASET}/{stem}"
        out.append(_make(root, path, video_id, label == "FAKE", split, group))
    report.unlabelled.extend(str(p) for p in videos if p.name not in meta)
    if outside:
        log.warning("DFDC metadata %s: %d names point outside %s (e.g. '../x.mp4' or an absolute path); skipped",
                    meta_path, outside, folder)
    return out, None


def _read_test(root: Path, labels_csv: Path, report: ReaderReport) -> list[VideoRecord]:
    test_dir = labels_csv.parent
    out: list[VideoRecord] = []
    named: set[str] = set()
    try:
        with labels_csv.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "filename" not in fields or "label" not in fields:
                report.errors.append(f"{labels_csv}: header {reader.fieldnames} lacks the columns filename,label; "
                                     f"public test set not read")
                return []
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        report.errors.append(f"{labels_csv}: unreadable ({exc}); public test set not read")
        return []
    for lineno, row in enumerate(rows, start=2):
        fname, raw = row.get("filename", ""), row.get("label", "")
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not fname or value not in (0.0, 1.0):
            report.errors.append(f"{labels_csv}:{lineno}: filename {fname!r} label {raw!r} (expected 0 or 1); skipped")
            continue
        if fname in named:
            report.errors.append(f"{labels_csv}:{lineno}: {fname} listed twice; later line skipped")
            continue
        named.add(fname)
        if safe_member(test_dir, fname) is None:
            report.skip("outside_root", f"{labels_csv}:{lineno}: filename {fname!r} is not a file name inside "
                                        f"{test_dir}; skipped")
            log.warning("DFDC labels %s:%d: filename %r points outside %s; skipped", labels_csv, lineno, fname,
                        test_dir)
            continue
        path = next((p for p in (test_dir / fname, test_dir / "videos" / fname) if p.is_file()), None)
        if path is not None and safe_member(path.parent, fname) is None:  # test/videos/NAME: a link out of it
            report.skip("outside_root", f"{labels_csv}:{lineno}: {path} leads outside {path.parent}; skipped")
            continue
        if path is None:
            report.missing.append(str(test_dir / fname))
            continue
        stem = Path(fname).stem
        out.append(_make(root, path, f"{DATASET}/test/{stem}", value == 1.0, "test", stem))
    for folder in (test_dir, test_dir / "videos"):
        report.unlabelled.extend(str(p) for p in list_videos(folder) if p.name not in named)
    return out
