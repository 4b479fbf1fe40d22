"""Build the prepared folder of a data config: ``python prepare.py data=ffpp data.root=/path/to/FaceForensics++``.

Composes ``conf/train.yaml`` with the overrides given (as ``train.py`` does, so every default is the config's),
builds the data module and runs its ``prepare_data``: the builder of ``data.builder`` (face extraction, volume
generation, a synthetic generator) fills ``data.faces_dir`` / ``data.volumes_dir`` unless a complete folder with
the same settings is there already (a folder built with other settings is refused, naming each difference), then
prints the folder's ``prepare_report.json`` in a few lines. Examples::

    python prepare.py data=dfdc data.root=/data/dfdc data.builder.num_frames=16 data.builder.workers=8
    python prepare.py data=w300lp data.root=/data/300W_LP
    python prepare.py data=synthetic

Exit status: 0 when the folder is ready; 1 with one line ``faceforge: <ErrorClass>: message`` when preparing failed
(a bad dataset layout, no face found, a full disk, a folder built with other settings); 2 on bad usage (an unknown
config or malformed override, a required setting such as ``data.root`` left unset).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("FACEFORGE_ROOT", str(Path(__file__).resolve().parent))

USAGE = "usage: python prepare.py data=<config> [data.root=PATH] [key=value ...]   (see conf/data/)"


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare the data folder of the composed config; return the exit status (see the module docstring).

    Args:
        argv: Hydra overrides (default ``sys.argv[1:]``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    from faceforge.data.core.prepared import compose_config, prepared_folder, read_prepare_report, report_lines
    from faceforge.errors import FaceforgeError
    from faceforge.runs.config_checks import RunConfigError, unresolvable_settings_refused

    try:
        cfg = compose_config(args)
        with unresolvable_settings_refused():
            datamodule = instantiate(cfg.data, _convert_="all")
    except (HydraException, RunConfigError) as exc:
        print(f"faceforge: {type(exc).__name__}: {' '.join(str(exc).split())}\n{USAGE}", file=sys.stderr)
        return 2
    folder = prepared_folder(datamodule)
    try:
        with unresolvable_settings_refused():
            datamodule.prepare_data()
    except FaceforgeError as exc:
        print(f"faceforge: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    report = read_prepare_report(folder) if folder is not None else None
    if report is None:
        print(f"prepared: {folder} (no prepare_report.json: built before the report existed, or by hand)")
    else:
        print("\n".join(report_lines(report, folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
