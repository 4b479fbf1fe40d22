"""Face extraction speed and recall: faceforge's pipeline against a naive one, side by side in the same run.

Both pipelines take the same ``--num-frames`` evenly spaced frames of each fixture DFDC clip, detect faces and cut
256x256 crops (PNG-encoded in memory, same crop code for both):

* naive: seek to each frame with PyAV (``container.seek`` to the frame's timestamp, then decode up to it) and run
  facenet-pytorch's MTCNN with its defaults (min face 20 px, pyramid factor 0.709) on the full-resolution
  uint8 frame, one frame at a time;
* faceforge: as the extractor runs it: decode once through the stream with FFmpeg threading, converting only
  the wanted frames (:class:`~faceforge.data.detection.extraction.video.FrameStream`), in a background thread that
  decodes
  ahead while the current frame is detected (:func:`~faceforge.data.detection.extraction.video.prefetch`), and
  :class:`~faceforge.data.detection.extraction.detector.FaceDetector` with its defaults (min face = a fraction of the
  short side, finer pyramid step; R-Net/O-Net still on full-resolution crops).

Recall is the number of sampled frames with a face; ``IoU`` is the mean overlap of the two pipelines' best boxes
on frames where both found one. ``--ablation`` adds the two mixed pipelines (seek + fast detector, decode-through
+ default MTCNN) to show where the gain comes from.

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_face_extraction.py --fixtures ../shared/fixtures [--ablation] [--json out.json]

(the fixture folder may also be given by ``FACEFORGE_FIXTURES``). Both pipelines run with the same number of torch
threads (``--threads``, default 1 as in extraction workers; with 2 threads on 2 shared cores MTCNN ran ~6x slower
for both, as OpenMP threads wait for each other). Timings are wall-clock seconds (and process
CPU seconds) on whatever else the machine is doing; the ratio is naive total time / faceforge total time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceforge.data.detection.extraction.crop import crop_face  # noqa: E402
from faceforge.data.detection.extraction.detector import FaceDetector  # noqa: E402
from faceforge.data.detection.extraction.sampling import sample_frame_indices  # noqa: E402
from faceforge.data.detection.extraction.video import FrameStream, prefetch, probe_video  # noqa: E402

Frames = Iterator[tuple[int, np.ndarray]]


def seek_frames(path: Path, indices: np.ndarray) -> Frames:
    """Naive decoding: one seek per wanted frame (to the previous keyframe), then decode up to the frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps, tb, start = stream.average_rate, stream.time_base, stream.start_time or 0
        for i in indices.tolist():
            target = round(i / fps / tb) + start
            container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target:
                    yield i, frame.to_ndarray(format="rgb24")
                    break


def through_frames(path: Path, indices: np.ndarray) -> Frames:
    """faceforge decoding, as the extractor runs it: one threaded pass through the stream, converting only the
    wanted frames, in a background thread that decodes ahead while the current frame is detected."""
    with FrameStream(path, indices) as stream:
        yield from prefetch(stream, depth=2)


class NaiveMTCNN:
    """facenet-pytorch MTCNN with its defaults, on the uint8 frame, best face only."""

    def __init__(self) -> None:
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, select_largest=False, post_process=False)

    def best_box(self, frame: np.ndarray) -> np.ndarray | None:
        boxes, probs = self.mtcnn.detect(frame)
        if boxes is None or len(boxes) == 0:
            return None
        probs = np.asarray(probs, dtype=np.float64)
        return np.asarray(boxes, dtype=np.float32)[int(np.argmax(probs))]


class FastDetector:
    """faceforge's FaceDetector with its defaults (keep=1)."""

    def __init__(self) -> None:
        self.det = FaceDetector()

    def best_box(self, frame: np.ndarray) -> np.ndarray | None:
        found = self.det.detect([frame])[0]
        return found[0].box if found else None


def run_pipeline(path: Path, indices: np.ndarray, decode: Callable[[Path, np.ndarray], Frames],
                 detector: Any) -> dict[str, Any]:
    """Decode, detect and crop frame by frame; return timings (s), frames with a face and the best boxes.

    ``decode_s`` is the time spent waiting for frames (with prefetching, decoding that overlaps detection is not
    counted), ``detect_s`` the detector time, ``crop_s`` crop + PNG encoding, ``total_s`` the wall time of all.
    """
    w0, c0 = time.perf_counter(), time.process_time()
    boxes: dict[int, np.ndarray] = {}
    t_decode = t_detect = t_crop = 0.0
    n_frames = 0
    frames = decode(path, indices)
    while True:
        t = time.perf_counter()
        item = next(frames, None)
        t_decode += time.perf_counter() - t
        if item is None:
            break
        i, frame = item
        n_frames += 1
        t = time.perf_counter()
        box = detector.best_box(frame)
        t_detect += time.perf_counter() - t
        if box is not None:
            t = time.perf_counter()
            crop, _ = crop_face(frame, box, margin=0.3, size=256)
            cv2.imencode(".png", np.ascontiguousarray(crop[:, :, ::-1]))
            t_crop += time.perf_counter() - t
            boxes[i] = box
    total = time.perf_counter() - w0
    return {"frames": n_frames, "faces": len(boxes), "decode_s": t_decode, "detect_s": t_detect,
            "crop_s": t_crop, "total_s": total, "cpu_s": time.process_time() - c0, "fps": n_frames / total,
            "boxes": boxes}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1,y1,x2,y2 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; returns 0 (1 if no fixture video is found)."""
    default_fixtures = os.environ.get("FACEFORGE_FIXTURES",
                                      str(Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", default=default_fixtures, help="fixture folder (or FACEFORGE_FIXTURES)")
    ap.add_argument("--num-frames", type=int, default=32, help="evenly spaced frames per video (default 32)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both pipelines (default 1, as extraction workers use; 0: torch's own)")
    ap.add_argument("--ablation", action="store_true", help="also run the two mixed pipelines")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    videos = sorted((Path(args.fixtures) / "videos" / "dfdc").glob("*.mp4"))
    if not videos:
        print(f"no videos in {Path(args.fixtures) / 'videos' / 'dfdc'} (set --fixtures or FACEFORGE_FIXTURES)",
              file=sys.stderr)
        return 1

    naive_det, fast_det = NaiveMTCNN(), FastDetector()
    pipelines = {"naive": (seek_frames, naive_det), "faceforge": (through_frames, fast_det)}
    if args.ablation:
        pipelines["seek+fastdet"] = (seek_frames, fast_det)
        pipelines["through+mtcnn"] = (through_frames, naive_det)
    # warm up both detectors (first call allocates)
    warm = np.zeros((360, 640, 3), np.uint8)
    naive_det.best_box(warm), fast_det.best_box(warm)

    results: dict[str, dict[str, Any]] = {}
    for path in videos:
        info = probe_video(path)
        indices = sample_frame_indices(info.num_frames, args.num_frames)
        res = {name: run_pipeline(path, indices, dec, det) for name, (dec, det) in pipelines.items()}
        common = sorted(set(res["naive"]["boxes"]) & set(res["faceforge"]["boxes"]))
        res["faceforge"]["iou_vs_naive"] = float(np.mean([iou(res["naive"]["boxes"][i], res["faceforge"]["boxes"][i])
                                                          for i in common])) if common else float("nan")
        results[path.name] = res

    header = (f"{'video':<16}{'pipeline':<15}{'decode s':>9}{'detect s':>9}{'crop s':>8}{'total s':>9}"
              f"{'cpu s':>8}{'frames/s':>10}{'faces':>9}{'IoU':>6}")
    print(f"face extraction, {args.num_frames} evenly spaced frames per video; torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(header)
    print("-" * len(header))
    totals = {name: 0.0 for name in pipelines}
    for vname, res in results.items():
        for name, r in res.items():
            totals[name] += r["total_s"]
            iou_s = f"{r['iou_vs_naive']:.2f}" if "iou_vs_naive" in r else ""
            print(f"{vname:<16}{name:<15}{r['decode_s']:>9.2f}{r['detect_s']:>9.2f}{r['crop_s']:>8.2f}"
                  f"{r['total_s']:>9.2f}{r['cpu_s']:>8.2f}{r['fps']:>10.2f}{r['faces']:>5}/{r['frames']:<3}{iou_s:>6}")
    print("-" * len(header))
    ratio = totals["naive"] / totals["faceforge"]
    recall_ok = all(res["faceforge"]["faces"] >= res["naive"]["faces"] for res in results.values())
    print(f"speed ratio naive/faceforge (total time, all videos): {ratio:.2f}x; "
          f"faceforge recall >= naive on every video: {recall_ok}")
    if args.ablation:
        for name in pipelines:
            if name not in ("naive", "faceforge"):
                print(f"  {name}: {totals['naive'] / totals[name]:.2f}x faster than naive")
    if args.json:
        clean = {v: {p: {k: x for k, x in r.items() if k != "boxes"} for p, r in res.items()}
                 for v, res in results.items()}
        Path(args.json).write_text(json.dumps({"num_frames": args.num_frames, "torch_threads": torch.get_num_threads(),
                                               "ratio": ratio, "recall_ok": recall_ok, "videos": clean}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
