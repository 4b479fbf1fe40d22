"""Shared pytest fixtures.

``fixtures_dir`` points at the real third-party files (``../shared/fixtures`` beside the project, or
``$FACEFORGE_FIXTURES``). Where the folder is absent, tests that need it skip with a message that says so,
except under ``CI=true``, where an absent folder is a failure (CI always has it).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _fixtures_path() -> Path:
    env = os.environ.get("FACEFORGE_FIXTURES")
    return Path(env) if env else (PROJECT_ROOT.parent / "shared" / "fixtures")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Folder of real third-party fixture files (read-only: copy what a test modifies into ``tmp_path``)."""
    path = _fixtures_path()
    if not path.is_dir():
        msg = f"real fixtures not found at {path} (set FACEFORGE_FIXTURES)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI must have them")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root (where train.py lives)."""
    return PROJECT_ROOT
