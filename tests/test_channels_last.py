"""The channels-last callback (faceforge/runs/memory_format.py): ``trainer=gpu`` and ``trainer=ddp`` compose it in,
``trainer=cpu`` does not; in float64 a few training steps of Meso-4 and a small VRN with channels-last weights and
inputs give the losses and weights of NCHW to 1e-9 (only the summation order differs); in float32 Lightning runs
with the callback the network's convolution weights and the image batches are channels-last inside the run and the
first loss matches (later float32 steps drift on the CPU, see the comment below). ResNeXt-LSTM's 5-D clips are left
alone and its output is unchanged."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from faceforge.runs.callbacks import StepSeeder
from faceforge.runs.common import instantiate_group
from faceforge.runs.memory_format import ChannelsLast, channels_last_weights, to_channels_last
from faceforge.runs.training import build_task

CONF = Path(__file__).resolve().parents[1] / "conf"
TARGET = "faceforge.runs.memory_format.ChannelsLast"


@pytest.fixture(scope="module")
def hydra_conf() -> Iterator[None]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def _callbacks(overrides: list[str]) -> list[Any]:
    """The callbacks of the composed run that training.py instantiates with ``instantiate_group``, the channels-last
    one built (the others need a running Hydra job for their paths)."""
    cfg = compose("train", overrides=overrides)
    group = OmegaConf.create({k: v for k, v in (cfg.get("callbacks") or {}).items()
                              if isinstance(v, DictConfig) and v.get("_target_") == TARGET})
    assert all(isinstance(v, DictConfig) and "_target_" in v for v in (cfg.get("callbacks") or {}).values())
    return instantiate_group(group)


# ------------------------------------------------------------------ composition
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainers_enable_channels_last(hydra_conf: None, trainer: str) -> None:
    cfg = compose("train", overrides=[f"trainer={trainer}"])
    assert cfg.callbacks.channels_last._target_ == TARGET
    assert "callbacks" not in cfg.trainer  # nothing extra reaches pl.Trainer
    assert sum(isinstance(cb, ChannelsLast) for cb in _callbacks([f"trainer={trainer}"])) == 1
    # kept whatever callbacks= names (it belongs to the trainer), removable on the command line
    for group in ("none", "early_stopping"):
        assert any(isinstance(cb, ChannelsLast) for cb in _callbacks([f"trainer={trainer}", f"callbacks={group}"]))
    assert not any(isinstance(cb, ChannelsLast) for cb in _callbacks([f"trainer={trainer}",
                                                                      "~callbacks.channels_last"]))


@pytest.mark.parametrize("trainer", ["cpu", "ddp_sim", "default"])
def test_cpu_trainers_do_not(hydra_conf: None, trainer: str) -> None:
    cfg = compose("train", overrides=[f"trainer={trainer}"])
    assert "channels_last" not in cfg.callbacks
    assert not any(isinstance(cb, ChannelsLast) for cb in _callbacks([f"trainer={trainer}"]))


# ------------------------------------------------------------------ same numbers on the CPU
# In float64 a channels-last network computes the same numbers (the layout changes only the summation order): a few
# Adam steps of Meso-4 and of a small VRN, train mode (batch statistics, dropout), agree to 1e-9. In float32 on the
# CPU they do not agree to float tolerance after the first update: PyTorch's CPU batch norm in train mode sums the
# batch statistics of a channels-last input less accurately (one BatchNorm2d over (4, 8, 256, 256) activations:
# 4e-3 absolute error against float64, vs 5e-7 for NCHW; pytorch/pytorch#121651), and max-pooling routes the
# gradient to another pixel wherever two values of a window are that close. So trainer=cpu does not enable it; the
# float32 runs below check the layout inside a real Lightning run and that its first loss (the weights not yet
# updated) matches to 1e-3.
def _meso4() -> torch.nn.Module:
    from faceforge.models.meso import Meso4

    torch.manual_seed(0)
    return Meso4()


def _vrn() -> torch.nn.Module:
    from faceforge.models.vrn import VRN

    torch.manual_seed(0)
    return VRN(num_stacks=1, out_depth=16, in_channels=3, output_size=32, features=16, depth=1,
               stem_channels=[8, 16])


def _steps64(make: Any, size: int, channels_last: bool, steps: int = 3) -> tuple[list[float], dict]:
    net = make().double().train()
    if channels_last:
        assert to_channels_last(net) > 0 and channels_last_weights(net) == []
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        x = torch.rand(4, 3, size, size, generator=g, dtype=torch.float64)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        torch.manual_seed(step)  # the same dropout masks both ways
        out = net(x)
        logits = out.volume if hasattr(out, "volume") else out
        target = (torch.arange(logits.numel(), dtype=torch.float64).reshape(logits.shape) % 3 == 0).to(logits.dtype)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses, {k: v.detach().contiguous() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name,make,size", [("meso4", _meso4, 256), ("vrn_small", _vrn, 32)])
def test_channels_last_changes_no_number_in_float64(name: str, make: Any, size: int) -> None:
    plain = _steps64(make, size, False)
    cl = _steps64(make, size, True)
    assert cl[0] == pytest.approx(plain[0], rel=1e-9)
    assert plain[0][0] != plain[0][-1]  # it trained
    for key, value in plain[1].items():
        torch.testing.assert_close(cl[1][key], value, rtol=1e-9, atol=1e-12, msg=key)


class _Images(Dataset):
    """Seeded uint8 images (3, S, S) with alternating labels, as the detection data modules serve them."""

    def __init__(self, n: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": torch.tensor(i % 2)}


class _Probe(Callback):
    """Records each training loss; checks the weights' and the images' layout inside the run."""

    def __init__(self, expect_channels_last: bool) -> None:
        self.expect = expect_channels_last
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))
        not_cl = channels_last_weights(pl_module)
        images = batch["image"]
        if self.expect:
            assert not_cl == [], f"not channels-last inside the run: {not_cl}"
            assert images.is_contiguous(memory_format=torch.channels_last)
            opt = trainer.optimizers[0]  # the optimiser holds the converted parameters (the same objects)
            conv = {id(m.weight) for m in pl_module.modules() if isinstance(m, torch.nn.Conv2d)}
            held = {id(p) for group in opt.param_groups for p in group["params"]}
            assert conv and conv <= held
        else:
            assert images.is_contiguous() and not_cl  # the plain run really is NCHW


def _fit(task: pl.LightningModule, channels_last: bool, steps: int, datamodule: Any = None,
         loader: DataLoader | None = None) -> _Probe:
    probe = _Probe(channels_last)
    callbacks: list[Callback] = [StepSeeder(0), probe]
    if channels_last:
        callbacks.insert(0, ChannelsLast())
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=callbacks)
    if datamodule is not None:
        trainer.fit(task, datamodule=datamodule)
    else:
        trainer.fit(task, train_dataloaders=loader)
    assert all(torch.isfinite(p).all() for p in task.parameters())
    return probe


def _compare(plain: _Probe, cl: _Probe, steps: int) -> None:
    assert len(plain.losses) == len(cl.losses) == steps
    assert cl.losses[0] == pytest.approx(plain.losses[0], rel=1e-3)  # before the first update


def _meso4_task() -> pl.LightningModule:
    cfg = compose("train", overrides=["model=meso4"])  # conf/model/meso4.yaml as train.py builds it
    torch.manual_seed(0)
    return build_task(cfg.model)


def test_meso4_run_is_channels_last_inside(hydra_conf: None) -> None:
    steps = 3
    loader = DataLoader(_Images(12, 256), batch_size=4, shuffle=False)
    _compare(_fit(_meso4_task(), False, steps, loader=loader), _fit(_meso4_task(), True, steps, loader=loader),
             steps)


def test_vrn_run_is_channels_last_inside(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    from faceforge.data.reconstruction.datamodule import VolumeDataModule
    from faceforge.data.reconstruction.synthetic import build_synthetic_reconstruction
    from faceforge.tasks.reconstruction import VolumeRegressionTask

    size = depth = 32
    build_synthetic_reconstruction(tmp_path / "d", num_samples=8, size=size, depth=depth, seed=0, val_fraction=0.25,
                                   test_fraction=0.0)
    spec = OmegaConf.create({"_target_": "faceforge.models.vrn.VRN", "num_stacks": 1, "out_depth": depth,
                             "in_channels": 3, "output_size": size, "features": 16, "depth": 1,
                             "stem_channels": [8, 16]})

    def task() -> VolumeRegressionTask:
        torch.manual_seed(0)
        return VolumeRegressionTask(instantiate(spec, _convert_="all"), variant="vrn",
                                    net_spec=OmegaConf.to_yaml(spec), scheduler=None, num_val_meshes=0,
                                    mesh_nme=False, optimizer={"_target_": "torch.optim.RMSprop", "lr": 1e-3})

    def dm() -> VolumeDataModule:
        return VolumeDataModule("synthetic_3d", str(tmp_path / "d"), batch_size=2, seed=0)

    steps = 2
    _compare(_fit(task(), False, steps, datamodule=dm()), _fit(task(), True, steps, datamodule=dm()), steps)


def test_resnext_lstm_clips_keep_their_layout_and_output() -> None:
    from faceforge.models.resnext_lstm import ResNeXtLSTM

    torch.manual_seed(0)
    net = ResNeXtLSTM(backbone="tiny", hidden_size=16).eval()
    clips = torch.rand(2, 3, 3, 32, 32)
    lengths = torch.tensor([3, 2])
    with torch.no_grad():
        before = net(clips, lengths=lengths)
        assert to_channels_last(net) > 0 and channels_last_weights(net) == []
        after = net(clips, lengths=lengths)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    batch = {"image": (clips * 255).to(torch.uint8), "lengths": lengths}
    ChannelsLast()._convert(batch)  # 5-D clips: left as they are (reshaped to frames inside the network)
    assert batch["image"].is_contiguous()
    frames = {"image": torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "volume": torch.zeros(2, 4, 8, 8)}
    ChannelsLast()._convert(frames)  # only the images, never other 4-D entries such as VRN's target volumes
    assert frames["image"].is_contiguous(memory_format=torch.channels_last) and frames["volume"].is_contiguous()
