"""Clip data for video-level detectors: frame sampling (evenly / contiguous, seeded, deterministic for evaluation),
short videos, faceless frames, corrupt crops, the CSR memory layout, collation, and the synthetic temporal signal."""
from __future__ import annotations

import gc
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from faceforge.data.core.image_io import ImageReadStats, read_rgb_image
from faceforge.data.detection.clips import (
    ClipDataError,
    ClipFrameWarning,
    ClipLoadStats,
    FaceClipDataset,
    clip_positions,
)
from faceforge.data.detection.datamodule import FaceDataModule
from faceforge.data.detection.face_index import COLUMN_NAMES, FaceIndex, StringColumn
from faceforge.data.detection.frames import TransformOutputError
from faceforge.data.detection.synthetic import build_synthetic_detection

SIZE = 48
FRAMES = 8


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def synth_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 videos (6 real, 6 fake) x 8 frames at 48 px."""
    out = tmp_path_factory.mktemp("clips") / "faces"
    build_synthetic_detection(out, num_videos=12, frames_per_video=FRAMES, image_size=SIZE, seed=5)
    return out


@pytest.fixture()
def synth(synth_master: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "faces"
    shutil.copytree(synth_master, dst)
    return dst


def _lookups(index: FaceIndex) -> tuple[dict[str, int], dict[str, int]]:
    vids = sorted(set(index.columns["video_id"].tolist()))
    meths = sorted(set(index.columns["method"].tolist()))
    return {v: i for i, v in enumerate(vids)}, {m: i for i, m in enumerate(meths)}


def _clips(index: FaceIndex, **kw) -> FaceClipDataset:
    vl, ml = _lookups(index)
    kw.setdefault("clip_length", 4)
    return FaceClipDataset(index, vl, ml, **kw)


def _frames_of(ds: FaceClipDataset, items: range | list[int] | list[tuple[int, int]]) -> list[list[int]]:
    return [ds[i]["frame_index"].tolist() for i in items]


# ---------------------------------------------------------------------------------------------------- sampling
def test_clip_positions_rules() -> None:
    np.testing.assert_array_equal(clip_positions(20, 5, "evenly", 0.5), [2, 6, 10, 14, 18])  # segment centres
    np.testing.assert_array_equal(clip_positions(20, 5, "evenly", 0.0), [0, 4, 8, 12, 16])
    np.testing.assert_array_equal(clip_positions(10, 4, "evenly", 0.99), [2, 4, 7, 9])
    np.testing.assert_array_equal(clip_positions(20, 5, "contiguous", 0.5), [8, 9, 10, 11, 12])  # centred run
    np.testing.assert_array_equal(clip_positions(20, 5, "contiguous", 0.999), [15, 16, 17, 18, 19])
    np.testing.assert_array_equal(clip_positions(3, 5, "evenly", 0.3), [0, 1, 2])  # short: everything
    for n, t in ((20, 5), (7, 7), (100, 10), (11, 10)):
        for u in np.linspace(0, 0.999, 7):
            for mode in ("evenly", "contiguous"):
                pos = clip_positions(n, t, mode, float(u))
                assert len(pos) == min(n, t) and pos.min() >= 0 and pos.max() < n and np.all(np.diff(pos) > 0)
    with pytest.raises(ValueError, match="sampling"):
        clip_positions(5, 2, "random", 0.5)
    with pytest.raises(ValueError, match="offset"):
        clip_positions(5, 2, "evenly", 1.0)


def test_eval_clips_are_deterministic_and_evenly_spaced(synth_master: Path) -> None:
    index = FaceIndex.read(synth_master)
    ds = _clips(index, clip_length=4, clips_per_video=2)
    assert len(ds) == 2 * 12 and ds.num_videos == 12
    first = _frames_of(ds, range(len(ds)))
    assert first == _frames_of(ds, range(len(ds)))  # same clips every time
    assert first[0] == [0, 2, 4, 6] and first[1] == [1, 3, 5, 7]  # offsets (k + 0.5) / K
    for i in range(len(ds)):
        item = ds[i]
        v = i // 2
        assert int(item["lengths"]) == 4 and int(item["label"]) == ds.video_labels[v]
        assert int(item["video_idx"]) == ds.video_idx[v] and int(item["index"]) == i
    # the pixels are the crops of those frames
    rows = np.flatnonzero(index.columns["video_id"] == min(index.columns["video_id"].tolist()))
    by_frame = {int(index.columns["frame_index"][r]): r for r in rows}
    img = ds[1]["image"]
    assert img.dtype == torch.uint8 and img.shape == (4, 3, SIZE, SIZE)
    for t, f in enumerate([1, 3, 5, 7]):
        np.testing.assert_array_equal(img[t].permute(1, 2, 0).numpy(), read_rgb_image(index.crop_file(by_frame[f])))
    contiguous = _clips(index, clip_length=4, sampling="contiguous")
    assert _frames_of(contiguous, [0, 5]) == [[2, 3, 4, 5]] * 2  # centred run of 4 of 8


def test_train_clips_are_seeded_and_change_between_draws(synth_master: Path) -> None:
    index = FaceIndex.read(synth_master)
    a = _clips(index, clip_length=3, train=True, seed=7)
    b = _clips(index, clip_length=3, train=True, seed=7)
    c = _clips(index, clip_length=3, train=True, seed=8)
    epoch1 = _frames_of(a, range(len(a)))
    assert epoch1 == _frames_of(b, range(len(b)))  # same seed, same clips
    assert epoch1 != _frames_of(c, range(len(c)))  # another seed, other clips
    a.set_epoch(1)
    epoch2 = _frames_of(a, range(len(a)))
    assert epoch1 != epoch2  # new jitter in the next epoch
    assert epoch2 == _frames_of(b, [(1, i) for i in range(len(b))])  # (epoch, item) keys, as the sampler yields
    a.set_epoch(0)
    assert _frames_of(a, range(len(a))) == epoch1  # a function of (seed, epoch, item): asking again repeats it
    for clip in epoch1 + epoch2:  # evenly spaced: steps of floor/ceil(8 / 3)
        assert set(np.diff(clip).tolist()) <= {2, 3}
    runs = _clips(index, clip_length=3, sampling="contiguous", train=True, seed=1)
    starts = set()
    for epoch in range(5):
        for clip in _frames_of(runs, [(epoch, i) for i in range(len(runs))]):
            assert np.all(np.diff(clip) == 1)
            starts.add(clip[0])
    assert len(starts) > 3  # the runs move over the video


def test_training_clips_in_workers_are_reproducible_and_new_each_epoch(synth: Path) -> None:
    def epochs() -> list[list[list[int]]]:
        dm = FaceDataModule("synthetic", str(synth), image_size=SIZE, batch_size=2, clip_length=3, num_workers=2,
                            seed=3)
        dm.setup()
        loader = dm.train_dataloader()
        out = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)  # as Lightning does
            out.append([b["frame_index"].tolist() for b in loader])
        return out

    one, two = epochs(), epochs()
    assert one == two  # seeded loader, seeded workers: the same run twice
    assert one[0] != one[1]  # but new clips in the next epoch


# ---------------------------------------------------------------------------------------------------- short videos
def test_short_videos_are_padded_and_report_their_length(synth_master: Path) -> None:
    index = FaceIndex.read(synth_master)
    vid = index.columns["video_id"]
    short = sorted(set(vid.tolist()))[3]
    # that video keeps only frames 1 and 5 (the others had no face): 2 usable frames
    keep = (vid != short) | np.isin(index.columns["frame_index"], [1, 5])
    ds = _clips(index.select(keep), clip_length=6)
    assert ds.report["short_videos"] == 1 and ds.report["frames_per_video"] == {"min": 2, "median": 8.0, "max": 8}
    item = ds[3]
    assert int(item["lengths"]) == 2 and item["frame_index"].tolist() == [1, 5, 5, 5, 5, 5]
    for t in range(2, 6):
        assert torch.equal(item["image"][t], item["image"][1])  # padding repeats the last frame
    full = ds[0]
    assert int(full["lengths"]) == 6 and full["frame_index"].tolist() == [0, 2, 3, 4, 6, 7]
    # a batch mixing full and padded clips collates (every clip has T frames) and keeps the lengths
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 6, 3, SIZE, SIZE) and batch["lengths"].tolist() == [6, 6, 6, 2]


def test_other_faces_of_a_frame_are_ignored_and_counted(synth_master: Path) -> None:
    index = FaceIndex.read(synth_master)
    extra = index.select(np.flatnonzero(index.columns["frame_index"] == 2))
    extra.columns["face_rank"] = np.ones(len(extra), dtype=np.int64)  # a second face in frame 2 of every video
    both = FaceIndex.concat([index, extra], root=index.root)
    ds = _clips(both, clip_length=FRAMES)
    assert ds.report["ignored_other_faces"] == len(extra) and len(ds.frame_index) == len(index)
    assert ds[0]["frame_index"].tolist() == list(range(FRAMES))


# ---------------------------------------------------------------------------------------------------- bad crops
def _val_video_rows(dm: FaceDataModule, frame: int) -> tuple[str, Path]:
    ix = dm.split_indexes["val"]
    first_video = min(ix.columns["video_id"].tolist())
    r = np.flatnonzero((ix.columns["video_id"] == first_video) & (ix.columns["frame_index"] == frame))[0]
    return first_video, ix.crop_file(r)


def test_corrupt_middle_crop_is_replaced_by_its_neighbour_and_counted(synth: Path) -> None:
    probe = FaceDataModule("synthetic", str(synth), image_size=SIZE, clip_length=FRAMES, cache_crops=False)
    probe.setup()
    video, crop = _val_video_rows(probe, 3)
    neighbour = read_rgb_image(crop.with_name("000002_0.png"))
    crop.write_bytes(crop.read_bytes()[:60])  # truncated PNG in the middle of the video
    dm = FaceDataModule("synthetic", str(synth), image_size=SIZE, clip_length=FRAMES, batch_size=4)
    with pytest.warns(UserWarning, match="replaced in clips"):
        dm.setup()
    assert dm.report["unreadable_crops"] == 1
    rep = dm.report["clips"]["val"]
    assert rep["unreadable_frames"] == 1 and rep["videos_with_unreadable_frames"] == 1
    assert rep["videos_all_unreadable"] == 0
    v = dm.val_dataset
    i = int(np.flatnonzero(np.asarray(dm.video_ids)[v.video_idx] == video)[0])
    item = v[i]
    assert item["frame_index"].tolist() == [0, 1, 2, 2, 4, 5, 6, 7]  # nearest readable, earlier on a tie
    assert int(item["lengths"]) == FRAMES
    np.testing.assert_array_equal(item["image"][3].permute(1, 2, 0).numpy(), neighbour)
    assert v.load_stats.substituted_frames == 1
    n = sum(len(b["label"]) for b in dm.val_dataloader())  # the whole split collates
    assert n == len(v)


def test_corrupt_crop_without_cache_is_substituted_when_read(synth: Path) -> None:
    dm = FaceDataModule("synthetic", str(synth), image_size=SIZE, clip_length=FRAMES, cache_crops=False)
    dm.setup()
    video, crop = _val_video_rows(dm, 5)
    crop.write_bytes(b"not an image")
    v = dm.val_dataset
    i = int(np.flatnonzero(np.asarray(dm.video_ids)[v.video_idx] == video)[0])
    with pytest.warns(ClipFrameWarning, match="000005_0.png"):
        item = v[i]
    assert item["frame_index"].tolist() == [0, 1, 2, 3, 4, 4, 6, 7]
    assert v.load_stats.substituted_frames == 1 and v.load_stats.unreadable_files == 1
    assert "000005_0.png" in v.load_stats.examples[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = v[i]  # known bad now: no second decode attempt
    assert v.load_stats.unreadable_files == 1 and torch.equal(again["image"], item["image"])


def test_video_with_no_readable_crop(synth: Path) -> None:
    probe = FaceDataModule("synthetic", str(synth), image_size=SIZE, clip_length=4, cache_crops=False)
    probe.setup()
    video, crop = _val_video_rows(probe, 0)
    for f in crop.parent.glob("*.png"):
        f.write_bytes(b"garbage")
    # without a cache: a clear error naming the video's crops when its clip is loaded, not a crash in collate
    v = probe.val_dataset
    i = int(np.flatnonzero(np.asarray(probe.video_ids)[v.video_idx] == video)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ClipDataError, match=r"none of its 8 face crops can be read.*000000_0.png"):
            v[i]
    # with the cache (default): found at setup, the video is left out and counted
    dm = FaceDataModule("synthetic", str(synth), image_size=SIZE, clip_length=4)
    with pytest.warns(UserWarning):
        dm.setup()
    rep = dm.report["clips"]["val"]
    assert rep["videos_all_unreadable"] == 1 and rep["skipped_examples"] == [video]
    assert dm.val_dataset.num_videos == probe.val_dataset.num_videos - 1
    assert video not in {dm.video_ids[j] for j in dm.val_dataset.video_idx}
    assert sum(len(b["label"]) for b in dm.val_dataloader()) == len(dm.val_dataset)


# ---------------------------------------------------------------------------------------------------- memory layout
def _big_index(root: Path, videos: int, frames: int) -> FaceIndex:
    n = videos * frames
    v = np.repeat(np.arange(videos), frames)
    vid = np.char.add("ds/m/c/", v.astype(str))
    cols = {c: np.zeros(n, dtype=np.float32) for c in ("det_prob", "x1", "y1", "x2", "y2")}
    cols.update({"video_id": vid, "dataset": np.full(n, "ds"), "method": np.where(v % 2, "M", "original"),
                 "compression": np.full(n, ""), "split": np.full(n, "train"), "label": (v % 2).astype(np.int64),
                 "source_id": vid, "video_path": vid, "num_frames": np.full(n, frames, dtype=np.int64),
                 "frame_index": np.tile(np.arange(frames)[::-1], videos).astype(np.int64),  # unsorted on purpose
                 "face_rank": np.zeros(n, dtype=np.int64), "landmarks": np.full(n, ""),
                 "crop_path": np.char.add(vid, ".png")})
    assert set(cols) == set(COLUMN_NAMES)
    return FaceIndex(columns=cols, root=root)


def test_per_video_frames_are_numpy_csr_without_python_objects(tmp_path: Path) -> None:
    videos, frames = 20000, 4
    index = _big_index(tmp_path, videos, frames)
    vl, ml = _lookups(index)
    gc.collect()
    before = len(gc.get_objects())
    ds = FaceClipDataset(index, vl, ml, clip_length=3)
    gc.collect()
    assert len(gc.get_objects()) - before < 500  # no Python object per video or per frame
    allowed = (ClipLoadStats, ImageReadStats, StringColumn, str, int, float, bool, type(None))  # StringColumn: arrays
    for name, value in vars(ds).items():
        if isinstance(value, np.ndarray):
            assert value.dtype != object, name
        elif isinstance(value, (dict, list, tuple)):
            assert len(value) < 20, (name, len(value))  # report / small bookkeeping only
        else:
            assert isinstance(value, allowed), (name, type(value))
    assert ds.offsets.shape == (videos + 1,) and ds.offsets.dtype == np.int64
    assert ds.frame_rows.shape == (videos * frames,)
    # frames of a video are contiguous and sorted by frame index
    v = 1234
    np.testing.assert_array_equal(ds.video_frames(v), np.arange(frames))
    number = int(sorted(vl)[int(ds.video_idx[v])].rsplit("/", 1)[1])
    assert len(ds) == videos and int(ds.video_labels[v]) == number % 2


def test_transform_gets_the_same_parameters_for_every_frame(synth_master: Path) -> None:
    import albumentations as A

    index = FaceIndex.read(synth_master)
    aug = A.Compose([A.HorizontalFlip(p=0.5), A.Affine(rotate=(-20, 20), p=1.0),
                     A.ColorJitter(0.3, 0.3, 0.3, 0.05, p=1.0)], seed=0)
    ds = _clips(index, clip_length=FRAMES + 2, transform=aug)  # 2 padding copies of the last frame
    for i in range(4):
        img = ds[i]["image"]
        assert torch.equal(img[-1], img[-2]) and torch.equal(img[-1], img[-3])  # same parameters for all frames
    plain = _clips(index, clip_length=FRAMES + 2)[0]["image"]
    assert not torch.equal(ds[0]["image"], plain)
    bad = _clips(index, clip_length=4, transform=A.Normalize())
    with pytest.raises(TransformOutputError, match="uint8"):
        bad[0]


def test_datamodule_clip_settings_are_checked_and_primitive(synth: Path) -> None:
    for kw, match in (({"clip_length": 0}, "clip_length"), ({"clips_per_video": 0}, "clips_per_video"),
                      ({"clip_length": 4, "clip_sampling": "random"}, "clip_sampling")):
        with pytest.raises(ValueError, match=match):
            FaceDataModule("synthetic", str(synth), **kw)
    dm = FaceDataModule("synthetic", str(synth), image_size=SIZE, clip_length=5, clip_sampling="contiguous",
                        clips_per_video=3, batch_size=4, balance_classes=True)
    hp = dict(dm.hparams)
    assert (hp["clip_length"], hp["clip_sampling"], hp["clips_per_video"]) == (5, "contiguous", 3)
    dm.setup()
    assert isinstance(dm.train_dataset, FaceClipDataset) and len(dm.train_dataset) == 3 * dm.train_dataset.num_videos
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 5, 3, SIZE, SIZE) and batch["image"].dtype == torch.uint8
    assert batch["lengths"].dtype == torch.int64 and batch["lengths"].tolist() == [5] * 4
    assert dm.report["clips"]["train"]["clips"] == len(dm.train_dataset)
    # every split's videos are served once per clip, with the video ids of the index
    split_videos = set(dm.split_indexes["test"].columns["video_id"].tolist())
    assert {dm.video_ids[j] for j in dm.test_dataset.video_idx} == split_videos


# ---------------------------------------------------------------------------------------------------- synthetic
def _face_colour_change(index: FaceIndex, video: str) -> float:
    """Mean absolute frame-to-frame change of the mean colour of the inner face (eyes to mouth), 0..255 units."""
    cols = index.columns
    rows = np.flatnonzero(cols["video_id"] == video)
    rows = rows[np.argsort(cols["frame_index"][rows])]
    means = []
    for r in rows:
        lm = index.landmarks_array(r)
        x1, x2, y1, y2 = int(lm[0, 0]), int(np.ceil(lm[1, 0])), int(lm[0, 1]), int(np.ceil(lm[3, 1]))
        means.append(read_rgb_image(index.crop_file(r))[y1:y2, x1:x2].reshape(-1, 3).astype(np.float64).mean(0))
    return float(np.abs(np.diff(np.array(means), axis=0)).mean())


def test_synthetic_fakes_carry_a_temporal_signal(tmp_path: Path) -> None:
    kw = {"num_videos": 16, "frames_per_video": 6, "image_size": 64, "seed": 2}
    ta = build_synthetic_detection(tmp_path / "ta", **kw)
    plain = build_synthetic_detection(tmp_path / "plain", temporal_artifacts=False, **kw)
    assert ta.meta["params"]["temporal_artifacts"] and not plain.meta["params"]["temporal_artifacts"]
    cols = ta.columns
    np.testing.assert_array_equal(cols["x1"], plain.columns["x1"])  # same videos, same poses
    for i in range(len(ta)):
        a, b = read_rgb_image(ta.crop_file(i)), read_rgb_image(plain.crop_file(i))
        if cols["label"][i] == 0:
            np.testing.assert_array_equal(a, b)  # real videos untouched
        else:  # the artifact is local to the face: the frame around it is the same
            np.testing.assert_array_equal(a[:, :6], b[:, :6])
    fakes = sorted(set(cols["video_id"][cols["label"] == 1].tolist()))
    with_ta = np.array([_face_colour_change(ta, v) for v in fakes])
    without = np.array([_face_colour_change(plain, v) for v in fakes])
    source = [str(cols["source_id"][cols["video_id"] == v][0]) for v in fakes]
    real = np.array([_face_colour_change(ta, s) for s in source])
    assert (with_ta > without).mean() >= 0.75 and with_ta.mean() > 1.3 * without.mean()
    assert with_ta.mean() > 1.5 * real.mean()  # fakes flicker, their source videos do not


def test_tiny_resnext_lstm_learns_the_temporal_only_signal(tmp_path: Path) -> None:
    """SynthFlicker fakes differ from their source videos only by a frame-to-frame colour flicker: a tiny
    ResNeXt-LSTM trained on clips separates held-out videos, and loses that when each clip is one repeated frame."""
    from torch.utils.data import ConcatDataset
    from torchmetrics.functional.classification import binary_auroc

    from faceforge.models.resnext_lstm import ResNeXtLSTM

    build_synthetic_detection(tmp_path, num_videos=160, frames_per_video=8, image_size=48, seed=0,
                              methods=("SynthFlicker",))
    dm = FaceDataModule("synthetic", str(tmp_path), image_size=48, batch_size=8, clip_length=8, seed=0)
    dm.setup()
    torch.manual_seed(0)
    net = ResNeXtLSTM("tiny", hidden_size=32, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = dm.train_dataloader()
    for epoch in range(120):
        loader.sampler.set_epoch(epoch)  # as Lightning does at every epoch start
        for b in loader:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(b["image"].float() / 255, b["lengths"]), b["label"].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    held = DataLoader(ConcatDataset([dm.val_dataset, dm.test_dataset]), batch_size=32)
    probs, static, labels = [], [], []
    with torch.no_grad():
        for b in held:
            x = b["image"].float() / 255
            probs.append(torch.sigmoid(net(x)))
            static.append(torch.sigmoid(net(x[:, 4:5].expand_as(x))))  # no temporal information left
            labels.append(b["label"])
    labels_t = torch.cat(labels)
    auc, auc_static = (float(binary_auroc(torch.cat(p), labels_t)) for p in (probs, static))
    assert len(labels_t) == 64 and auc > 0.75 and auc - auc_static > 0.15, (auc, auc_static)


def test_synthflicker_fakes_are_their_source_frames_with_a_colour_gain(tmp_path: Path) -> None:
    ix = build_synthetic_detection(tmp_path, num_videos=8, frames_per_video=4, image_size=48, seed=1,
                                   methods=("SynthFlicker",))
    cols = ix.columns
    key = {(v, f): i for i, (v, f) in enumerate(zip(cols["video_id"].tolist(), cols["frame_index"].tolist()))}
    ratios = []
    for i in np.flatnonzero(cols["label"] == 1):
        fake = read_rgb_image(ix.crop_file(i)).astype(np.float64)
        real = read_rgb_image(ix.crop_file(key[(cols["source_id"][i], cols["frame_index"][i])])).astype(np.float64)
        np.testing.assert_array_equal(fake[:, :6], real[:, :6])  # nothing outside the face
        lm = ix.landmarks_array(i)
        x1, x2, y1, y2 = int(lm[0, 0]), int(np.ceil(lm[1, 0])), int(lm[0, 1]), int(np.ceil(lm[3, 1]))
        inner_f, inner_r = fake[y1:y2, x1:x2], real[y1:y2, x1:x2]
        ratio = inner_f.reshape(-1, 3).sum(0) / inner_r.reshape(-1, 3).sum(0)
        # the same pixels (noise, detail) scaled by one gain per channel: no resampling, no blur
        resid = inner_f - inner_r * ratio
        assert np.abs(resid).mean() < 2.0
        ratios.append(ratio)
    assert np.std(ratios) > 0.03  # the gain changes from frame to frame
    with pytest.raises(ValueError, match="temporal_artifacts"):
        build_synthetic_detection(tmp_path / "x", num_videos=8, methods=("SynthFlicker",), temporal_artifacts=False)
