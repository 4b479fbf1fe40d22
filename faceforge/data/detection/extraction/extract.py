"""Face extraction: videos -> sampled frames -> MTCNN faces -> square crops -> one face index.

Output folder layout (``output_dir``)::

    extraction_settings.json            settings that determine the crops (written first; checked on reruns)
    crops/<video_id>/<frame:06d>_<rank>.<ext>
    videos/<video_id>.json              done-marker of one video: its status and face rows (FaceIndex columns)
    face_index.parquet, face_index.meta.json  the index of all crops (FaceIndex.write), sorted
    prepare_report.json                 what happened in the last run (counts, every problem, timings):
                                        the prepared-dataset contract's report (faceforge.data.core.prepared)

Resumable and crash-safe: every file is written atomically (temporary file + rename), a video's marker is
written last, after all its crops, so a video counts as done only when everything of it is on disk. A rerun skips
videos that have a marker and rebuilds the index from the markers, so it is byte-identical to the previous one
(unless videos were added). To redo one video, delete its marker. Unreadable videos get no marker and are tried
again on each run; truncated ones keep what they gave. A full disk stops the run with :class:`DiskFullError` naming
the file, and leaves no ``face_index.parquet`` (the index is written last); rerun after freeing space to resume.

A rerun into the same folder with different crop-determining settings (dataset, root, sampling, detector, crop)
raises :class:`ExtractionSettingsError`. Reader settings (split fractions and seeds) may change: the split and
other per-video columns are always taken from the current records.

Parallelism: the videos go through :func:`faceforge.data.core.runner.run_parallel`; ``workers > 1`` runs them in
spawned processes (one detector per worker built in the initializer, ``torch_threads`` (default 1) torch threads
in each) that only decode, detect and encode: the crops and markers come back to the main process, which alone
writes them. Workers exit when the main process dies (``kill -9`` included). A bad video never stops the run: it
is counted in the :class:`ExtractionReport` (and ``prepare_report.json``) with its reason.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.data.core.prepared import PREPARE_REPORT, make_report
from faceforge.data.core.records import ReaderReport, VideoRecord
from faceforge.data.core.runner import run_parallel
from faceforge.data.detection.extraction.crop import crop_face
from faceforge.data.detection.extraction.detector import FaceDetector
from faceforge.data.detection.extraction.sampling import SAMPLING_MODES, sample_frame_indices
from faceforge.data.detection.extraction.video import FrameStream, VideoDecodeError, prefetch, probe_video
from faceforge.data.detection.face_index import (
    COLUMN_NAMES,
    INDEX_FILENAME,
    INDEX_FILENAMES,
    META_FILENAME,
    FaceIndex,
    format_landmarks,
)
from faceforge.errors import BuilderSettingsError as SettingsError
from faceforge.errors import FaceforgeError
from faceforge.utils.atomic import atomic_write_bytes, atomic_write_json
from faceforge.utils.mappings import flatten_dotted

__all__ = [
    "IMAGE_FORMATS",
    "REPORT_FILENAME",
    "SETTINGS_FILENAME",
    "DiskFullError",
    "EmptyExtractionError",
    "ExtractionReport",
    "ExtractionSettingsError",
    "OutputFolderError",
    "check_output_dir",
    "extract_dataset",
    "extract_faces",
]

FORMAT_VERSION = 1
SETTINGS_FILENAME = "extraction_settings.json"
REPORT_FILENAME = PREPARE_REPORT  # prepare_report.json
#: image format -> (file suffix, OpenCV encoder parameters)
IMAGE_FORMATS: dict[str, tuple[str, list[int]]] = {
    "png": ("png", [cv2.IMWRITE_PNG_COMPRESSION, 3]),
    "jpg": ("jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
}
#: Columns that describe the video (taken from the current record) rather than the face.
_VIDEO_COLUMNS = ("video_id", "dataset", "method", "compression", "split", "label", "source_id", "video_path")


class ExtractionSettingsError(FaceforgeError, ValueError):
    """An output folder already holds an extraction made with other settings (the message lists them)."""


class EmptyExtractionError(FaceforgeError, RuntimeError):
    """An extraction found no face at all (no video readable, or no face detected): no index is written.

    The message names ``prepare_report.json``, which lists each video and why it gave no face. Without an
    index, the next run (or data module) extracts again instead of reusing an empty one.
    """


class OutputFolderError(FaceforgeError, ValueError):
    """The output path cannot be a folder (it, or one of its parents, is an existing file)."""


class DiskFullError(FaceforgeError, OSError):
    """The disk (or the user's quota) filled up while the extraction wrote a file; the run stops.

    Finished videos keep their crops and markers, so rerunning the same command after freeing space resumes.
    No ``face_index.parquet`` is left behind (an earlier one is removed), so nothing reuses the incomplete folder.
    """


#: errno values meaning "the disk is full" (no space left, quota exceeded).
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def _disk_full_names(path: Path) -> Iterator[None]:
    """Turn a disk-full OSError raised by the body into a :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if exc.errno not in _DISK_FULL_ERRNOS:
            raise
        target = exc.filename2 or path  # os.replace(tmp, target) names the target second
        raise DiskFullError(f"no space left on device while writing {target} ({exc.strerror or exc}); free "
                            f"space (or choose another output folder) and rerun the same command to resume: "
                            f"finished videos are kept, no {INDEX_FILENAME} was written") from exc


def check_output_dir(path: str | Path) -> Path:
    """Check that ``path`` can be (or already is) the output folder, before any work; return it resolved.

    Args:
        path: the output folder (created later if missing).

    Returns:
        The absolute path.

    Raises:
        OutputFolderError: if ``path``, or one of its parents, exists and is not a folder.
    """
    out = Path(path).expanduser().resolve()
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "the output path" if p == out else f"a parent of the output folder {out}"
                raise OutputFolderError(f"{p} is an existing file, not a folder ({what}); choose a folder for the "
                                        f"face crops and face_index.parquet")
            break
    return out


@dataclass
class ExtractionReport:
    """What an extraction run did.

    Attributes:
        output_dir: the output folder (absolute).
        videos_total: videos given (after the reader).
        videos_extracted: videos processed in this run.
        videos_skipped: videos already done by an earlier run (marker found).
        videos_with_faces: videos with at least one face in the index.
        faces: face crops (rows) in the index.
        frames_sampled: frames decoded for detection, over all done videos.
        frames_with_face: of those, frames where a face was found.
        no_face: video ids of done videos where no face was found.
        unreadable: ``{"video_id", "path", "reason"}`` of videos that could not be opened/decoded (no marker).
        truncated: ``{"video_id", "path", "reason"}`` of videos whose stream ended early (their faces are kept).
        failed: ``{"video_id", "path", "reason"}`` of videos that raised an unexpected error (no marker).
        reader: the dataset reader's report (``ReaderReport.to_dict()``), ``{}`` if none.
        seconds: wall-clock time of the run.
        index: the face index written (not part of :meth:`to_dict`).
    """

    output_dir: str
    videos_total: int = 0
    videos_extracted: int = 0
    videos_skipped: int = 0
    videos_with_faces: int = 0
    faces: int = 0
    frames_sampled: int = 0
    frames_with_face: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    truncated: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    reader: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    index: FaceIndex | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field but ``index``."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "index"}
        return json.loads(json.dumps(d, default=str))

    def problems(self) -> list[dict[str, str]]:
        """Every problem met, one ``{"kind", "item", "reason"}`` each: the reader's (``reader:<kind>``), then the
        videos that were unreadable, truncated, failed or showed no face."""
        out = [{"kind": f"reader:{kind}", "item": name, "reason": ""}
               for kind in ("missing", "unlabelled", "unassigned") for name in self.reader.get(kind) or []]
        out += [{"kind": "reader:error", "item": "", "reason": msg} for msg in self.reader.get("errors") or []]
        for kind in ("unreadable", "truncated", "failed"):
            out += [{"kind": kind, "item": it["path"], "reason": it["reason"]} for it in getattr(self, kind)]
        out += [{"kind": "no_face", "item": vid, "reason": "no face detected in the sampled frames"}
                for vid in self.no_face]
        return out

    def to_report(self) -> dict[str, Any]:
        """The content of ``prepare_report.json``: :func:`~faceforge.data.core.prepared.make_report` with the
        counts, :meth:`problems` and :meth:`summary`, plus every field of :meth:`to_dict`."""
        counts = {"videos": self.videos_total, "videos_with_faces": self.videos_with_faces, "faces": self.faces,
                  "videos_extracted_now": self.videos_extracted, "videos_already_done": self.videos_skipped,
                  **{f"reader_skipped_{k}": v for k, v in sorted((self.reader.get("skipped") or {}).items())}}
        return make_report("faceforge.data.detection.extraction.extract.extract_dataset", counts, self.problems(),
                           self.summary().splitlines(), **self.to_dict())

    def summary(self) -> str:
        """A short human-readable summary (a few lines)."""
        rate = self.frames_with_face / self.frames_sampled if self.frames_sampled else 0.0
        lines = [
            f"face extraction -> {self.output_dir}",
            f"  videos: {self.videos_total} given, {self.videos_extracted} extracted now, "
            f"{self.videos_skipped} already done",
            f"  faces: {self.faces} crops from {self.videos_with_faces} videos; face found in "
            f"{self.frames_with_face}/{self.frames_sampled} sampled frames ({rate:.1%})",
            f"  problems: {len(self.no_face)} videos without a face, {len(self.unreadable)} unreadable, "
            f"{len(self.truncated)} truncated, {len(self.failed)} failed",
        ]
        counts = self.reader.get("counts") if self.reader else None
        if counts:
            lines.append("  reader: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        skipped = self.reader.get("skipped") if self.reader else None
        if skipped:
            lines.append("  reader skipped: " + ", ".join(f"{v} {k}" for k, v in sorted(skipped.items()))
                         + f" (see {REPORT_FILENAME})")
        for title, items in (("unreadable", self.unreadable), ("truncated", self.truncated), ("failed", self.failed)):
            for item in items[:5]:
                lines.append(f"    {title}: {item['video_id']}: {item['reason']}")
            if len(items) > 5:
                lines.append(f"    ... and {len(items) - 5} more {title} (see {REPORT_FILENAME})")
        lines.append(f"  time: {self.seconds:.1f} s")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# ----------------------------------------------------------------------------------------------- paths
def _check_video_id(video_id: str) -> None:
    parts = video_id.split("/")
    if not video_id or video_id.startswith("/") or "\\" in video_id or any(p in ("", "..") for p in parts):
        raise ValueError(f"video_id {video_id!r} cannot name an output path (empty part, '..', '\\' or leading '/')")


def _marker_path(output_dir: Path, video_id: str) -> Path:
    return output_dir / "videos" / f"{video_id}.json"


# ----------------------------------------------------------------------------------------------- one video
def _process_video(detector: FaceDetector, task: Mapping[str, Any]) -> dict[str, Any]:
    """Extract one video into memory; return its status and, when it gave frames, its encoded crops and marker.

    Runs in a worker (or in this process with ``workers == 1``) and writes nothing: :func:`_write_video` does, in
    the main process, so a killed run never leaves a half-written file from a worker.

    Returns:
        ``{"video_id", "path", "status", "reason", "faces"}`` plus, for a decoded video, ``"crops"`` (a list of
        ``(relative path, encoded image bytes)``) and ``"marker"`` (the done-marker's JSON content).
    """
    rec = task["record"]
    video_id = rec["video_id"]
    base = {"video_id": video_id, "path": rec["path"]}
    try:
        info = probe_video(rec["path"])
        indices = sample_frame_indices(info.num_frames, task["num_frames"], task["sampling"], task["stride"],
                                       task["seed"], key=video_id)
        stream = FrameStream(rec["path"], indices)
    except VideoDecodeError as exc:
        return {**base, "status": "unreadable", "reason": exc.reason}
    suffix, params = IMAGE_FORMATS[task["image_format"]]
    rows: list[dict[str, Any]] = []
    crops: list[tuple[str, bytes]] = []
    frames_with_face = 0
    with stream:
        for frame_index, frame in prefetch(stream, depth=2):  # decode the next frames during detection
            detections = detector.detect([frame])[0]
            frames_with_face += bool(detections)
            for rank, det in enumerate(detections):
                crop, _ = crop_face(frame, det.box, task["margin"], task["size"])
                rel = f"crops/{video_id}/{frame_index:06d}_{rank}.{suffix}"
                ok, buf = cv2.imencode(f".{suffix}", np.ascontiguousarray(crop[:, :, ::-1]), params)
                if not ok:
                    raise RuntimeError(f"OpenCV could not encode a {suffix} crop")
                crops.append((rel, buf.tobytes()))
                x1, y1, x2, y2 = (float(v) for v in det.box)
                rows.append({**{c: rec[c] for c in _VIDEO_COLUMNS if c != "video_path"},
                             "video_path": rec["rel_path"], "num_frames": info.num_frames,
                             "frame_index": frame_index, "face_rank": rank, "det_prob": det.prob,
                             "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                             "landmarks": format_landmarks(det.landmarks), "crop_path": rel})
    if not stream.returned:
        return {**base, "status": "unreadable",
                "reason": stream.reason or f"no frame decoded (header says {info.num_frames} frames)"}
    marker = {"format_version": FORMAT_VERSION, "video_id": video_id, "video_path": rec["rel_path"],
              "num_frames": info.num_frames, "num_frames_source": info.num_frames_source, "fps": info.fps,
              "width": info.width, "height": info.height, "frames_requested": len(stream.requested),
              "frames_decoded": len(stream.returned), "frames_with_face": frames_with_face,
              "truncated": stream.truncated, "reason": stream.reason, "rows": rows}
    return {**base, "status": "truncated" if stream.truncated else ("ok" if rows else "no_face"),
            "reason": stream.reason, "faces": len(rows), "crops": crops, "marker": marker}


def _write_video(output_dir: Path, result: Mapping[str, Any]) -> None:
    """Write one video's crops and then, last, its done-marker (main process only; each write atomic).

    Raises:
        DiskFullError: if the disk fills up (naming the file).
    """
    if "marker" not in result:
        return  # unreadable or failed: no marker, tried again on the next run
    for rel, data in result["crops"]:
        with _disk_full_names(output_dir / rel):
            atomic_write_bytes(output_dir / rel, data)
    marker = _marker_path(output_dir, result["video_id"])
    with _disk_full_names(marker):
        atomic_write_json(marker, result["marker"])


def _safe_process(detector: FaceDetector, task: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`_process_video`, with any error of a bad video turned into a ``failed`` status (the run goes on)."""
    try:
        return _process_video(detector, task)
    except Exception as exc:  # a bad video never stops the run
        rec = task["record"]
        return {"video_id": rec["video_id"], "path": rec["path"], "status": "failed",
                "reason": f"{type(exc).__name__}: {exc}"}


_WORKER_DETECTOR: FaceDetector | None = None


def _init_worker(detector_kwargs: dict[str, Any], torch_threads: int) -> None:
    """Runner initializer of an extraction worker: set its torch threads and build its detector once."""
    import torch

    global _WORKER_DETECTOR
    torch.set_num_threads(torch_threads)
    _WORKER_DETECTOR = FaceDetector(**detector_kwargs)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch intra-op threads, then restore the previous number."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _worker_task(task: Mapping[str, Any]) -> dict[str, Any]:
    """Runner work function of an extraction worker (uses the detector :func:`_init_worker` built)."""
    assert _WORKER_DETECTOR is not None, "worker not initialised"
    return _safe_process(_WORKER_DETECTOR, task)


# ----------------------------------------------------------------------------------------------- settings
def _check_settings(output_dir: Path, settings: dict[str, Any]) -> None:
    path = output_dir / SETTINGS_FILENAME
    settings = json.loads(json.dumps(settings))  # normalise tuples etc. as JSON would
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ExtractionSettingsError(f"{path} is unreadable ({exc}); use another output folder") from exc
        if old != settings:
            a, b = flatten_dotted(old), flatten_dotted(settings)
            diffs = [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in sorted(set(a) | set(b))
                     if a.get(k, "<unset>") != b.get(k, "<unset>")]
            raise ExtractionSettingsError(
                f"output folder {output_dir} holds an extraction made with other settings ({'; '.join(diffs)}); "
                f"choose another output folder, or rerun with the same settings to resume")
        return
    with _disk_full_names(path):
        atomic_write_json(path, settings)


# ----------------------------------------------------------------------------------------------- main API
def extract_faces(records: Iterable[VideoRecord], output_dir: str | Path, num_frames: int = 32,
                  sampling: str = "evenly", stride: int = 1, seed: int = 0, margin: float = 0.3, size: int = 256,
                  image_format: str = "png", detector: Mapping[str, Any] | None = None, workers: int = 1,
                  progress: bool = True, torch_threads: int = 1, *, source: Mapping[str, Any] | None = None,
                  reader_kwargs: Mapping[str, Any] | None = None,
                  reader_report: ReaderReport | None = None) -> ExtractionReport:
    """Extract face crops from videos and write the face index (resumable; see the module docstring).

    Per video: probe, sample ``num_frames`` frame indices (:func:`~faceforge.data.detection.extraction.sampling.
    sample_frame_indices` with ``key=video_id``), decode them in one pass, detect faces (MTCNN), cut square crops
    (:func:`~faceforge.data.detection.extraction.crop.crop_face`), write them and the video's marker.

    Args:
        records: videos to process (``video_id`` unique).
        output_dir: output folder (created).
        num_frames: frames sampled per video.
        sampling: ``evenly``, ``stride`` or ``contiguous``.
        stride: step for ``stride`` sampling.
        seed: sampling seed.
        margin: crop margin relative to the face box's larger side.
        size: crop side in pixels.
        image_format: ``png`` (lossless) or ``jpg`` (quality 95).
        detector: keyword arguments of :class:`~faceforge.data.detection.extraction.detector.FaceDetector`
            (e.g. ``{"device": "cuda", "keep": 2}``).
        workers: processes working on videos in parallel (1: in this process).
        progress: show a progress bar (tqdm, on stderr).
        torch_threads: torch intra-op threads per worker (in this process when ``workers == 1``, restored
            afterwards). MTCNN's small convolutions gain little from more threads, and on shared cores OpenMP
            threads that wait for each other made detection about 6x slower in our measurements: use ``workers``
            for parallelism.
        source: ``{"dataset": ..., "root": ...}`` the records come from (recorded and checked on reruns).
        reader_kwargs: the reader's keyword arguments (recorded in the index meta).
        reader_report: the reader's report (copied into the extraction report).

    Returns:
        The :class:`ExtractionReport` (also written to ``prepare_report.json``); its ``index`` attribute holds
        the :class:`~faceforge.data.detection.face_index.FaceIndex` written to ``face_index.parquet``.

    Raises:
        ValueError: on invalid settings or duplicate/unsafe video ids.
        ExtractionSettingsError: if ``output_dir`` holds an extraction made with other settings.
        FaceDetectorError: if the detector settings are invalid.
        EmptyExtractionError: if no face at all was found (no video given or readable, or no face detected);
            ``prepare_report.json`` is written, ``face_index.parquet`` is not (an earlier one is removed), so a
            later run extracts again.
        OutputFolderError: if ``output_dir`` (or a parent) is an existing file (checked before any work).
        DiskFullError: if the disk fills up while a file is written (the message names it); finished videos are
            kept, and no ``face_index.parquet`` is left (an earlier one is removed).
    """
    t0 = time.perf_counter()
    records = sorted(records, key=lambda r: r.video_id)
    ids = [r.video_id for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"video ids must be unique; repeated: {dup}")
    for vid in ids:
        _check_video_id(vid)
    if sampling not in SAMPLING_MODES:
        raise SettingsError(f"unknown sampling mode {sampling!r}; choose one of {list(SAMPLING_MODES)}")
    if num_frames < 1 or stride < 1 or size < 1 or margin < 0 or workers < 1 or torch_threads < 1:
        raise SettingsError(f"need num_frames >= 1, stride >= 1, size >= 1, margin >= 0, workers >= 1, "
                           f"torch_threads >= 1; got {num_frames}, {stride}, {size}, {margin}, {workers}, "
                           f"{torch_threads}")
    image_format = {"jpeg": "jpg"}.get(image_format.lower(), image_format.lower())
    if image_format not in IMAGE_FORMATS:
        raise SettingsError(f"unknown image format {image_format!r}; choose one of {list(IMAGE_FORMATS)}")
    output_dir = check_output_dir(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)

        detector_kwargs = dict(detector or {})
        det = FaceDetector(**detector_kwargs)  # validates the settings
        params = IMAGE_FORMATS[image_format][1]
        settings = {
            "format_version": FORMAT_VERSION,
            "source": {"dataset": (source or {}).get("dataset"), "root": (source or {}).get("root")},
            "sampling": {"num_frames": num_frames, "mode": sampling, "stride": stride, "seed": seed},
            "detector": det.settings(),
            "crop": {"margin": margin, "size": size, "image_format": image_format, "encoder_params": params},
        }
        _check_settings(output_dir, settings)

        task_opts = {"output_dir": str(output_dir), "num_frames": num_frames, "sampling": sampling, "stride": stride,
                     "seed": seed, "margin": margin, "size": size, "image_format": image_format}
        tasks = [{**task_opts, "record": {**r.to_dict(), "path": str(r.path)}} for r in records]
        results: list[dict[str, Any]] = []

        def _on_result(task: Mapping[str, Any], res: dict[str, Any]) -> None:
            _write_video(output_dir, res)  # this process alone writes
            results.append({k: v for k, v in res.items() if k not in ("crops", "marker")})

        def _on_error(task: Mapping[str, Any], exc: BaseException) -> None:  # a worker died (killed for memory?)
            rec = task["record"]
            results.append({"video_id": rec["video_id"], "path": rec["path"], "status": "failed",
                            "reason": f"worker process failed: {type(exc).__name__}: {exc}"})

        run_kw: dict[str, Any] = {"on_result": _on_result, "on_error": _on_error,
                                  "skip": lambda t: _marker_path(output_dir, t["record"]["video_id"]).is_file(),
                                  "progress": "videos" if progress else False}
        if workers == 1:
            with _torch_threads(torch_threads):
                stats = run_parallel(tasks, functools.partial(_safe_process, det), **run_kw)
        else:
            del det
            stats = run_parallel(tasks, _worker_task, workers=workers, initializer=_init_worker,
                                 initargs=(detector_kwargs, torch_threads), **run_kw)

        report = ExtractionReport(output_dir=str(output_dir), videos_total=len(records),
                                  videos_extracted=stats.total - stats.skipped,
                                  videos_skipped=stats.skipped,
                                  reader=reader_report.to_dict() if reader_report is not None else {})
        for res in sorted(results, key=lambda r: r["video_id"]):
            if res["status"] in ("unreadable", "failed"):
                getattr(report, res["status"]).append({k: res[k] for k in ("video_id", "path", "reason")})

        rows: list[dict[str, Any]] = []
        for rec in records:
            marker_path = _marker_path(output_dir, rec.video_id)
            if not marker_path.is_file():
                continue
            try:
                marker = json.loads(marker_path.read_text(encoding="utf-8"))
                video_rows = [{**row, **{c: v for c, v in rec.to_dict().items() if c in _VIDEO_COLUMNS},
                               "video_path": rec.rel_path} for row in marker["rows"]]
                missing = [c for c in COLUMN_NAMES if video_rows and c not in video_rows[0]]
                if missing:
                    raise KeyError(f"rows lack columns {missing}")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                report.failed.append({"video_id": rec.video_id, "path": str(rec.path),
                                      "reason": f"marker {marker_path} is unreadable ({exc}); delete it to redo"})
                continue
            rows.extend(video_rows)
            report.frames_sampled += int(marker.get("frames_decoded", 0))
            report.frames_with_face += int(marker.get("frames_with_face", 0))
            if marker.get("truncated"):
                report.truncated.append({"video_id": rec.video_id, "path": str(rec.path), "reason": marker["reason"]})
            if video_rows:
                report.videos_with_faces += 1
            else:
                report.no_face.append(rec.video_id)

        meta = {"created_by": "faceforge.data.detection.extraction.extract", "dataset": settings["source"]["dataset"],
                "root": settings["source"]["root"], "reader_kwargs": dict(reader_kwargs or {}),
                "sampling": settings["sampling"], "detector": settings["detector"], "crop": settings["crop"],
                "videos": len(records)}
        index = FaceIndex.from_records(rows, root=output_dir).sorted()
        index.meta = json.loads(json.dumps({**meta, "summary": index.summary()}))
        report.faces = len(index)
        report.seconds = round(time.perf_counter() - t0, 3)
        if not len(index):
            # An empty index would be reused as complete by every later run: write none (remove a stale one).
            for name in (*INDEX_FILENAMES, META_FILENAME):
                (output_dir / name).unlink(missing_ok=True)
            with _disk_full_names(output_dir / REPORT_FILENAME):
                atomic_write_json(output_dir / REPORT_FILENAME, report.to_report())
            raise EmptyExtractionError(
                f"face extraction into {output_dir} found no face ({len(records)} videos given, "
                f"{len(report.unreadable)} unreadable, {len(report.failed)} failed, {len(report.no_face)} without a "
                f"face, reader skipped {report.reader.get('skipped', {})}); see {output_dir / REPORT_FILENAME}. No "
                f"{INDEX_FILENAME} was written: fix the input and run again (delete videos/<video_id>.json to redo a "
                f"video)")
        with _disk_full_names(output_dir / REPORT_FILENAME):
            atomic_write_json(output_dir / REPORT_FILENAME, report.to_report())
        with _disk_full_names(output_dir / INDEX_FILENAME):
            index.write(output_dir)  # last: a folder with an index is complete
        report.index = index
        return report
    except DiskFullError:
        # The folder is incomplete now: leave no index that a later run would take for a finished one.
        for name in (*INDEX_FILENAMES, META_FILENAME):
            with contextlib.suppress(OSError):
                (output_dir / name).unlink(missing_ok=True)
        raise


def extract_dataset(dataset: str, root: str | Path, output_dir: str | Path,
                    reader_kwargs: Mapping[str, Any] | None = None, **extract_kwargs: Any) -> FaceIndex:
    """Read a dataset's official layout and extract its faces (see :func:`extract_faces`).

    Writes ``face_index.parquet``, ``face_index.meta.json`` (dataset, absolute root, reader, sampling, detector and
    crop settings, counts) and ``prepare_report.json`` into ``output_dir``.

    Args:
        dataset: a reader name (``ffpp``, ``dfdc``, ``celebdf``).
        root: the dataset root.
        output_dir: output folder.
        reader_kwargs: keyword arguments of the reader (e.g. ``{"val_fraction": 0.1, "seed": 0}``).
        **extract_kwargs: keyword arguments of :func:`extract_faces`.

    Returns:
        The face index written.

    Raises:
        DatasetLayoutError: if ``root`` does not have the dataset's layout.
        ExtractionSettingsError, EmptyExtractionError, ValueError: see :func:`extract_faces`.
    """
    from faceforge.data.detection.readers import read_dataset

    reader_kwargs = dict(reader_kwargs or {})
    records, reader_report = read_dataset(dataset, root, **reader_kwargs)
    source = {"dataset": dataset, "root": str(Path(root).expanduser().resolve())}
    report = extract_faces(records, output_dir, source=source, reader_kwargs=reader_kwargs,
                           reader_report=reader_report, **extract_kwargs)
    assert report.index is not None
    return report.index
