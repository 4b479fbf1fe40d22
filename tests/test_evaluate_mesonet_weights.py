"""The MesoNet authors' Keras weights through the normal route: ``evaluate.py ckpt_path=Meso4_DF.h5 data=...``.

End to end on the embedded synthetic data (tiny: 8 videos of 2 frames) with the real weight files from the shared
fixtures: the architecture is told from the file, the results say the weights are imported (with the file's
SHA-256), and the per-video predictions equal the authors' pipeline (PIL nearest resize to 256, /255) applied to
the test crops by hand.
"""
from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from faceforge.data.detection.face_index import FaceIndex
from faceforge.models.meso import KerasWeightsError, from_keras_h5, mesonet_preprocess
from faceforge.runs.common import RunConfigError
from faceforge.runs.evaluation import _prepare_data_for_mesonet, evaluate, is_keras_h5
from tests.cli import run_cli

TINY = ["data=synthetic", "data.builder.num_videos=8", "data.builder.frames_per_video=2", "data.batch_size=8"]
LABEL = "imported: MesoNet authors' Keras h5 ({})"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One synthetic data folder shared by the runs of this module (built by the first run)."""
    return tmp_path_factory.mktemp("data")


def _weights(fixtures_dir: Path, name: str) -> Path:
    path = fixtures_dir / "mesonet" / "weights" / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _compose(project_root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(project_root / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


def _by_hand(weights: Path, faces_dir: Path) -> dict[str, float]:
    """Mean P(fake) per test video: the test crops read with PIL, the authors' preprocessing, the imported net."""
    model = from_keras_h5(weights)
    crops: dict[str, list[torch.Tensor]] = defaultdict(list)
    index = FaceIndex.read(faces_dir / "face_index.parquet")
    for row in (index.row(i) for i in range(len(index))):
        if row["split"] == "test":
            with Image.open(faces_dir / row["crop_path"]) as im:
                crops[row["video_id"]].append(mesonet_preprocess(im))
    with torch.no_grad():
        return {vid: float(torch.sigmoid(model(torch.stack(x))).mean()) for vid, x in crops.items()}


def _check_results(out_dir: Path, results: dict, weights: Path, arch: str, data_dir: Path) -> None:
    w = results["weights"]
    assert w["kind"] == "imported" and w["source"] == "MesoNet authors' Keras h5" and w["architecture"] == arch
    assert w["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest() == results["checkpoint"]["sha256"]
    assert w["preprocessing"]["image_size"] == 256 and w["preprocessing"]["test_crops"]["other_size"] == 0
    assert w["preprocessing"]["test_crops"]["checked"] > 0
    assert results["trained_on"] == f"imported:{weights.name}" and results["tested_on"] == "synthetic"
    assert results["config"]["data"]["image_size"] == 256
    assert f"_target_: {arch}" in results["checkpoint"]["hyper_parameters"]["net_spec"]
    for level in ("frame", "video"):
        assert 0.0 <= results["metrics"][level]["auc"] <= 1.0
    assert results["metrics"]["video"]["n"] < results["metrics"]["frame"]["n"]
    label = LABEL.format(weights.name)
    table = (out_dir / "results.md").read_text()
    assert "| weights |" in table.splitlines()[0] and table.count(label) == len(table.splitlines()) - 2
    with open(out_dir / "results.csv") as fh:
        assert {r["weights"] for r in csv.DictReader(fh)} == {label}
    with open(out_dir / "video_predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == int(results["metrics"]["video"]["n"]) and {r["label"] for r in rows} == {"0", "1"}
    # the data module serves exactly what the authors' pipeline gives: same P(fake) per video
    faces_dir = Path(results["data"]["data_dir"])
    assert faces_dir.is_relative_to(data_dir)
    expected = _by_hand(weights, faces_dir)
    assert {r["video_id"] for r in rows} == set(expected)
    for r in rows:
        assert float(r["p_fake"]) == pytest.approx(expected[r["video_id"]], abs=1e-5), r["video_id"]


@pytest.mark.fixtures
def test_evaluate_py_takes_the_authors_meso4_h5(fixtures_dir, project_root, data_dir, tmp_path):
    """The real command line, as a user types it."""
    weights = _weights(fixtures_dir, "Meso4_DF.h5")
    run_cli(project_root, "evaluate.py", f"ckpt_path={weights}", f"paths.data_dir={data_dir}",
            f"paths.log_dir={tmp_path}", "run_name=authors", *TINY)
    out_dir = tmp_path / "eval" / "runs" / "authors"
    _check_results(out_dir, json.loads((out_dir / "results.json").read_text()), weights, "Meso4", data_dir)


@pytest.mark.fixtures
def test_evaluate_detects_mesoinception4_from_the_h5(fixtures_dir, project_root, data_dir, tmp_path):
    weights = _weights(fixtures_dir, "MesoInception_DF.h5")
    cfg = _compose(project_root, f"ckpt_path={weights}", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}",
                   f"paths.output_dir={tmp_path / 'out'}", "video_aggregation=vote", *TINY)
    results = evaluate(cfg)
    assert results["checkpoint"]["hyper_parameters"]["video_aggregation"] == "vote"
    assert json.loads((tmp_path / "out" / "results.json").read_text())["weights"]["architecture"] == "MesoInception4"
    assert results["weights"]["architecture"] == "MesoInception4"


def test_data_settings_follow_the_authors_network(project_root):
    cfg = _compose(project_root, "ckpt_path=x.h5", "data.image_size=128")
    _prepare_data_for_mesonet(cfg, explicit=set())  # a data config's own size is replaced by the network's 256
    assert cfg.data.image_size == 256
    cfg = _compose(project_root, "ckpt_path=x.h5", "data.image_size=128")
    with pytest.raises(RunConfigError, match="256"):  # an explicit other size is refused, not silently changed
        _prepare_data_for_mesonet(cfg, explicit={"data.image_size"})
    cfg = _compose(project_root, "ckpt_path=x.h5", "data.clip_length=10")
    with pytest.raises(RunConfigError, match="clip_length"):
        _prepare_data_for_mesonet(cfg, explicit=set())


def test_an_hdf5_file_that_is_not_mesonet_is_a_clear_error(project_root, tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    assert is_keras_h5(path) and not is_keras_h5(tmp_path / "missing.h5")
    cfg = _compose(project_root, f"ckpt_path={path}", f"paths.output_dir={tmp_path / 'out'}",
                   f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(KerasWeightsError, match="other.h5"):
        evaluate(cfg)
    assert not (tmp_path / "data").exists()


def test_a_trained_checkpoint_is_marked_trained(project_root, data_dir, tmp_path):
    import yaml

    from faceforge.models.meso import Meso4
    from faceforge.tasks.detection import DetectionTask

    task = DetectionTask(net=Meso4(), net_spec=yaml.safe_dump({"_target_": "Meso4"}))
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(ckpt)
    path = tmp_path / "mine.ckpt"
    torch.save(ckpt, path)
    cfg = _compose(project_root, f"ckpt_path={path}", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}",
                   f"paths.output_dir={tmp_path / 'out'}", *TINY)
    results = evaluate(cfg)
    assert results["weights"]["kind"] == "trained" and results["weights"]["architecture"] == "Meso4"
    assert results["weights"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with open(tmp_path / "out" / "results.csv") as fh:
        assert {r["weights"] for r in csv.DictReader(fh)} == {"trained (mine.ckpt)"}
