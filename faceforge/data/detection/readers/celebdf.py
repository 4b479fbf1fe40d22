"""Celeb-DF reader (Li et al., "Celeb-DF: A Large-scale Challenging Dataset for DeepFake Forensics", CVPR 2020;
layout of the v2 release, which v1 shares).

Layout under ``root``::

    Celeb-real/idA_NNNN.mp4              real: celebrity A's video NNNN
    YouTube-real/NNNNN.mp4               real: extra YouTube videos
    Celeb-synthesis/idA_idB_NNNN.mp4     fake: Celeb-real/idA_NNNN with the face of celebrity B
    List_of_testing_videos.txt           official test list, lines "<1|0> <folder>/<file>.mp4"

Careful: in ``List_of_testing_videos.txt`` **1 means REAL and 0 means fake**, the reverse of our labels (1 =
fake). Labels are taken from the folder; a list flag that disagrees with the folder is reported in
``report.errors`` (the folder wins). A malformed line of the list is an error (naming the file and line), never
skipped: a test video it fails to name would otherwise land in ``train``.

Splits: listed videos are ``test`` (the official list is kept as published, for comparability with papers).
The rest go to ``train``/``val`` by :func:`~faceforge.data.detection.readers.assign_split` of their group: a fake is
grouped
with its target real video ``Celeb-real/idA_NNNN`` (``source_id = celebdf/idA_NNNN``), a YouTube video forms its
own group (``celebdf/youtube/NNNNN``). Train and val therefore never separate a group; where the official list
itself puts part of a group in test, that group straddles test and train/val (a warning is logged with the count).

Ids: ``video_id = celebdf/<folder>/<stem>``; ``method`` is ``Celeb-synthesis`` for fakes, ``original`` for reals.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from faceforge.data.core.records import ReaderReport, VideoRecord
from faceforge.data.detection.readers import (
    DatasetLayoutError,
    assign_split,
    check_fractions,
    list_videos,
    require_root,
)

log = logging.getLogger(__name__)

DATASET = "celebdf"
TEST_LIST = "List_of_testing_videos.txt"
#: folder -> (label, method)
FOLDERS: dict[str, tuple[int, str]] = {"Celeb-real": (0, "original"), "YouTube-real": (0, "original"),
                                       "Celeb-synthesis": (1, "Celeb-synthesis")}
_FAKE_RE = re.compile(r"^(id\d+)_(id\d+)_(\d+)$")
_EXPECTED = f"the folders {list(FOLDERS)} and the file {TEST_LIST}"


def read_celebdf(root: str | Path, val_fraction: float = 0.1,
                 seed: int = 0) -> tuple[list[VideoRecord], ReaderReport]:
    """Read the Celeb-DF layout (see the module docstring for layout, label inversion, splits and groups).

    Args:
        root: Celeb-DF root folder.
        val_fraction: expected fraction of the non-test groups assigned to ``val``.
        seed: split seed (stable across machines and runs).

    Returns:
        ``(records, report)``: records sorted by ``video_id``, labels 1 = fake, 0 = real. ``report.missing``
        lists test-list entries absent on disk, ``report.errors`` label disagreements and repeated lines.

    Raises:
        ValueError: if ``val_fraction`` is out of range.
        DatasetLayoutError: if ``root`` is missing, has none of the three video folders, or lacks the test list,
            or if a line of the test list is malformed (the message names the file and the line).
    """
    check_fractions(val_fraction)
    root = require_root(root, "Celeb-DF", _EXPECTED)
    present = [f for f in FOLDERS if (root / f).is_dir()]
    if not present:
        raise DatasetLayoutError(f"Celeb-DF root {root} has none of the folders {list(FOLDERS)}; expected {_EXPECTED}")
    list_path = root / TEST_LIST
    if not list_path.is_file():
        raise DatasetLayoutError(f"Celeb-DF root {root} lacks {TEST_LIST} (the official test list); "
                                 f"expected {_EXPECTED}")

    report = ReaderReport()
    test_list = _read_test_list(list_path, report)
    records: list[VideoRecord] = []
    seen: set[str] = set()
    for folder in present:
        label, method = FOLDERS[folder]
        for path in list_videos(root / folder):
            rel = f"{folder}/{path.name}"
            seen.add(rel)
            group = _group(folder, path.stem)
            flag = test_list.get(rel)
            if flag is not None and flag != label:
                report.errors.append(f"{list_path}: {rel} is flagged {'REAL' if flag == 0 else 'fake'} in the "
                                     f"test list but lies in {folder}/; labelled {'fake' if label else 'real'} "
                                     f"from its folder")
            split = "test" if flag is not None else assign_split(f"{DATASET}/{group}", seed, val_fraction)
            records.append(VideoRecord(video_id=f"{DATASET}/{folder}/{path.stem}", path=path, rel_path=rel,
                                       dataset=DATASET, label=label, method=method, compression="", split=split,
                                       source_id=f"{DATASET}/{group}"))
    report.missing.extend(str(root / rel) for rel in sorted(test_list) if rel not in seen)

    splits_of: dict[str, set[str]] = {}
    for r in records:
        splits_of.setdefault(r.source_id, set()).add(r.split)
    straddling = sum(1 for s in splits_of.values() if "test" in s and len(s) > 1)
    if straddling:
        log.warning("Celeb-DF %s: the official test list puts part of %d groups (a real video and fakes made from "
                    "it) in test; the rest of those groups stays in train/val", root, straddling)
    records.sort(key=lambda r: r.video_id)
    return records, report


def _group(folder: str, stem: str) -> str:
    if folder == "YouTube-real":
        return f"youtube/{stem}"
    if folder == "Celeb-synthesis":
        m = _FAKE_RE.match(stem)
        return f"{m.group(1)}_{m.group(3)}" if m else stem
    return stem


def _read_test_list(path: Path, report: ReaderReport) -> dict[str, int]:
    """``<folder>/<file>`` -> our label (0 real, 1 fake) for each line of the official test list.

    A UTF-8 byte-order mark is accepted. Any malformed line stops the reader: a video of the official test set
    that the list fails to name would otherwise be put into ``train`` (test leakage).

    Raises:
        DatasetLayoutError: naming ``path`` and the line number, for an unreadable list or a line that is not
            ``<1|0> <folder>/<file>.mp4`` with a folder of :data:`FOLDERS` and a path inside it.
    """
    out: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetLayoutError(f"Celeb-DF test list {path} is unreadable: {exc}") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise DatasetLayoutError(f"Celeb-DF test list {path}, line {lineno}: malformed line {line!r} (expected "
                                     f"'<1|0> <folder>/<file>.mp4', 1 = real); fix the list, else its test videos "
                                     f"would go to train")
        rel = parts[1].replace("\\", "/").removeprefix("./")
        pieces = rel.split("/")
        if len(pieces) != 2 or pieces[0] not in FOLDERS or pieces[1] in ("", ".", ".."):
            raise DatasetLayoutError(f"Celeb-DF test list {path}, line {lineno}: {parts[1]!r} is not "
                                     f"<folder>/<file>.mp4 with a folder of {list(FOLDERS)} (absolute paths and "
                                     f"'..' are refused)")
        if rel in out:
            report.errors.append(f"{path}:{lineno}: {rel} listed twice")
        out[rel] = 0 if parts[0] == "1" else 1  # the list's 1 = REAL
    return out
