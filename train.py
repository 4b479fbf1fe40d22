"""Train a faceforge model: ``python train.py model=meso4 data=ffpp data.root=/path/to/FaceForensics++``.

Composes conf/train.yaml with the overrides given on the command line and runs
:func:`faceforge.runs.training.train`. Returns the sweep metric (``optimized_metric``) to Hydra sweepers.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("FACEFORGE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; see conf/train.yaml."""
    from faceforge.errors import FaceforgeError
    from faceforge.runs.callbacks import RunInterrupted
    from faceforge.runs.common import remove_empty_folder
    from faceforge.runs.config_checks import unresolvable_settings_refused
    from faceforge.runs.training import train

    try:
        with unresolvable_settings_refused():
            result = train(cfg)
    except FaceforgeError as exc:  # bad input or an impossible request: one clear line, no traceback
        print(f"faceforge: {type(exc).__name__}: {exc}", file=sys.stderr)
        remove_empty_folder(cfg.paths.output_dir)  # a run refused by its checks leaves no empty run folder
        sys.exit(2)
    except RunInterrupted as exc:  # SIGTERM / SIGUSR1: a checkpoint was written; say how to continue
        print(f"faceforge: {exc}; continue with `python train.py run_name={cfg.run_name} ckpt_path=last`",
              file=sys.stderr)
        sys.exit(128 + exc.signum)
    metric = cfg.get("optimized_metric")
    value = result["metrics"].get(metric) if metric else None
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
