"""An experiment's tables (markdown, CSV, JSON) and its provenance record.

The tables hold only what the runs measured and what the spec states: entry labels, how the weights came about
(reproduced training, imported weights, a published reference with its source, the trivial baseline), one cell per
test set and metric, and the failures with their log paths relative to the experiment folder. Timestamps, absolute
paths and hashes live in ``provenance.json`` only, so that two runs of an experiment with the same seed write
byte-identical tables. Files written (atomically):

* ``<name>.md``: the table, the sources of the published numbers, the failures;
* ``<name>.csv``: long format, one line per entry x test set x metric (``value`` in full precision, ``repr``);
* ``<name>.json``: the same content, structured;
* ``provenance.json``: git commit and dirty flag, command, spec file and hash, profile, per run its overrides,
  seed, resolved config, dataset name and version (``built_with.json``, index hashes) and checkpoint SHA-256, per
  evaluation its overrides, weights hash and dataset version, and the UTC start / end times.
"""
from __future__ import annotations

import csv
import io
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from faceforge.experiments.runner import EvalRecord, ExperimentRun
from faceforge.utils.atomic import atomic_write_json, atomic_write_text
from faceforge.utils.run_info import collect_run_info, git_state

__all__ = ["lookup_metric", "build_table", "write_tables", "write_provenance"]


def lookup_metric(metrics: Any, key: str) -> float | None:
    """``metrics["a"]["b"]`` for key ``"a.b"`` as a float; None when absent, not a number, or NaN."""
    value = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _cell(value: float | None, status: str) -> dict[str, Any]:
    return {"value": value, "status": status}


def _measured_cell(metrics: dict[str, Any], key: str) -> dict[str, Any]:
    """A cell read from an evaluation's metrics: ``ok`` with its value, or ``n/a`` when the evaluation does not
    report ``key`` (a model that predicts no landmarks has no NME)."""
    value = lookup_metric(metrics, key)
    return _cell(value, "ok" if value is not None else "n/a")


def build_table(result: ExperimentRun) -> dict[str, Any]:
    """The table content of an experiment run (no paths outside the experiment folder, no times)."""
    spec = result.spec
    used = {ds for m in spec.models for ds in m.test_on} | {ds for i in spec.imported for ds in i.test_on}
    datasets = [k for k in spec.profiles["real"].datasets if k in used]
    columns = []
    for ds in datasets:
        for metric in spec.metrics:
            if len(spec.metrics) == 1:
                label = spec.dataset_label(ds)
            elif len(datasets) == 1:
                label = metric.label
            else:
                label = f"{spec.dataset_label(ds)} {metric.label}"
            columns.append({"key": f"{ds}/{metric.key}", "dataset": ds, "metric": metric.key, "label": label})
    evals: dict[tuple[str, str], EvalRecord] = {(e.entry, e.tested_on): e for e in result.evaluations}
    sources = [{"id": i + 1, "source": ref.source, "metric": ref.metric} for i, ref in enumerate(spec.references)]

    def measured(entry: str) -> dict[str, dict[str, Any]]:
        cells = {}
        for col in columns:
            ev = evals.get((entry, col["dataset"]))
            if ev is None:
                cells[col["key"]] = _cell(None, "not evaluated")
            elif ev.status in ("ok", "skipped"):
                cells[col["key"]] = _measured_cell(ev.metrics, col["metric"])
            else:
                cells[col["key"]] = _cell(None, ev.status)
        return cells

    def references(entry: str, label: str) -> list[dict[str, Any]]:
        rows = []
        for src, ref in zip(sources, spec.references):
            if entry not in ref.values:
                continue
            cells = {col["key"]: _cell(ref.values[entry].get(col["dataset"]), "published")
                     for col in columns if col["metric"] == ref.metric and col["dataset"] in ref.values[entry]}
            rows.append({"entry": entry, "kind": "reference", "label": label, "weights": f"published [{src['id']}]",
                         "trained_on": None, "source": src["source"], "cells": cells})
        return rows

    rows: list[dict[str, Any]] = []
    by_id = {r.id: r for r in result.runs}
    for model in spec.models:
        rec = by_id.get(model.id)
        if rec is None:
            continue
        status = "ok" if rec.status in ("ok", "skipped") else rec.status
        rows.append({"entry": model.id, "kind": "reproduced", "label": model.label,
                     "weights": f"reproduced (trained on {spec.dataset_label(model.train_on)})" +
                                ("" if status == "ok" else f", training {status}"),
                     "trained_on": model.train_on, "source": None, "cells": measured(model.id)})
        rows.extend(references(model.id, model.label))
    for imp in spec.imported:
        rec = by_id.get(imp.id)
        if rec is None:
            continue
        rows.append({"entry": imp.id, "kind": "imported", "label": imp.label,
                     "weights": f"imported weights ({imp.weights})" + ("" if rec.status == "ok" else ", missing"),
                     "trained_on": None, "source": imp.note or None, "cells": measured(imp.id)})
        rows.extend(references(imp.id, imp.label))
    if spec.baseline is not None and spec.baseline.from_run in by_id:
        cells = {}
        for col in columns:
            ev = evals.get((spec.baseline.from_run, col["dataset"]))
            key = spec.baseline.metrics.get(col["metric"])
            if ev is None or key is None:
                cells[col["key"]] = _cell(None, "not evaluated" if ev is None else "n/a")
            elif ev.status in ("ok", "skipped"):
                cells[col["key"]] = _measured_cell(ev.metrics, key)
            else:
                cells[col["key"]] = _cell(None, ev.status)
        rows.append({"entry": "baseline", "kind": "baseline", "label": spec.baseline.label,
                     "weights": f"trivial baseline (from {spec.baseline.from_run}'s evaluations)",
                     "trained_on": None, "source": None, "cells": cells})
    profile_note = ""
    if result.profile.name != "real":
        trained = {m.train_on for m in spec.models}
        stand_ins = "; ".join(f"{spec.dataset_label(k)}: `{' '.join(d.overrides)}`"
                              for k, d in result.profile.datasets.items() if k in datasets or k in trained)
        described = result.profile.description or "see the spec"
        if result.profile.name == "fixture":
            profile_note = (f"Profile `fixture`: a SMOKE-SIZE table on a handful of real samples, the project's test "
                            f"fixtures ({described}). Every model is trained for a few steps only, on a training "
                            f"set of one or a few files: the numbers show that the pipeline runs end to end on real "
                            f"input and are not comparable with papers")
        else:
            profile_note = (f"Profile `{result.profile.name}`: every dataset column is a stand-in on embedded data "
                            f"({described})")
        profile_note += (("; the published numbers are for the real datasets" if spec.references else "")
                         + f". Stand-ins: {stand_ins}.")
    failures = []
    for rec in result.runs:
        if rec.status in ("failed", "missing"):
            failures.append({"entry": rec.id, "step": "train" if rec.kind == "reproduced" else "weights",
                             "status": rec.status, "log": rec.log if rec.kind == "reproduced" else None,
                             "message": rec.message})
    for ev in result.evaluations:
        if ev.status in ("failed", "missing"):
            failures.append({"entry": ev.entry, "step": f"evaluate on {ev.tested_on}", "status": ev.status,
                             "log": ev.log if ev.status == "failed" else None, "message": ev.message})
    return {"name": spec.name, "title": spec.title, "description": spec.description, "profile": result.profile.name,
            "seed": spec.seed, "metrics": [{"key": m.key, "label": m.label} for m in spec.metrics],
            "profile_note": profile_note, "columns": columns, "rows": rows, "sources": sources, "failures": failures}


def _fmt(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return ""
    if cell["value"] is not None:
        return f"{cell['value']:.4f}"
    return {"ok": "n/a", "published": "not published", "not evaluated": ""}.get(cell["status"], cell["status"])


def _markdown(table: dict[str, Any]) -> str:
    cols = table["columns"]
    lines = [f"## {table['title']}", ""]
    if table["description"]:
        lines += [table["description"].strip(), ""]
    lines += [f"Profile: `{table['profile']}`; seed {table['seed']}; metric"
              f"{'s' if len(table['metrics']) > 1 else ''}: " + ", ".join(m["label"] for m in table["metrics"]) +
              ". Provenance (commit, configs, dataset versions, checkpoint SHA-256): `provenance.json`.", ""]
    if table["profile_note"]:
        lines += [table["profile_note"], ""]
    lines.append("| model | weights | " + " | ".join(c["label"] for c in cols) + " |")
    lines.append("|---|---|" + "---:|" * len(cols))
    for row in table["rows"]:
        cells = [_fmt(row["cells"].get(c["key"])) for c in cols]
        lines.append(f"| {row['label']} | {row['weights']} | " + " | ".join(cells) + " |")
    if table["sources"]:
        lines += ["", "Published numbers:"]
        lines += [f"[{s['id']}] {s['source']}" + ("  " if i < len(table["sources"]) - 1 else "")
                  for i, s in enumerate(table["sources"])]
    if table["failures"]:
        lines += ["", "Failures:", ""]
        for f in table["failures"]:
            where = f" (log: `{f['log']}`)" if f["log"] else ""
            lines.append(f"- {f['entry']}: {f['step']} {f['status']}{where}: {f['message']}")
    return "\n".join(lines) + "\n"


def _csv(table: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["entry", "label", "kind", "weights", "trained_on", "tested_on", "metric", "value", "status",
                     "source"])
    for row in table["rows"]:
        for col in table["columns"]:
            cell = row["cells"].get(col["key"])
            if cell is None:
                continue
            writer.writerow([row["entry"], row["label"], row["kind"], row["weights"], row["trained_on"] or "",
                             col["dataset"], col["metric"], "" if cell["value"] is None else repr(cell["value"]),
                             cell["status"], row["source"] or ""])
    return buf.getvalue()


def write_tables(result: ExperimentRun) -> list[Path]:
    """Write ``<name>.md``, ``.csv`` and ``.json`` into the experiment folder (atomic); return their paths."""
    table = build_table(result)
    base = result.out_dir / result.spec.name
    paths = [base.with_suffix(".md"), base.with_suffix(".csv"), base.with_suffix(".json")]
    atomic_write_text(paths[0], _markdown(table))
    atomic_write_text(paths[1], _csv(table))
    atomic_write_json(paths[2], table)
    return paths


def write_provenance(result: ExperimentRun, started_utc: str, root: str | Path,
                     argv: list[str] | None = None) -> Path:
    """Write ``provenance.json`` (see the module docstring) into the experiment folder; return its path."""
    spec = result.spec
    info = collect_run_info(spec.seed, root)
    record = {
        "experiment": spec.name,
        "spec": {"path": str(spec.path), "sha256": spec.sha256},
        "profile": result.profile.name,
        "seed": spec.seed,
        "git": git_state(root),
        "command": [sys.executable, *(argv if argv is not None else sys.argv)],
        "extra_overrides": result.extra_overrides,
        "packages": info["packages"],
        "python": info["python"],
        "platform": info["platform"],
        "started_utc": started_utc,
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": [{"id": r.id, "kind": r.kind, "label": r.label, "status": r.status, "trained_on": r.trained_on,
                  "dataset": ({"key": r.trained_on, **(r.dataset or {})} if r.kind == "reproduced" else None),
                  "seed": spec.seed if r.kind == "reproduced" else None,
                  "overrides": r.overrides, "run_dir": r.run_dir, "log": r.log, "checkpoint": r.checkpoint,
                  "checkpoint_sha256": r.checkpoint_sha256, "resolved_config": r.config, "message": r.message}
                 for r in result.runs],
        "evaluations": [{"entry": e.entry, "tested_on": e.tested_on, "status": e.status, "seed": spec.seed,
                         "overrides": e.overrides, "run_dir": e.run_dir, "log": e.log,
                         "weights_sha256": e.weights_sha256, "dataset": e.dataset, "resolved_config": e.config,
                         "message": e.message}
                        for e in result.evaluations],
    }
    path = result.out_dir / "provenance.json"
    atomic_write_json(path, record)
    return path
