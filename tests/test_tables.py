"""Result tables: every metric lands in its column, NaN shows as n/a, counts as integers."""
from __future__ import annotations

import csv
import io

from faceforge.reporting.tables import csv_table, detection_rows, markdown_table


def _metrics(auc: float) -> dict:
    return {"auc": auc, "eer": 0.1, "ap": 0.8, "acc": 0.75, "precision": 0.7, "recall": 0.6, "f1": 0.65,
            "n": 40.0, "n_fake": 20.0, "n_real": 20.0}


def test_rows_and_markdown():
    report = {"frame": _metrics(0.9), "video": _metrics(float("nan")),
              "per_method": {"Face2Face": {"frame": _metrics(0.8), "video": _metrics(0.85)}},
              "baseline": {"frame": _metrics(0.5), "video": _metrics(0.5)}}
    rows = detection_rows(report, dataset="ffpp")
    assert [(r["subset"], r["level"]) for r in rows] == [("all", "frame"), ("all", "video"),
                                                        ("Face2Face", "frame"), ("Face2Face", "video"),
                                                        ("trivial (best constant)", "frame"),
                                                        ("trivial (best constant)", "video")]
    table = markdown_table(rows).splitlines()
    assert table[0].startswith("| dataset | subset | level | AUC | EER")
    assert "| ffpp | all | frame | 0.9000 | 0.1000 |" in table[2]
    assert "n/a" in table[3] and "| 40 | 20 | 20 |" in table[2]
    parsed = list(csv.DictReader(io.StringIO(csv_table(rows))))
    assert parsed[0]["auc"] == "0.9" and parsed[1]["auc"] == "" and parsed[0]["n"] == "40"
