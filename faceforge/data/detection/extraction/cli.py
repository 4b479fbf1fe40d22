"""``faceforge-extract-faces``: extract face crops from an official dataset layout into a face index.

Example::

    faceforge-extract-faces --dataset dfdc --root /data/dfdc --output /data/faces/dfdc --num-frames 32 --workers 8

A thin wrapper over the data configs: the command composes ``conf/train.yaml`` with ``data=<dataset>`` and turns
each flag given into a Hydra override of ``data.builder`` (``--num-frames 16`` -> ``data.builder.num_frames=16``,
``--device cuda`` -> ``data.builder.detector.device=cuda``, ``--val-fraction`` ->
``data.builder.reader_kwargs.val_fraction``), so every default is the config's (``conf/data/video_base.yaml`` and
``conf/data/<dataset>.yaml``), as for ``python prepare.py data=<dataset> data.root=...`` and ``train.py``. It runs
the builder into ``--output``, records its settings (``built_with.json``) and prints the summary of
``prepare_report.json``.

Exit status: 0 when the run completed (videos that could not be read are counted in the summary and in
``prepare_report.json``); 1 with one line ``faceforge: <ErrorClass>: message`` when the dataset layout or the
settings are wrong, when ``--output`` is an existing file, when no face at all was found, or when the disk filled
up (no index is written then); 2 on invalid arguments (usage), a ``--device`` torch cannot parse or that this
machine lacks (``cuda`` without a GPU) included, checked before anything is created.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path

from faceforge.errors import FaceforgeError

PROG = "faceforge-extract-faces"

#: CLI option (dest) -> key under ``data.builder`` (a dotted key for the detector and the reader).
_BUILDER_OPTIONS = {
    "num_frames": "num_frames", "sampling": "sampling", "stride": "stride", "seed": "seed",
    "margin": "margin", "size": "size", "image_format": "image_format",
    "device": "detector.device", "min_face_fraction": "detector.min_face_fraction",
    "min_face_size": "detector.min_face_size", "factor": "detector.factor", "thresholds": "detector.thresholds",
    "keep": "detector.keep", "workers": "workers", "torch_threads": "torch_threads",
}
#: CLI option (dest) -> reader keyword (``data.builder.reader_kwargs.<keyword>``).
_READER_OPTIONS = {"val_fraction": "val_fraction", "test_fraction": "test_fraction", "split_seed": "seed",
                   "compressions": "compressions", "methods": "methods", "splits_dir": "splits_dir"}
_FROM_CONFIG = "default: the data config's data.builder"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``faceforge-extract-faces`` (no defaults of its own: a flag not given leaves the
    data config's value)."""
    from faceforge.data.detection.readers import READERS

    p = argparse.ArgumentParser(prog=PROG, description="Extract face crops (MTCNN) from the videos of an official "
                                "dataset layout and write a face index (face_index.parquet). Resumable: rerun the "
                                "same command to continue an interrupted run.")
    p.add_argument("--dataset", required=True, choices=sorted(READERS), help="dataset layout to read")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--output", required=True, help="output folder (crops, markers, face_index.parquet)")
    g = p.add_argument_group("frame sampling")
    g.add_argument("--num-frames", type=int, help=f"frames sampled per video ({_FROM_CONFIG}.num_frames)")
    g.add_argument("--sampling", choices=["evenly", "stride", "contiguous"],
                   help=f"evenly spaced over the whole video, strided, or one contiguous clip "
                        f"({_FROM_CONFIG}.sampling)")
    g.add_argument("--stride", type=int, help=f"step for --sampling stride ({_FROM_CONFIG}.stride)")
    g.add_argument("--seed", type=int, help=f"sampling seed ({_FROM_CONFIG}.seed)")
    g = p.add_argument_group("crops")
    g.add_argument("--margin", type=float, help=f"margin relative to the face box ({_FROM_CONFIG}.margin)")
    g.add_argument("--size", type=int, help=f"crop side in pixels ({_FROM_CONFIG}.size, i.e. data.image_size)")
    g.add_argument("--image-format", choices=["png", "jpg"], help=f"crop image format ({_FROM_CONFIG}.image_format)")
    g = p.add_argument_group("face detector (MTCNN; defaults: data.builder.detector, else FaceDetector's own)")
    g.add_argument("--device", help="torch device (cpu)")
    g.add_argument("--min-face-fraction", type=float, help="smallest face as a fraction of the frame's short side")
    g.add_argument("--min-face-size", type=float, help="smallest face in pixels (overrides --min-face-fraction)")
    g.add_argument("--factor", type=float, help="MTCNN pyramid scale step")
    g.add_argument("--thresholds", type=float, nargs=3, metavar=("P", "R", "O"), help="MTCNN stage thresholds")
    g.add_argument("--keep", type=int, help="faces kept per frame, most confident first")
    g = p.add_argument_group("run")
    g.add_argument("--workers", type=int, help=f"parallel worker processes ({_FROM_CONFIG}.workers)")
    g.add_argument("--torch-threads", type=int, help="torch threads per worker (1; use --workers for parallelism)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("dataset reader (defaults: the reader's own)")
    g.add_argument("--val-fraction", type=float, default=None, help="fraction of groups in val (dfdc, celebdf)")
    g.add_argument("--test-fraction", type=float, default=None, help="fraction of train-part groups in test (dfdc)")
    g.add_argument("--split-seed", type=int, default=None, help="seed of the split assignment (dfdc, celebdf)")
    g.add_argument("--compressions", nargs="+", default=None, help="FF++ compressions, e.g. c23 c40")
    g.add_argument("--methods", nargs="+", default=None, help="FF++ manipulation methods")
    g.add_argument("--splits-dir", default=None, help="FF++ folder of train/val/test.json (default <root>/splits)")
    return p


class _UsageError(FaceforgeError):
    """A flag that does not fit the other flags (exit status 2, like argparse's own errors)."""


def _check_device(device: str) -> None:
    """Refuse a ``--device`` torch cannot parse or this machine does not have (before any output is created).

    Raises:
        _UsageError: not a torch device, not cpu / cuda / mps, or a cuda (mps) device this machine lacks.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise _UsageError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _UsageError(f"--device {device}: CUDA is not available on this machine (no GPU or no driver); "
                              f"use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise _UsageError(f"--device {device}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise _UsageError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise _UsageError(f"--device {device}: the face detector runs on cpu, cuda[:N] or mps, not {dev.type}")


def _overrides(args: argparse.Namespace) -> list[str]:
    """The Hydra overrides that the flags given stand for (flags not given add none).

    Raises:
        _UsageError: a flag that does not apply to the dataset, or a ``--device`` that is not usable here.
    """
    from faceforge.data.core.prepared import override_value
    from faceforge.data.detection.readers import READERS

    if args.device is not None:
        _check_device(args.device)

    out = [f"data={args.dataset}", f"data.root={override_value(args.root)}",
           f"data.faces_dir={override_value(str(Path(args.output).expanduser().resolve()))}"]
    for dest, key in _BUILDER_OPTIONS.items():
        value = getattr(args, dest)
        if value is not None:
            out.append(f"++data.builder.{key}={override_value(value)}")
    if args.quiet:
        out.append("++data.builder.progress=false")
    accepted = inspect.signature(READERS[args.dataset]).parameters
    for dest, kw in _READER_OPTIONS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if kw not in accepted:
            raise _UsageError(f"--{dest.replace('_', '-')} does not apply to --dataset {args.dataset}")
        out.append(f"++data.builder.reader_kwargs.{kw}={override_value(value)}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        0 when the extraction ran; 1 on a dataset layout or settings error, an output path that is a file, a full
        disk, or when no face at all was found (one line ``faceforge: <ErrorClass>: ...`` on stderr naming the file
        at fault); 2 when a flag does not apply to the dataset or ``--device`` is not a device this machine has
        (nothing is created then). Other invalid arguments (usage) make argparse exit
        with status 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = _overrides(args)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    from faceforge.data.core.prepared import PreparedDataError, build_prepared, compose_config, read_prepare_report
    from faceforge.data.detection.extraction.extract import check_output_dir
    from faceforge.data.detection.face_index import INDEX_FILENAMES

    try:
        out = check_output_dir(args.output)  # before any work
        try:
            cfg = compose_config(overrides)
        except HydraException as exc:
            print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        builder = instantiate(cfg.data.builder, _convert_="all")
        build_prepared(out, INDEX_FILENAMES, builder, PreparedDataError)
    except (FaceforgeError, ValueError) as exc:  # layout, settings, empty extraction, disk full
        print(f"faceforge: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    report = read_prepare_report(out) or {}
    print("\n".join(report.get("summary") or [f"done: {out}"]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
