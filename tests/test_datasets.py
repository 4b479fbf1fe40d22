"""Image reading, the crop Dataset, the crop cache and the FaceDataModule (on small synthetic indexes and the real
DFDC face crops of the fixtures)."""
from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from faceforge.data.core.image_io import (
    ImageConversionWarning,
    ImageReadError,
    ImageReadStats,
    read_rgb_image,
    resize_image,
)
from faceforge.data.detection.crop_cache import CropCache
from faceforge.data.detection.datamodule import FaceDataError, FaceDataModule, SameSplitWarning
from faceforge.data.detection.face_index import FaceIndex
from faceforge.data.detection.frames import FaceCropDataset, TransformOutputError
from faceforge.data.detection.synthetic import build_synthetic_detection

SIZE = 64


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def synth_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 videos (6 real, 6 fake) x 3 frames at 64 px; copied per test that writes into it."""
    out = tmp_path_factory.mktemp("synth") / "faces"
    build_synthetic_detection(out, num_videos=12, frames_per_video=3, image_size=SIZE, seed=3)
    return out


@pytest.fixture()
def synth(synth_master: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "faces"
    shutil.copytree(synth_master, dst)
    return dst


def _dm(faces: Path, **kw) -> FaceDataModule:
    kw.setdefault("image_size", SIZE)
    kw.setdefault("batch_size", 4)
    return FaceDataModule("synthetic", str(faces), **kw)


def _rgb(h: int = 20, w: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------- image_io
def test_read_rgb_passes_rgb_through(tmp_path: Path) -> None:
    img = _rgb()
    Image.fromarray(img).save(tmp_path / "a.png")
    stats = ImageReadStats()
    out = read_rgb_image(tmp_path / "a.png", stats)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, img)
    assert stats.total == 0


def test_read_grayscale_is_replicated_and_reported(tmp_path: Path) -> None:
    gray = _rgb()[:, :, 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    stats = ImageReadStats()
    with pytest.warns(ImageConversionWarning, match="g.png"):
        out = read_rgb_image(tmp_path / "g.png", stats)
    assert out.shape == (20, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)
    assert stats.conversions["grayscale"] == 1 and str(tmp_path / "g.png") in stats.examples["grayscale"]


def test_read_16bit_grayscale_is_scaled(tmp_path: Path) -> None:
    v = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "g16.png")
    stats = ImageReadStats()
    with pytest.warns(ImageConversionWarning):
        out = read_rgb_image(tmp_path / "g16.png", stats)
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255])
    assert stats.conversions["gray16"] == 1


def test_read_rgba_composites_on_black(tmp_path: Path) -> None:
    rgb = _rgb(4, 4)
    alpha = np.full((4, 4), 255, np.uint8)
    alpha[0, 0], alpha[1, 1] = 0, 128
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "a.png")
    stats = ImageReadStats()
    with pytest.warns(ImageConversionWarning, match="alpha"):
        out = read_rgb_image(tmp_path / "a.png", stats)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])                      # transparent -> black
    np.testing.assert_array_equal(out[1, 1], np.rint(rgb[1, 1].astype(float) * 128 / 255))  # half -> half intensity
    np.testing.assert_array_equal(out[2:], rgb[2:])                          # opaque -> unchanged
    assert stats.conversions["alpha"] == 1


def test_read_palette_expands_to_rgb(tmp_path: Path) -> None:
    img = Image.fromarray(_rgb()).quantize(colors=8)
    img.save(tmp_path / "p.png")
    expected = np.asarray(img.convert("RGB"))
    stats = ImageReadStats()
    with pytest.warns(ImageConversionWarning):
        out = read_rgb_image(tmp_path / "p.png", stats)
    np.testing.assert_array_equal(out, expected)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 8
    assert stats.conversions["palette"] == 1


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_raises_error_naming_it(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(_rgb(64, 64)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut") as info:
        read_rgb_image(path)
    assert info.value.path == str(path) and "truncated" in info.value.reason
    assert pickle.loads(pickle.dumps(info.value)).path == str(path)  # crosses DataLoader worker boundaries


def test_missing_and_non_image_files_raise(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="does not exist"):
        read_rgb_image(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="text.png"):
        read_rgb_image(tmp_path / "text.png")
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_rgb_image(tmp_path)


def test_resize_image() -> None:
    img = _rgb(30, 20)
    for interp in ("area", "linear", "cubic", "nearest"):
        out = resize_image(img, 16, interp)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert resize_image(img, (30, 20)) is img
    # PIL NEAREST on an exact 2x enlargement repeats every pixel
    np.testing.assert_array_equal(resize_image(img, (60, 40), "nearest")[::2, ::2], img)
    with pytest.raises(ValueError, match="interpolation"):
        resize_image(img, 16, "lanczos")


# ---------------------------------------------------------------------------------------------------- dataset
def _lookups(index: FaceIndex) -> tuple[dict[str, int], dict[str, int]]:
    vids = sorted(set(index.columns["video_id"].tolist()))
    meths = sorted(set(index.columns["method"].tolist()))
    return {v: i for i, v in enumerate(vids)}, {m: i for i, m in enumerate(meths)}


def test_dataset_items_and_default_collate(synth_master: Path) -> None:
    index = FaceIndex.read(synth_master)
    vl, ml = _lookups(index)
    ds = FaceCropDataset(index, vl, ml)
    item = ds[5]
    assert set(item) == {"image", "label", "video_idx", "method_idx", "index"}
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, SIZE, SIZE)
    for k in ("label", "video_idx", "method_idx", "index"):
        assert item[k].dtype == torch.int64 and item[k].ndim == 0
    assert int(item["index"]) == 5 and int(item["label"]) == index.columns["label"][5]
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), read_rgb_image(index.crop_file(5)))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, SIZE, SIZE) and batch["label"].shape == (4,)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_dataset_transform_contract(synth_master: Path) -> None:
    import albumentations as A

    index = FaceIndex.read(synth_master)
    vl, ml = _lookups(index)
    flip = FaceCropDataset(index, vl, ml, transform=A.HorizontalFlip(p=1.0))
    plain = FaceCropDataset(index, vl, ml)[0]["image"].numpy()
    np.testing.assert_array_equal(flip[0]["image"].numpy(), plain[:, :, ::-1])
    bad = FaceCropDataset(index, vl, ml, transform=A.Normalize())
    with pytest.raises(TransformOutputError, match="uint8"):
        bad[0]
    with pytest.raises(KeyError, match="video_id"):
        FaceCropDataset(index, {}, ml)


# ---------------------------------------------------------------------------------------------------- crop cache
def test_crop_cache_matches_decoded_pngs_and_is_reused(synth: Path) -> None:
    index = FaceIndex.read(synth)
    cache = CropCache(index, image_size=SIZE).ensure()
    assert cache.built and cache.path.parent == synth / "cache" and not cache.errors
    for i in (0, 7, len(index) - 1):
        np.testing.assert_array_equal(cache.get(i), read_rgb_image(index.crop_file(i)))
    # a smaller size: the PNG resized with the same rule
    small = CropCache(index, image_size=32).ensure()
    np.testing.assert_array_equal(small.get(3), resize_image(read_rgb_image(index.crop_file(3)), 32))
    # same index again: found, not rebuilt; picklable without the memmap
    again = CropCache(FaceIndex.read(synth), image_size=SIZE).ensure()
    assert not again.built and again.path == cache.path
    clone = pickle.loads(pickle.dumps(again))
    np.testing.assert_array_equal(clone.get(7), cache.get(7))
    # rows_for maps a subset (in any order) to cache rows
    sub = index.select(np.array([5, 2]))
    np.testing.assert_array_equal(cache.rows_for(sub), [5, 2])


def test_crop_cache_rebuilds_when_index_or_crop_changes(synth: Path) -> None:
    index = FaceIndex.read(synth)
    first = CropCache(index, image_size=SIZE).ensure()
    smaller = index.select(np.arange(1, len(index)))
    second = CropCache(smaller, image_size=SIZE).ensure()
    assert second.built and second.path != first.path
    np.testing.assert_array_equal(second.get(0), first.get(1))
    # rewriting a crop file (new pixels) changes the key, and the new cache holds the new pixels
    new_pixels = _rgb(SIZE, SIZE, seed=9)
    Image.fromarray(new_pixels).save(index.crop_file(1))
    third = CropCache(smaller, image_size=SIZE).ensure()
    assert third.built and third.path != second.path
    np.testing.assert_array_equal(third.get(0), new_pixels)


# ---------------------------------------------------------------------------------------------------- datamodule
def test_datamodule_splits_and_lookups(synth: Path) -> None:
    dm = _dm(synth)
    dm.prepare_data()
    dm.setup("fit")
    full = FaceIndex.read(synth)
    assert dm.video_ids == sorted(set(full.columns["video_id"].tolist()))
    assert dm.method_names == ["SynthBlend", "SynthSwap", "original"]
    splits = {s: dm.split_indexes[s] for s in ("train", "val", "test")}
    assert sum(len(ix) for ix in splits.values()) == len(full)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        for col in ("video_id", "source_id"):
            assert not set(splits[a].columns[col].tolist()) & set(splits[b].columns[col].tolist()), (a, b, col)
    for name, ds in (("train", dm.train_dataset), ("val", dm.val_dataset), ("test", dm.test_dataset)):
        ix = splits[name]
        for i in range(len(ds)):
            item = ds[i]
            assert dm.video_ids[int(item["video_idx"])] == ix.columns["video_id"][i]
            method = dm.method_names[int(item["method_idx"])]
            assert method == ix.columns["method"][i]
            assert int(item["label"]) == int(method != "original")
    assert dm.report["missing_crops"] == 0 and dm.report["cache"]["built_now"]
    assert dm.report["splits"]["train"]["faces"] == len(dm.train_dataset)
    # loaders: batches of uint8 images; train drops the last partial batch
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, SIZE, SIZE)
    assert dm.train_dataloader().drop_last and not dm.val_dataloader().drop_last
    n_val = sum(len(b["label"]) for b in dm.val_dataloader())
    assert n_val == len(dm.val_dataset)
    assert not dm.train_dataloader().persistent_workers  # num_workers = 0


def test_datamodule_without_cache_gives_same_pixels(synth: Path) -> None:
    a, b = _dm(synth), _dm(synth, cache_crops=False)
    for dm in (a, b):
        dm.setup("fit")
    assert b.cache is None and b.report["cache"] is None
    for i in (0, 3):
        torch.testing.assert_close(a.val_dataset[i]["image"], b.val_dataset[i]["image"])


def test_missing_and_unreadable_crops_are_skipped_and_counted(synth: Path) -> None:
    index = FaceIndex.read(synth)
    gone = index.crop_file(0)
    gone.unlink()
    broken = index.crop_file(4)
    broken.write_bytes(broken.read_bytes()[:100])
    dm = _dm(synth)
    with pytest.warns(UserWarning) as record:
        dm.setup("fit")
    messages = " ".join(str(w.message) for w in record)
    assert str(index.columns["crop_path"][0]) in messages and str(index.columns["crop_path"][4]) in messages
    assert dm.report["missing_crops"] == 1 and dm.report["missing_examples"] == [index.columns["crop_path"][0]]
    assert dm.report["unreadable_crops"] == 1 and index.columns["crop_path"][4] in dm.report["unreadable_examples"][0]
    served = sum(len(ix) for ix in dm.split_indexes.values())
    assert served == len(index) - 2
    assert dm.video_ids == sorted(set(index.columns["video_id"].tolist()))  # lookups cover the whole index


def test_same_split_for_all_warns_and_uses_every_row(synth: Path) -> None:
    dm = _dm(synth, same_split_for_all=True)
    with pytest.warns(SameSplitWarning, match="meaningless"):
        dm.setup()
    n = len(FaceIndex.read(synth))
    assert len(dm.train_dataset) == len(dm.val_dataset) == len(dm.test_dataset) == n
    assert dm.report["same_split_for_all"]


def test_methods_filter_keeps_original(synth: Path) -> None:
    dm = _dm(synth, methods=["SynthSwap"])
    dm.setup()
    kept = set()
    for ix in dm.split_indexes.values():
        kept |= set(ix.columns["method"].tolist())
    assert kept == {"SynthSwap", "original"}
    assert dm.report["filtered_by_method"] > 0
    assert dm.method_names == ["SynthBlend", "SynthSwap", "original"]  # indices stable across filters
    with pytest.raises(FaceDataError, match="NoSuchMethod"):
        _dm(synth, methods=["NoSuchMethod"]).setup()


def test_max_faces_per_video_subsamples_evenly(synth: Path) -> None:
    dm = _dm(synth, max_faces_per_video=2, same_split_for_all=True)
    with pytest.warns(SameSplitWarning):
        dm.setup()
    ix = dm.split_indexes["train"]
    n_videos = len(set(ix.columns["video_id"].tolist()))
    assert len(ix) == 2 * n_videos
    assert sorted(set(ix.columns["frame_index"].tolist())) == [0, 2]  # first and last of 3 frames
    assert dm.report["subsampled_away"] == n_videos


def test_balance_classes_sampler(tmp_path: Path) -> None:
    faces = tmp_path / "imbalanced"
    build_synthetic_detection(faces, num_videos=16, frames_per_video=2, image_size=32, fake_fraction=0.75,
                              val_fraction=0.25, test_fraction=0.0, seed=1)
    dm = FaceDataModule("synthetic", str(faces), batch_size=8, balance_classes=True, image_size=32, seed=5)
    dm.setup()
    labels = dm.train_dataset.labels
    assert labels.mean() > 0.65  # the data really is imbalanced
    sampler = dm.train_dataloader().sampler

    def epoch(e: int) -> list[int]:
        sampler.set_epoch(e)
        keys = list(sampler)
        assert all(k[0] == e for k in keys)  # (epoch, index) pairs: the dataset seeds its augmentation with both
        return [k[1] for k in keys]

    draws = np.concatenate([labels[epoch(e)] for e in range(200)])  # 200 epochs
    assert abs(draws.mean() - 0.5) < 0.05
    # seeded by (seed, epoch): the same sequence from a new loader, another one in the next epoch
    assert list(dm.train_dataloader().sampler) == list(dm.train_dataloader().sampler)
    assert epoch(3) == epoch(3) and epoch(3) != epoch(4)
    # no test split here: a clear error when asked
    assert dm.test_dataset is None
    with pytest.raises(FaceDataError, match="'test'"):
        dm.test_dataloader()


def test_empty_val_split_is_an_error(tmp_path: Path) -> None:
    faces = tmp_path / "noval"
    build_synthetic_detection(faces, num_videos=6, frames_per_video=1, image_size=32, val_fraction=0.0,
                              test_fraction=0.2, seed=0)
    with pytest.raises(FaceDataError, match=r"split 'val'.*noval"):
        FaceDataModule("synthetic", str(faces), image_size=32).setup()


def test_prepare_data_calls_builder_once(tmp_path: Path) -> None:
    calls: list[Path] = []

    def builder(output_dir: Path) -> None:
        calls.append(output_dir)
        build_synthetic_detection(output_dir, num_videos=6, frames_per_video=1, image_size=32, seed=0)

    faces = tmp_path / "built"
    dm = FaceDataModule("synthetic", str(faces), builder=builder, image_size=32)
    dm.prepare_data()
    dm.prepare_data()
    FaceDataModule("synthetic", str(faces), builder=builder, image_size=32).prepare_data()
    assert calls == [faces]
    dm.setup()
    assert len(dm.train_dataset) > 0


def test_no_index_and_no_builder_is_a_clear_error(tmp_path: Path) -> None:
    dm = FaceDataModule("ffpp", str(tmp_path / "nothing"))
    with pytest.raises(FaceDataError, match=r"nothing.*faceforge-extract-faces"):
        dm.prepare_data()
    with pytest.raises(FaceDataError, match="faceforge-extract-faces"):
        dm.setup()
    with pytest.raises(FaceDataError, match="builder"):
        FaceDataModule("x", str(tmp_path / "lazy"), builder=lambda output_dir: None).prepare_data()


def test_hyperparameters_are_primitive(synth: Path) -> None:
    import albumentations as A

    dm = _dm(synth, builder=lambda output_dir: None, train_transform=A.HorizontalFlip(), methods=("SynthSwap",))
    hp = dict(dm.hparams)
    assert "builder" not in hp and "train_transform" not in hp and hp["methods"] == ["SynthSwap"]
    path = synth / "hp.pt"
    torch.save(hp, path)
    assert torch.load(path, weights_only=True) == hp


def test_workers_read_the_cache(synth: Path) -> None:
    import albumentations as A

    dm = _dm(synth, num_workers=2, persistent_workers=True, train_transform=A.HorizontalFlip(p=0.5))
    dm.setup()
    loader = dm.train_dataloader()
    assert loader.persistent_workers
    seen = torch.cat([b["index"] for b in loader])
    assert len(seen) == (len(dm.train_dataset) // 4) * 4 and len(set(seen.tolist())) == len(seen)


# ---------------------------------------------------------------------------------------------------- real crops
def test_real_dfdc_face_crops_through_dataset(fixtures_dir: Path, tmp_path: Path) -> None:
    src = fixtures_dir / "videos" / "dfdc_face_crops"
    records = []
    for label_name, label in (("fake", 1), ("real", 0)):
        for f in sorted((src / label_name).glob("*.png")):
            video, frame, rank = f.stem.split("-")
            rel = f"crops/{label_name}/{f.name}"
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, tmp_path / rel)
            records.append({
                "video_id": f"dfdc/{label_name}/{video}", "dataset": "dfdc", "method": "DFDC" if label else "original",
                "compression": "", "split": "train", "label": label, "source_id": f"dfdc/{video}",
                "video_path": f"{video}.mp4", "num_frames": 300, "frame_index": int(frame), "face_rank": int(rank),
                "det_prob": 1.0, "x1": 0.0, "y1": 0.0, "x2": 1.0, "y2": 1.0, "landmarks": "", "crop_path": rel})
    assert len(records) >= 10
    index = FaceIndex.from_records(records, root=tmp_path)
    index.write()
    index = FaceIndex.read(tmp_path)
    vl, ml = _lookups(index)
    plain = FaceCropDataset(index, vl, ml, image_size=96)
    cache = CropCache(index, image_size=96).ensure()
    cached = FaceCropDataset(index, vl, ml, cache=cache)
    assert not cache.errors
    batch = next(iter(DataLoader(plain, batch_size=len(plain))))
    assert batch["image"].shape == (len(plain), 3, 96, 96) and batch["image"].dtype == torch.uint8
    assert batch["label"].tolist() == [r["label"] for r in records]
    for i in range(len(index)):
        original = np.asarray(Image.open(src / ("fake" if records[i]["label"] else "real") /
                                         Path(records[i]["crop_path"]).name).convert("RGB"))
        expected = resize_image(original, 96)
        np.testing.assert_array_equal(plain[i]["image"].permute(1, 2, 0).numpy(), expected)
        np.testing.assert_array_equal(cached[i]["image"].numpy(), plain[i]["image"].numpy())
        assert original.std() > 5  # real face content, not a blank image
    # a real crop decoded at its own size
    assert read_rgb_image(index.crop_file(0)).shape[2] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real RGB PNGs need no conversion
        read_rgb_image(index.crop_file(1))
