"""Tests of faceforge.data.reconstruction.codec and .store: run encoding, decoding, the HDF5 store, its failures."""
from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from faceforge.data.reconstruction.codec import (
    DENSE_BYTES_PER_SAMPLE,
    EncodedVolume,
    VolumeEncodingError,
    decode_runs,
    decode_volume,
    decode_volume_numpy,
    encode_volume,
)
from faceforge.data.reconstruction.store import VolumeSample, VolumeStore, VolumeStoreError, VolumeStoreWriter
from faceforge.geometry.volume_frame import VolumeFrame
from faceforge.geometry.voxelize import face_columns, voxelize_face


def _random_runs(rng: np.random.Generator, depth: int = 200, size: int = 192, start_zero: bool = False):
    a = rng.integers(0, depth + 1, (size, size))
    b = rng.integers(0, depth + 1, (size, size))
    start, stop = np.minimum(a, b), np.maximum(a, b)
    if start_zero:
        start[:] = 0
    start[:5], stop[:5] = 0, 0  # empty columns
    start[5:8], stop[5:8] = 0, depth  # full columns
    return start, stop


def _dense(start: np.ndarray, stop: np.ndarray, depth: int) -> np.ndarray:
    k = np.arange(depth)[:, None, None]
    return (k >= start) & (k < stop)


@pytest.mark.parametrize("start_zero", [True, False])
def test_encode_decode_roundtrip_exact(start_zero: bool) -> None:
    rng = np.random.default_rng(0)
    start, stop = _random_runs(rng, start_zero=start_zero)
    vol = _dense(start, stop, 200)
    enc = encode_volume(vol)
    assert enc.start.dtype == np.uint8 and enc.shape == (200, 192, 192) and enc.nbytes == 2 * 192 * 192
    np.testing.assert_array_equal(enc.start[stop > start], start[stop > start])
    np.testing.assert_array_equal(enc.stop[stop > start], stop[stop > start])
    assert np.all(enc.stop[stop == start] == 0) and enc.filled_voxels == int(vol.sum())
    dec = decode_volume(enc)
    assert dec.dtype == torch.float32 and tuple(dec.shape) == (200, 192, 192)
    assert torch.equal(dec, torch.from_numpy(vol.astype(np.float32)))
    np.testing.assert_array_equal(decode_volume_numpy(enc), vol)
    assert torch.equal(decode_volume(enc, dtype=torch.bool), torch.from_numpy(vol))
    assert torch.equal(decode_volume(enc, dtype=torch.bfloat16).float(), dec)  # dtype NumPy lacks
    out = torch.full((200, 192, 192), 7.0)
    assert decode_volume(enc, out=out) is out and torch.equal(out, dec)
    # 0/1 numbers and CPU tensors encode too
    assert encode_volume(vol.astype(np.uint8)) == enc
    assert encode_volume(torch.from_numpy(vol)) == enc


def test_decode_runs_batched() -> None:
    rng = np.random.default_rng(1)
    runs = [_random_runs(rng, depth=30, size=12) for _ in range(3)]
    start = torch.from_numpy(np.stack([r[0] for r in runs]).astype(np.uint8))
    stop = torch.from_numpy(np.stack([r[1] for r in runs]).astype(np.uint8))
    expected = torch.from_numpy(np.stack([_dense(a, b, 30) for a, b in runs]).astype(np.float32))
    assert torch.equal(decode_runs(start, stop, 30), expected)
    # non-contiguous output view and the generic (non-NumPy) path give the same
    out = torch.zeros(3, 12, 12, 30).permute(0, 3, 1, 2)
    assert torch.equal(decode_runs(start, stop, 30, out=out), expected)
    assert torch.equal(decode_runs(start, stop, 30, dtype=torch.bfloat16).float(), expected)
    with pytest.raises(ValueError, match="one shape"):
        decode_runs(start, stop[:2], 30)


def test_deep_volumes_use_uint16() -> None:
    start, stop = _random_runs(np.random.default_rng(2), depth=300, size=8)
    enc = encode_volume(_dense(start, stop, 300))
    assert enc.stop.dtype == np.uint16 and enc.stop.max() == 300
    np.testing.assert_array_equal(decode_volume_numpy(enc), _dense(start, stop, 300))


def test_encode_rejects_what_it_cannot_store() -> None:
    vol = np.zeros((10, 4, 5), dtype=bool)
    vol[2:5, 1, 3] = True
    vol[7:9, 1, 3] = True  # a second run in column (1, 3)
    vol[0:3, 2, 2] = True
    with pytest.raises(VolumeEncodingError, match=r"1 column\(s\).*v=1, u=3.*2 separate runs"):
        encode_volume(vol)
    with pytest.raises(VolumeEncodingError, match="binary"):
        encode_volume(np.full((2, 2, 2), 2, dtype=np.uint8))
    with pytest.raises(VolumeEncodingError, match=r"\(D, H, W\)"):
        encode_volume(np.zeros((4, 4), dtype=bool))
    with pytest.raises(VolumeEncodingError, match="start <= stop"):
        EncodedVolume(start=np.full((2, 2), 3), stop=np.full((2, 2), 2), depth=5)
    with pytest.raises(VolumeEncodingError, match="stop <= depth"):
        EncodedVolume(start=np.zeros((2, 2)).astype(int), stop=np.full((2, 2), 6), depth=5)


def test_voxelised_faces_encode_to_their_height_map() -> None:
    """The generation shortcut (EncodedVolume.from_heights) equals encode_volume of the dense voxelisation."""
    frame = VolumeFrame(scale=1.0, tx=0.0, ty=0.0, z_offset=4.0, size=24, depth=16)
    rng = np.random.default_rng(3)
    verts = np.c_[rng.uniform(-2, 26, (40, 2)), rng.uniform(-3, 14, 40)]
    tris = rng.integers(0, 40, (60, 3))
    cols = face_columns(verts, tris, frame)
    enc = encode_volume(voxelize_face(verts, tris, frame))
    assert enc == EncodedVolume.from_heights(cols.height, 16)
    assert cols.clipped_front > 0  # the fixture exercises clipping too


# --------------------------------------------------------------------------------------------------------------
# The HDF5 store
# --------------------------------------------------------------------------------------------------------------

def _sample(i: int, rng: np.random.Generator) -> VolumeSample:
    heights = np.zeros((192, 192), dtype=np.int64)
    vv, uu = np.mgrid[0:192, 0:192]
    inside = (uu - 96) ** 2 / 70 ** 2 + (vv - 96) ** 2 / 85 ** 2 < 1
    heights[inside] = (150 - 0.01 * ((uu - 96) ** 2 + (vv - 90) ** 2) + 3 * i)[inside].astype(int)
    image = (rng.uniform(0, 1, (192, 192, 1)) * 40 + np.dstack([uu, vv, uu + vv]) / 2).astype(np.uint8)
    return VolumeSample(sample_id=f"IBUG/s{i}", encoded=EncodedVolume.from_heights(np.clip(heights, 0, 200)),
                        frame=VolumeFrame(scale=0.5 + i, tx=-3.0, ty=4.0, z_offset=80.0 + i),
                        image=image, landmarks=rng.uniform(0, 192, (68, 2)),
                        landmarks_3d=rng.uniform(0, 192, (68, 3)) if i else None,
                        meta={"image_path": f"/data/IBUG/s{i}.jpg", "yaw": 0.1 * i})


@pytest.fixture()
def samples() -> list[VolumeSample]:
    rng = np.random.default_rng(4)
    return [_sample(i, rng) for i in range(3)]


@pytest.mark.parametrize("codec", ["jpeg", "png", "raw"])
def test_store_roundtrip(tmp_path: Path, samples: list[VolumeSample], codec: str) -> None:
    path = tmp_path / "store.h5"
    with VolumeStoreWriter(path, image_codec=codec) as writer:
        for s in samples:
            writer.add(s)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.h5"]  # no temporary file left
    store = VolumeStore(path)
    assert len(store) == 3 and store.sample_ids == [s.sample_id for s in samples] and "IBUG/s1" in store
    for i, s in enumerate(samples):
        got = store[s.sample_id]
        assert got.encoded == s.encoded and store.read_encoded(i) == s.encoded
        assert got.frame == s.frame
        assert torch.equal(store.read_volume(i), decode_volume(s.encoded))
        np.testing.assert_allclose(got.landmarks, s.landmarks, atol=1e-4)
        if s.landmarks_3d is None:
            assert got.landmarks_3d is None
        else:
            np.testing.assert_allclose(got.landmarks_3d, s.landmarks_3d, atol=1e-4)
        assert got.meta == s.meta
        diff = np.abs(got.image.astype(int) - s.image.astype(int))
        assert got.image.shape == (192, 192, 3) and (diff.max() == 0 if codec != "jpeg" else diff.mean() < 3)
        stored = store.stored_bytes(i)
        assert 0 < stored["volume"] <= DENSE_BYTES_PER_SAMPLE / 20 and stored["image"] > 0
    assert store[-1].sample_id == "IBUG/s2"


def test_writer_reports_bytes_per_sample(tmp_path: Path, samples: list[VolumeSample]) -> None:
    writer = VolumeStoreWriter(tmp_path / "a.h5")
    for s in samples:
        writer.add(s)
    summary = writer.close()
    assert summary.num_samples == 3 and summary.volume_bytes.shape == (3,)
    assert np.all(summary.volume_bytes > 0) and summary.mean_volume_bytes < DENSE_BYTES_PER_SAMPLE / 20
    assert summary.file_bytes == (tmp_path / "a.h5").stat().st_size
    np.testing.assert_array_equal([VolumeStore(tmp_path / "a.h5").stored_bytes(i)["volume"] for i in range(3)],
                                  summary.volume_bytes)


def test_writer_is_atomic(tmp_path: Path, samples: list[VolumeSample]) -> None:
    path = tmp_path / "store.h5"
    with VolumeStoreWriter(path) as writer:
        writer.add(samples[0])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"), VolumeStoreWriter(path) as writer:
        writer.add(samples[1])
        raise RuntimeError("boom")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["store.h5"]
    with VolumeStoreWriter(tmp_path / "b.h5") as writer:
        writer.add(samples[0])
        with pytest.raises(ValueError, match="duplicate sample id"):
            writer.add(samples[0])


def test_store_over_several_files(tmp_path: Path, samples: list[VolumeSample]) -> None:
    for name, part in (("a.h5", samples[:2]), ("b.h5", samples[2:])):
        with VolumeStoreWriter(tmp_path / name) as writer:
            for s in part:
                writer.add(s)
    store = VolumeStore([tmp_path / "a.h5", tmp_path / "b.h5"])
    assert len(store) == 3 and store.index_of("IBUG/s2") == 2
    assert store.read_encoded(2) == samples[2].encoded
    with pytest.raises(VolumeStoreError, match=r"a\.h5: sample id 'IBUG/s0' also in .*a\.h5"):
        VolumeStore([tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "a.h5"])


def test_store_is_picklable_and_reopens_lazily(tmp_path: Path, samples: list[VolumeSample]) -> None:
    with VolumeStoreWriter(tmp_path / "a.h5") as writer:
        for s in samples:
            writer.add(s)
    store = VolumeStore(tmp_path / "a.h5")
    store.read_encoded(0)  # opens a handle
    clone = pickle.loads(pickle.dumps(store))
    assert clone.read_encoded(1) == samples[1].encoded

    class Volumes(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(store)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return tuple(torch.from_numpy(m) for m in store.read_runs(i))

    loader = torch.utils.data.DataLoader(Volumes(), batch_size=3, num_workers=2,
                                         multiprocessing_context="fork")
    start, stop = next(iter(loader))
    # ship the 2 x (H, W) maps, decode the batch in one go (on the accelerator in training)
    batch = decode_runs(start, stop, store.depth)
    assert batch.shape == (3, 200, 192, 192)
    for i, s in enumerate(samples):
        assert torch.equal(batch[i], decode_volume(s.encoded))


def test_store_errors_name_the_file_and_key(tmp_path: Path, samples: list[VolumeSample]) -> None:
    path = tmp_path / "store.h5"
    with VolumeStoreWriter(path) as writer:
        for s in samples:
            writer.add(s)
    store = VolumeStore(path)
    with pytest.raises(VolumeStoreError, match=r"store\.h5: no sample 'IBUG/absent'"):
        store.read_encoded("IBUG/absent")
    with pytest.raises(VolumeStoreError, match=r"store\.h5: sample index 3 out of range"):
        store[3]
    with pytest.raises(VolumeStoreError, match=r"absent\.h5: volume store file not found"):
        VolumeStore(tmp_path / "absent.h5")
    # truncated file (e.g. a copy cut short)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VolumeStoreError, match=r"truncated\.h5: cannot open the volume store"):
        VolumeStore(truncated)
    # a valid HDF5 file that is not a store, and a store missing a dataset
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(VolumeStoreError, match=r"other\.h5: not a faceforge volume store"):
        VolumeStore(tmp_path / "other.h5")
    broken = tmp_path / "broken.h5"
    broken.write_bytes(path.read_bytes())
    with h5py.File(broken, "a") as f:
        del f["stop"]
    with pytest.raises(VolumeStoreError, match=r"broken\.h5 \[stop\]: missing dataset"):
        VolumeStore(broken)
    # a corrupt compressed chunk: the read names the file, dataset and row
    corrupt = tmp_path / "corrupt.h5"
    data = bytearray(path.read_bytes())
    with h5py.File(path, "r") as f:
        info = f["stop"].id.get_chunk_info(1)
    data[info.byte_offset: info.byte_offset + info.size] = bytes(info.size)
    corrupt.write_bytes(bytes(data))
    bad = VolumeStore(corrupt)
    assert bad.read_encoded(0) == samples[0].encoded
    with pytest.raises(VolumeStoreError, match=r"corrupt\.h5 \[stop\]\[1\]: cannot read"):
        bad.read_encoded(1)
