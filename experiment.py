"""Run one published comparison end to end and write its tables with provenance.

    python experiment.py experiments/meso_ffpp_c23.yaml                     # real data (see the spec's datasets)
    python experiment.py experiments/meso_ffpp_c23.yaml --profile embedded  # embedded synthetic data, CPU
    python experiment.py experiments/mesonet_authors_weights.yaml --evaluate-only

The logic lives in :mod:`faceforge.experiments`; see ``python experiment.py --help``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("FACEFORGE_ROOT", str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    from faceforge.experiments.cli import main

    sys.exit(main())
