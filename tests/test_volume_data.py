"""Tests of the VRN data path: the thesis augmentation (faceforge.data.reconstruction.augment) and VolumeDataModule.

The samples come from the synthetic 3D builder (exact ground truth: its landmarks are points of the voxelised
surface), so consistency can be checked exactly: after an augmentation the landmarks must still sit on the volume's
footprint and under its surface, on the same image features, and a flip must renumber them left/right.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from faceforge.data.reconstruction.augment import (
    FLIP_PERMUTATION_68,
    AugmentationConfigError,
    AugmentationParams,
    VolumeAugmentation,
    affine_matrix,
    apply_augmentation,
    warp_runs,
)
from faceforge.data.reconstruction.codec import decode_runs
from faceforge.data.reconstruction.datamodule import VolumeDataError, VolumeDataModule
from faceforge.data.reconstruction.synthetic import build_synthetic_reconstruction
from faceforge.geometry.volume_mesh import sample_image_bilinear

SIZE = 64
THESIS = {"rotation_deg": 45.0, "translation_px": 15.0, "reference_size": 192, "scale": [0.85, 1.15],
          "flip_p": 0.5, "colour_scale": [0.6, 1.4]}


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic3d")
    build_synthetic_reconstruction(out, num_samples=20, size=SIZE, depth=SIZE, seed=3)
    return out


@pytest.fixture(scope="module")
def datamodule(volumes: Path) -> VolumeDataModule:
    dm = VolumeDataModule("synthetic_3d", str(volumes), batch_size=4, augment=THESIS, seed=1)
    dm.prepare_data()
    dm.setup()
    return dm


def _sample(dm: VolumeDataModule, i: int):
    store = dm.store
    return (store.read_image(i), *store.read_runs(i), store.read_landmarks(i), store.read_landmarks_3d(i))


# ------------------------------------------------------------------ augmentation
def test_flip_permutation_is_the_ibug_mirror() -> None:
    perm = np.array(FLIP_PERMUTATION_68)
    assert sorted(perm.tolist()) == list(range(68))
    assert np.array_equal(perm[perm], np.arange(68))  # an involution
    pairs = {0: 16, 8: 8, 17: 26, 21: 22, 27: 27, 30: 30, 31: 35, 33: 33, 36: 45, 39: 42, 37: 44, 41: 46,
             48: 54, 51: 51, 57: 57, 55: 59, 60: 64, 62: 62, 66: 66, 65: 67}
    for a, b in pairs.items():
        assert perm[a] == b and perm[b] == a


def test_neutral_augmentation_changes_nothing(datamodule: VolumeDataModule) -> None:
    image, start, stop, lmk, lmk3 = _sample(datamodule, 0)
    out = apply_augmentation(image, start, stop, SIZE, AugmentationParams(), landmarks=lmk, landmarks_3d=lmk3)
    assert np.array_equal(out.image, image)
    assert np.array_equal(out.start, start) and np.array_equal(out.stop, stop)
    np.testing.assert_allclose(out.landmarks, lmk, atol=1e-4)
    np.testing.assert_allclose(out.landmarks_3d, lmk3, atol=1e-4)


def test_quarter_turn_rotates_the_maps_exactly(datamodule: VolumeDataModule) -> None:
    _, start, stop, _, _ = _sample(datamodule, 1)
    params = AugmentationParams(angle=math.pi / 2)
    s0, s1, clipped = warp_runs(start, stop, affine_matrix(params, SIZE), SIZE, 1.0)
    assert clipped == 0
    # p' = R (p - c) + c with R = [[0, -1], [1, 0]]: column (u, v) moves to (c + c - v, u) -> rot90 of the array
    assert np.array_equal(s1, np.rot90(stop, k=-1)) or np.array_equal(s1, np.rot90(stop, k=1))
    assert np.array_equal(s1, np.rot90(stop, k=-1))
    assert np.array_equal(s0, np.rot90(start, k=-1))


def test_flip_mirrors_everything_and_renumbers_landmarks(datamodule: VolumeDataModule) -> None:
    image, start, stop, lmk, lmk3 = _sample(datamodule, 2)
    out = apply_augmentation(image, start, stop, SIZE, AugmentationParams(flip=True), landmarks=lmk,
                             landmarks_3d=lmk3)
    assert np.array_equal(out.image, image[:, ::-1])
    assert np.array_equal(out.stop, stop[:, ::-1]) and np.array_equal(out.start, start[:, ::-1])
    mirrored = np.c_[SIZE - 1 - lmk[:, 0], lmk[:, 1]]
    np.testing.assert_allclose(out.landmarks, mirrored[list(FLIP_PERMUTATION_68)], atol=1e-4)
    np.testing.assert_allclose(out.landmarks_3d[:, 2], lmk3[list(FLIP_PERMUTATION_68), 2], atol=1e-4)
    # semantics survive: point 36 is the outer corner of the eye on the image's left, 45 on its right, and the
    # renumbered eye corners lie on the mirrored eye: 36 left of 39 left of 42 left of 45 for an upright face
    for before, after in ((lmk, out.landmarks),):
        order = [36, 39, 42, 45] if before[36, 0] < before[45, 0] else [45, 42, 39, 36]
        assert np.all(np.diff(before[order, 0]) > 0)
        assert np.all(np.diff(after[order, 0]) > 0)


def test_scale_scales_depth_with_the_half_level_rule() -> None:
    start = np.zeros((8, 8), dtype=np.uint8)
    stop = np.full((8, 8), 20, dtype=np.uint8)
    stop[0, 0] = 0  # an empty column stays empty wherever it goes
    m = affine_matrix(AugmentationParams(scale=1.1), 8)
    s0, s1, clipped = warp_runs(start, stop, m, 21, 1.1)
    assert clipped > 0 and s1.max() == 21  # floor(1.1 * 19.5) + 1 = 22 > D = 21: clipped
    s0, s1, clipped = warp_runs(start, stop, m, 200, 1.1)
    assert clipped == 0 and set(np.unique(s1).tolist()) <= {0, 22} and np.all(s0 == 0)
    s0, s1, _ = warp_runs(start, stop, affine_matrix(AugmentationParams(scale=0.9), 8), 200, 0.9)
    assert set(np.unique(s1).tolist()) <= {0, 18}  # floor(0.9 * 19.5) + 1


@pytest.mark.parametrize("seed", range(6))
def test_random_augmentation_keeps_landmarks_on_the_face(datamodule: VolumeDataModule, seed: int) -> None:
    aug = VolumeAugmentation(**THESIS)
    for i in range(len(datamodule.store)):
        image, start, stop, lmk, lmk3 = _sample(datamodule, i)
        out = aug(image, start, stop, SIZE, np.random.default_rng([seed, i]), landmarks=lmk, landmarks_3d=lmk3)
        p = out.landmarks.astype(np.float64)
        col = np.rint(p).astype(int)
        inside = np.all((col >= 1) & (col < SIZE - 1), axis=1)
        if inside.sum() < 10:
            continue
        # every landmark that stays in the crop sits on the warped volume's footprint (1 px tolerance for the
        # nearest-column resampling) and on or behind its surface (depth scaled with the in-plane scale)
        footprint = out.stop > out.start
        grown = footprint.copy()
        grown[1:] |= footprint[:-1]
        grown[:-1] |= footprint[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        assert grown[col[inside, 1], col[inside, 0]].all(), f"sample {i}: a landmark left the footprint"
        top = np.zeros_like(out.stop, dtype=np.float64)
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                top = np.maximum(top, np.roll(np.roll(out.stop.astype(np.float64), dv, 0), du, 1))
        k = out.landmarks_3d[inside, 2]
        assert np.all(k <= top[col[inside, 1], col[inside, 0]] + 1.0), f"sample {i}: a landmark is above the face"
        # ... and on the same image features: the augmented image at the moved landmarks equals the original at
        # the original landmarks times the colour factors (bilinear both ways), far better than without moving them
        perm = list(FLIP_PERMUTATION_68) if out.params.flip else list(range(68))
        src = lmk[perm][inside]
        orig = sample_image_bilinear(image, src)[:, :3].astype(np.float64) * np.asarray(out.params.colour)
        moved = sample_image_bilinear(out.image, p[inside])[:, :3].astype(np.float64)
        unmoved = sample_image_bilinear(out.image, src)[:, :3].astype(np.float64)
        err = np.abs(moved - np.clip(orig, 0, 255)).mean()
        assert err < 14.0, f"sample {i}: image and landmarks disagree by {err:.1f} grey levels"
        if np.abs(p[inside] - src).max() > 6:
            assert err < 0.6 * np.abs(unmoved - np.clip(orig, 0, 255)).mean()


def test_augmentation_is_seeded(datamodule: VolumeDataModule) -> None:
    aug = VolumeAugmentation(**THESIS)
    image, start, stop, lmk, _ = _sample(datamodule, 3)
    a = aug(image, start, stop, SIZE, np.random.default_rng(7), landmarks=lmk)
    b = aug(image, start, stop, SIZE, np.random.default_rng(7), landmarks=lmk)
    c = aug(image, start, stop, SIZE, np.random.default_rng(8), landmarks=lmk)
    assert a.params == b.params and np.array_equal(a.image, b.image) and np.array_equal(a.stop, b.stop)
    assert a.params != c.params
    ranges = [aug.sample(np.random.default_rng(s), 192) for s in range(300)]
    assert max(abs(p.angle) for p in ranges) <= math.radians(45) + 1e-9
    assert max(abs(p.angle) for p in ranges) > math.radians(40)
    assert all(0.85 <= p.scale <= 1.15 and abs(p.tx) <= 15 and abs(p.ty) <= 15 for p in ranges)
    assert all(0.6 <= c <= 1.4 for p in ranges for c in p.colour)
    assert 0.35 < np.mean([p.flip for p in ranges]) < 0.65


def test_augmentation_config_errors() -> None:
    assert VolumeAugmentation.from_config(None) is None
    with pytest.raises(AugmentationConfigError, match="unknown augment keys"):
        VolumeAugmentation.from_config({"rotation": 45})
    with pytest.raises(AugmentationConfigError, match="scale"):
        VolumeAugmentation(scale=[1.2, 0.8])
    with pytest.raises(AugmentationConfigError, match="flip_p"):
        VolumeAugmentation(flip_p=2.0)


# ------------------------------------------------------------------ data module
def test_datamodule_serves_splits_and_batches(datamodule: VolumeDataModule, volumes: Path) -> None:
    dm = datamodule
    assert dm.has_split("train") and dm.has_split("val") and dm.has_split("test")
    assert dm.report["splits"] == {"train": 16, "val": 2, "test": 2}
    assert (dm.size, dm.depth) == (SIZE, SIZE)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (2, 3, SIZE, SIZE)
    assert batch["start"].dtype == torch.uint8 and batch["stop"].shape == (2, SIZE, SIZE)
    assert batch["landmarks"].shape == (2, 68, 2) and batch["frame"].shape == (2, 5)
    assert torch.isfinite(batch["frame"]).all() and torch.isfinite(batch["yaw"]).all()
    assert batch["depth"].tolist() == [SIZE, SIZE]
    # validation samples are served as stored: the decoded runs are the stored volume
    for j in range(2):
        sid = dm.sample_ids["val"][int(batch["index"][j])]
        vol = dm.store.read_volume(sid)
        assert torch.equal(decode_runs(batch["start"][j], batch["stop"][j], SIZE), vol)
        np.testing.assert_allclose(batch["landmarks"][j].numpy(), dm.store.read_landmarks(sid), atol=1e-5)
    # training samples are augmented (no frame), a function of (seed, epoch, sample) whatever torch's global seed
    torch.manual_seed(0)
    a = next(iter(dm.train_dataloader()))
    torch.manual_seed(1)
    b = next(iter(dm.train_dataloader()))
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)  # Lightning does this at every epoch start
    c = next(iter(loader))
    assert torch.isnan(a["frame"]).all()
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["stop"], b["stop"])
    assert not torch.equal(a["image"], c["image"])


def test_datamodule_builds_when_the_index_is_missing(tmp_path: Path) -> None:
    calls = []

    def builder(output_dir: Path) -> None:
        calls.append(output_dir)
        build_synthetic_reconstruction(output_dir, num_samples=6, size=32, depth=32, seed=0)

    dm = VolumeDataModule("s", str(tmp_path / "v"), builder=builder, augment=None, same_split_for_all=True,
                          network={"image_size": 32, "volume_depth": 32})
    assert not dm.has_split("train")
    dm.prepare_data()
    dm.prepare_data()  # the index exists now: no second build
    assert calls == [tmp_path / "v"]
    with pytest.warns(UserWarning, match="same_split_for_all"):
        dm.setup()
    assert dm.report["splits"] == {"train": 6, "val": 6, "test": 6}
    assert dm.datasets["train"].augment is None


def test_datamodule_errors(tmp_path: Path, volumes: Path) -> None:
    dm = VolumeDataModule("w300lp", str(tmp_path / "none"))
    with pytest.raises(VolumeDataError, match="faceforge-make-volumes"):
        dm.prepare_data()
    with pytest.raises(VolumeDataError, match="no volume index"):
        dm.setup()
    bad = VolumeDataModule("s", str(volumes), network={"image_size": 192, "volume_depth": 200})
    with pytest.raises(VolumeDataError, match="image_size=192"):
        bad.setup()
    lazy = VolumeDataModule("s", str(tmp_path / "x"), builder=partial(lambda output_dir: None))
    with pytest.raises(VolumeDataError, match="did not write"):
        lazy.prepare_data()
    only_test = VolumeDataModule("s", str(volumes), max_samples=1)
    only_test.setup()
    assert only_test.report["splits"] == {"train": 1, "val": 1, "test": 1}


def test_datamodule_refuses_volumes_from_another_root(tmp_path: Path) -> None:
    import csv

    out = tmp_path / "v"
    build_synthetic_reconstruction(out, num_samples=6, size=32, depth=32, seed=0)
    index = out / "volume_index.csv"
    with open(index, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:  # pretend the samples came from a 300W-LP folder
        r["image_path"] = str(tmp_path / "300W_LP" / "IBUG" / f"{r['sample_id'].split('/')[-1]}.jpg")
    with open(index, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    VolumeDataModule("w300lp", str(out), root=str(tmp_path / "300W_LP")).setup()
    with pytest.raises(VolumeDataError, match="not from data.root"):
        VolumeDataModule("w300lp", str(out), root=str(tmp_path / "other")).setup()
