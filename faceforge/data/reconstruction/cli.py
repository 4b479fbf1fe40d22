"""Console command: 300W-LP / AFLW2000-3D -> VRN training volumes (``faceforge-make-volumes``).

Example (the fixture-style 3DDFA mean-shape model and 3DDFA_V2's no-neck topology)::

    faceforge-make-volumes --root /data/300W_LP --output /data/vrn_volumes \\
        --model-dir /path/to/3ddfa --noneck-dir /path/to/3ddfa_v2/configs --workers 8

A full model gives the exact fitted meshes: ``--bfm-pkl bfm_noneck_v3.pkl`` (3DDFA / 3DDFA_V2 pickle; its own
triangles already have no neck) or ``--bfm2009 01_MorphableModel.mat Model_Expression.mat model_info.mat`` (then
also ``--noneck-dir``). Rerunning the same command resumes an interrupted run and skips finished shards. See
:mod:`faceforge.data.reconstruction.generation` for the outputs.

A thin wrapper over :func:`faceforge.data.reconstruction.builders.make_w300lp_volumes`, the run behind
``data=w300lp`` / ``data=aflw2000``: every option's default is read from that function's signature.

Exit status: 0 when the run finished (skipped samples are listed in the report), 1 on a fatal error (no samples,
unusable model or topology, an unwritable output; one line ``faceforge: <ErrorClass>: message`` on stderr) or when
samples failed with an internal error, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import inspect
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any

from faceforge.data.reconstruction.builders import make_w300lp_volumes
from faceforge.data.reconstruction.generation import REPORT_FILENAME
from faceforge.data.reconstruction.mesh import MESH_MODES
from faceforge.data.reconstruction.volume_index import INDEX_FILENAME
from faceforge.errors import FaceforgeError

__all__ = ["build_parser", "main"]

_DEFAULTS = {name: p.default for name, p in inspect.signature(make_w300lp_volumes).parameters.items()
             if p.default is not inspect.Parameter.empty}


def _default(name: str) -> Any:
    return _DEFAULTS[name]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``faceforge-make-volumes`` (defaults: :func:`make_w300lp_volumes`'s)."""
    p = argparse.ArgumentParser(
        prog="faceforge-make-volumes",
        description="Turn 300W-LP / AFLW2000-3D images and 3DMM fits into VRN training volumes (192x192x200, "
                    "HDF5, one run per column), with a sample index and a report. Resumable: rerun to continue.")
    p.add_argument("--root", required=True, help="300W-LP root (AFW, HELEN, IBUG, LFPW and *_Flip folders) or a "
                                                 "flat folder of jpg+mat pairs (AFLW2000-3D)")
    p.add_argument("--output", required=True, help="output folder (shards/, volume_index.csv, volume_report.json)")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-dir", help="3DDFA-layout folder: train.configs/u_shp.npy, u_exp.npy, "
                                           "keypoints_sim.npy, visualize/tri.mat, cpp_weights/*_base.txt (mean shape "
                                           "+ 68-point bases: meshes are the landmark-warped mean)")
    model.add_argument("--bfm-pkl", help="3DDFA(_V2) BFM pickle with dense bases (e.g. bfm_noneck_v3.pkl; a pickle "
                                         "can run code: only a file you trust)")
    model.add_argument("--bfm2009", nargs=3, metavar=("MORPHABLE_MODEL_MAT", "EXPRESSION", "MODEL_INFO_MAT"),
                       help="BFM 2009 01_MorphableModel.mat, 3DDFA expression model (.mat or Exp_Pca.bin) and "
                            "3DDFA model_info.mat")
    p.add_argument("--noneck-dir", help="3DDFA_V2 configs/ folder with tri.pkl and indices.npy (no neck, no ears)")
    p.add_argument("--keep-neck", action="store_true",
                   help="allow voxelising a 53,215-vertex model with its own triangles (neck and ears included)")
    p.add_argument("--workers", type=int, default=_default("workers"), help="worker processes (default %(default)s)")
    p.add_argument("--shard-size", type=int, default=_default("shard_size"),
                   help="samples per shard file (default %(default)s)")
    p.add_argument("--limit", type=int, default=_default("limit"),
                   help="only the first N samples (sorted by id), for a trial")
    p.add_argument("--mesh", choices=MESH_MODES, default=_default("mesh"),
                   help="how the mesh is built (default %(default)s)")
    p.add_argument("--size", type=int, default=_default("size"), help="crop side (default %(default)s)")
    p.add_argument("--depth", type=int, default=_default("depth"), help="depth levels (default %(default)s)")
    p.add_argument("--margin", type=float, default=_default("margin"),
                   help="crop margin per side, fraction of the face box (default %(default)s)")
    p.add_argument("--z-margin", type=float, default=_default("z_margin"),
                   help="depth level of the rear-most vertex (default %(default)s)")
    p.add_argument("--image-size", type=int, default=_default("image_size"),
                   help="image side the labels refer to (450 for 300W-LP / AFLW2000-3D); 0 accepts any size")
    p.add_argument("--max-landmark-nme", type=float, default=_default("max_landmark_nme"),
                   help="skip samples whose 3DMM fit is farther than this (NME, inner 51 points) from the label's "
                        "annotated landmarks; <0 disables (default %(default)s)")
    p.add_argument("--image-codec", choices=("jpeg", "png", "raw"), default=_default("image_codec"),
                   help="stored crop format (default %(default)s)")
    p.add_argument("--jpeg-quality", type=int, default=_default("jpeg_quality"))
    p.add_argument("--compression", choices=("gzip", "lzf", "none"), default=_default("compression"),
                   help="HDF5 filter of the maps (default %(default)s)")
    p.add_argument("--val-fraction", type=float, default=_default("val_fraction"),
                   help="fraction of 300W-LP faces in the val split (default %(default)s)")
    p.add_argument("--flat-split", choices=("train", "val", "test"), default=_default("flat_split"),
                   help="split of samples in a flat folder (default %(default)s)")
    p.add_argument("--redo-skipped", action="store_true", help="retry samples skipped by an earlier run")
    p.add_argument("-q", "--quiet", action="store_true", help="only print the final summary (no progress bar)")
    return p


def _range_problem(args: argparse.Namespace) -> str | None:
    """The first flag out of its range (a usage error message naming it), or None."""
    checks = [
        (args.workers >= 1, f"--workers must be >= 1, got {args.workers}"),
        (args.shard_size >= 1, f"--shard-size must be >= 1, got {args.shard_size}"),
        (args.limit is None or args.limit >= 1, f"--limit must be >= 1 (leave it out for every sample), got "
                                                f"{args.limit}"),
        (args.size >= 1, f"--size must be >= 1, got {args.size}"),
        (args.depth >= 1, f"--depth must be >= 1, got {args.depth}"),
        (math.isfinite(args.margin) and args.margin >= 0, f"--margin must be a number >= 0, got {args.margin}"),
        (0 <= args.z_margin < args.depth, f"--z-margin must be in [0, --depth) = [0, {args.depth}), got "
                                          f"{args.z_margin}"),
        (args.image_size is None or args.image_size >= 0, f"--image-size must be >= 0 (0 accepts any size), got "
                                                           f"{args.image_size}"),
        (args.max_landmark_nme is None or not math.isnan(args.max_landmark_nme),
         "--max-landmark-nme must be a number (< 0 disables the check), got nan"),
        (1 <= args.jpeg_quality <= 100, f"--jpeg-quality must be in 1..100, got {args.jpeg_quality}"),
        (0.0 <= args.val_fraction <= 1.0, f"--val-fraction must be in [0, 1], got {args.val_fraction}"),
    ]
    return next((message for ok, message in checks if not ok), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``faceforge-make-volumes``.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0 finished, 1 fatal error (one line ``faceforge: <ErrorClass>: message`` on stderr) or
        internal errors on samples (argparse exits with 2 on bad arguments, a flag out of its range included:
        ``--size 0``, ``--limit 0``, ``--jpeg-quality 500``, ...).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = _range_problem(args)
    if problem is not None:
        parser.error(problem)  # usage + one error line, exit status 2, before anything is read or written
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        report = make_w300lp_volumes(
            args.output, args.root, model_dir=args.model_dir, noneck_dir=args.noneck_dir, bfm_pkl=args.bfm_pkl,
            bfm2009=args.bfm2009, keep_neck=args.keep_neck, size=args.size, depth=args.depth, workers=args.workers,
            margin=args.margin, z_margin=args.z_margin, val_fraction=args.val_fraction, flat_split=args.flat_split,
            mesh=args.mesh, max_landmark_nme=args.max_landmark_nme, image_size=args.image_size,
            image_codec=args.image_codec, jpeg_quality=args.jpeg_quality, compression=args.compression,
            shard_size=args.shard_size, limit=args.limit, redo_skipped=args.redo_skipped, progress=not args.quiet)
    except (FaceforgeError, OSError) as exc:  # bad input, unusable model or topology, unwritable output, full disk
        print(f"faceforge: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"index: {args.output}/{INDEX_FILENAME}  report: {args.output}/{REPORT_FILENAME}")
    if report.skipped.get("internal_error"):
        print(f"faceforge: {report.skipped['internal_error']} sample(s) failed with an internal error (see "
              f"{REPORT_FILENAME})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
