"""Run or resume a hyperparameter sweep: ``python sweep.py hparams_search=meso_optuna [overrides...]``.

Composes ``conf/train.yaml`` with the overrides (Hydra's compose API), then runs Optuna trials of ``train.py`` until
the study holds ``sweep.n_trials`` finished ones (see :mod:`faceforge.sweeps.optuna_sweep`). Rerunning the same
command resumes the study from its storage; ``sweep.n_trials=N`` extends it. Prints where the best trial is recorded.
Exit codes: 0 done, 1 a sweep that cannot run (one line naming the reason), 2 a config mistake on the command line
(Hydra's message, one line), 130 interrupted.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("FACEFORGE_ROOT", str(ROOT))


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``argv``: Hydra overrides (default: the command line's)."""
    from faceforge.errors import FaceforgeError
    from faceforge.sweeps.optuna_sweep import run_sweep

    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="[sweep] %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    from hydra.errors import HydraException

    try:
        result = run_sweep(args, ROOT)
    except HydraException as exc:  # a config mistake on the command line: an unknown group, key or value
        print(f"faceforge: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except FaceforgeError as exc:
        print(f"faceforge: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("faceforge: sweep interrupted; run the same command again to resume it", file=sys.stderr)
        return 130
    best = result["best"]
    print(f"{result['finished']} finished trials in {result['sweep_dir']}")
    if best:
        print(f"best: trial {best['number']}, value {best['value']:.6g} ({result['sweep_dir']}/best_trial.yaml)")
        print(f"reproduce: {best['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
