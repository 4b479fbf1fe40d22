"""Turn a detection report (see :func:`faceforge.metrics.detection.detection_report`) into tables."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from faceforge.utils.atomic import atomic_write_text

#: (report key, column title) of the detection table, in order.
DETECTION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("auc", "AUC"), ("eer", "EER"), ("ap", "AP"), ("acc", "ACC"), ("precision", "P"), ("recall", "R"),
    ("f1", "F1"), ("n", "N"), ("n_fake", "fake"), ("n_real", "real"),
)


def detection_rows(report: Mapping[str, Any], dataset: str = "") -> list[dict[str, Any]]:
    """Flatten a detection report into rows: overall frame/video level, per method, then the trivial baseline (the
    best constant predictor, subset ``trivial (best constant)``) when the report has one.

    Returns:
        Dicts with keys ``dataset``, ``subset`` (``all`` or a method name), ``level`` (``frame``/``video``) and the
        metric keys of :data:`DETECTION_COLUMNS`.
    """
    rows = []
    for level in ("frame", "video"):
        rows.append({"dataset": dataset, "subset": "all", "level": level, **report[level]})
    for method, per in sorted(report.get("per_method", {}).items()):
        for level in ("frame", "video"):
            rows.append({"dataset": dataset, "subset": method, "level": level, **per[level]})
    for level in ("frame", "video"):
        if level in report.get("baseline", {}):
            rows.append({"dataset": dataset, "subset": "trivial (best constant)", "level": level,
                         **report["baseline"][level]})
    return rows


_COUNT_KEYS = ("n", "n_fake", "n_real")


def _fmt(value: Any, key: str = "") -> str:
    if isinstance(value, float) and key in _COUNT_KEYS and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4f}"
    return str(value)


def _csv_value(value: Any, key: str) -> Any:
    """Full precision for CSV; counts as integers; NaN as an empty cell."""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if key in _COUNT_KEYS and value.is_integer():
            return int(value)
        return repr(value)
    return value


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   columns: Sequence[tuple[str, str]] = DETECTION_COLUMNS) -> str:
    """A GitHub-markdown table of ``rows`` (dataset, subset, level, then ``columns``); NaN shows as ``n/a``."""
    head = ["dataset", "subset", "level", *[title for _, title in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        cells = [str(row.get("dataset", "")), str(row.get("subset", "")), str(row.get("level", ""))]
        cells += [_fmt(row.get(key, float("nan")), key) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]] = DETECTION_COLUMNS) -> str:
    """The same rows as CSV text (metric keys as column names)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = ["dataset", "subset", "level", *[key for key, _ in columns]]
    writer.writerow(keys)
    for row in rows:
        writer.writerow([_csv_value(row.get(k, ""), k) for k in keys])
    return buf.getvalue()


def write_video_predictions(path: str | Path, video_ids: Sequence[str], methods: Sequence[str],
                            labels: torch.Tensor, probs: torch.Tensor, frames: torch.Tensor,
                            threshold: float = 0.5) -> Path:
    """Write one row per video: video_id, method, label, p_fake, decision, confidence, frames (atomic).

    Args:
        video_ids: (V,) video ids (unique across the dataset).
        methods: (V,) manipulation method of each video.
        labels: (V,) int64, 1 = fake.
        probs: (V,) float, aggregated P(fake) of the video.
        frames: (V,) int64, number of frames scored.
        threshold: decision threshold on P(fake); ``confidence`` is max(p, 1 - p).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video_id", "method", "label", "p_fake", "decision", "confidence", "frames"])
    for vid, method, lab, p, n in zip(video_ids, methods, labels.tolist(), probs.tolist(), frames.tolist()):
        writer.writerow([vid, method, int(lab), f"{p:.6f}", int(p > threshold), f"{max(p, 1 - p):.6f}", int(n)])
    path = Path(path)
    atomic_write_text(path, buf.getvalue())
    return path
