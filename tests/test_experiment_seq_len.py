"""experiments/resnext_lstm_seq_len.yaml end to end on its embedded profile (the full spec: six clip lengths, about
2 minutes on 2 CPU cores): one reproduced row per clip length with numeric video accuracy and AUC, the published
rows (0.842 at 10 frames, 0.936 at 100), the trivial baseline's row, and provenance that records each run's clip
length (model.input.clip_length, which reaches data.clip_length in training and, through the checkpoint, in
evaluation). The embedded videos have 100 frames, so no clip is padded and every clip length reads its own frames."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (10, 20, 40, 60, 80, 100)
NAME = "resnext_lstm_seq_len"


@pytest.mark.slow
def test_seq_len_experiment_embedded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "experiment.py"), str(ROOT / "experiments" / f"{NAME}.yaml"),
                           "--profile", "embedded", "--out", str(out), "-o", f"paths.data_dir={tmp_path / 'data'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        logs = "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-2000:]
                       for p in sorted((out / "logs").glob("*.log")))
        pytest.fail(f"experiment.py exited with {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}{logs}")

    table = json.loads((out / f"{NAME}.json").read_text())
    assert table["profile"] == "embedded" and not table["failures"]
    rows = table["rows"]
    reproduced = [r for r in rows if r["kind"] == "reproduced"]
    assert [r["entry"] for r in reproduced] == [f"frames_{n}" for n in LENGTHS]
    for row in reproduced:
        cells = row["cells"]
        assert set(cells) == {"ffpp/video.acc", "ffpp/video.auc"}, row["entry"]
        for key, cell in cells.items():
            assert cell["status"] == "ok", (row["entry"], key, cell)
            assert isinstance(cell["value"], float) and 0.0 <= cell["value"] <= 1.0, (row["entry"], key, cell)
    published = {r["entry"]: r["cells"]["ffpp/video.acc"] for r in rows if r["kind"] == "reference"}
    assert published["frames_10"] == {"status": "published", "value": 0.842}
    assert published["frames_100"] == {"status": "published", "value": 0.936}
    (baseline,) = [r for r in rows if r["kind"] == "baseline"]
    assert {k: c["status"] for k, c in baseline["cells"].items()} == {"ffpp/video.acc": "ok", "ffpp/video.auc": "ok"}
    assert all(isinstance(c["value"], float) for c in baseline["cells"].values())
    md = (out / f"{NAME}.md").read_text()
    assert "| ResNeXt-LSTM 10 frames | published [1] | 0.8420 |" in md
    assert "| ResNeXt-LSTM 100 frames | published [1] | 0.9360 |" in md
    assert "trivial (best constant)" in md and str(tmp_path) not in md

    prov = json.loads((out / "provenance.json").read_text())
    runs = {r["id"]: r for r in prov["runs"]}
    assert sorted(runs) == sorted(f"frames_{n}" for n in LENGTHS)
    for n in LENGTHS:
        run = runs[f"frames_{n}"]
        assert f"model.input.clip_length={n}" in run["overrides"]
        config = run["resolved_config"]
        assert config["model"]["input"]["clip_length"] == n and config["data"]["clip_length"] == n
        report = json.loads((out / run["run_dir"] / "data_report.json").read_text())
        for split in ("train", "val", "test"):  # 100-frame videos: every clip holds n real frames, none padded
            clips = report["clips"][split]
            assert clips["clip_length"] == n and clips["short_videos"] == 0, (n, split, clips)
        (evaluation,) = [e for e in prov["evaluations"] if e["entry"] == f"frames_{n}"]
        assert evaluation["status"] == "ok" and evaluation["weights_sha256"] == run["checkpoint_sha256"]
        assert evaluation["resolved_config"]["data"]["clip_length"] == n  # from the checkpoint's model.input
