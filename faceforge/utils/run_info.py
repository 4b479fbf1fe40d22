"""Provenance written next to every run's outputs: resolved config, git commit, package versions, seed."""
from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from faceforge.utils.atomic import atomic_write_json, atomic_write_text

#: Distributions whose versions every run records.
TRACKED_PACKAGES = ("faceforge", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "hydra-core",
                    "omegaconf", "albumentations", "facenet-pytorch", "av", "numpy", "h5py", "trimesh",
                    "scikit-image", "wandb")


def git_state(repo_dir: str | Path) -> dict[str, Any]:
    """The git commit of ``repo_dir`` and whether its work tree has uncommitted changes.

    Returns:
        ``{"commit": sha or "unknown", "dirty": bool or None}``; never raises (no git, not a repository).
    """
    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=repo_dir, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or "unknown", "dirty": None if status is None else bool(status)}


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` ("not installed" for absent ones)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def collect_run_info(seed: int | None, repo_dir: str | Path) -> dict[str, Any]:
    """Provenance of the current process: command line, git state, versions, seed, Python, host, UTC time."""
    return {
        "command": [sys.executable, *sys.argv],
        "git": git_state(repo_dir),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "seed": seed,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_run_info(output_dir: str | Path, resolved_config_yaml: str, seed: int | None,
                   repo_dir: str | Path) -> dict[str, Any]:
    """Write ``config.yaml`` (resolved) and ``run_info.json`` into ``output_dir`` atomically; return the info."""
    output_dir = Path(output_dir)
    info = collect_run_info(seed, repo_dir)
    atomic_write_text(output_dir / "config.yaml", resolved_config_yaml)
    atomic_write_json(output_dir / "run_info.json", info)
    return info
