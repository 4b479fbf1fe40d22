"""A prepared data folder is built once and never silently reused with other builder settings."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

from faceforge.data.core.prepared import BUILD_RECORD
from faceforge.data.detection.datamodule import FaceDataError, FaceDataModule
from faceforge.data.detection.synthetic import build_synthetic_detection


def _builder(**kw):
    return functools.partial(build_synthetic_detection, num_videos=6, frames_per_video=1, image_size=32, **kw)


def test_built_once_then_reused(tmp_path: Path):
    faces = tmp_path / "faces"
    FaceDataModule("synthetic", str(faces), builder=_builder(seed=0), image_size=32).prepare_data()
    assert (faces / BUILD_RECORD).is_file()
    before = (faces / "face_index.parquet").stat().st_mtime_ns
    # same settings (the worker count does not change the output): reused, not rebuilt
    FaceDataModule("synthetic", str(faces), builder=_builder(seed=0, num_threads=1), image_size=32).prepare_data()
    assert (faces / "face_index.parquet").stat().st_mtime_ns == before


def test_other_settings_are_refused_with_the_difference_named(tmp_path: Path):
    faces = tmp_path / "faces"
    FaceDataModule("synthetic", str(faces), builder=_builder(seed=0), image_size=32).prepare_data()
    with pytest.raises(FaceDataError, match=r"seed: built with 0, now 1.*data.faces_dir"):
        FaceDataModule("synthetic", str(faces), builder=_builder(seed=1), image_size=32).prepare_data()


def test_folder_made_outside_a_data_module_is_not_checked(tmp_path: Path):
    faces = tmp_path / "faces"
    build_synthetic_detection(faces, num_videos=6, frames_per_video=1, image_size=32, seed=0)
    FaceDataModule("synthetic", str(faces), builder=_builder(seed=5), image_size=32).prepare_data()
    assert not (faces / BUILD_RECORD).exists()
