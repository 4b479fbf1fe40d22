"""The sharded store of encoded crops (data.crop_store=encoded) and the crop cache's free-disk check."""
from __future__ import annotations

import collections
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import faceforge.data.detection.crop_cache as crop_cache_module
from faceforge.data.core.image_io import read_rgb_image, resize_image
from faceforge.data.detection.crop_cache import CropCache, CropCacheError
from faceforge.data.detection.crop_store import EncodedCropStore, make_crop_store
from faceforge.data.detection.datamodule import FaceDataModule
from faceforge.data.detection.face_index import FaceIndex, StringColumn
from faceforge.data.detection.synthetic import build_synthetic_detection
from faceforge.errors import FaceforgeError

SIZE = 32


@pytest.fixture(scope="module")
def synth_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 videos x 3 frames at 32 px (JPEG-compressed fakes and PNG crops as the generator writes them)."""
    out = tmp_path_factory.mktemp("synth_store") / "faces"
    build_synthetic_detection(out, num_videos=8, frames_per_video=3, image_size=SIZE, seed=5)
    return out


@pytest.fixture()
def synth(synth_master: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "faces"
    shutil.copytree(synth_master, dst)
    return dst


def _fake_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(crop_cache_module.shutil, "disk_usage", lambda path: usage(10 * free + 1, 0, free))


def test_a_stored_crop_equals_the_decoded_source_file(synth: Path) -> None:
    index = FaceIndex.read(synth)
    store = EncodedCropStore(index, image_size=SIZE, shard_bytes=4096).ensure()
    assert store.built and not store.errors and store.path.parent == synth / "cache"
    assert len(store.shard_ranges()) > 1  # small shards: several files
    for i in range(len(index)):
        assert store.encoded(i) == index.crop_file(i).read_bytes()  # the file's bytes, unchanged
        np.testing.assert_array_equal(store.get(i), read_rgb_image(index.crop_file(i)))
    # another size: the decode resized with the memmap cache's rule, so both stores serve the same pixels
    small = EncodedCropStore(index, image_size=16, shard_bytes=4096).ensure()
    assert small.path == store.path and not small.built  # the stored bytes do not depend on the size
    np.testing.assert_array_equal(small.get(4), resize_image(read_rgb_image(index.crop_file(4)), 16))
    np.testing.assert_array_equal(small.get(4), CropCache(index, image_size=16).ensure().get(4))
    # picklable without its memory maps; rows_for maps a subset to store rows
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.get(5), store.get(5))
    np.testing.assert_array_equal(store.rows_for(index.select(np.array([6, 1]))), [6, 1])  # same vocabulary: codes
    np.testing.assert_array_equal(store.rows_for(FaceIndex.read(synth).select(np.array([6, 1]))), [6, 1])  # strings
    other = index.select([0, 1])
    other.columns["crop_path"] = StringColumn.from_strings(["crops/nope.png", "x.png"])
    with pytest.raises(CropCacheError, match="2 crops are not in the crop store"):
        store.rows_for(other)


def test_build_is_deterministic_and_resumes_after_a_kill(synth: Path, tmp_path: Path) -> None:
    index = FaceIndex.read(synth)
    full = EncodedCropStore(index, image_size=SIZE, shard_bytes=4096, cache_dir=tmp_path / "a").ensure()
    shards = sorted(p.name for p in full.path.glob("shard_*.bin"))
    # a killed build: store.json and the last shard missing, a stray temporary file left
    other = EncodedCropStore(index, image_size=SIZE, shard_bytes=4096, cache_dir=tmp_path / "b").ensure()
    (other.path / "store.json").unlink()
    last = other.path / shards[-1]
    last.unlink()
    (other.path / f".{shards[-1]}.abc.bin.tmp").write_bytes(b"partial")
    kept = {p.name: p.stat().st_mtime_ns for p in other.path.glob("shard_*.bin")}
    again = EncodedCropStore(index, image_size=SIZE, shard_bytes=4096, cache_dir=tmp_path / "b")
    assert not again.is_built()
    again.ensure()
    assert again.built and last.is_file()
    assert {p.name: p.stat().st_mtime_ns for p in again.path.glob("shard_*.bin") if p.name in kept} == kept
    files = sorted(p.name for p in full.path.iterdir())
    assert files == sorted(p.name for p in again.path.iterdir() if not p.name.endswith(".tmp"))
    for name in files:  # byte-identical to an uninterrupted build
        assert (again.path / name).read_bytes() == (full.path / name).read_bytes(), name
    np.testing.assert_array_equal(again.get(len(index) - 1), full.get(len(index) - 1))


def test_unreadable_crop_is_listed_and_a_changed_crop_gives_a_new_store(synth: Path) -> None:
    index = FaceIndex.read(synth)
    index.crop_file(2).write_bytes(b"not an image")
    store = EncodedCropStore(index, image_size=SIZE).ensure()
    assert set(store.errors) == {2} and not store.valid[2] and store.valid.sum() == len(index) - 1
    with pytest.raises(CropCacheError, match="unreadable"):
        store.get(2)
    assert EncodedCropStore(FaceIndex.read(synth), image_size=SIZE).ensure().errors == store.errors  # side-car
    pixels = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(index.crop_file(2), format="PNG")
    fixed = EncodedCropStore(FaceIndex.read(synth), image_size=SIZE).ensure()
    assert fixed.path != store.path and not fixed.errors
    np.testing.assert_array_equal(fixed.get(2), pixels)


def test_memmap_cache_refuses_when_the_disk_is_too_small(synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = FaceIndex.read(synth)
    needed = len(index) * SIZE * SIZE * 3
    _fake_disk(monkeypatch, free=needed - 1)
    cache = CropCache(index, image_size=SIZE)
    with pytest.raises(CropCacheError) as err:
        cache.ensure()
    msg = str(err.value)
    assert isinstance(err.value, FaceforgeError)
    assert str(synth / "cache") in msg and f"needs {needed} bytes" in msg and f"only {needed - 1} bytes" in msg
    assert "data.crop_store=encoded" in msg
    assert not cache.path.exists() and not cache.meta_path.exists()
    # the encoded store of the same crops is far smaller than the uint8 memmap here and fits
    store = EncodedCropStore(index, image_size=SIZE).ensure()
    assert store.built and sum(p.stat().st_size for p in store.path.iterdir()) < needed
    # enough space: the memmap cache builds
    _fake_disk(monkeypatch, free=needed)
    assert CropCache(index, image_size=SIZE).ensure().built


def test_encoded_store_refuses_when_the_disk_is_too_small(synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = FaceIndex.read(synth)
    _fake_disk(monkeypatch, free=100)
    with pytest.raises(CropCacheError, match="encoded crop store .* but .* has only 100 bytes"):
        EncodedCropStore(index, image_size=SIZE).ensure()


def test_datamodule_serves_the_same_batches_from_either_store(synth: Path) -> None:
    with pytest.raises(ValueError, match="crop_store must be one of"):
        FaceDataModule("synthetic", str(synth), crop_store="zip")
    batches = {}
    for kind in ("memmap", "encoded"):
        dm = FaceDataModule("synthetic", str(synth), image_size=SIZE, batch_size=5, crop_store=kind, seed=0)
        dm.setup("fit")
        assert dm.report["cache"]["kind"] == kind
        batches[kind] = next(iter(dm.val_dataloader()))
    assert torch.equal(batches["memmap"]["image"], batches["encoded"]["image"])
    assert isinstance(make_crop_store("encoded", FaceIndex.read(synth), image_size=SIZE), EncodedCropStore)
    with pytest.raises(ValueError, match="unknown crop store"):
        make_crop_store("zip", FaceIndex.read(synth))
