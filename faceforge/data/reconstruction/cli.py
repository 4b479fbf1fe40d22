"""Console command: 300W-LP / AFLW2000-3D -> VRN training volumes (``faceforge-make-volumes``).

Example (the fixture-style 3DDFA mean-shape model and 3DDFA_V2's no-neck topology)::

    faceforge-make-volumes --root /data/300W_LP --output /data/vrn_volumes \\
        --model-dir /path/to/3ddfa --noneck-dir /path/to/3ddfa_v2/configs --workers 8

A full model gives the exact fitted meshes: ``--bfm-pkl bfm_noneck_v3.pkl`` (3DDFA / 3DDFA_V2 pickle; its own
triangles already have no neck) or ``--bfm2009 01_MorphableModel.mat Model_Expression.mat model_info.mat`` (then
also ``--noneck-dir``). Rerunning the same command resumes an interrupted run and skips finished shards. See
:mod:`faceforge.data.reconstruction.generation` for the outputs.

Exit status: 0 when the run finished (skipped samples are listed in the report), 1 on a fatal error (no samples,
unusable model or topology) or when samples failed with an internal error, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from faceforge.data.reconstruction.generation import (
    INDEX_FILENAME,
    MESH_MODES,
    REPORT_FILENAME,
    VolumeGenerationConfig,
    VolumeGenerationError,
    find_300wlp_samples,
    generate_volumes,
)
from faceforge.geometry.morphable_model import (
    MorphableModel,
    MorphableModelError,
    load_3ddfa_bfm_pkl,
    load_3ddfa_mean_shape,
    load_bfm_2009,
)
from faceforge.geometry.voxelize import FaceTopology, VoxelizationError, load_noneck_topology, topology_from_triangles

__all__ = ["build_parser", "main"]

#: Vertex count of the 3DDFA / 300W-LP BFM (with neck and ears).
BFM_FULL_VERTICES = 53215


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``faceforge-make-volumes``."""
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
    model.add_argument("--bfm-pkl", help="3DDFA(_V2) BFM pickle with dense bases (e.g. bfm_noneck_v3.pkl)")
    model.add_argument("--bfm2009", nargs=3, metavar=("MORPHABLE_MODEL_MAT", "EXPRESSION", "MODEL_INFO_MAT"),
                       help="BFM 2009 01_MorphableModel.mat, 3DDFA expression model (.mat or Exp_Pca.bin) and "
                            "3DDFA model_info.mat")
    p.add_argument("--noneck-dir", help="3DDFA_V2 configs/ folder with tri.pkl and indices.npy (no neck, no ears)")
    p.add_argument("--keep-neck", action="store_true",
                   help="allow voxelising a 53,215-vertex model with its own triangles (neck and ears included)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--shard-size", type=int, default=500, help="samples per shard file (default 500)")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples (sorted by id), for a trial")
    p.add_argument("--mesh", choices=MESH_MODES, default="auto", help="how the mesh is built (default auto)")
    p.add_argument("--margin", type=float, default=0.1, help="crop margin per side, fraction of the face box")
    p.add_argument("--z-margin", type=float, default=2.0, help="depth level of the rear-most vertex")
    p.add_argument("--image-size", type=int, default=450,
                   help="image side the labels refer to (450 for 300W-LP / AFLW2000-3D); 0 accepts any size")
    p.add_argument("--max-landmark-nme", type=float, default=0.25,
                   help="skip samples whose 3DMM fit is farther than this (NME, inner 51 points) from the label's "
                        "annotated landmarks; <0 disables")
    p.add_argument("--image-codec", choices=("jpeg", "png", "raw"), default="jpeg", help="stored crop format")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip", help="HDF5 filter of the maps")
    p.add_argument("--val-fraction", type=float, default=0.02, help="fraction of 300W-LP faces in the val split")
    p.add_argument("--flat-split", choices=("train", "val", "test"), default="test",
                   help="split of samples in a flat folder (default test)")
    p.add_argument("--redo-skipped", action="store_true", help="retry samples skipped by an earlier run")
    p.add_argument("-q", "--quiet", action="store_true", help="only print the final summary")
    return p


def _load_model(args: argparse.Namespace) -> MorphableModel:
    if args.model_dir:
        return load_3ddfa_mean_shape(args.model_dir)
    if args.bfm_pkl:
        return load_3ddfa_bfm_pkl(args.bfm_pkl)
    return load_bfm_2009(*args.bfm2009)


def _load_topology(args: argparse.Namespace, model: MorphableModel) -> FaceTopology:
    if args.noneck_dir:
        return load_noneck_topology(args.noneck_dir, num_vertices=model.num_vertices)
    if model.num_vertices == BFM_FULL_VERTICES and not args.keep_neck:
        raise VoxelizationError(f"the {BFM_FULL_VERTICES}-vertex BFM includes the neck and ears; pass --noneck-dir "
                                "(3DDFA_V2 configs/ with tri.pkl and indices.npy) or --keep-neck")
    return topology_from_triangles(model.triangles, model.num_vertices, source=f"model ({model.source})")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``faceforge-make-volumes``.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0 finished, 1 fatal error or internal errors on samples (argparse exits with 2 on bad
        arguments).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = VolumeGenerationConfig(
            margin=args.margin, z_margin=args.z_margin, mesh=args.mesh,
            expected_image_size=(args.image_size, args.image_size) if args.image_size > 0 else None,
            max_landmark_nme=args.max_landmark_nme if args.max_landmark_nme >= 0 else None,
            image_codec=args.image_codec, jpeg_quality=args.jpeg_quality,
            compression=None if args.compression == "none" else args.compression, shard_size=args.shard_size,
            val_fraction=args.val_fraction, flat_split=args.flat_split)
        model = _load_model(args)
        topology = _load_topology(args, model)
        samples = find_300wlp_samples(args.root)
        if args.limit is not None:
            samples = samples[: max(args.limit, 0)]
        if not samples:
            raise VolumeGenerationError(f"{args.root}: no image or .mat files found")
        report = generate_volumes(samples, args.output, model, topology=topology, workers=args.workers,
                                  config=config, redo_skipped=args.redo_skipped)
    except (VolumeGenerationError, MorphableModelError, VoxelizationError, OSError) as exc:
        print(f"faceforge-make-volumes: error: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"index: {args.output}/{INDEX_FILENAME}  report: {args.output}/{REPORT_FILENAME}")
    if report.skipped.get("internal_error"):
        print(f"faceforge-make-volumes: {report.skipped['internal_error']} sample(s) failed with an internal error "
              f"(see {REPORT_FILENAME})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
