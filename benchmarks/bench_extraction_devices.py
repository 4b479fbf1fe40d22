"""Face extraction in videos/s on each device, side by side in one run: the CPU path against MTCNN on a GPU.

Per video, as the extractor does it: probe, choose ``--num-frames`` evenly spaced frames, decode them in one
threaded pass (PyAV, :class:`~faceforge.data.detection.extraction.video.FrameStream`), detect the faces
(:class:`~faceforge.data.detection.extraction.detector.FaceDetector`: one frame at a time on the CPU, the frames
of a video batched through MTCNN on a GPU), crop and PNG-encode the best face of each frame. Videos are decoded
ahead in ``--decode-threads`` CPU threads while the detector works on the previous one. The CPU row is the
reference; every device runs the same videos, and the faces found per device are reported so that a faster path
that finds fewer faces shows.

Run::

    .venv/bin/python benchmarks/bench_extraction_devices.py --videos ../shared/fixtures/videos --devices cpu
    python benchmarks/bench_extraction_devices.py --videos VIDEOS_DIR --devices cpu,cuda --repeat 4
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceforge.data.detection.extraction.crop import crop_face  # noqa: E402
from faceforge.data.detection.extraction.detector import FaceDetector  # noqa: E402
from faceforge.data.detection.extraction.sampling import sample_frame_indices  # noqa: E402
from faceforge.data.detection.extraction.video import FrameStream, probe_video  # noqa: E402


def decode(path: Path, num_frames: int) -> list[np.ndarray]:
    """The ``num_frames`` evenly spaced frames of ``path`` as (H, W, 3) uint8 RGB arrays."""
    info = probe_video(path)
    indices = sample_frame_indices(info.num_frames, num_frames)
    with FrameStream(path, indices) as stream:
        return [frame for _, frame in stream]


def run(device: str, videos: list[Path], num_frames: int, decode_threads: int) -> dict[str, Any]:
    """Extract every video on ``device``; wall time, videos/s, frames and faces."""
    detector = FaceDetector(device=device)
    detector.detect(decode(videos[0], 2))  # warm-up (CUDA context, cuDNN autotuning)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    frames_total = faces_total = 0
    t_detect = 0.0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=decode_threads) as pool:
        for frames in pool.map(lambda p: decode(p, num_frames), videos):
            t = time.perf_counter()
            found = detector.detect(frames)
            t_detect += time.perf_counter() - t
            for frame, dets in zip(frames, found):
                if dets:
                    crop, _ = crop_face(frame, dets[0].box, margin=0.3, size=256)
                    cv2.imencode(".png", np.ascontiguousarray(crop[:, :, ::-1]))
                    faces_total += 1
            frames_total += len(frames)
    seconds = time.perf_counter() - t0
    return {"device": device, "videos": len(videos), "frames": frames_total, "faces": faces_total,
            "seconds": seconds, "detect_s": t_detect, "videos_per_s": len(videos) / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", required=True, help="a folder searched recursively for .mp4 files")
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--num-frames", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="process the video list this many times")
    ap.add_argument("--decode-threads", type=int, default=4)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    videos = sorted(Path(a.videos).rglob("*.mp4")) * a.repeat
    if not videos:
        raise SystemExit(f"no .mp4 under {a.videos}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [run(d, videos, a.num_frames, a.decode_threads) for d in a.devices.split(",")]
    ref = rows[0]["videos_per_s"]
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"GPU: {name}; {len(videos)} videos, {a.num_frames} frames each; CPU threads {torch.get_num_threads()}")
    print(f"{'device':<8} {'videos/s':>9} {'vs ' + rows[0]['device']:>8} {'seconds':>8} {'detect s':>9} "
          f"{'faces/frames':>13}")
    for r in rows:
        r["speedup"] = r["videos_per_s"] / ref
        print(f"{r['device']:<8} {r['videos_per_s']:>9.2f} {r['speedup']:>7.2f}x {r['seconds']:>8.1f} "
              f"{r['detect_s']:>9.1f} {r['faces']:>6}/{r['frames']:<6}")
    if a.json:
        Path(a.json).write_text(json.dumps({"gpu": name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
