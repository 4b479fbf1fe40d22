"""Same seed, same numbers: every random draw of a training run derives from the run's seed, the epoch and the sample
(or batch), with any number of DataLoader workers.

End to end (subprocesses of train.py): the same command twice, and once more with worker processes, gives
bit-identical checkpoints, metrics, test reports and CSV histories, for a frame model (Meso-4, class-balanced
sampling), the clip model (ResNeXt-LSTM with the tiny backbone) and a VRN on the embedded 3D data. The pieces
(seeds, the epoch sampler, the resumable loader, the datasets' per-sample draws) are checked directly.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from faceforge.data.core.sampler import EpochSampler, ResumableDataLoader, build_train_loader, split_key
from faceforge.data.detection.datamodule import FaceDataModule
from faceforge.data.detection.synthetic import build_synthetic_detection
from faceforge.utils.seeding import derive_seed, item_rng
from tests.cli import run_cli

FRAME = ["data.builder.num_videos=8", "data.builder.frames_per_video=4", "data.batch_size=4",
         "data.balance_classes=true", "trainer.max_epochs=2"]
CLIP = ["model=resnext_lstm", "model.net.backbone=tiny", "model.net.hidden_size=16", "model.optimizer.lr=1e-3",
        "data.image_size=32", "data.builder.num_videos=12", "data.builder.frames_per_video=6", "data.clip_length=4",
        "data.batch_size=2", "trainer.max_epochs=2"]
VRN = ["model=vrn", "data.builder.num_samples=24", "data.batch_size=4", "data.image_size=32",
       "data.volume_depth=32", "model.net.features=16", "model.net.stem_channels=[8,16]",
       "model.net.num_stacks=1", "model.net.depth=1", "model.num_val_meshes=1",
       "trainer.max_epochs=2"]
WORKERS = ["data.num_workers=2", "data.persistent_workers=true"]


def _train(project_root: Path, base: Path, name: str, *overrides: str) -> Path:
    run_cli(project_root, "train.py", f"paths.log_dir={base / 'logs'}", f"paths.data_dir={base / 'data'}",
            f"run_name={name}", "logger=csv", *overrides)
    return base / "logs" / "train" / "runs" / name


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold bit-identical weights (last and best checkpoints), metrics, test reports and CSVs."""
    for which in ("last.ckpt", None):
        if which is None:  # the checkpoint chosen on validation
            pa = Path(json.loads((a / "metrics.json").read_text())["best_checkpoint"])
            pb = Path(json.loads((b / "metrics.json").read_text())["best_checkpoint"])
            assert pa.name == pb.name
        else:
            pa, pb = a / "checkpoints" / which, b / "checkpoints" / which
        x, y = torch.load(pa, weights_only=True), torch.load(pb, weights_only=True)
        assert (x["epoch"], x["global_step"]) == (y["epoch"], y["global_step"])
        assert x["state_dict"].keys() == y["state_dict"].keys()
        differ = [k for k in x["state_dict"] if not torch.equal(x["state_dict"][k], y["state_dict"][k])]
        assert not differ, f"{pa.name}: tensors differ: {differ[:5]}"
        assert len(x["optimizer_states"]) == len(y["optimizer_states"])  # a GAN has two
        for opt_x, opt_y in zip(x["optimizer_states"], y["optimizer_states"]):
            ox, oy = opt_x["state"], opt_y["state"]
            assert all(torch.equal(ox[p][s], oy[p][s]) for p in ox for s in ox[p] if torch.is_tensor(ox[p][s]))
    assert json.loads((a / "metrics.json").read_text())["metrics"] == \
        json.loads((b / "metrics.json").read_text())["metrics"]
    assert (a / "test_report.json").read_text() == (b / "test_report.json").read_text()
    assert (a / "csv" / "metrics.csv").read_text() == (b / "csv" / "metrics.csv").read_text()


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_frame_model_same_command_twice_and_with_workers(tmp_path: Path, project_root: Path) -> None:
    one = _train(project_root, tmp_path, "one", *FRAME)
    two = _train(project_root, tmp_path, "two", *FRAME)
    workers = _train(project_root, tmp_path, "workers", *FRAME, *WORKERS)
    assert_same_run(one, two)
    assert_same_run(one, workers)
    # the runs trained what was asked: 16 training faces (balanced draws), batches of 4, 2 epochs
    assert torch.load(one / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * 4


@pytest.mark.slow
def test_clip_model_same_numbers_with_any_workers(tmp_path: Path, project_root: Path) -> None:
    one = _train(project_root, tmp_path, "one", *CLIP)
    assert_same_run(one, _train(project_root, tmp_path, "two", *CLIP, *WORKERS))


@pytest.mark.slow
def test_vrn_same_numbers_with_any_workers(tmp_path: Path, project_root: Path) -> None:
    one = _train(project_root, tmp_path, "one", *VRN)
    assert_same_run(one, _train(project_root, tmp_path, "two", *VRN, *WORKERS))


# ---------------------------------------------------------------------------------------------------- the pieces
def test_derived_seeds_are_a_fixed_function_of_their_keys() -> None:
    assert derive_seed(42, 1, 0) == derive_seed(42, 1, 0)
    seeds = {derive_seed(42, s, e, i) for s in range(1, 6) for e in range(4) for i in range(50)}
    assert len(seeds) == 5 * 4 * 50 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(42, 1, 0) != derive_seed(43, 1, 0) and derive_seed(1, 2) != derive_seed(2, 1)
    assert np.array_equal(item_rng(7, 3, 1, 5).random(4), item_rng(7, 3, 1, 5).random(4))
    torch.manual_seed(derive_seed(-1, 2))  # negative keys and torch's seed range are accepted


def test_epoch_sampler_order_is_a_function_of_seed_and_epoch() -> None:
    a, b = EpochSampler(20, seed=3), EpochSampler(20, seed=3)
    assert np.array_equal(a.order(2), b.order(2)) and not np.array_equal(a.order(2), a.order(3))
    assert sorted(a.order(5).tolist()) == list(range(20))  # a permutation
    assert not np.array_equal(a.order(2), EpochSampler(20, seed=4).order(2))
    torch.manual_seed(0)  # the global generator plays no part
    b.set_epoch(2)
    assert list(b) == [(2, i) for i in a.order(2).tolist()] and list(b) == list(b)
    b.skip_next(2, 5)  # a mid-epoch resume: the next pass of epoch 2 starts at its 6th sample
    assert list(b) == [(2, i) for i in a.order(2)[5:].tolist()]
    assert len(list(b)) == 20  # the skip applies once
    # class-balanced draws with replacement, seeded the same way
    w = np.r_[np.full(15, 1 / 15), np.full(5, 1 / 5)]
    c = EpochSampler(20, seed=3, weights=w)
    draws = np.concatenate([c.order(e) for e in range(300)])
    assert abs((draws >= 15).mean() - 0.5) < 0.05
    assert np.array_equal(c.order(7), EpochSampler(20, 3, weights=w).order(7))
    # a distributed split: every rank's share of the same epoch order, padded to a multiple of the ranks
    shares = [EpochSampler(10, seed=1, num_replicas=3, rank=r).order(4) for r in range(3)]
    assert [len(s) for s in shares] == [4, 4, 4]
    full = np.resize(EpochSampler(10, seed=1).order(4), 12)
    assert sorted(np.concatenate(shares).tolist()) == sorted(full.tolist())
    with pytest.raises(ValueError):
        EpochSampler(4, weights=np.zeros(4))


class _Keys(Dataset):
    """Returns the (epoch, index) it was asked for, as a tensor."""

    def __len__(self) -> int:
        return 22

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        return torch.tensor(split_key(key))


@pytest.mark.parametrize("workers", [0, 2])
def test_resumable_loader_resumes_mid_epoch_and_takes_the_epoch_at_the_first_batch(workers: int) -> None:
    def loader() -> ResumableDataLoader:
        return build_train_loader(_Keys(), batch_size=4, seed=9, num_workers=workers, persistent_workers=workers > 0)

    full = loader()
    it = iter(full)
    full.sampler.set_epoch(3)  # after iter(), as Lightning does: the pass still is epoch 3
    epoch3 = [b.tolist() for b in it]
    assert len(epoch3) == 5 and all(k[0] == 3 for batch in epoch3 for k in batch)  # 22 // 4, last partial dropped
    assert full.state_dict() == {"epoch": 3, "batches": 5}

    stopped = loader()
    stopped.sampler.set_epoch(3)
    it = iter(stopped)
    done = [next(it).tolist() for _ in range(2)]
    state = stopped.state_dict()
    assert state == {"epoch": 3, "batches": 2}
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(3)
    assert done + [b.tolist() for b in resumed] == epoch3
    resumed.sampler.set_epoch(4)  # the next epoch is whole again
    assert len(list(resumed)) == 5 and resumed.state_dict() == {"epoch": 4, "batches": 5}


def test_face_datasets_augment_each_sample_from_seed_epoch_and_index(tmp_path: Path) -> None:
    import albumentations as A

    build_synthetic_detection(tmp_path, num_videos=8, frames_per_video=2, image_size=32, seed=0)

    def dataset(seed: int):  # a new Compose each time: its own generator starts from OS entropy
        transform = A.Compose([A.HorizontalFlip(p=0.5), A.Affine(rotate=(-30, 30), p=1.0),
                               A.ColorJitter(brightness=0.3, p=1.0)])
        dm = FaceDataModule("synthetic", str(tmp_path), batch_size=2, image_size=32, seed=seed,
                            train_transform=transform)
        dm.setup()
        return dm.train_dataset

    a, b, c = dataset(5), dataset(5), dataset(6)
    keys = [(e, i) for e in (0, 1) for i in range(len(a))]
    same = [torch.equal(a[k]["image"], b[k]["image"]) for k in keys]
    assert all(same)
    assert any(not torch.equal(a[(0, i)]["image"], a[(1, i)]["image"]) for i in range(len(a)))  # new epoch
    assert any(not torch.equal(a[k]["image"], c[k]["image"]) for k in keys)  # another seed
    a.set_epoch(1)
    assert torch.equal(a[2]["image"], b[(1, 2)]["image"])  # a bare index takes the dataset's epoch
