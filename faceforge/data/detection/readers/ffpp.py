"""FaceForensics++ reader (Rössler et al., "FaceForensics++: Learning to Detect Manipulated Facial Images",
ICCV 2019; layout of the authors' download script and split files).

Layout under ``root``::

    original_sequences/youtube/<comp>/videos/NNN.mp4                 real (1000 YouTube videos)
    manipulated_sequences/<method>/<comp>/videos/NNN_MMM.mp4         fake: target video NNN, source face MMM
    original_sequences/actors/<comp>/videos/*.mp4                    DeepFakeDetection reals (optional)
    manipulated_sequences/DeepFakeDetection/<comp>/videos/*.mp4      DeepFakeDetection fakes (optional)
    splits/train.json, splits/val.json, splits/test.json             official splits (from the authors' repo,
                                                                     ``dataset/splits``), each a list of id
                                                                     pairs ``[["071", "054"], ...]``

``<comp>`` is ``c23`` or ``c40`` (or ``raw``, which papers call ``c0``: asking for ``c0`` reads a ``raw`` folder
when no ``c0`` folder exists, and vice versa; the record keeps the name asked for).

Splits: the official files list *pairs* of YouTube ids. A real video ``NNN`` belongs to the split of the pair that
contains it; a fake ``NNN_MMM`` to the split of the pair ``{NNN, MMM}`` (in either order). Each id is in exactly
one pair, so a real video, the other video of its pair and all fakes made between the two share a split.
DeepFakeDetection videos (actors) have no official split: they are listed in ``ReaderReport.unassigned`` and
skipped, as is any video whose id or pair no split file names.

Grouping (``source_id``): ``ffpp/NNN`` for the real video ``NNN`` and for every fake whose *target* is ``NNN``
(the video whose frames, background and motion the fake keeps; ``MMM`` only lends the face). The pair-based split
above is the coarser grouping: both groups of a pair always share a split, so grouped cross-validation by
``source_id`` inside one split and the split itself never separate a fake from its target.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from faceforge.data.core.records import ReaderReport, VideoRecord
from faceforge.data.detection.readers import DatasetLayoutError, list_videos, require_root

DATASET = "ffpp"
DEFAULT_METHODS: tuple[str, ...] = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
#: Methods that follow the NNN_MMM naming and the official pair splits.
PAIR_METHODS: tuple[str, ...] = DEFAULT_METHODS + ("FaceShifter",)
SPLIT_FILES: tuple[str, ...] = ("train.json", "val.json", "test.json")
_REAL_RE = re.compile(r"^(\d+)$")
_FAKE_RE = re.compile(r"^(\d+)_(\d+)$")
_ALIASES = {"c0": ("c0", "raw"), "raw": ("raw", "c0")}
_EXPECTED = ("original_sequences/youtube/<comp>/videos/NNN.mp4 and/or "
             "manipulated_sequences/<method>/<comp>/videos/NNN_MMM.mp4, plus splits/train.json, val.json, test.json")


def read_ffpp(root: str | Path, compressions: tuple[str, ...] | list[str] = ("c23",),
              methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
              splits_dir: str | Path | None = None) -> tuple[list[VideoRecord], ReaderReport]:
    """Read the FaceForensics++ layout (see the module docstring for layout, splits and grouping).

    Args:
        root: FaceForensics++ root folder (holding ``original_sequences``/``manipulated_sequences``).
        compressions: compression folders to read (``c23``, ``c40``, ``raw``/``c0``).
        methods: manipulation methods to read; ``FaceShifter`` is read like the four defaults;
            ``DeepFakeDetection`` videos have no official split and are always reported as unassigned.
        splits_dir: folder of ``train.json``/``val.json``/``test.json`` (default ``<root>/splits``).

    Returns:
        ``(records, report)``: records sorted by ``video_id`` (e.g. ``ffpp/original/c23/000``,
        ``ffpp/Deepfakes/c23/000_003``), labels 1 = fake, 0 = real; ``method`` is ``original`` for reals.
        ``report.unassigned`` lists videos without an official split, ``report.errors`` unexpected file names
        and requested folders that are absent.

    Raises:
        DatasetLayoutError: if ``root`` is missing or has neither ``original_sequences`` nor
            ``manipulated_sequences``, if a split file is missing or malformed (an entry that is not a pair of
            numeric ids: the message names the file and the entry), if an id is in two splits, or if
            no video at all is found for the requested compressions and methods.
    """
    root = require_root(root, "FaceForensics++", _EXPECTED)
    orig_dir, manip_dir = root / "original_sequences", root / "manipulated_sequences"
    if not orig_dir.is_dir() and not manip_dir.is_dir():
        raise DatasetLayoutError(f"FaceForensics++ root {root} has neither original_sequences/ nor "
                                 f"manipulated_sequences/; expected {_EXPECTED}")
    id_split, pair_split = _read_splits(Path(splits_dir) if splits_dir is not None else root / "splits")

    report = ReaderReport()
    records: list[VideoRecord] = []
    found_any = False
    for comp in compressions:
        # Real YouTube videos.
        folder = _comp_folder(orig_dir / "youtube", comp)
        if folder is None:
            report.errors.append(f"{orig_dir / 'youtube' / comp / 'videos'}: folder missing "
                                 f"(real videos of compression {comp} not downloaded?)")
        for path in list_videos(folder) if folder is not None else []:
            found_any = True
            m = _REAL_RE.match(path.stem)
            if m is None:
                report.errors.append(f"{path}: unexpected file name (expected NNN.mp4); skipped")
                continue
            split = id_split.get(m.group(1))
            if split is None:
                report.unassigned.append(f"{path}: id {m.group(1)} is in no official split file")
                continue
            records.append(_record(root, path, f"{DATASET}/original/{comp}/{path.stem}", label=0,
                                   method="original", comp=comp, split=split, target=m.group(1)))
        # Manipulated videos.
        for method in methods:
            if method == "DeepFakeDetection":
                continue  # reported below with the actors
            folder = _comp_folder(manip_dir / method, comp)
            if folder is None:
                report.errors.append(f"{manip_dir / method / comp / 'videos'}: folder missing "
                                     f"({method} {comp} not downloaded?)")
                continue
            for path in list_videos(folder):
                found_any = True
                m = _FAKE_RE.match(path.stem)
                if m is None:
                    report.errors.append(f"{path}: unexpected file name (expected NNN_MMM.mp4); skipped")
                    continue
                target, source = m.group(1), m.group(2)
                split = pair_split.get(frozenset((target, source)))
                if split is None:
                    report.unassigned.append(f"{path}: pair ({target}, {source}) is in no official split file")
                    continue
                records.append(_record(root, path, f"{DATASET}/{method}/{comp}/{path.stem}", label=1,
                                       method=method, comp=comp, split=split, target=target))
        # DeepFakeDetection (Google/Jigsaw actors): no official split.
        for base in (orig_dir / "actors", manip_dir / "DeepFakeDetection"):
            folder = _comp_folder(base, comp)
            for path in list_videos(folder) if folder is not None else []:
                found_any = True
                report.unassigned.append(f"{path}: DeepFakeDetection video (no official split); skipped")
    if not found_any:
        raise DatasetLayoutError(f"FaceForensics++ root {root}: no videos found for compressions "
                                 f"{list(compressions)} and methods {list(methods)}; expected {_EXPECTED}")
    records.sort(key=lambda r: r.video_id)
    return records, report


def _comp_folder(base: Path, comp: str) -> Path | None:
    for name in _ALIASES.get(comp, (comp,)):
        folder = base / name / "videos"
        if folder.is_dir():
            return folder
    return None


def _record(root: Path, path: Path, video_id: str, label: int, method: str, comp: str, split: str,
            target: str) -> VideoRecord:
    return VideoRecord(video_id=video_id, path=path, rel_path=path.relative_to(root).as_posix(), dataset=DATASET,
                       label=label, method=method, compression=comp, split=split, source_id=f"{DATASET}/{target}")


def _read_splits(splits_dir: Path) -> tuple[dict[str, str], dict[frozenset[str], str]]:
    """Read the official pair lists -> (id -> split, {id_a, id_b} -> split)."""
    missing = [f for f in SPLIT_FILES if not (splits_dir / f).is_file()]
    if missing:
        raise DatasetLayoutError(
            f"FaceForensics++ split files missing in {splits_dir}: {missing}; expected {list(SPLIT_FILES)} "
            f"(the official lists of id pairs from the FaceForensics repository, dataset/splits/), or pass splits_dir")
    id_split: dict[str, str] = {}
    pair_split: dict[frozenset[str], str] = {}
    for fname in SPLIT_FILES:
        split = fname[:-len(".json")]
        path = splits_dir / fname
        try:
            pairs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetLayoutError(f"FaceForensics++ split file {path} is not readable JSON: {exc}") from exc
        if not isinstance(pairs, list):
            raise DatasetLayoutError(f"FaceForensics++ split file {path}: expected a list of id pairs, "
                                     f"got {type(pairs).__name__}")
        for i, pair in enumerate(pairs):
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not all(isinstance(v, (str, int)) for v in pair)):
                raise DatasetLayoutError(f"FaceForensics++ split file {path}: entry {i} is {pair!r}, "
                                         f"expected a pair of ids like [\"071\", \"054\"]")
            a, b = (str(v) if isinstance(v, str) else f"{v:03d}" for v in pair)
            if not (_REAL_RE.match(a) and _REAL_RE.match(b)):
                raise DatasetLayoutError(f"FaceForensics++ split file {path}: entry {i} is {pair!r}, expected "
                                         f"numeric video ids like [\"071\", \"054\"] (ids name no path)")
            for vid in (a, b):
                previous = id_split.get(vid)
                if previous is not None and previous != split:
                    raise DatasetLayoutError(f"FaceForensics++ splits in {splits_dir}: id {vid} is in both "
                                             f"{previous}.json and {fname}")
                id_split[vid] = split
            pair_split[frozenset((a, b))] = split
    return id_split, pair_split
