"""Evaluate a checkpoint: ``python evaluate.py ckpt_path=RUN/checkpoints/epoch_007.ckpt data=dfdc data.root=...``.

The MesoNet authors' Keras weights go the same way: ``python evaluate.py ckpt_path=Meso4_DF.h5 data=...``.

Prints a markdown table and writes ``results.json`` (metrics, config, git commit, checkpoint SHA-256),
``results.md``, ``results.csv`` and ``video_predictions.csv`` into the evaluation run directory.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("FACEFORGE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; see conf/evaluate.yaml."""
    from faceforge.errors import FaceforgeError
    from faceforge.runs.common import remove_empty_folder
    from faceforge.runs.config_checks import unresolvable_settings_refused
    from faceforge.runs.evaluation import evaluate

    try:
        with unresolvable_settings_refused():
            evaluate(cfg)
    except FaceforgeError as exc:  # bad input or an impossible request: one clear line, no traceback
        print(f"faceforge: {type(exc).__name__}: {exc}", file=sys.stderr)
        remove_empty_folder(cfg.paths.output_dir)  # a run refused by its checks leaves no empty run folder
        sys.exit(2)


if __name__ == "__main__":
    main()
