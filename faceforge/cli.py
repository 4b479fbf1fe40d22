"""The ``faceforge`` command: one entry point with subcommands.

``faceforge predict CKPT INPUT...``      P(fake) per face, frame and video (:mod:`faceforge.inference.detection`)
``faceforge reconstruct CKPT IMAGE...``  3D face: OBJ + MTL + texture, GLB, turntable MP4
                                         (:mod:`faceforge.inference.reconstruction`)
``faceforge serve [--ckpt ...]``         the web demo (:mod:`faceforge.serve.app`)
``faceforge extract-faces ...``          = ``faceforge-extract-faces`` (:mod:`faceforge.data.detection.extraction.cli`)
``faceforge make-volumes ...``           = ``faceforge-make-volumes`` (:mod:`faceforge.data.reconstruction.cli`)
``faceforge cross-dataset ...``          = ``faceforge-cross-dataset`` (:mod:`faceforge.reporting.cross_dataset`)

Exit status: 0 when everything succeeded, 1 when an input failed or a faceforge error was raised (printed as
``faceforge: <ErrorClass>: message``, no traceback), 2 for a usage error.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from faceforge.errors import FaceforgeError

__all__ = ["build_parser", "main"]

#: Subcommands handed to an existing command's ``main(argv)``: name -> (module, one-line help).
DISPATCHED = {
    "extract-faces": ("faceforge.data.detection.extraction.cli",
                      "extract MTCNN face crops from an official video dataset (= faceforge-extract-faces)"),
    "make-volumes": ("faceforge.data.reconstruction.cli",
                     "build VRN training volumes from 300W-LP-format data (= faceforge-make-volumes)"),
    "cross-dataset": ("faceforge.reporting.cross_dataset",
                      "cross-dataset table of evaluation runs (= faceforge-cross-dataset)"),
}


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from faceforge.inference.detection import CLIP_MODES, DEFAULT_NUM_FRAMES

    p = sub.add_parser("predict", help="P(fake) of images, videos or folders with a detection checkpoint",
                       description="Score images, videos or folders: MTCNN face extraction as in training, then "
                                   "P(fake) per face, per frame and per video, with a decision and a confidence; a "
                                   "clip model (ResNeXt-LSTM) scores clips of a video's faces instead and refuses "
                                   "single images. Videos are read as the checkpoint's training faces were "
                                   "extracted (frames, frame sampling, detector, margin).")
    p.add_argument("ckpt", help="a faceforge detection checkpoint (.ckpt) or the MesoNet authors' .h5 weights")
    p.add_argument("inputs", nargs="+", help="image / video files or folders (searched recursively)")
    p.add_argument("--json", metavar="PATH", help="write all results (frames and faces) as JSON")
    p.add_argument("--csv", metavar="PATH", help="write one row per scored face as CSV")
    p.add_argument("--frames", type=int, default=None,
                   help=f"frames sampled per video, 0 = all (default: the checkpoint's extraction num_frames, else "
                        f"{DEFAULT_NUM_FRAMES})")
    p.add_argument("--clips", choices=CLIP_MODES, default="evaluation",
                   help="clip models: 'evaluation' (default) scores the clips evaluate.py scores (the checkpoint's "
                        "clips_per_video and clip_sampling); 'cover' scores clips of consecutive faces covering "
                        "every face")
    p.add_argument("--max-faces", type=int, default=1, help="faces scored per frame (default 1)")
    p.add_argument("--crops", action="store_true",
                   help="the inputs are already face crops (e.g. the MesoNet test images): no detection")
    p.add_argument("--threshold", type=float, help="decision threshold on P(fake) (default: the checkpoint's, "
                                                   "else 0.5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_reconstruct(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="a 3D face (OBJ, GLB, turntable MP4) from photos with a VRN checkpoint",
                       description="Detect and crop the face, regress its volume, mesh it (marching cubes) with "
                                   "vertex colours and a texture projected from the photo; write OBJ + MTL + PNG, "
                                   "GLB and a turntable MP4 per image.")
    p.add_argument("ckpt", help="a faceforge VRN / VRN-Guided / VRN-Multitask (or 3DFaceGAN) checkpoint")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("-o", "--out", default="reconstructions", help="output folder (default ./reconstructions)")
    p.add_argument("--iso", type=float, default=0.5, help="isosurface level on the occupancy (default 0.5)")
    p.add_argument("--no-video", action="store_true", help="skip the turntable MP4")
    p.add_argument("--crops", action="store_true", help="the images are already face crops: no detection")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the web demo: upload an image or a short video",
                       description="A local web page: upload an image or a short video, see P(fake) (per frame "
                                   "for a video) and the reconstructed face in a 3D viewer.")
    p.add_argument("--ckpt", help="detection checkpoint or MesoNet .h5 (without it: no verdict)")
    p.add_argument("--recon-ckpt", help="3D reconstruction checkpoint (without it: no 3D face)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload, MB (default 50)")
    p.add_argument("--max-video-s", type=float, default=30.0, help="longest video, seconds (default 30)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames scored per video (default: the checkpoint's extraction num_frames, else 32)")


def build_parser() -> argparse.ArgumentParser:
    """The ``faceforge`` argument parser (the dispatched subcommands are listed for ``--help`` only)."""
    parser = argparse.ArgumentParser(prog="faceforge", description="faceforge: deepfake detection and single-image "
                                     "3D face reconstruction tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_predict(sub)
    _add_reconstruct(sub)
    _add_serve(sub)
    for name, (_, text) in DISPATCHED.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _predict(args: argparse.Namespace) -> int:
    from faceforge.inference.detection import Predictor, format_table, load_detector, write_results

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        return _usage_error("predict", f"--threshold must be in [0, 1], got {args.threshold}")
    if args.frames is not None and args.frames < 0:
        return _usage_error("predict", f"--frames must be >= 0 (0 = every frame), got {args.frames}")
    if args.max_faces < 1:
        return _usage_error("predict", f"--max-faces must be >= 1, got {args.max_faces}")
    model = load_detector(args.ckpt)
    if args.threshold is not None:
        model.threshold = float(args.threshold)
    predictor = Predictor(model, num_frames=args.frames, max_faces=args.max_faces, crops=args.crops,
                          clips=args.clips)

    def report(r):  # noqa: ANN001 - an InputResult
        if r.status != "ok":
            print(f"faceforge: {r.status}: {r.message}", file=sys.stderr)

    results = predictor.predict(args.inputs, progress=False if args.no_progress else None, on_result=report)
    print(format_table(results))
    for path in write_results(results, args.json, args.csv, model):
        print(f"wrote {path}")
    return 0 if all(r.status == "ok" for r in results) else 1


def _reconstruct(args: argparse.Namespace) -> int:
    from faceforge.inference.reconstruction import Reconstructor, load_reconstructor

    rec = Reconstructor(load_reconstructor(args.ckpt), iso_level=args.iso, crops=args.crops)
    failed = 0
    for image in args.images:
        try:
            out = rec.reconstruct_file(image, args.out, video=not args.no_video)
        except FaceforgeError as exc:
            print(f"faceforge: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{image}: {out.num_vertices} vertices, {out.num_faces} faces -> " +
              ", ".join(str(p) for p in out.files))
    return 1 if failed else 0


def _serve(args: argparse.Namespace) -> int:
    from faceforge.serve.app import ServeError, ServeSettings, run_server

    if not 0 <= args.port <= 65535:
        return _usage_error("serve", f"--port must be in 0..65535, got {args.port}")
    settings = ServeSettings(ckpt=args.ckpt, recon_ckpt=args.recon_ckpt, max_upload_mb=args.max_upload_mb,
                             max_video_s=args.max_video_s, frames=args.frames)
    try:
        settings.check()  # the limits: a usage error, before any model is loaded
    except ServeError as exc:
        return _usage_error("serve", str(exc))
    run_server(settings, host=args.host, port=args.port)
    return 0


def _usage_error(command: str, message: str) -> int:
    print(f"usage: faceforge {command} ...\nfaceforge {command}: error: {message}", file=sys.stderr)
    return 2


def _output_folder_problem(flag: str, path: str) -> str | None:
    """Why ``path`` cannot be (or become) an output folder: it, or its nearest existing parent, is not a folder;
    None when it can."""
    out = Path(path).expanduser().absolute()
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                where = "" if p == out else f" (a parent of {out})"
                return f"{flag} {path}: {p}{where} is an existing file, not a folder"
            return None
    return None


def _check_dispatched(command: str, argv: list[str]) -> str | None:
    """Checks of a dispatched subcommand's arguments made before its module runs (a usage error message, or None)."""
    if command == "cross-dataset" and not {"-h", "--help"} & set(argv):
        pre = argparse.ArgumentParser(prog=f"faceforge {command}", add_help=False)
        pre.add_argument("--out")
        known, _ = pre.parse_known_args(argv)
        if known.out is not None:
            return _output_folder_problem("--out", known.out)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``faceforge`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status (see the module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DISPATCHED:
        problem = _check_dispatched(argv[0], argv[1:])
        if problem is not None:
            return _usage_error(argv[0], problem)
        module = importlib.import_module(DISPATCHED[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    run = {"predict": _predict, "reconstruct": _reconstruct, "serve": _serve}[args.command]
    try:
        return run(args)
    except FaceforgeError as exc:
        print(f"faceforge: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
