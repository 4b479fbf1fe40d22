"""Face index load time and memory: the CSV index as it was read before versus the Parquet index, same rows.

Reproduce (from the repository root)::

    .venv/bin/python benchmarks/bench_face_index.py --rows 1000000

Builds a synthetic index shaped like DFDC's (``--rows`` faces, 32 per video, 2 of 3 videos fake, 5 landmarks per
face, crop paths per frame), writes it once as the legacy ``face_index.csv`` and once as ``face_index.parquet``
(zstd, repeated strings dictionary-encoded), then loads each ``--repeats`` times, each load in a fresh Python
process (so one load's memory does not hide another's), and reports per format: the file size, the median load
time, the peak resident memory the load added to the process (``VmHWM`` after the load minus the resident set
before it, both from ``/proc``: Linux only) and the bytes the loaded columns hold. The formats alternate, so a
busy machine slows all of them alike.

Three loads are compared:

(a) ``csv (before)``: the reader this project used before the Parquet index: Python's ``csv`` module, columns
    converted to NumPy arrays, strings as NumPy unicode (4 bytes per character);
(b) ``csv (legacy read)``: ``FaceIndex.read`` of the same CSV file today (old folders still load: pyarrow's CSV
    parser, compact string columns; a file it refuses is read again row by row to name the problem);
(c) ``parquet``: ``FaceIndex.read`` of ``face_index.parquet``.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faceforge.data.detection.face_index import (  # noqa: E402
    COLUMN_NAMES,
    FACE_INDEX_COLUMNS,
    INDEX_FILENAME,
    LEGACY_INDEX_FILENAME,
    FaceIndex,
)

FRAMES_PER_VIDEO = 32

#: Run in a fresh interpreter: load one index file, print timing and memory as JSON.
CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
import numpy as np
from faceforge.data.detection.face_index import FaceIndex, COLUMN_NAMES, FACE_INDEX_COLUMNS
import pyarrow.parquet  # imported in every mode, so the baseline memory is the same

def rss_kb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024

def hwm_kb():  # peak resident set of this process image (unlike ru_maxrss, not inherited across exec)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

def before_format(path):
    import csv
    dtypes = {c: d for c, d, _ in FACE_INDEX_COLUMNS}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        cols = {c: [] for c in COLUMN_NAMES}
        for row in reader:
            for c, v in zip(COLUMN_NAMES, row):
                cols[c].append(v)
    out = {}
    for c, values in cols.items():
        d = dtypes[c]
        out[c] = np.array(values, dtype=str) if d is str else \
            np.array(values, dtype=np.float64 if d is np.float32 else None).astype(d)
    return out

mode, path = sys.argv[1], sys.argv[2]
base = rss_kb()
t0 = time.perf_counter()
if mode == "before":
    cols = before_format(path)
    held = sum(v.nbytes for v in cols.values())
    rows = len(cols["video_id"])
else:
    ix = FaceIndex.read(path)
    held = ix.nbytes()
    rows = len(ix)
seconds = time.perf_counter() - t0
peak = hwm_kb()
print(json.dumps({"seconds": seconds, "peak_mb": (peak - base) / 1024, "held_mb": held / 2**20, "rows": rows}))
"""


def synthetic_index(rows: int, root: Path, seed: int = 0) -> FaceIndex:
    """A DFDC-shaped index of ``rows`` faces (vectorised; deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    videos = max(1, -(-rows // FRAMES_PER_VIDEO))
    vid = np.arange(rows) // FRAMES_PER_VIDEO
    frame = (np.arange(rows) % FRAMES_PER_VIDEO) * 9
    names = np.array([f"{''.join(chr(97 + int(c)) for c in rng.integers(0, 26, 10))}" for _ in range(videos)])
    label = (np.arange(videos) % 3 != 0).astype(np.int64)
    part = np.arange(videos) % 50
    video_id = np.char.add("dfdc/", names)
    src = np.where(label == 1, video_id[(np.arange(videos) // 3) * 3], video_id)
    split = np.where(part < 40, "train", np.where(part < 45, "val", "test"))
    box = rng.uniform(100, 900, (rows, 4)).astype(np.float32)
    lms = rng.uniform(100, 900, (rows, 10))
    landmarks = np.array([" ".join(f"{v:.2f}" for v in r) for r in lms])
    crop = np.char.add(np.char.add(np.char.add("crops/", video_id[vid]), "/"),
                       np.char.add(np.char.zfill(frame.astype(str), 6), "_0.jpg"))
    cols = {
        "video_id": video_id[vid], "dataset": np.full(rows, "dfdc"),
        "method": np.where(label[vid] == 1, "DFDC", "original"), "compression": np.full(rows, ""),
        "split": split[vid], "label": label[vid], "source_id": src[vid],
        "video_path": np.char.add(np.char.add(np.char.add("dfdc_train_part_", (part[vid] % 50).astype(str)), "/"),
                                  np.char.add(names[vid], ".mp4")),
        "num_frames": np.full(rows, 300, dtype=np.int64), "frame_index": frame.astype(np.int64),
        "face_rank": np.zeros(rows, dtype=np.int64), "det_prob": rng.uniform(0.9, 1, rows).astype(np.float32),
        "x1": box[:, 0], "y1": box[:, 1], "x2": box[:, 2], "y2": box[:, 3], "landmarks": landmarks,
        "crop_path": crop,
    }
    assert set(cols) == set(COLUMN_NAMES) and len(FACE_INDEX_COLUMNS) == len(cols)
    return FaceIndex(columns=cols, root=root, meta={"dataset": "dfdc", "synthetic_benchmark": True})


def load(mode: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(ROOT)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="faces in the synthetic index")
    ap.add_argument("--repeats", type=int, default=3, help="loads per format (each in a fresh process)")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the two files (default: a temp folder)")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = a.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        index = synthetic_index(a.rows, folder)
        print(f"built a synthetic index of {len(index):,} rows in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        csv_path = index.write_csv(folder / LEGACY_INDEX_FILENAME)
        t_csv = time.perf_counter() - t0
        t0 = time.perf_counter()
        parquet_path = folder / "parquet" / INDEX_FILENAME
        index.write(parquet_path.parent)
        t_pq = time.perf_counter() - t0
        print(f"written: csv {t_csv:.1f} s, parquet {t_pq:.1f} s", flush=True)
        del index
        # the Parquet file holds what the CSV holds (floats: the CSV keeps 6 significant digits)
        runs: dict[str, list[dict[str, float]]] = {"csv (before)": [], "csv (legacy read)": [], "parquet": []}
        plan = [("csv (before)", "before", csv_path), ("csv (legacy read)", "read", csv_path),
                ("parquet", "read", parquet_path)]
        for _ in range(a.repeats):
            for name, mode, path in plan:
                runs[name].append(load(mode, path))
        print(f"\n{'format':<20}{'file MB':>10}{'load s':>10}{'peak +MB':>10}{'held MB':>10}")
        sizes = {"csv (before)": csv_path.stat().st_size, "csv (legacy read)": csv_path.stat().st_size,
                 "parquet": parquet_path.stat().st_size}
        med = {}
        for name, rs in runs.items():
            med[name] = {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_mb", "held_mb")}
            m = med[name]
            print(f"{name:<20}{sizes[name] / 2**20:>10.1f}{m['seconds']:>10.2f}{m['peak_mb']:>10.0f}"
                  f"{m['held_mb']:>10.0f}")
        b, p = med["csv (before)"], med["parquet"]
        print(f"\nparquet vs csv (before), {a.rows:,} rows: {b['seconds'] / p['seconds']:.1f}x faster to load, "
              f"{b['peak_mb'] / max(p['peak_mb'], 1e-9):.1f}x less peak memory, {b['held_mb'] / p['held_mb']:.1f}x "
              f"smaller columns, {sizes['csv (before)'] / sizes['parquet']:.1f}x smaller file "
              f"(median of {a.repeats} loads each, fresh processes)")
        # sanity: csv is readable the row-by-row way too (the format did not drift)
        with csv_path.open(newline="") as fh:
            assert next(csv.reader(fh)) == list(COLUMN_NAMES)


if __name__ == "__main__":
    main()
