"""Project hygiene: what pyproject.toml declares (test tools only in the dev extra; the OpenCV wheel faceforge
imports), CI lints before testing, and every public name a faceforge module promises in ``__all__`` exists."""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import faceforge

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_dependencies_hold_runtime_packages_and_the_dev_extra_the_test_tools(project_root: Path) -> None:
    project = tomllib.loads((project_root / "pyproject.toml").read_text())["project"]
    runtime = _requirement_names(project["dependencies"])
    dev = _requirement_names(project["optional-dependencies"]["dev"])
    assert not runtime & {"pytest", "pytest-timeout", "ruff"}, "test tools belong in the dev extra"
    assert {"pytest", "ruff"} <= dev
    assert runtime & {"opencv-python-headless", "opencv-python"}, "faceforge imports cv2: declare its wheel"


def test_ci_lints_the_tree_before_the_tests(project_root: Path) -> None:
    lines = (project_root / ".ci" / "run").read_text().splitlines()
    ruff = next(i for i, ln in enumerate(lines) if "ruff check" in ln and not ln.lstrip().startswith("#"))
    pytest_line = next(i for i, ln in enumerate(lines) if "-m pytest" in ln and not ln.lstrip().startswith("#"))
    assert ruff < pytest_line
    for target in ("faceforge", "tests", "train.py", "evaluate.py", "benchmarks", "experiments"):
        assert f" {target}" in lines[ruff]


def test_every_name_in_a_modules_all_exists() -> None:
    missing = []
    for info in pkgutil.walk_packages(faceforge.__path__, prefix="faceforge."):
        module = importlib.import_module(info.name)
        missing += [f"{info.name}.{name}" for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
    assert missing == []


def test_the_metrics_package_exports_the_reconstruction_metrics_its_docstring_names() -> None:
    import faceforge.metrics as metrics

    for name in ("VolumetricIoU", "LandmarkNME", "MeshNME", "BinaryEER", "DetectionScores", "constant_baseline"):
        assert name in metrics.__all__ and hasattr(metrics, name)
