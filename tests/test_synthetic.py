"""The embedded synthetic detection dataset: format, determinism, splits, and a learnable manipulation trace."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from faceforge.data.core.image_io import read_rgb_image
from faceforge.data.detection import synthetic as detection
from faceforge.data.detection.face_index import COLUMN_NAMES, INDEX_FILENAME, META_FILENAME, FaceIndex
from faceforge.data.detection.synthetic import build_synthetic_detection
from faceforge.data.detection.synthetic_faces import (
    FramePose,
    capture,
    render_background,
    render_face,
    sample_identity,
    sample_poses,
    sample_scene,
)


@pytest.fixture(scope="module")
def synth128(tmp_path_factory: pytest.TempPathFactory) -> FaceIndex:
    """16 videos x 3 frames at 128 px, no JPEG."""
    return build_synthetic_detection(tmp_path_factory.mktemp("s128"), num_videos=16, frames_per_video=3,
                                     image_size=128, seed=11)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    kw = {"num_videos": 6, "frames_per_video": 2, "image_size": 48, "seed": 4, "jpeg_quality": (70, 90)}
    a = build_synthetic_detection(tmp_path / "a", workers=1, **kw)
    b = build_synthetic_detection(tmp_path / "b", workers=2, **kw)  # spawned workers (run_parallel)
    assert (tmp_path / "a" / INDEX_FILENAME).read_bytes() == (tmp_path / "b" / INDEX_FILENAME).read_bytes()
    for i in range(len(a)):
        np.testing.assert_array_equal(read_rgb_image(a.crop_file(i)), read_rgb_image(b.crop_file(i)))
    c = build_synthetic_detection(tmp_path / "c", **{**kw, "seed": 5})
    assert not np.array_equal(read_rgb_image(a.crop_file(0)), read_rgb_image(c.crop_file(0)))


def test_index_format_labels_methods_and_splits(synth128: FaceIndex) -> None:
    ix = FaceIndex.read(synth128.root)  # what is on disk equals what was returned
    for c in COLUMN_NAMES:
        np.testing.assert_array_equal(ix.columns[c], synth128.columns[c])
    assert (synth128.root / META_FILENAME).is_file() and ix.meta["dataset"] == "synthetic"
    assert len(ix) == 16 * 3
    cols = ix.columns
    assert set(cols["dataset"].tolist()) == {"synthetic"}
    assert set(cols["method"].tolist()) == {"original", "SynthSwap", "SynthBlend"}
    np.testing.assert_array_equal(cols["label"], (cols["method"] != "original").astype(np.int64))
    assert (cols["label"] == 1).sum() == (cols["label"] == 0).sum()  # fake_fraction 0.5
    for i in range(len(ix)):
        vid, method = cols["video_id"][i], cols["method"][i]
        assert re.fullmatch(rf"synthetic/{method}/\d{{4}}", vid)
        assert cols["crop_path"][i] == f"crops/{vid}/{cols['frame_index'][i]:06d}_0.png"
        assert ix.crop_file(i).is_file()
        if method == "original":
            assert cols["source_id"][i] == vid
        x1, y1, x2, y2 = (cols[k][i] for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
        lm = ix.landmarks_array(i)
        assert lm.shape == (5, 2) and lm[0, 0] < lm[1, 0] and lm[2, 1] < lm[3, 1]  # eyes left-right, nose above mouth
    # every fake derives from a real video of the same split; splits never share a source group
    split_of = {v: s for v, s in zip(cols["video_id"].tolist(), cols["split"].tolist())}
    for s, src in zip(cols["split"].tolist(), cols["source_id"].tolist()):
        assert split_of[src] == s and src.startswith("synthetic/original/")
    groups = {s: set(cols["source_id"][cols["split"] == s].tolist()) for s in ("train", "val", "test")}
    assert all(groups.values())
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])


def test_image_size_and_methods(tmp_path: Path) -> None:
    ix = build_synthetic_detection(tmp_path, num_videos=9, frames_per_video=1, image_size=40, fake_fraction=2 / 3,
                                   methods=("SynthBlend",), seed=0)
    assert read_rgb_image(ix.crop_file(0)).shape == (40, 40, 3)
    assert set(ix.columns["method"].tolist()) == {"original", "SynthBlend"}
    assert (ix.columns["label"] == 1).sum() == 6
    with pytest.raises(ValueError, match="unknown synthetic manipulation"):
        build_synthetic_detection(tmp_path / "x", methods=("Deepfakes",))
    with pytest.raises(ValueError, match="too few"):
        build_synthetic_detection(tmp_path / "y", num_videos=4)


def test_failed_build_leaves_no_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_synthetic_detection(tmp_path, num_videos=6, frames_per_video=1, image_size=32, seed=0)
    assert (tmp_path / INDEX_FILENAME).is_file()
    calls = []
    real_write = detection.atomic_write_bytes

    def flaky(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) > 3:
            raise OSError("disk full (simulated)")
        real_write(path, data)

    monkeypatch.setattr(detection, "atomic_write_bytes", flaky)
    with pytest.raises(OSError, match="simulated"):
        build_synthetic_detection(tmp_path, num_videos=6, frames_per_video=1, image_size=32, seed=1)
    assert not (tmp_path / INDEX_FILENAME).exists()


def test_interrupted_build_resumes_with_an_identical_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The prepared-dataset contract: a build stopped after two source groups leaves no index; the rerun renders
    only the groups without a done-marker and writes an index byte-identical to an uninterrupted build's."""
    kw = {"num_videos": 10, "frames_per_video": 2, "image_size": 32, "seed": 2}
    build_synthetic_detection(tmp_path / "whole", **kw)
    rendered: list[int] = []
    real_render = detection._render_group_task

    def stops_after_two(task):  # noqa: ANN001, ANN202
        if len(rendered) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the third group
        rendered.append(task.index)
        return real_render(task)

    monkeypatch.setattr(detection, "_render_group_task", stops_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_synthetic_detection(tmp_path / "resumed", **kw)
    assert not (tmp_path / "resumed" / INDEX_FILENAME).exists()
    assert len(list((tmp_path / "resumed" / detection.PARTS_DIR).glob("group-*.json"))) == 2
    first = list(rendered)
    rendered.clear()
    monkeypatch.setattr(detection, "_render_group_task", lambda task: rendered.append(task.index) or real_render(task))
    build_synthetic_detection(tmp_path / "resumed", **kw)
    assert not set(rendered) & set(first) and len(first) + len(rendered) == 5  # 5 real videos = 5 groups
    for name in (INDEX_FILENAME, META_FILENAME):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    # other arguments: the markers of this build are not reused (their digest names the arguments)
    rendered.clear()
    build_synthetic_detection(tmp_path / "resumed", **{**kw, "seed": 3})
    assert len(rendered) == 5


def _fine_detail(img: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Lower quartile of |Laplacian| of the gray image inside box (x1, y1, x2, y2): camera noise + fine texture."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=1))
    x1, y1, x2, y2 = box
    return float(np.percentile(lap[y1:y2, x1:x2], 25))


def _lower_face_box(ix: FaceIndex, i: int) -> tuple[int, int, int, int]:
    lm = ix.landmarks_array(i)  # eyes, nose tip, mouth corners
    x1, x2 = lm[3, 0], lm[4, 0]
    y1, y2 = lm[2, 1] - 4, (lm[3, 1] + lm[4, 1]) / 2 - 3
    return int(x1), int(y1), int(np.ceil(x2)), int(np.ceil(y2))


def test_fakes_carry_a_local_learnable_trace(synth128: FaceIndex) -> None:
    ix = synth128
    cols = ix.columns
    key = {(v, f): i for i, (v, f) in enumerate(zip(cols["video_id"].tolist(), cols["frame_index"].tolist()))}
    scores, labels = [], []
    for i in np.flatnonzero(cols["label"] == 1):
        real_i = key[(cols["source_id"][i], cols["frame_index"][i])]
        fake, real = read_rgb_image(ix.crop_file(i)), read_rgb_image(ix.crop_file(real_i))
        # the manipulation is local: far from the face the fake frame IS its source frame (no re-compression here)
        np.testing.assert_array_equal(fake[:, :8], real[:, :8])
        np.testing.assert_array_equal(fake[-4:], real[-4:])
        diff = np.abs(fake.astype(np.int16) - real.astype(np.int16)).sum(axis=2)
        x1, y1, x2, y2 = (int(v) for v in (cols["x1"][i], cols["y1"][i], cols["x2"][i], cols["y2"][i]))
        inside = np.zeros(diff.shape, bool)
        inside[y1:y2, x1:x2] = True
        assert diff[inside].mean() > 10 * max(diff[~inside].mean(), 0.1)
        # the blended face lacks the camera noise and fine skin detail of the frame it was pasted into
        box = _lower_face_box(ix, i)
        assert _fine_detail(fake, box) < _fine_detail(real, box), (cols["video_id"][i], box)
    # a one-number detector (fine detail of the lower face relative to the background) separates the classes
    for i in range(len(ix)):
        img = read_rgb_image(ix.crop_file(i))
        scores.append(-_fine_detail(img, _lower_face_box(ix, i)) / (_fine_detail(img, (0, 0, 16, 16)) + 1e-3))
        labels.append(int(cols["label"][i]))
    auc = float(binary_auroc(torch.tensor(scores), torch.tensor(labels)))
    assert auc > 0.85, auc


def test_renderer_is_resolution_independent_and_sane() -> None:
    rng = np.random.default_rng(0)
    identity, scene = sample_identity(rng), sample_scene(rng)
    pose = FramePose()
    big = render_face(identity, scene, pose, 128, render_background(scene, 128))
    small = render_face(identity, scene, pose, 64)
    assert big.image.shape == (128, 128, 3) and big.image.dtype == np.float32
    assert 0.0 <= big.image.min() and big.image.max() <= 1.0
    np.testing.assert_allclose(big.landmarks / 2, small.landmarks, atol=1e-3)
    down = cv2.resize(big.image, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(down - small.image).mean() < 0.03  # same picture, less detail
    poses = sample_poses(rng, 5)
    assert len(poses) == 5 and len({p.dx for p in poses}) == 5
    img = capture(big.image, 4.0, rng)
    assert img.dtype == np.uint8 and 2.0 < np.std(img.astype(np.float32) - big.image * 255) < 6.0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("data,overrides,marker,index", [
    ("synthetic", ["data.builder.num_videos=120", "data.builder.frames_per_video=8", "data.image_size=128"],
     "parts/group-*.json", "face_index.parquet"),
    ("synthetic_3d", ["data.builder.num_samples=480", "+data.builder.shard_size=40"], "shards/part-*.json",
     "volume_index.csv"),
], ids=["detection", "3d"])
def test_kill_9_of_prepare_leaves_no_worker_and_the_rerun_gives_the_same_index(tmp_path, data, overrides, marker,
                                                                                index):
    """Both synthetic builders run on the shared runner: SIGKILL of ``python prepare.py data=... workers=2``
    mid-build leaves no worker and no index, and rerunning the command completes an index byte-identical to an
    uninterrupted in-process build's (``workers=1``)."""
    import subprocess
    import sys

    from tests.test_runner import kill_mid_run

    root = Path(__file__).resolve().parents[1]

    def argv(data_dir: Path, workers: int) -> list[str]:
        return [sys.executable, "prepare.py", f"data={data}", f"paths.data_dir={data_dir}",
                f"data.builder.workers={workers}", *overrides]

    kill_mid_run(argv(tmp_path / "killed", 2), root, lambda: any((tmp_path / "killed").rglob(marker)),
                 "build")  # a first group / shard is done: the build is in the middle
    (folder,) = [p.parent.parent for p in (tmp_path / "killed").rglob(marker)][:1]
    assert not (folder / index).exists()  # the index is written last
    for data_dir, workers_n in ((tmp_path / "killed", 2), (tmp_path / "whole", 1)):
        done = subprocess.run(argv(data_dir, workers_n), cwd=root, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    (whole,) = [p for p in (tmp_path / "whole").rglob(index)]
    assert (folder / index).read_bytes() == whole.read_bytes()
