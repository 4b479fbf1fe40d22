"""Marching-cubes time per VRN volume (200 x 192 x 192), faceforge's volume_to_mesh against raw scikit-image.

A synthetic face-like volume, VRN's filling: occupied from the back plane (k = 0) up to an ellipsoid-capped front
surface with a nose bump, given as soft probabilities (a sigmoid of the signed depth distance, like a network's
output) and as a bool volume. Cases:

* ``skimage``: ``skimage.measure.marching_cubes`` alone on the float32 volume, unpadded (no back cap, fewer
  vertices) and padded by one voxel as faceforge does: the reference;
* ``volume_to_mesh``: faceforge's full call (padding, axis swap, trimesh mesh), probabilities and bool;
* ``+frame+colours``: with a :class:`VolumeFrame` and vertex colours sampled from a 450 x 450 image;
* ``step_size=2``: the coarse variant;
* ``export .obj/.ply/.glb``: writing the mesh of the probability volume.

Run (CPU; prints a table and, with ``--out``, writes JSON)::

    .venv/bin/python benchmarks/bench_marching_cubes.py --repeats 5 --out /tmp/bench_mc.json
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import skimage
import trimesh
from skimage.measure import marching_cubes

from faceforge.geometry.volume_frame import VOLUME_DEPTH, VOLUME_SIZE, VolumeFrame
from faceforge.geometry.volume_mesh import export_mesh, volume_to_mesh
from faceforge.utils.atomic import atomic_write_json


def synthetic_face_volume(depth: int = VOLUME_DEPTH, size: int = VOLUME_SIZE, softness: float = 1.0
                          ) -> np.ndarray:
    """(D, H, W) float32 occupancy probabilities of a face-like column: back plane to an ellipsoidal front."""
    k = np.arange(depth, dtype=np.float32)[:, None, None]
    v, u = np.mgrid[:size, :size].astype(np.float32)
    r2 = ((v - size * 0.5) / (size * 0.40)) ** 2 + ((u - size * 0.5) / (size * 0.32)) ** 2
    front = 40.0 + 100.0 * np.sqrt(np.clip(1.0 - r2, 0.0, None))
    front += 18.0 * np.exp(-(((v - size * 0.52) / 9.0) ** 2 + ((u - size * 0.5) / 7.0) ** 2))  # nose
    front = np.where(r2 <= 1.0, front, -10.0).astype(np.float32)  # outside the face: empty column
    signed = np.clip((front[None] - k) / softness, -50.0, 50.0)  # > 0 inside
    return (1.0 / (1.0 + np.exp(-signed))).astype(np.float32)


def _time(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    out = fn()  # warm-up (look-up tables, page faults)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="optional JSON results path")
    args = parser.parse_args()

    probs = synthetic_face_volume()
    binary = probs > 0.5
    frame = VolumeFrame(scale=192 / 300, tx=-48.0, ty=-40.0, z_offset=100.0, depth_scale=1.0)
    image = np.random.default_rng(0).integers(0, 256, size=(450, 450, 3), dtype=np.uint8)
    cases: dict[str, Callable[[], Any]] = {
        "skimage marching_cubes (float32, reference)": lambda: marching_cubes(probs, level=0.5),
        "skimage marching_cubes (padded, reference)": lambda: marching_cubes(np.pad(probs, 1), level=0.5),
        "volume_to_mesh (float32 probabilities)": lambda: volume_to_mesh(probs),
        "volume_to_mesh (bool)": lambda: volume_to_mesh(binary),
        "volume_to_mesh +frame+colours": lambda: volume_to_mesh(probs, frame=frame, image=image),
        "volume_to_mesh step_size=2": lambda: volume_to_mesh(probs, step_size=2),
    }
    results: dict[str, Any] = {
        "volume_shape": list(probs.shape), "repeats": args.repeats, "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor(), "skimage": skimage.__version__,
        "trimesh": trimesh.__version__, "cases": {},
    }
    print(f"volume {probs.shape}, {int(binary.sum()):,} occupied voxels, {args.repeats} repeats (median / min)")
    for name, fn in cases.items():
        times, out = _time(fn, args.repeats)
        n_verts = len(out[0]) if isinstance(out, tuple) else len(out.vertices)
        n_faces = len(out[1]) if isinstance(out, tuple) else len(out.faces)
        results["cases"][name] = {"median_s": statistics.median(times), "min_s": min(times), "vertices": n_verts,
                                  "faces": n_faces}
        print(f"  {name:46s} {statistics.median(times) * 1e3:8.1f} ms / {min(times) * 1e3:8.1f} ms   "
              f"{n_verts:>8,} verts {n_faces:>8,} faces")
    mesh = volume_to_mesh(probs, frame=frame, image=image)
    with tempfile.TemporaryDirectory() as tmp:
        for ext in (".obj", ".ply", ".glb"):
            path = Path(tmp) / f"face{ext}"
            times, _ = _time(lambda p=path: export_mesh(mesh, p), args.repeats)
            name = f"export {ext}"
            results["cases"][name] = {"median_s": statistics.median(times), "min_s": min(times),
                                      "bytes": path.stat().st_size}
            print(f"  {name:46s} {statistics.median(times) * 1e3:8.1f} ms / {min(times) * 1e3:8.1f} ms   "
                  f"{path.stat().st_size / 1e6:8.1f} MB")
    if args.out is not None:
        atomic_write_json(args.out, results)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
