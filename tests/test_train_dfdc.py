"""The issue's real-input flow: the two fixture DFDC videos in a DFDC-layout folder -> face extraction (run by
train.py's data builder) -> Meso-4 training -> evaluate.py, all through the real command lines."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from faceforge.data.detection.face_index import FaceIndex
from tests.cli import run_cli

NUM_FRAMES = 8


@pytest.fixture(scope="module")
def dfdc_root(fixtures_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("dfdc_layout") / "dfdc"
    root.mkdir()
    for name in ("abofeumbvv.mp4", "lynaeydofd.mp4"):
        shutil.copy(fixtures_dir / "videos" / "dfdc" / name, root / name)
    # the shipped metadata.json does not name lynaeydofd (REAL): write the official form for both
    (root / "metadata.json").write_text(json.dumps({
        "abofeumbvv.mp4": {"label": "FAKE", "split": "train", "original": "atvmxvwyns.mp4"},
        "lynaeydofd.mp4": {"label": "REAL", "split": "train", "original": None},
    }))
    return root


def test_dfdc_videos_train_and_evaluate(dfdc_root, project_root, tmp_path):
    common = [f"data.root={dfdc_root}", f"data.faces_dir={tmp_path / 'faces'}", f"paths.log_dir={tmp_path / 'logs'}",
              f"data.builder.num_frames={NUM_FRAMES}", "data.same_split_for_all=true", "data.batch_size=4"]
    run_cli(project_root, "train.py", "model=meso4", "data=dfdc", *common, "trainer.max_epochs=2", "logger=csv",
            "run_name=dfdc")

    # face extraction ran inside train.py: labels from metadata.json, faces in most sampled frames
    index = FaceIndex.read(tmp_path / "faces" / "face_index.parquet")
    per_video = {}
    for r in (index.row(i) for i in range(len(index))):
        per_video.setdefault(r["video_id"], set()).add((str(r["label"]), r["frame_index"]))
    assert set(per_video) == {"dfdc/abofeumbvv", "dfdc/lynaeydofd"}
    assert {lab for lab, _ in per_video["dfdc/abofeumbvv"]} == {"1"}
    assert {lab for lab, _ in per_video["dfdc/lynaeydofd"]} == {"0"}
    assert all(len(frames) >= NUM_FRAMES * 3 // 4 for frames in per_video.values())
    report = json.loads((tmp_path / "faces" / "prepare_report.json").read_text())
    assert report["videos_with_faces"] == 2 and not report["unreadable"]

    run_dir = tmp_path / "logs" / "train" / "runs" / "dfdc"
    best = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    proc = run_cli(project_root, "evaluate.py", f"ckpt_path={best}", "data=dfdc", *common, "run_name=ev")
    assert "| dfdc | all | video |" in proc.stdout
    ev_dir = tmp_path / "logs" / "eval" / "runs" / "ev"
    results = json.loads((ev_dir / "results.json").read_text())
    assert (results["trained_on"], results["tested_on"]) == ("dfdc", "dfdc")
    assert results["metrics"]["video"]["n"] == 2
    with open(ev_dir / "video_predictions.csv") as fh:
        preds = {r["video_id"]: r for r in csv.DictReader(fh)}
    assert set(preds) == {"dfdc/abofeumbvv", "dfdc/lynaeydofd"}
    assert preds["dfdc/abofeumbvv"]["label"] == "1" and preds["dfdc/lynaeydofd"]["label"] == "0"
