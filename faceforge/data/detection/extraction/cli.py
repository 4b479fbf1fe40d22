"""``faceforge-extract-faces``: extract face crops from an official dataset layout into a face index.

Example::

    faceforge-extract-faces --dataset dfdc --root /data/dfdc --output /data/faces/dfdc --num-frames 32 --workers 8

Exit status: 0 when the run completed (videos that could not be read are counted in the summary and in
``prepare_report.json``), 2 with a one-line message (``faceforge: <ErrorClass>: ...``) when the dataset layout
or the settings are wrong, when ``--output`` is an existing file, when no face at all was found, or when the disk
filled up (no index is written then).
"""
from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROG = "faceforge-extract-faces"

#: CLI option (dest) -> reader keyword.
_READER_OPTIONS = {"val_fraction": "val_fraction", "test_fraction": "test_fraction", "split_seed": "seed",
                   "compressions": "compressions", "methods": "methods", "splits_dir": "splits_dir"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``faceforge-extract-faces``."""
    from faceforge.data.detection.extraction.detector import DEFAULT_FACTOR, DEFAULT_MIN_FACE_FRACTION
    from faceforge.data.detection.readers import READERS

    p = argparse.ArgumentParser(prog=PROG, description="Extract face crops (MTCNN) from the videos of an official "
                                "dataset layout and write a face index (face_index.csv). Resumable: rerun the "
                                "same command to continue an interrupted run.")
    p.add_argument("--dataset", required=True, choices=sorted(READERS), help="dataset layout to read")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--output", required=True, help="output folder (crops, markers, face_index.csv)")
    g = p.add_argument_group("frame sampling")
    g.add_argument("--num-frames", type=int, default=32, help="frames sampled per video (default 32)")
    g.add_argument("--sampling", default="evenly", choices=["evenly", "stride", "contiguous"],
                   help="evenly spaced over the whole video (default), strided, or one contiguous clip")
    g.add_argument("--stride", type=int, default=1, help="step for --sampling stride (default 1)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    g = p.add_argument_group("crops")
    g.add_argument("--margin", type=float, default=0.3, help="margin relative to the face box (default 0.3)")
    g.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256)")
    g.add_argument("--image-format", default="png", choices=["png", "jpg"], help="crop image format (default png)")
    g = p.add_argument_group("face detector (MTCNN)")
    g.add_argument("--device", default="cpu", help="torch device (default cpu)")
    g.add_argument("--min-face-fraction", type=float, default=DEFAULT_MIN_FACE_FRACTION,
                   help=f"smallest face as a fraction of the frame's short side (default {DEFAULT_MIN_FACE_FRACTION})")
    g.add_argument("--min-face-size", type=float, default=None,
                   help="smallest face in pixels (overrides --min-face-fraction)")
    g.add_argument("--factor", type=float, default=DEFAULT_FACTOR,
                   help=f"MTCNN pyramid scale step (default {DEFAULT_FACTOR})")
    g.add_argument("--thresholds", type=float, nargs=3, default=(0.6, 0.7, 0.7), metavar=("P", "R", "O"),
                   help="MTCNN stage thresholds (default 0.6 0.7 0.7)")
    g.add_argument("--keep", type=int, default=1, help="faces kept per frame, most confident first (default 1)")
    g = p.add_argument_group("run")
    g.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    g.add_argument("--torch-threads", type=int, default=1,
                   help="torch threads per worker (default 1; use --workers for parallelism)")
    g.add_argument("--quiet", action="store_true", help="no per-video progress lines")
    g = p.add_argument_group("dataset reader (defaults: the reader's own)")
    g.add_argument("--val-fraction", type=float, default=None, help="fraction of groups in val (dfdc, celebdf)")
    g.add_argument("--test-fraction", type=float, default=None, help="fraction of train-part groups in test (dfdc)")
    g.add_argument("--split-seed", type=int, default=None, help="seed of the split assignment (dfdc, celebdf)")
    g.add_argument("--compressions", nargs="+", default=None, help="FF++ compressions, e.g. c23 c40")
    g.add_argument("--methods", nargs="+", default=None, help="FF++ manipulation methods")
    g.add_argument("--splits-dir", default=None, help="FF++ folder of train/val/test.json (default <root>/splits)")
    return p


def _reader_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from faceforge.data.detection.readers import READERS

    accepted = inspect.signature(READERS[args.dataset]).parameters
    out: dict[str, Any] = {}
    for dest, kw in _READER_OPTIONS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if kw not in accepted:
            raise ValueError(f"--{dest.replace('_', '-')} does not apply to --dataset {args.dataset}")
        out[kw] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        0 when the extraction ran, 2 on a dataset layout or settings error, an output path that is a file, a
        full disk, or when no face at all was found (one line ``faceforge: <ErrorClass>: ...`` on stderr naming
        the file at fault).
        Invalid arguments make argparse exit with status 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from faceforge.data.detection.extraction.detector import FaceDetectorError
    from faceforge.data.detection.extraction.extract import check_output_dir, extract_faces
    from faceforge.data.detection.readers import read_dataset
    from faceforge.errors import FaceforgeError

    try:
        check_output_dir(args.output)  # before any work
        reader_kwargs = _reader_kwargs(args)
        records, reader_report = read_dataset(args.dataset, args.root, **reader_kwargs)
        source = {"dataset": args.dataset, "root": str(Path(args.root).expanduser().resolve())}
        detector = {"device": args.device, "min_face_size": args.min_face_size,
                    "min_face_fraction": args.min_face_fraction, "thresholds": tuple(args.thresholds),
                    "factor": args.factor, "keep": args.keep}
        report = extract_faces(records, args.output, num_frames=args.num_frames, sampling=args.sampling,
                               stride=args.stride, seed=args.seed, margin=args.margin, size=args.size,
                               image_format=args.image_format, detector=detector, workers=args.workers,
                               progress=not args.quiet, torch_threads=args.torch_threads, source=source,
                               reader_kwargs=reader_kwargs,
                               reader_report=reader_report)
    except (FaceforgeError, FaceDetectorError, ValueError) as exc:  # layout, settings, empty extraction, disk full
        print(f"faceforge: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
