"""Running the project's command lines (train.py, evaluate.py) from tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(project_root: Path, script: str, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python <script> overrides...`` in the project root; fail the test with its output if it fails."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, script, *overrides], cwd=project_root, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{script} {' '.join(overrides)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n"
                    f"{proc.stderr[-6000:]}")
    return proc
