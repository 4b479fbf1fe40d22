"""The embedded profile of the 3D table (experiments/reconstruction_3d.yaml, issue 9), end to end.

Slow (about 4 minutes on 2 CPU cores with one intra-op thread): ``python experiment.py
experiments/reconstruction_3d.yaml --profile embedded`` in a subprocess trains VRN, VRN-Guided, VRN-Multitask and the
3DFaceGAN-style baseline on the procedural 3D faces of builder seed 0 and tests them on the test split of builder
seed 1 (other faces). The table it writes must teach something: every model beats the trivial baseline (the mean
training volume) on IoU by at least 0.05, the two landmark models beat the mean training landmarks on NME, and every
row, the baseline's included, has a numeric mesh NME.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC_3D = ROOT / "experiments" / "reconstruction_3d.yaml"
MODELS = ("vrn", "vrn_guided", "vrn_multitask", "facegan")
LANDMARK_MODELS = ("vrn_guided", "vrn_multitask")
IOU_MARGIN = 0.05


def _value(row: dict, metric: str) -> float | None:
    """The value of ``row``'s cell for ``metric`` on the AFLW2000-3D stand-in (None where the table shows n/a)."""
    return row["cells"][f"aflw2000/{metric}"]["value"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_embedded_3d_table_beats_the_trivial_baseline(tmp_path: Path) -> None:
    """The embedded 3D table, run as a user runs it: the four reproduced rows are ok, each model's IoU is at least
    the baseline's + 0.05, VRN-Guided's and VRN-Multitask's NME are below the baseline's, and mesh NME is a number
    in every row (baseline included)."""
    out = tmp_path / "experiment"
    # one intra-op thread, as the spec's timing was measured: on a shared 2-core machine two threads per process
    # contend and an epoch can take many times longer
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "experiment.py"), str(SPEC_3D), "--profile", "embedded",
                           "--out", str(out), "-o", f"paths.data_dir={tmp_path / 'data'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1400)
    if proc.returncode != 0:
        logs = "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-2000:]
                       for p in sorted((out / "logs").glob("*.log")))
        pytest.fail(f"experiment.py exited with {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}{logs}")

    table = json.loads((out / "reconstruction_3d.json").read_text())
    assert table["profile"] == "embedded" and table["failures"] == []
    rows = {row["entry"]: row for row in table["rows"]}
    reproduced = [row["entry"] for row in table["rows"] if row["kind"] == "reproduced"]
    assert reproduced == list(MODELS)
    for entry in MODELS:
        statuses = {key: cell["status"] for key, cell in rows[entry]["cells"].items()}
        # measured, or n/a where the model predicts no landmarks (VRN and the GAN have no NME)
        assert {k for k, v in statuses.items() if v != "ok"} == \
            ({k for k in statuses if "nme" in k and "mesh" not in k} if entry in ("vrn", "facegan") else set()), \
            (entry, statuses)

    baseline = rows["baseline"]
    assert baseline["kind"] == "baseline"
    base_iou, base_nme = _value(baseline, "iou"), _value(baseline, "nme")
    assert base_iou is not None and base_nme is not None
    summary = {entry: {m: _value(rows[entry], m) for m in ("iou", "nme", "mesh_nme")} for entry in rows}
    for entry in MODELS:
        iou = _value(rows[entry], "iou")
        assert iou is not None and iou >= base_iou + IOU_MARGIN, (entry, summary)
    for entry in LANDMARK_MODELS:
        nme = _value(rows[entry], "nme")
        assert nme is not None and nme < base_nme, (entry, summary)
    for entry in (*MODELS, "baseline"):
        mesh_nme = _value(rows[entry], "mesh_nme")
        assert isinstance(mesh_nme, float) and math.isfinite(mesh_nme) and mesh_nme > 0, (entry, summary)
