"""The 3DFaceGAN-style baseline: BEGAN's equilibrium rule, the two players' optimisation, checkpoints, the config.

What matters: k stays in [0, 1] and moves exactly by ``lambda_k (gamma L(x) - L(G(z)))`` (clipped), in the loss
module and in training; the discriminator learns to reconstruct real shapes; each optimiser moves only its own
player; the model builds from ``conf/model/facegan.yaml`` and a checkpoint rebuilds through the safe loader with the
same outputs and the same k; the generator is scored like a VRN (IoU beside the trivial baseline); and (slow) the
command ``python train.py model=facegan`` beats the mean training volume on the embedded data.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from faceforge.data.reconstruction.datamodule import VolumeDataModule
from faceforge.data.reconstruction.synthetic import build_synthetic_reconstruction
from faceforge.losses import LossInputError
from faceforge.losses.began import (
    BEGANEquilibrium,
    autoencoder_loss,
    began_convergence,
    began_discriminator_loss,
    began_k_update,
)
from faceforge.models.facegan import FaceGAN
from faceforge.registry import build_model
from faceforge.tasks.checkpointing import load_task
from faceforge.tasks.facegan import FaceGANTask
from faceforge.tasks.reconstruction import ReconstructionTaskError

SIZE = 32
DEPTH = 32
NET_SPEC = {"_target_": "faceforge.models.facegan.FaceGAN", "image_size": SIZE, "volume_depth": DEPTH,
            "generator_features": 16, "generator_stacks": 1, "generator_depth": 1, "generator_stem_channels": [8, 16],
            "noise_channels": 8, "discriminator_channels": 8, "levels": 2, "latent_dim": 16, "hidden_dim": 8,
            "output_stride": 2}


def make_task(**kwargs) -> FaceGANTask:
    torch.manual_seed(0)
    kwargs.setdefault("optimizer", {"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": [0.5, 0.999]})
    return FaceGANTask(build_model(dict(NET_SPEC)), net_spec=yaml.safe_dump(NET_SPEC), **kwargs)


def trainer(tmp_path: Path, callbacks: list | None = None, **kwargs) -> pl.Trainer:
    kwargs.setdefault("max_epochs", 1)
    return pl.Trainer(accelerator="cpu", logger=False, callbacks=callbacks or [], enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0,
                      log_every_n_steps=1, enable_checkpointing=any(isinstance(c, ModelCheckpoint)
                                                                    for c in callbacks or []), **kwargs)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> VolumeDataModule:
    out = tmp_path_factory.mktemp("tiny3d_gan")
    build_synthetic_reconstruction(out, num_samples=24, size=SIZE, depth=DEPTH, seed=0, val_fraction=0.25,
                                   test_fraction=0.25)
    dm = VolumeDataModule("synthetic_3d", str(out), batch_size=4, augment=None, seed=0)
    dm.prepare_data()
    dm.setup()
    return dm


# ------------------------------------------------------------------------------------------ the equilibrium rule

def test_k_moves_by_the_rule_and_is_clipped() -> None:
    eq = BEGANEquilibrium(gamma=0.5, lambda_k=1e-3, k_init=0.0)
    assert float(eq.k) == 0.0
    m = eq.update(torch.tensor(0.4), torch.tensor(0.1))  # gamma L(x) - L(G) = 0.2 - 0.1 = 0.1
    assert float(eq.k) == pytest.approx(1e-4, abs=1e-9)
    assert float(m) == pytest.approx(0.4 + 0.1, abs=1e-7)  # M = L(x) + |gamma L(x) - L(G)|
    eq.update(0.1, 0.3)  # negative step below 0: clipped at 0
    assert float(eq.k) == 0.0
    big = BEGANEquilibrium(lambda_k=10.0, k_init=0.9)
    big.update(1.0, 0.0)  # 0.9 + 10 * 0.5 -> clipped at 1
    assert float(big.k) == 1.0
    gen = torch.Generator().manual_seed(0)
    k = torch.tensor(0.5)
    for _ in range(200):  # arbitrary losses: k never leaves [0, 1]
        real, fake = torch.rand(2, generator=gen) * 5
        new = began_k_update(k, real, fake, 0.5, 0.05)
        expected = min(max(float(k) + 0.05 * (0.5 * float(real) - float(fake)), 0.0), 1.0)
        assert float(new) == pytest.approx(expected, abs=1e-6) and 0.0 <= float(new) <= 1.0
        k = new
    assert float(began_convergence(0.2, 0.3, 0.5)) == pytest.approx(0.2 + 0.2)


def test_began_losses() -> None:
    x = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    assert float(autoencoder_loss(torch.full((2, 2), 0.5), x)) == pytest.approx(0.5)
    real, fake = torch.tensor(0.3, requires_grad=True), torch.tensor(0.2, requires_grad=True)
    loss_d = began_discriminator_loss(real, fake, torch.tensor(0.25))
    assert float(loss_d.detach()) == pytest.approx(0.3 - 0.25 * 0.2)
    loss_d.backward()
    assert float(fake.grad) == pytest.approx(-0.25)  # k is a constant of the discriminator's loss
    with pytest.raises(LossInputError, match="differs"):
        autoencoder_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    for bad in ({"gamma": 0.0}, {"gamma": 1.5}, {"lambda_k": -1.0}, {"k_init": 2.0}):
        with pytest.raises(LossInputError):
            BEGANEquilibrium(**bad)


# ------------------------------------------------------------------------------------------ networks

def test_networks_shapes_and_noise_sampling() -> None:
    net = build_model(dict(NET_SPEC))
    assert isinstance(net, FaceGAN)
    images = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        logits = net(images)
        recon = net.discriminator(net.discriminator.pool(torch.sigmoid(logits)))
    assert logits.shape == (2, DEPTH, SIZE, SIZE)
    assert recon.shape == (2, DEPTH, SIZE // 2, SIZE // 2) and 0.0 <= float(recon.min()) and float(recon.max()) <= 1.0
    task = make_task()
    a, b = task.sample(3, seed=7), task.sample(3, seed=7)
    assert a.shape == (3, DEPTH, SIZE, SIZE) and torch.equal(a, b)  # unconditional samples, reproducible
    assert not torch.equal(a, task.sample(3, seed=8))
    # the conditional generator is the VRN trunk (skip connections at every resolution), reused as it is
    from faceforge.models.vrn import VRN

    assert isinstance(net.generator.trunk, VRN)
    with pytest.raises(ValueError, match=r"expects images \(B, 3, 32, 32\)"):
        net(torch.rand(1, 3, 24, 24))
    with pytest.raises(ValueError, match="exactly one of images and z"):
        net.generator()
    with pytest.raises(ValueError, match="size 30 must be a multiple"):
        FaceGAN(image_size=30, levels=2, output_stride=2)
    with pytest.raises(ValueError, match="multiple of 8"):
        FaceGAN(image_size=36, levels=2, output_stride=2)
    with pytest.raises(ValueError, match="output_stride must be a power of 2"):
        FaceGAN(image_size=32, levels=2, output_stride=3)


def test_task_refuses_other_networks_and_variants() -> None:
    with pytest.raises(ReconstructionTaskError, match="FaceGAN network"):
        FaceGANTask(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ReconstructionTaskError, match="variant"):
        FaceGANTask(build_model(dict(NET_SPEC)), variant="vrn")


# ------------------------------------------------------------------------------------------ training

class _Recorder(Callback):
    """Records, per optimiser step, which network parameters changed; and every k update."""

    def __init__(self) -> None:
        self.changed: list[tuple[int, set[str]]] = []
        self.k_updates: list[tuple[float, float, float, float]] = []
        self.loss_real: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: FaceGANTask) -> None:
        params = dict(pl_module.net.named_parameters())
        for i, opt in enumerate(trainer.optimizers):
            snapshot: dict[str, torch.Tensor] = {}

            def pre(_opt, _args, _kwargs, snapshot=snapshot) -> None:
                snapshot.update({n: p.detach().clone() for n, p in params.items()})

            def post(_opt, _args, _kwargs, snapshot=snapshot, i=i) -> None:
                self.changed.append((i, {n for n, p in params.items() if not torch.equal(p, snapshot[n])}))

            opt.register_step_pre_hook(pre)
            opt.register_step_post_hook(post)
        eq = pl_module.equilibrium
        original = eq.update

        def update(loss_real, loss_fake):
            before = float(eq.k)
            out = original(loss_real, loss_fake)
            self.k_updates.append((before, float(loss_real), float(loss_fake), float(eq.k)))
            self.loss_real.append(float(loss_real))
            return out

        eq.update = update


def test_each_optimiser_moves_only_its_player_and_k_follows_the_rule(datamodule: VolumeDataModule,
                                                                     tmp_path: Path) -> None:
    task = make_task(lambda_k=0.05)  # a large lambda_k, so that k visibly moves in a few steps
    rec = _Recorder()
    trainer(tmp_path, [rec], max_epochs=2, limit_val_batches=0).fit(task, datamodule=datamodule)
    gen_names = {f"generator.{n}" for n, _ in task.net.generator.named_parameters()}
    disc_names = {f"discriminator.{n}" for n, _ in task.net.discriminator.named_parameters()}
    steps = len(datamodule.train_dataloader()) * 2
    assert [i for i, _ in rec.changed] == [1, 0] * steps  # discriminator step, then generator step
    for i, changed in rec.changed:
        assert changed, "an optimiser step changed nothing"
        assert changed <= (gen_names if i == 0 else disc_names), f"optimiser {i} moved the other player"
    assert len(rec.k_updates) == steps
    for before, real, fake, after in rec.k_updates:
        assert 0.0 <= after <= 1.0
        assert after == pytest.approx(min(max(before + 0.05 * (0.5 * real - fake), 0.0), 1.0), abs=1e-6)
    assert any(after != before for before, _, _, after in rec.k_updates)
    assert float(task.equilibrium.k) == pytest.approx(rec.k_updates[-1][3])


def test_the_discriminator_learns_to_reconstruct_real_shapes(datamodule: VolumeDataModule, tmp_path: Path) -> None:
    # L(x), the autoencoder's L1 error on ground-truth volumes, starts near 0.5 (a sigmoid output of about 0.5 on
    # binary voxels); a discriminator that learns to reconstruct real shapes brings it well below (about 0.2 here)
    task = make_task(discriminator_optimizer={"_target_": "torch.optim.Adam", "lr": 1e-2, "betas": [0.5, 0.999]})
    rec = _Recorder()
    trainer(tmp_path, [rec], max_epochs=4, limit_val_batches=0).fit(task, datamodule=datamodule)
    losses = rec.loss_real
    assert len(losses) == 4 * len(datamodule.train_dataloader())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.6 * first, f"L(x) went from {first:.4f} to {last:.4f}"


def test_same_seed_same_run_on_cpu(datamodule: VolumeDataModule, tmp_path: Path) -> None:
    from faceforge.runs.callbacks import StepSeeder

    states = []
    for run in ("a", "b"):
        task = make_task()
        trainer(tmp_path / run, [StepSeeder(3)], max_steps=3, limit_val_batches=0).fit(task, datamodule=datamodule)
        states.append(task.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# ------------------------------------------------------------------------------------------ config and checkpoints

def test_model_builds_from_its_config(project_root: Path) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(project_root / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=facegan", "paths.data_dir=/tmp/unused"])
    assert cfg.data.name == "synthetic_3d"
    net = build_model(OmegaConf.to_container(cfg.model.net, resolve=True))
    assert isinstance(net, FaceGAN)
    size, depth = int(cfg.data.image_size), int(cfg.data.volume_depth)
    with torch.no_grad():
        assert net(torch.rand(1, 3, size, size)).shape == (1, depth, size, size)
    from faceforge.runs.training import build_task

    task = build_task(cfg.model)  # as train.py builds it
    assert isinstance(task, FaceGANTask)
    hp = task.hparams
    # the generator: the VRN configs' RMSprop lr 1e-3; the discriminator: BEGAN's Adam lr 1e-4, beta1 0.5
    assert hp.optimizer["_target_"] == "torch.optim.RMSprop" and hp.optimizer["lr"] == 1e-3
    spec_d = hp.discriminator_optimizer
    assert spec_d["_target_"] == "torch.optim.Adam" and spec_d["lr"] == 1e-4 and list(spec_d["betas"]) == [0.5, 0.999]
    opt_g, opt_d = task.configure_optimizers()
    assert isinstance(opt_g, torch.optim.RMSprop) and isinstance(opt_d, torch.optim.Adam)
    assert (hp.gamma, hp.lambda_k, hp.k_init) == (0.5, 1e-3, 0.0)


def test_checkpoint_round_trip_through_the_safe_loader(datamodule: VolumeDataModule, tmp_path: Path) -> None:
    # both players' optimiser specs carry a _target_ (from the allowlist): the safe loader accepts them
    task = make_task(num_val_meshes=1, num_noise_meshes=1, mesh_format="obj",
                     discriminator_optimizer={"_target_": "torch.optim.Adam", "lr": 1e-4, "betas": [0.5, 0.999]})
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/iou", mode="max")
    fit = trainer(tmp_path, [ckpt], max_epochs=2)
    fit.fit(task, datamodule=datamodule)
    assert {"train/k", "train/M", "train/g_loss", "train/d_loss", "val/iou", "val/baseline_iou"} <= set(
        fit.callback_metrics)
    assert list((tmp_path / "meshes" / "epoch_001").glob("noise_*.obj"))  # unconditional samples as meshes
    raw = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
    assert raw["faceforge"]["task"] == "FaceGANTask"
    assert "equilibrium.k" in raw["state_dict"]
    loaded = load_task(ckpt.best_model_path)
    assert isinstance(loaded, FaceGANTask) and isinstance(loaded.net, FaceGAN)
    assert dict(loaded.hparams) == raw["hyper_parameters"]
    reference = make_task()
    reference.load_state_dict(raw["state_dict"])
    reference.eval()
    assert float(loaded.equilibrium.k) == float(raw["state_dict"]["equilibrium.k"])
    images = next(iter(datamodule.val_dataloader()))["image"]
    with torch.no_grad():
        assert torch.equal(loaded(images).volume, reference(images).volume)

    # scored like a VRN: IoU beside the trivial baseline, the evaluate.py table
    trainer(tmp_path / "test").test(loaded, datamodule=datamodule)
    report = loaded.test_report
    assert report["variant"] == "facegan" and report["n"] == len(datamodule.sample_ids["test"])
    assert 0.0 <= report["iou"] <= 1.0 and 0.0 <= report["baseline_iou"] <= 1.0
    rows, _ = loaded.result_table(report, "synthetic_3d")
    assert rows[0]["level"] == "facegan"


# ------------------------------------------------------------------------------------------ the command

@pytest.mark.slow
def test_train_py_model_facegan_beats_the_mean_volume(project_root: Path, tmp_path: Path) -> None:
    """``python train.py model=facegan`` as a user runs it, on the embedded data with every default: its test IoU
    must beat the trivial baseline (the mean training volume) on the same test samples by at least 0.05."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "disabled"}
    args = ["model=facegan", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}",
            "run_name=facegan", "logger=csv"]
    proc = subprocess.run([sys.executable, "train.py", *args], check=False, cwd=project_root, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    run = tmp_path / "logs" / "train" / "runs" / "facegan"
    report = json.loads((run / "test_report.json").read_text())
    assert report["variant"] == "facegan"
    assert report["iou"] >= report["baseline_iou"] + 0.05, report
    assert list((run / "meshes").glob("epoch_*/noise_*.glb"))
