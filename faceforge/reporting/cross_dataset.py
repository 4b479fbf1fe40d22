"""Cross-dataset tables: models trained on dataset X, tested on dataset Y, from ``evaluate.py`` results files.

Run ``evaluate.py`` once per (checkpoint, test set), e.g. with a Hydra multirun::

    python evaluate.py -m ckpt_path=RUN_A/checkpoints/best.ckpt,RUN_B/checkpoints/best.ckpt \
        data=ffpp,dfdc,celebdf data.root=...   # (one data.root per dataset via their own configs)

then collect the ``results.json`` files into one matrix per metric and level::

    faceforge-cross-dataset logs/eval/multiruns/NAME --out tables/cross_dataset

which writes ``cross_dataset.md`` (one markdown table per metric: rows = trained on, columns = tested on),
``cross_dataset.csv`` (long format) and ``cross_dataset.json`` (level -> metric -> trained on -> tested on).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from faceforge.errors import FaceforgeError
from faceforge.utils.atomic import OutputPathError, atomic_write_json, atomic_write_text, check_destination

METRICS = ("auc", "eer", "ap", "acc", "precision", "recall", "f1")
LEVELS = ("frame", "video")


class ResultsError(FaceforgeError, ValueError):
    """A results file is missing, not JSON, or lacks the entries a table needs (the message names it)."""


def find_results(paths: Sequence[str | Path]) -> list[Path]:
    """``results.json`` files named directly or found (recursively) under the given folders, sorted.

    Raises:
        ResultsError: a path does not exist, or nothing was found.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob("results.json")))
        else:
            raise ResultsError(f"{p} does not exist")
    if not found:
        raise ResultsError(f"no results.json under {', '.join(map(str, paths))}")
    return sorted(set(found))


def load_result(path: Path) -> dict[str, Any]:
    """Read one results file and check it has trained_on, tested_on and frame/video metrics.

    Raises:
        ResultsError: unreadable or incomplete file.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read results JSON ({exc})") from exc
    for key in ("tested_on", "metrics", "checkpoint"):
        if key not in data:
            raise ResultsError(f"{path}: lacks {key!r} (was it written by evaluate.py?)")
    if not all(level in data["metrics"] for level in LEVELS):
        raise ResultsError(f"{path}: metrics lack frame/video levels (not a detection result)")
    data["_file"] = str(path)  # for messages
    return data


def _row_labels(results: Sequence[dict[str, Any]]) -> list[str]:
    """Row label per result: the training dataset, plus the run name where two checkpoints share it."""
    labels = [r.get("trained_on") or "unknown" for r in results]
    ckpts = [Path(r["checkpoint"]["path"]) for r in results]
    out = []
    for label, ckpt in zip(labels, ckpts):
        same = {c for lab, c in zip(labels, ckpts) if lab == label}
        out.append(label if len(same) == 1 else f"{label} [{ckpt.parent.parent.name}/{ckpt.stem}]")
    return out


def cross_dataset_matrix(results: Sequence[dict[str, Any]], metric: str = "auc",
                         level: str = "frame") -> dict[str, dict[str, float | None]]:
    """``{trained on: {tested on: value}}`` for one metric at one level (None where undefined).

    Raises:
        ResultsError: two results would fill one cell (the same checkpoint evaluated twice on data of one name,
            e.g. FF++ c23 and c40 both ``ffpp``): a table never drops one of them silently.
    """
    matrix: dict[str, dict[str, float | None]] = {}
    source: dict[tuple[str, str], str] = {}
    for label, res in zip(_row_labels(results), results):
        value = res["metrics"][level].get(metric)
        value = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
        cell = (label, str(res["tested_on"]))
        here = str(res.get("_file") or res["checkpoint"].get("path", "?"))
        if cell in source:
            raise ResultsError(f"{source[cell]} and {here} both hold {label} tested on {cell[1]}: one table cell "
                               f"cannot show two results; pass one of them, or evaluate into folders of their own "
                               f"and make a table of each")
        source[cell] = here
        matrix.setdefault(label, {})[cell[1]] = value
    return matrix


def _markdown(matrix: dict[str, dict[str, float | None]], title: str) -> str:
    cols = sorted({c for row in matrix.values() for c in row})
    lines = [f"**{title}**", "", "| trained on \\ tested on | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for row in sorted(matrix):
        cells = [("n/a" if matrix[row].get(c) is None else f"{matrix[row][c]:.4f}") if c in matrix[row] else ""
                 for c in cols]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_cross_dataset_tables(results: Sequence[dict[str, Any]], out_dir: str | Path,
                               metrics: Sequence[str] = METRICS, levels: Sequence[str] = LEVELS) -> list[Path]:
    """Write ``cross_dataset.md``, ``.csv`` and ``.json`` into ``out_dir`` (atomic); return their paths."""
    out_dir = Path(out_dir)
    full: dict[str, dict[str, Any]] = {}
    md_parts = []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["trained_on", "tested_on", "level", "metric", "value"])
    for level in levels:
        for metric in metrics:
            matrix = cross_dataset_matrix(results, metric, level)
            full.setdefault(level, {})[metric] = matrix
            md_parts.append(_markdown(matrix, f"{level}-level {metric.upper()}"))
            for row in sorted(matrix):
                for col in sorted(matrix[row]):
                    v = matrix[row][col]
                    writer.writerow([row, col, level, metric, "" if v is None else repr(v)])
    paths = [out_dir / "cross_dataset.md", out_dir / "cross_dataset.csv", out_dir / "cross_dataset.json"]
    atomic_write_text(paths[0], "\n".join(md_parts))
    atomic_write_text(paths[1], buf.getvalue())
    atomic_write_json(paths[2], full)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``faceforge-cross-dataset RESULTS_OR_DIRS... --out DIR [--metrics auc eer ...] [--levels frame video]``."""
    parser = argparse.ArgumentParser(prog="faceforge-cross-dataset", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="results.json files or folders searched for them")
    parser.add_argument("--out", required=True, help="output folder for cross_dataset.{md,csv,json}")
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS)
    parser.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS)
    args = parser.parse_args(argv)
    try:
        check_destination(Path(args.out) / "cross_dataset.md")  # an --out that is a file, or under one
        results = [load_result(p) for p in find_results(args.results)]
    except (ResultsError, OutputPathError) as exc:
        print(f"faceforge-cross-dataset: {exc}", file=sys.stderr)
        return 2
    try:
        paths = write_cross_dataset_tables(results, args.out, args.metrics, args.levels)
    except ResultsError as exc:
        print(f"faceforge-cross-dataset: {exc}", file=sys.stderr)
        return 2
    except FaceforgeError as exc:
        print(f"faceforge-cross-dataset: {exc}", file=sys.stderr)
        return 1
    print(paths[0].read_text(encoding="utf-8"))
    print(f"written: {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
