"""A configuration that cannot work is refused in one line (``faceforge: RunConfigError: ...``, exit 2) before the
run folder gets a file: a mandatory setting left unset (``data.root``), a model paired with data of the other kind
(a VRN on face crops, a detector on 3D volumes) in train.py and evaluate.py; and every exception class faceforge
defines derives from :class:`faceforge.errors.FaceforgeError`, so that the entry points can print it so."""
from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import faceforge
from faceforge.errors import FaceforgeError
from faceforge.runs.common import RunConfigError
from faceforge.runs.config_checks import (
    DATA_KINDS,
    check_model_data_pairing,
    check_required_settings,
    unresolvable_settings_refused,
)


def _cli(project_root: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, script, *args], cwd=project_root, env=env, capture_output=True, text=True,
                          timeout=300)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert len(lines) == 1 and lines[0].startswith("faceforge: RunConfigError: "), proc.stderr[-4000:]
    return lines[0]


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _compose(project_root: Path, config: str, *overrides: str):
    with initialize_config_dir(config_dir=str(project_root / "conf"), version_base="1.3"):
        return compose(config, overrides=list(overrides))


# ---------------------------------------------------------------------------------------------- train.py
def test_train_without_data_root_names_it_with_an_example_and_writes_nothing(tmp_path: Path,
                                                                              project_root: Path) -> None:
    proc = _cli(project_root, "train.py", "data=ffpp", f"paths.log_dir={tmp_path / 'logs'}",
                f"paths.data_dir={tmp_path / 'data'}", "run_name=noroot", "logger=csv")
    line = _one_line(proc)
    assert "data.root is not set" in line and "data=ffpp" in line
    assert "python train.py" in line and "data.root=/path/to/FaceForensics++" in line
    assert _files(tmp_path) == [], "a refused run wrote files"
    assert not (tmp_path / "logs" / "train" / "runs" / "noroot").exists(), "a refused run left its run folder"


def test_train_refuses_a_vrn_on_detection_data_in_one_line(tmp_path: Path, project_root: Path) -> None:
    proc = _cli(project_root, "train.py", "model=vrn", "data=dfdc", f"paths.log_dir={tmp_path / 'logs'}",
                f"paths.data_dir={tmp_path / 'data'}", "run_name=vrn_dfdc", "logger=csv")
    line = _one_line(proc)
    assert "model=vrn" in line and "3D volume data" in line and "data=dfdc" in line
    for name in ("synthetic_3d", "w300lp", "aflw2000"):
        assert f"data={name}" in line
    assert _files(tmp_path) == []


def test_train_refuses_a_detector_on_3d_data_before_writing(tmp_path: Path, project_root: Path) -> None:
    from faceforge.runs.training import train

    cfg = _compose(project_root, "train", "model=meso4", "data=synthetic_3d", "logger=csv",
                   f"paths.output_dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(RunConfigError, match="DetectionTask.*data=synthetic, data=ffpp, data=dfdc or data=celebdf"):
        train(cfg)
    assert _files(tmp_path) == []


def test_logger_none_trains(tmp_path: Path, project_root: Path) -> None:
    """``logger=none`` (a README option) trains: the learning-rate monitor needs a logger and is left out."""
    from faceforge.runs.training import train

    cfg = _compose(project_root, "train", "logger=none", "trainer.max_epochs=1", "data.builder.num_videos=8",
                   "data.builder.frames_per_video=4", "data.batch_size=4",
                   f"paths.output_dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}")
    result = train(cfg)
    assert "test/auc" in result["metrics"] and (tmp_path / "run" / "metrics.json").is_file()


def test_the_pairing_check_passes_matching_pairs_and_unknown_targets() -> None:
    check_model_data_pairing("faceforge.tasks.detection.DetectionTask",
                             "faceforge.data.detection.datamodule.FaceDataModule")
    check_model_data_pairing("VolumeRegressionTask", "faceforge.data.reconstruction.datamodule.VolumeDataModule")
    check_model_data_pairing("my.OwnTask", "faceforge.data.detection.datamodule.FaceDataModule")  # unknown: not checked
    with pytest.raises(RunConfigError, match="VolumeRegressionTask.*3D volume data.*FaceDataModule"):
        check_model_data_pairing("VolumeRegressionTask", "FaceDataModule")


def test_every_data_config_is_listed_with_the_kind_it_builds(project_root: Path) -> None:
    listed = {name: kind.datamodule for kind in DATA_KINDS for name in kind.data_configs}
    bases = {"face_base", "video_base"}
    names = sorted(p.stem for p in (project_root / "conf" / "data").glob("*.yaml") if p.stem not in bases)
    assert sorted(listed) == names
    for name in names:
        cfg = _compose(project_root, "train", f"data={name}")
        assert str(cfg.data._target_).rsplit(".", 1)[-1] == listed[name], name


def test_all_unset_settings_are_named_with_examples() -> None:
    cfg = OmegaConf.create({"data": {"name": "w300lp", "root": "???", "model_dir": "???", "noneck_dir": "???",
                                     "builder": {"root": "${data.root}"}, "items": [1, "???"]}, "seed": 1})
    with pytest.raises(RunConfigError) as info:
        check_required_settings(cfg, "train.py", overrides=["model=vrn", "data=w300lp", "data.root=???"])
    msg = str(info.value)
    assert msg.startswith("data.root, data.model_dir, data.noneck_dir, data.items[1] are not set")
    assert "data.builder.root" not in msg  # an interpolation of a missing key is not a setting to give
    assert ("`python train.py model=vrn data=w300lp data.root=/path/to/300W_LP data.model_dir=/path/to/3ddfa "
            "data.noneck_dir=/path/to/3DDFA_V2/configs") in msg
    check_required_settings(OmegaConf.create({"data": {"root": "/x", "builder": {"root": "${data.root}"}}}))


def test_a_setting_that_cannot_be_resolved_becomes_one_line() -> None:
    cfg = OmegaConf.create({"data": {"root": "???"}, "model": {"net": {"foo": "${data.nonexistent}"}}})
    with pytest.raises(RunConfigError, match=r"^model\.net\.foo: Interpolation key 'data.nonexistent' not found"):
        with unresolvable_settings_refused():
            OmegaConf.to_yaml(cfg.model, resolve=True)
    with pytest.raises(RunConfigError, match=r"^data\.root: Missing mandatory value") as info:
        with unresolvable_settings_refused():
            _ = cfg.data.root
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- evaluate.py
def _meso4_checkpoint(path: Path) -> Path:
    from faceforge.models.meso import Meso4
    from faceforge.tasks.detection import DetectionTask

    spec = {"_target_": "faceforge.models.meso.Meso4", "head_activation": "leaky_relu", "dropout": 0.5,
            "bn_momentum": 0.1}
    task = DetectionTask(net=Meso4(bn_momentum=0.1), net_spec=yaml.safe_dump(spec))
    ckpt: dict = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                  "datamodule_hyper_parameters": {"image_size": 256, "clip_length": None}}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def test_evaluate_refuses_a_detector_checkpoint_on_3d_data_in_one_line(tmp_path: Path, project_root: Path) -> None:
    ckpt = _meso4_checkpoint(tmp_path / "meso4.ckpt")
    proc = _cli(project_root, "evaluate.py", f"ckpt_path={ckpt}", "data=synthetic_3d",
                f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}", "run_name=mismatch")
    line = _one_line(proc)
    assert "meso4.ckpt (DetectionTask) needs face-crop detection data" in line and "data=synthetic_3d" in line
    assert "data=synthetic, data=ffpp, data=dfdc or data=celebdf" in line
    assert not (tmp_path / "data").exists(), "data was prepared for a model that cannot use it"


def test_evaluate_without_data_root_names_it(tmp_path: Path, project_root: Path) -> None:
    from faceforge.runs.evaluation import evaluate

    ckpt = _meso4_checkpoint(tmp_path / "meso4.ckpt")
    cfg = _compose(project_root, "evaluate", f"ckpt_path={ckpt}", "data=celebdf",
                   f"paths.output_dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(RunConfigError, match=r"data.root is not set.*data.root=/path/to/Celeb-DF-v2"):
        evaluate(cfg)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- exceptions
#: Exceptions that are not errors: RunInterrupted carries a signal stop (exit 128 + signal, a checkpoint written)
#: through Lightning; an ``except FaceforgeError`` must not turn it into an error line.
NOT_ERRORS = {"faceforge.runs.callbacks.RunInterrupted"}


def test_every_faceforge_exception_derives_from_faceforge_error() -> None:
    offenders, seen = [], 0
    for info in pkgutil.walk_packages(faceforge.__path__, prefix="faceforge."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, Exception) or issubclass(cls, Warning):
                continue
            seen += 1
            name = f"{cls.__module__}.{cls.__qualname__}"
            if not issubclass(cls, FaceforgeError) and name not in NOT_ERRORS:
                offenders.append(name)
    assert seen > 10
    assert offenders == [], f"exception classes not deriving from FaceforgeError: {offenders}"
