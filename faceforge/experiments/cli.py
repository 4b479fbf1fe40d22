"""``python experiment.py SPEC.yaml [--profile embedded|fixture] [--evaluate-only] [--out DIR]``: one published
comparison, trained, evaluated and tabulated with provenance (see :mod:`faceforge.experiments`)."""
from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from faceforge.errors import FaceforgeError
from faceforge.experiments.runner import run_experiment
from faceforge.experiments.spec import PROFILES, load_spec
from faceforge.experiments.tables import write_provenance, write_tables

__all__ = ["main", "build_parser"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="experiment.py", description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all runs finished, 1 a run or evaluation failed (the tables say which, with its log), "
               "2 a bad spec or command line.")
    parser.add_argument("spec", type=Path, help="an experiment spec, e.g. experiments/meso_ffpp_c23.yaml")
    parser.add_argument("--profile", choices=PROFILES, default="real",
                        help="real: the spec's datasets (default); embedded: its synthetic stand-ins (CPU, minutes); "
                             "fixture: a smoke-size run on the project's real test fixtures ($FACEFORGE_FIXTURES, "
                             "default ../shared/fixtures; only specs with a fixture: block)")
    parser.add_argument("--out", type=Path, default=None,
                        help="experiment folder (default: logs/experiments/<name>_<profile>); rerunning into the "
                             "same folder resumes: finished runs are skipped")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="train nothing: evaluate the checkpoints already in --out and the imported weights")
    parser.add_argument("--weights-dir", type=Path, default=None,
                        help="folder of imported weight files (default: the spec's weights_dir)")
    parser.add_argument("--only", nargs="+", default=None, metavar="ID", help="run only these entries")
    parser.add_argument("--override", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override added to every train.py / evaluate.py command (repeatable), e.g. "
                             "trainer=gpu or paths.data_dir=/scratch/faceforge")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (0 ok, 1 a run failed, 2 bad spec or arguments)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][experiment] %(message)s")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        spec = load_spec(args.spec)
        out = args.out or PROJECT_ROOT / "logs" / "experiments" / f"{spec.name}_{args.profile}"
        result = run_experiment(spec, out, profile=args.profile, evaluate_only=args.evaluate_only,
                                extra_overrides=args.override, weights_dir=args.weights_dir, only=args.only,
                                project_root=PROJECT_ROOT)
    except FaceforgeError as exc:
        print(f"faceforge: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    paths = write_tables(result)
    paths.append(write_provenance(result, started, PROJECT_ROOT, list(argv) if argv is not None else None))
    print(paths[0].read_text(encoding="utf-8"))
    print("written: " + ", ".join(map(str, paths)))
    if result.failed:
        print("faceforge: some runs failed: see the table's failures and their logs", file=sys.stderr)
        return 1
    return 0
