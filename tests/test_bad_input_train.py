"""Issue 8 point 4, the training-side bad inputs: an unreadable crop with ``data.cache_crops=false`` is replaced and
counted (not a DataLoader worker traceback), Meso-4 with ``data.image_size`` other than 256 is one line before
training, and a refused ``evaluate.py`` leaves no run folder (no ``.hydra/``, no ``evaluate.log``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from faceforge.data.detection.datamodule import FaceDataModule
from faceforge.data.detection.face_index import FaceIndex
from faceforge.data.detection.frames import CropReadWarning
from faceforge.data.detection.synthetic import build_synthetic_detection
from faceforge.errors import FaceforgeError
from faceforge.models.meso import Meso4, ModelInputError
from tests.test_config_errors import _meso4_checkpoint


def _cli(project_root: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, script, *args], cwd=project_root, env=env, capture_output=True, text=True,
                          timeout=600)


def _corrupt_one_train_crop(faces_dir: Path, content: bytes = b"not an image at all") -> str:
    """Overwrite one train-split crop with bytes no decoder reads; return its path relative to ``faces_dir``."""
    index = FaceIndex.read(faces_dir / "face_index.parquet")
    train = index.where(split="train")
    rel = str(train.columns["crop_path"][1])
    (faces_dir / rel).write_bytes(content)
    return rel


# ---------------------------------------------------------------------------------------------- unreadable crop
def _batches(faces_dir: Path, num_workers: int) -> tuple[list[dict[str, torch.Tensor]], FaceDataModule]:
    dm = FaceDataModule(name="synthetic", faces_dir=str(faces_dir), batch_size=4, num_workers=num_workers,
                        cache_crops=False, image_size=64, seed=3)
    dm.prepare_data()
    dm.setup("fit")
    with pytest.warns(CropReadWarning, match="cannot read image") if num_workers == 0 else nullcontext():
        batches = list(dm.train_dataloader())
    return batches, dm


@pytest.mark.parametrize("content", [b"not an image at all", b""], ids=["garbage", "zero_bytes"])
def test_an_unreadable_crop_without_cache_is_replaced_and_counted_with_any_num_workers(tmp_path: Path,
                                                                                       content: bytes) -> None:
    faces = tmp_path / "faces"
    build_synthetic_detection(output_dir=faces, num_videos=8, frames_per_video=2, image_size=64, seed=0)
    bad = _corrupt_one_train_crop(faces, content)
    runs = {}
    for workers in (0, 2):
        batches, dm = _batches(faces, workers)
        report = dm.load_report()
        assert report["train"]["unreadable_crops"] == 1, report
        assert report["train"]["unreadable_examples"] == [bad]
        assert report["train"]["substituted_items"] >= 1
        runs[workers] = batches
    assert len(runs[0]) == len(runs[2])
    for a, b in zip(runs[0], runs[2]):  # same seed: the same batches, replacement included, with or without workers
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_train_without_cache_and_an_unreadable_crop_trains_and_reports_it(tmp_path: Path,
                                                                        project_root: Path) -> None:
    data_dir = tmp_path / "data"
    faces = data_dir / "synthetic" / "detection_n12_f2_s256_seed0"
    build_synthetic_detection(output_dir=faces, num_videos=12, frames_per_video=2, image_size=256, seed=0)
    bad = _corrupt_one_train_crop(faces)
    proc = _cli(project_root, "train.py", "model=meso4", "data=synthetic", "data.cache_crops=false",
                "data.builder.num_videos=12", "data.builder.frames_per_video=2", "data.batch_size=8",
                "data.num_workers=2", "trainer.max_epochs=1", "logger=csv", "run_name=badcrop",
                f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}")
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "Traceback" not in proc.stderr
    run = tmp_path / "logs" / "train" / "runs" / "badcrop"
    report = json.loads((run / "data_report.json").read_text())
    loading = report["unreadable_while_loading"]["train"]
    assert loading["unreadable_crops"] == 1 and loading["unreadable_examples"] == [bad], loading
    assert bad in proc.stderr + proc.stdout  # the run says which file


# ---------------------------------------------------------------------------------------------- Meso-4 input size
def test_meso4_input_size_error_is_a_faceforge_error_naming_the_setting() -> None:
    with pytest.raises(ModelInputError, match=r"got \(1, 3, 64, 64\).*data.image_size=256") as info:
        Meso4()(torch.zeros(1, 3, 64, 64))
    assert isinstance(info.value, FaceforgeError) and isinstance(info.value, ValueError)


def test_train_meso4_at_64px_is_refused_in_one_line_before_training(tmp_path: Path, project_root: Path) -> None:
    proc = _cli(project_root, "train.py", "model=meso4", "data=synthetic", "data.image_size=64", "logger=csv",
                "run_name=small", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert len(lines) == 1 and lines[0].startswith("faceforge: RunConfigError: "), proc.stderr[-4000:]
    assert "model=meso4" in lines[0] and "data.image_size=64" in lines[0] and "data.image_size=256" in lines[0]
    assert not (tmp_path / "data").exists(), "data was built for a run that cannot train"
    assert not (tmp_path / "logs" / "train" / "runs" / "small").exists()


# ---------------------------------------------------------------------------------------------- evaluate.py
def test_a_refused_evaluate_leaves_no_run_folder(tmp_path: Path, project_root: Path) -> None:
    ckpt = _meso4_checkpoint(tmp_path / "meso4.ckpt")
    proc = _cli(project_root, "evaluate.py", f"ckpt_path={ckpt}", "data=synthetic_3d",
                f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}", "run_name=refused")
    assert proc.returncode == 2, proc.stderr[-4000:]
    run = tmp_path / "logs" / "eval" / "runs" / "refused"
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*")) if run.exists() else []
    assert not run.exists(), f"a refused evaluation left {left}"


def test_evaluate_config_lets_the_run_write_its_hydra_record(project_root: Path) -> None:
    with initialize_config_dir(config_dir=str(project_root / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["ckpt_path=x.ckpt"], return_hydra_config=True)
    assert cfg.hydra.output_subdir is None
    assert cfg.hydra.job_logging.handlers.file.delay is True
