"""Volume storage: bytes per sample and decode speed of faceforge's run store against dense uint8 HDF5.

Targets (the 3D issue): stored volume at most 1/20 of the dense uint8 volume (<= 368,640 of 7,372,800 bytes per
sample) and decoding to the float32 training target at >= 150 samples/s in one process, both measured against dense
uint8 HDF5 in the same run on the same samples.

Samples: real face volumes made by the generation pipeline from the fixture labels (3DDFA mean shape warped to each
label's 68 landmarks, 3DDFA_V2 no-neck topology, capped mouth), each posed label used several times with a jittered
crop margin and shift, so the volumes differ; without the fixtures, synthetic face-like height maps.

Cases, each reading every sample once in a shuffled order per pass (one process, ``torch.set_num_threads(1)``; the
files are in the page cache after the write, which favours the larger dense files):

* ``dense``: ``(N, 200, 192, 192)`` uint8 dataset, chunks of one sample, no compression / gzip 4 / lzf;
  read a sample, convert to a float32 tensor;
* ``runs``: :class:`VolumeStore` (start/stop uint8 maps, gzip 4 / lzf / none); read and :func:`decode_volume` to a
  fresh float32 tensor; the same into a reused buffer (``out=``); and the maps alone (what a DataLoader should
  ship, decoding on the accelerator with :func:`decode_runs`);
* ``gpu decode`` (only where CUDA is available): :func:`decode_runs` of a batch of 8 maps on the device.

Run (prints a table and, with ``--out``, writes JSON)::

    .venv/bin/python benchmarks/bench_volume_storage.py --samples 48 --repeats 3 --out /tmp/bench_volumes.json
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from faceforge.data.reconstruction.codec import DENSE_BYTES_PER_SAMPLE, EncodedVolume, decode_runs, decode_volume
from faceforge.data.reconstruction.store import VolumeSample, VolumeStore, VolumeStoreWriter
from faceforge.geometry.volume_frame import VOLUME_DEPTH, VOLUME_SIZE, VolumeFrame
from faceforge.utils.atomic import atomic_write_json

STORAGE_TARGET = DENSE_BYTES_PER_SAMPLE / 20
SPEED_TARGET = 150.0


def fixture_volumes(n: int, fixtures: Path, seed: int = 0) -> list[EncodedVolume]:
    """``n`` real face volumes from the fixture labels with jittered crops."""
    from faceforge.data.reconstruction.mesh import face_mesh_from_label
    from faceforge.geometry import load_3ddfa_mean_shape, project_300wlp, read_300wlp_mat
    from faceforge.geometry.voxelize import crop_frame_from_points, face_columns, load_noneck_topology

    model = load_3ddfa_mean_shape(fixtures / "3ddfa")
    topo = load_noneck_topology(fixtures / "3ddfa_v2" / "configs")
    labels = [fixtures / "face3d_300wlp" / "IBUG_image_008_1_0.mat",
              *sorted((fixtures / "prnet_aflw2000").glob("*.mat"))]
    posed = []
    for path in labels:
        label = read_300wlp_mat(path)
        verts = project_300wlp(face_mesh_from_label(label, model)[0], label.pose_para, 450)
        posed.append(verts)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        verts = posed[i % len(posed)].copy()
        verts[:, :2] += rng.uniform(-15, 15, 2)
        frame = crop_frame_from_points(verts[topo.vertex_indices], (450, 450), margin=rng.uniform(0.05, 0.2))
        cols = face_columns(*topo.closed_mesh(verts), frame)
        out.append(EncodedVolume.from_heights(cols.height))
    return out


def synthetic_volumes(n: int, seed: int = 0) -> list[EncodedVolume]:
    """``n`` face-like height maps (ellipsoid front with a nose bump, random size and position)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[:VOLUME_SIZE, :VOLUME_SIZE].astype(np.float64)
    out = []
    for _ in range(n):
        cu, cv = rng.uniform(80, 112, 2)
        au, av = rng.uniform(50, 70), rng.uniform(65, 85)
        r2 = ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2
        front = 40 + 90 * np.sqrt(np.clip(1 - r2, 0, None)) + 18 * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / 60)
        heights = np.where(r2 <= 1, np.floor(front) + 1, 0).clip(0, VOLUME_DEPTH)
        out.append(EncodedVolume.from_heights(heights.astype(np.int64)))
    return out


def _dense(enc: EncodedVolume) -> np.ndarray:
    k = np.arange(enc.depth)[:, None, None]
    return ((k >= enc.start) & (k < enc.stop)).astype(np.uint8)


def write_dense(path: Path, volumes: list[EncodedVolume], compression: str | None) -> None:
    kw: dict[str, Any] = {}
    if compression == "gzip":
        kw = {"compression": "gzip", "compression_opts": 4}
    elif compression == "lzf":
        kw = {"compression": "lzf"}
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("volume", shape=(len(volumes), VOLUME_DEPTH, VOLUME_SIZE, VOLUME_SIZE),
                              dtype=np.uint8, chunks=(1, VOLUME_DEPTH, VOLUME_SIZE, VOLUME_SIZE), **kw)
        for i, enc in enumerate(volumes):
            ds[i] = _dense(enc)


def write_runs(path: Path, volumes: list[EncodedVolume], compression: str | None) -> np.ndarray:
    frame = VolumeFrame(scale=1.0, tx=0.0, ty=0.0, z_offset=0.0)
    image = np.zeros((VOLUME_SIZE, VOLUME_SIZE, 3), dtype=np.uint8)
    with VolumeStoreWriter(path, compression=compression, image_codec="jpeg") as w:
        for i, enc in enumerate(volumes):
            w.add(VolumeSample(sample_id=str(i), encoded=enc, frame=frame, image=image))
        summary = w.close()
    return summary.volume_bytes


def _chunk_bytes(path: Path, name: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        ds = f[name]
        sizes = np.zeros(ds.shape[0], dtype=np.int64)
        for j in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(j)
            sizes[info.chunk_offset[0]] += info.size
    return sizes


def _passes(fn: Callable[[int], Any], n: int, repeats: int, seed: int = 1) -> list[float]:
    """Samples/s of ``fn(i)`` over all samples, shuffled, per pass (one warm-up pass first)."""
    rng = np.random.default_rng(seed)
    rates = []
    for r in range(repeats + 1):
        order = rng.permutation(n)
        keep: list[Any] = []
        t0 = time.perf_counter()
        for i in order:
            keep.append(fn(int(i)))
            if len(keep) > 8:  # hold a batch worth of outputs, as a DataLoader does (fresh memory each sample)
                keep.pop(0)
        dt = time.perf_counter() - t0
        if r:
            rates.append(n / dt)
    return rates


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    default_fixtures = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    p.add_argument("--fixtures", default=os.environ.get("FACEFORGE_FIXTURES", str(default_fixtures)))
    p.add_argument("--workdir", default=None, help="folder for the temporary HDF5 files (default: system temp)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    fixtures = Path(args.fixtures)
    t0 = time.perf_counter()
    if (fixtures / "3ddfa").is_dir() and (fixtures / "3ddfa_v2").is_dir():
        volumes, source = fixture_volumes(args.samples, fixtures), "fixture labels (landmark-warped mean shape)"
    else:
        volumes, source = synthetic_volumes(args.samples), "synthetic face-like height maps"
    n = len(volumes)
    print(f"{n} volumes from {source} in {time.perf_counter() - t0:.1f} s; filled voxels/sample "
          f"{np.mean([v.filled_voxels for v in volumes]):.0f}")

    results: dict[str, Any] = {"samples": n, "source": source, "dense_bytes_per_sample": DENSE_BYTES_PER_SAMPLE,
                               "torch_threads": 1, "platform": platform.platform(),
                               "cpu": platform.processor() or platform.machine(), "cases": {}}
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp_path = Path(tmp)
        stores: dict[str, VolumeStore] = {}
        for comp in ("none", "gzip", "lzf"):
            path = tmp_path / f"dense_{comp}.h5"
            write_dense(path, volumes, None if comp == "none" else comp)
            per = _chunk_bytes(path, "volume")
            f = h5py.File(path, "r")
            ds = f["volume"]
            rates = _passes(lambda i, ds=ds: torch.from_numpy(ds[i]).float(), n, args.repeats)
            f.close()
            rows.append((f"dense uint8 ({comp})", float(per.mean()), rates))
        for comp in ("none", "gzip", "lzf"):
            path = tmp_path / f"runs_{comp}.h5"
            per = write_runs(path, volumes, None if comp == "none" else comp)
            store = VolumeStore(path)
            stores[comp] = store
            rates = _passes(lambda i, s=store: decode_volume(s.read_encoded(i)), n, args.repeats)
            rows.append((f"runs ({comp}) -> float32", float(per.mean()), rates))
            if comp == "gzip":
                buf = torch.empty(VOLUME_DEPTH, VOLUME_SIZE, VOLUME_SIZE)
                rates = _passes(lambda i, s=store, b=buf: decode_volume(s.read_encoded(i), out=b), n, args.repeats)
                rows.append(("runs (gzip) -> float32, reused buffer", float(per.mean()), rates))
                rates = _passes(lambda i, s=store: s.read_runs(i), n, args.repeats)
                rows.append(("runs (gzip) maps only (DataLoader payload)", float(per.mean()), rates))
        if torch.cuda.is_available():
            dev = torch.device("cuda")
            start = torch.stack([torch.from_numpy(v.start) for v in volumes[:8]]).to(dev)
            stop = torch.stack([torch.from_numpy(v.stop) for v in volumes[:8]]).to(dev)
            decode_runs(start, stop, VOLUME_DEPTH)
            torch.cuda.synchronize()
            reps = 50
            t0 = time.perf_counter()
            for _ in range(reps):
                decode_runs(start, stop, VOLUME_DEPTH)
            torch.cuda.synchronize()
            rate = reps * 8 / (time.perf_counter() - t0)
            rows.append((f"gpu decode_runs batch 8 ({torch.cuda.get_device_name()})", float("nan"), [rate]))
        for store in stores.values():
            store.close()

    print(f"\n{'case':<48} {'bytes/sample':>12} {'1/x of dense':>12} {'samples/s (best)':>17} {'median':>8}")
    for name, nbytes, rates in rows:
        ratio = DENSE_BYTES_PER_SAMPLE / nbytes if np.isfinite(nbytes) else float("nan")
        print(f"{name:<48} {nbytes:>12.0f} {ratio:>12.1f} {max(rates):>17.1f} {statistics.median(rates):>8.1f}")
        results["cases"][name] = {"bytes_per_sample": nbytes, "dense_over_stored": ratio, "samples_per_s": rates,
                                  "best_samples_per_s": max(rates)}
    runs_bytes = results["cases"]["runs (gzip) -> float32"]["bytes_per_sample"]
    runs_rate = results["cases"]["runs (gzip) -> float32"]["best_samples_per_s"]
    results["storage_target_met"] = bool(runs_bytes <= STORAGE_TARGET)
    results["speed_target_met"] = bool(runs_rate >= SPEED_TARGET)
    print(f"\nstorage target (<= {STORAGE_TARGET:.0f} B/sample): {runs_bytes:.0f} -> "
          f"{'met' if results['storage_target_met'] else 'NOT met'}")
    print(f"speed target (>= {SPEED_TARGET:.0f} samples/s decode to float32): {runs_rate:.1f} -> "
          f"{'met' if results['speed_target_met'] else 'NOT met'}")
    if args.out:
        atomic_write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
