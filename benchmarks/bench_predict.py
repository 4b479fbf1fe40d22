"""``faceforge predict`` on a 10 s 1080p video with a frame model, against decoding alone (the floor), same run.

The test video is generated with PyAV into a temporary folder from a fixture clip (``videos/talking_head/
obama_3ddfa.mp4``, 1280x720, looped to 10 s and upscaled to 1920x1080, H.264, 30 fps). Cases, each timed
``--repeats`` times (median):

* ``decode (sampled frames)``: :class:`~faceforge.data.detection.extraction.FrameStream` over the frames predict
  samples (``--frames``, evenly spaced): the floor of predict's own decoding;
* ``decode (all frames)``: every frame decoded and converted to RGB;
* ``predict``: :meth:`faceforge.inference.detection.Predictor.predict_video` with the MesoNet authors' Meso-4 weights
  (``Meso4_DF.h5``): decode + MTCNN + crop + Meso-4 + aggregation.

Run (CPU; prints a table and, with ``--out``, writes JSON)::

    .venv/bin/python benchmarks/bench_predict.py --fixtures ../shared/fixtures --repeats 3
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np
import torch

from faceforge.data.detection.extraction import FrameStream, probe_video, sample_frame_indices
from faceforge.inference.detection import DEFAULT_NUM_FRAMES, Predictor, load_detector
from faceforge.utils.atomic import atomic_write_json


def make_video(src: Path, dst: Path, seconds: float = 10.0, size: tuple[int, int] = (1920, 1080),
               fps: int = 30) -> Path:
    """Loop ``src`` to ``seconds`` and scale it to ``size`` (H.264, yuv420p) with PyAV."""
    frames = []
    with av.open(str(src)) as inp:
        for frame in inp.decode(video=0):
            frames.append(frame.reformat(width=size[0], height=size[1], format="yuv420p"))
            if len(frames) >= seconds * fps:
                break
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i in range(int(seconds * fps)):
            frame = frames[i % len(frames)]
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", default=os.environ.get("FACEFORGE_FIXTURES", "../shared/fixtures"))
    ap.add_argument("--frames", type=int, default=DEFAULT_NUM_FRAMES, help="frames predict samples per video")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    fixtures = Path(args.fixtures)
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        video = make_video(fixtures / "videos" / "talking_head" / "obama_3ddfa.mp4", Path(tmp) / "video_1080p.mp4")
        info = probe_video(video)
        indices = sample_frame_indices(info.num_frames, args.frames)
        predictor = Predictor(load_detector(fixtures / "mesonet" / "weights" / "Meso4_DF.h5"),
                              num_frames=args.frames)
        predictor.predict_video(video, progress=False)  # warm-up (MTCNN and Meso-4 first calls)

        def decode_sampled() -> int:
            with FrameStream(video, indices) as stream:
                return sum(1 for _ in stream)

        def decode_all() -> int:
            with av.open(str(video)) as c:
                c.streams.video[0].thread_type = "AUTO"
                return sum(1 for f in c.decode(video=0) if f.to_ndarray(format="rgb24") is not None)

        rows = []
        t, n = timed(decode_sampled, args.repeats)
        rows.append(("decode (sampled frames)", t, n))
        t, n = timed(decode_all, args.repeats)
        rows.append(("decode (all frames)", t, n))
        t, result = timed(lambda: predictor.predict_video(video, progress=False), args.repeats)
        rows.append(("predict (Meso-4, MTCNN)", t, result.frames_sampled))
    floor = rows[0][1]
    print(f"video: {info.width}x{info.height}, {info.num_frames} frames, {info.num_frames / info.fps:.1f} s; "
          f"torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"{'case':28s} {'s/video':>8s} {'frames':>7s} {'x floor':>8s}")
    for name, t, n in rows:
        print(f"{name:28s} {t:8.2f} {n:7d} {t / floor:8.2f}")
    print(f"predict: P(fake) {result.p_fake:.3f} ({result.decision}), faces in {len(result.frames)}/"
          f"{result.frames_sampled} frames; detection + scoring {rows[2][1] - floor:.2f} s over the decoding floor")
    if args.out:
        atomic_write_json(args.out, {"video": {"width": info.width, "height": info.height,
                                               "frames": info.num_frames, "fps": info.fps},
                                     "rows": [{"case": n_, "seconds": t_, "frames": k_} for n_, t_, k_ in rows],
                                     "p_fake": result.p_fake, "frames_with_face": len(result.frames),
                                     "frames_per_second_predict": float(np.float64(result.frames_sampled) /
                                                                        rows[2][1])})


if __name__ == "__main__":
    main()
