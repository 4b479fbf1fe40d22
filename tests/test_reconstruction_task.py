"""Tests of faceforge.tasks.reconstruction.VolumeRegressionTask on tiny networks and tiny synthetic volumes.

What matters: the losses train every variant; VRN-Guided is guided by GROUND-TRUTH heatmaps in training and by its
own predictions at validation / test; landmarks are read back from heatmaps where they were put; metrics, meshes
and test outputs are produced; shape mismatches give a clear error; checkpoints hold primitives only and rebuild
the task with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint

from faceforge.data.reconstruction.codec import decode_runs
from faceforge.data.reconstruction.datamodule import VolumeDataModule
from faceforge.data.reconstruction.synthetic import build_synthetic_reconstruction
from faceforge.geometry.volume_frame import VolumeFrame
from faceforge.metrics.reconstruction import volumetric_iou
from faceforge.models.vrn import VRN, VRNGuided, gaussian_heatmaps
from faceforge.reporting.tables import markdown_table
from faceforge.tasks.checkpointing import load_task
from faceforge.tasks.reconstruction import (
    ReconstructionTaskError,
    VolumeRegressionTask,
    crop_to_source,
    heatmap_landmarks,
    image_to_heatmap_points,
    interocular_voxels,
    visible_surface_points,
)

SIZE = 32
DEPTH = 32
SMALL = {"features": 16, "depth": 1, "stem_channels": [8, 16]}


def vrn_spec(in_channels: int = 3, out_depth: int = DEPTH) -> dict:
    return {"_target_": "faceforge.models.vrn.VRN", "num_stacks": 1, "out_depth": out_depth,
            "in_channels": in_channels, "output_size": SIZE, **SMALL}


def net_spec(variant: str) -> dict:
    if variant == "vrn":
        return vrn_spec()
    if variant == "guided":
        return {"_target_": "faceforge.models.vrn.VRNGuided",
                "landmark_net": {"_target_": "faceforge.models.hourglass.StackedHourglass", "num_stacks": 2,
                                 "num_points": 68, "in_channels": 3, **SMALL},
                "vrn": vrn_spec(in_channels=71)}
    return {"_target_": "faceforge.models.vrn.VRNMultitask", "shared_stacks": 1, "branch_stacks": 1,
            "out_depth": DEPTH, "num_points": 68, "in_channels": 3, "output_size": SIZE, **SMALL}


def build_net(variant: str) -> torch.nn.Module:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return instantiate(OmegaConf.create(net_spec(variant)), _convert_="all")


def make_task(variant: str, **kwargs) -> VolumeRegressionTask:
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    return VolumeRegressionTask(build_net(variant), variant=variant,
                                net_spec=OmegaConf.to_yaml(OmegaConf.create(net_spec(variant))), **kwargs)


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> VolumeDataModule:
    out = tmp_path_factory.mktemp("tiny3d")
    build_synthetic_reconstruction(out, num_samples=10, size=SIZE, depth=DEPTH, seed=0, val_fraction=0.2,
                                   test_fraction=0.2)
    dm = VolumeDataModule("synthetic_3d", str(out), batch_size=3, augment={"rotation_deg": 10.0}, seed=0)
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def batch(datamodule: VolumeDataModule) -> dict:
    # as the task receives it: the run maps decoded on the device by the data module's on_after_batch_transfer
    return datamodule.on_after_batch_transfer(next(iter(datamodule.val_dataloader())), 0)


# ------------------------------------------------------------------ helpers
def test_heatmap_landmarks_recover_subpixel_points() -> None:
    pts = torch.tensor([[[10.3, 20.7], [5.0, 5.0], [30.6, 1.2]]])
    maps = gaussian_heatmaps(pts, (32, 40), sigma=1.0)
    got = heatmap_landmarks(maps)
    assert torch.allclose(got, pts, atol=0.1)
    # image -> heatmap -> image round trip through the H/4 resolution of the networks
    img_pts = torch.tensor([[[100.0, 37.5], [13.0, 170.0], [3.0, 190.0]]])
    hm_pts = image_to_heatmap_points(img_pts, (192, 192), (48, 48))
    back = heatmap_landmarks(gaussian_heatmaps(hm_pts, 48, sigma=1.0), (192, 192))
    assert torch.allclose(back[:, :2], img_pts[:, :2], atol=0.4)
    # in the border heatmap pixel there is no neighbour to refine with: within half a heatmap pixel (2 px)
    assert torch.allclose(back[:, 2], img_pts[:, 2], atol=2.0)


def test_crop_to_source_inverts_the_frame() -> None:
    frame = VolumeFrame(scale=0.4, tx=-20.0, ty=-33.0, z_offset=5.0)
    src = np.array([[120.0, 200.0], [300.5, 90.25]])
    crop = frame.image_to_volume(np.c_[src, np.zeros(2)])[:, :2]
    f = torch.tensor([[frame.scale, frame.tx, frame.ty, frame.z_offset, 1.0],
                      [float("nan")] * 5], dtype=torch.float64)
    pts = torch.tensor(np.stack([crop, crop]))
    out = crop_to_source(pts, f)
    assert torch.allclose(out[0], torch.tensor(src), atol=1e-9)
    assert torch.equal(out[1], pts[1])  # no frame: crop pixels kept


# ------------------------------------------------------------------ steps
@pytest.mark.parametrize("variant", ["vrn", "guided", "multitask"])
def test_every_variant_learns_a_batch(variant: str, batch: dict) -> None:
    task = make_task(variant)
    task.train()
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        out = task._run(batch, training=True)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
        if variant != "vrn":
            assert out["heatmap_loss"] is not None and out["heatmaps"].shape[-2:] == (SIZE // 4, SIZE // 4)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.9 * losses[0] and min(losses[-3:]) < min(losses[:3])
    grads = [p.grad for p in task.net.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


def test_guided_uses_ground_truth_heatmaps_in_training_only(batch: dict) -> None:
    task = make_task("guided")
    seen: list = []
    original = task.net.forward

    def spy(image, landmark_heatmaps=None):
        seen.append(None if landmark_heatmaps is None else landmark_heatmaps.detach().clone())
        return original(image, landmark_heatmaps)

    task.net.forward = spy  # type: ignore[method-assign]
    task.train()
    task._run(batch, training=True)
    assert seen[-1] is not None
    expected = gaussian_heatmaps(batch["landmarks"].float(), SIZE, sigma=1.0)
    assert torch.allclose(seen[-1], expected)  # exactly the ground truth, at the image resolution, sigma 1
    peak = expected.flatten(2).argmax(-1)
    assert torch.equal(peak % SIZE, batch["landmarks"][..., 0].round().long().clamp(0, SIZE - 1))
    task.eval()
    with torch.no_grad():
        out = task._run(batch, training=False)
    assert seen[-1] is None  # validation / test: the landmark network's own heatmaps guide
    assert out["heatmaps"] is not None


def test_mismatched_volume_and_variant_errors(batch: dict) -> None:
    task = VolumeRegressionTask(VRN(num_stacks=1, out_depth=16, output_size=SIZE, **{**SMALL, "stem_channels":
                                                                                    (8, 16)}))
    with pytest.raises(ReconstructionTaskError, match="out_depth"):
        task._run(batch, training=True)
    with pytest.raises(ReconstructionTaskError, match="VRNGuided"):
        VolumeRegressionTask(build_net("vrn"), variant="guided")
    with pytest.raises(ReconstructionTaskError, match="plain VRN"):
        VolumeRegressionTask(build_net("multitask"), variant="vrn")
    with pytest.raises(ReconstructionTaskError, match="variant"):
        VolumeRegressionTask(build_net("vrn"), variant="unguided")


# ------------------------------------------------------------------ Lightning, checkpoints, outputs
def test_fit_test_checkpoint_round_trip(datamodule: VolumeDataModule, tmp_path: Path) -> None:
    pl.seed_everything(0)
    task = make_task("guided", optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3}, num_val_meshes=2,
                     mesh_format="obj")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/iou", mode="max", save_last=True)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, callbacks=[ckpt], enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0,
                         log_every_n_steps=1)
    trainer.fit(task, datamodule=datamodule)
    assert "val/iou" in trainer.callback_metrics and "val/nme" in trainer.callback_metrics
    assert 0.0 <= float(trainer.callback_metrics["val/iou"]) <= 1.0
    # the trivial baseline beside the model: the mean training volume (> 0.5) and the mean training landmarks
    stats = datamodule.train_statistics()
    assert torch.equal(task.baseline_volume, torch.from_numpy(stats.mean_occupancy > 0.5))
    val_targets = [decode_runs(b["start"], b["stop"], DEPTH) for b in datamodule.val_dataloader()]
    expected_iou = volumetric_iou(task.baseline_volume.expand_as(torch.cat(val_targets)), torch.cat(val_targets))
    assert float(trainer.callback_metrics["val/baseline_iou"]) == pytest.approx(float(expected_iou.mean()), 1e-5)
    assert float(trainer.callback_metrics["val/baseline_nme"]) > 0
    meshes = sorted((tmp_path / "meshes" / "epoch_001").glob("*.obj"))
    assert len(meshes) <= 2 and (tmp_path / "meshes" / "gt").is_dir()
    assert len(list((tmp_path / "meshes" / "gt").glob("*.obj"))) == 2

    # checkpoint: primitives only, rebuilt with weights_only=True
    best = ckpt.best_model_path
    raw = torch.load(best, map_location="cpu", weights_only=True)
    assert raw["faceforge"]["task_class"] == "faceforge.tasks.reconstruction.VolumeRegressionTask"
    hp = raw["hyper_parameters"]
    assert hp["variant"] == "guided" and hp["optimizer"] == {"_target_": "torch.optim.Adam", "lr": 1e-3}
    assert yaml.safe_load(hp["net_spec"])["_target_"] == "faceforge.models.vrn.VRNGuided"
    loaded = load_task(best)
    assert isinstance(loaded, VolumeRegressionTask) and isinstance(loaded.net, VRNGuided)
    reference = make_task("guided")
    reference.load_state_dict(raw["state_dict"])
    reference.eval()
    images = next(iter(datamodule.val_dataloader()))["image"]
    with torch.no_grad():
        a, b = loaded(images), reference(images)
    assert torch.allclose(a.volume, b.volume) and torch.allclose(a.heatmaps[-1], b.heatmaps[-1])

    # test: report, table, per-sample outputs
    trainer.test(loaded, datamodule=datamodule)
    report = loaded.test_report
    n_test = len(datamodule.sample_ids["test"])
    assert report["n"] == n_test and report["n_landmarks"] == n_test
    for key in ("iou", "nme", "nme_0_30", "nme_30_60", "nme_60_90", "nme_balanced", "iou_0_30", "baseline_iou",
                "baseline_nme", "mesh_nme", "n_mesh_nme", "baseline_mesh_nme", "n_baseline_mesh_nme"):
        assert key in report
    assert report["n_baseline_mesh_nme"] == n_test and report["baseline_mesh_nme"] > 0
    assert torch.equal(loaded.baseline_volume, task.baseline_volume)  # kept in the checkpoint
    assert 0.0 <= report["iou"] <= 1.0 and report["nme"] > 0
    rows, columns = loaded.result_table(report, "synthetic_3d")
    assert "| synthetic_3d | all | guided |" in markdown_table(rows, columns)
    assert "IoU trivial" in markdown_table(rows, columns)
    written = loaded.write_test_outputs(tmp_path / "eval", datamodule)
    with open(written[0], newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["sample_id"] for r in table] == datamodule.sample_ids["test"]
    assert all(len(r["landmarks"].split()) == 136 and float(r["nme"]) > 0 for r in table)
    assert np.mean([float(r["baseline_mesh_nme"]) for r in table]) == pytest.approx(report["baseline_mesh_nme"],
                                                                                    rel=1e-5)
    assert "Mesh NME trivial" in markdown_table(rows, columns)
    mean_nme = np.mean([float(r["nme"]) for r in table])
    assert mean_nme == pytest.approx(report["nme"], rel=1e-5)
    assert all(p.exists() for p in written)


def test_checkpoints_from_before_the_baseline_still_load() -> None:
    task = make_task("vrn")
    state = {k: v for k, v in task.state_dict().items() if not k.startswith("baseline_")}
    fresh = make_task("vrn")
    fresh.load_state_dict(state)  # strict: the missing baseline buffers are not an error
    assert fresh.baseline_volume.numel() == 0
    task.set_baseline(np.full((DEPTH, SIZE, SIZE), 0.7, np.float32), np.zeros((68, 2), np.float32))
    fresh.load_state_dict(task.state_dict())
    assert fresh.baseline_volume.shape == (DEPTH, SIZE, SIZE) and bool(fresh.baseline_volume.all())


def test_predicted_guides_have_the_form_of_ground_truth_guides() -> None:
    net = build_net("guided")
    pts = torch.tensor([[[5.0, 7.0], [20.25, 11.5]] * 34])  # (1, 68, 2) image pixels
    heat = gaussian_heatmaps(image_to_heatmap_points(pts, (SIZE, SIZE), (SIZE // 4, SIZE // 4)), SIZE // 4)
    guide = net.guide_from_heatmaps(heat, (SIZE, SIZE))
    truth = gaussian_heatmaps(pts, SIZE, sigma=1.0)
    assert guide.shape == truth.shape
    assert float((guide - truth).abs().max()) < 0.2  # same sigma and peak; sub-pixel decoding error only
    assert float(guide.amax()) == pytest.approx(float(truth.amax()), abs=0.1)


def test_plain_vrn_reports_iou_without_landmarks(datamodule: VolumeDataModule, tmp_path: Path) -> None:
    task = make_task("vrn", num_val_meshes=0, scheduler=None)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         limit_train_batches=1)
    trainer.fit(task, datamodule=datamodule)
    trainer.test(task, datamodule=datamodule)
    assert "iou" in task.test_report and "nme" not in task.test_report
    assert "val/nme" not in trainer.callback_metrics
    # the mesh NME needs no predicted landmarks: the ground truth's eye corners normalise it
    assert task.test_report["n_mesh_nme"] + task.test_report["n_baseline_mesh_nme"] > 0
    assert "test/baseline_mesh_nme" in trainer.callback_metrics
    assert not (tmp_path / "meshes").exists()
    assert isinstance(task.configure_optimizers(), torch.optim.RMSprop)


def test_default_optimisation_is_the_papers() -> None:
    task = VolumeRegressionTask(build_net("vrn"))
    conf = task.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.RMSprop) and opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    for _ in range(40):
        opt.step()  # (no gradients: a no-op that keeps the optimiser-then-scheduler order)
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)





# ------------------------------------------------------------------ batches arrive decoded; one typed protocol
def test_data_module_decodes_volumes_and_the_task_imports_no_data_internals(datamodule: VolumeDataModule) -> None:
    raw = next(iter(datamodule.val_dataloader()))
    start, stop = raw["start"].clone(), raw["stop"].clone()
    decoded = datamodule.on_after_batch_transfer(dict(raw), 0)
    assert "start" not in decoded and "stop" not in decoded
    assert decoded["volume"].dtype == torch.float32 and decoded["volume"].shape == (start.shape[0], DEPTH, SIZE, SIZE)
    assert torch.equal(decoded["volume"], decode_runs(start, stop, DEPTH))
    task = make_task("vrn")
    with pytest.raises(ReconstructionTaskError, match="on_after_batch_transfer"):
        task._run(raw, training=False)  # undecoded run maps are refused, not decoded by the task
    import ast

    import faceforge.tasks.reconstruction as rec

    tree = ast.parse(Path(rec.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if m and m.startswith("faceforge.data")]


def test_task_data_protocol_is_checked_with_isinstance(datamodule: VolumeDataModule) -> None:
    from faceforge.data.detection.datamodule import FaceDataModule
    from faceforge.tasks.protocols import TaskData, task_data

    assert isinstance(datamodule, TaskData) and task_data(datamodule) is datamodule
    assert datamodule.item_names("val") == datamodule.sample_ids["val"] and datamodule.group_names() is None
    assert task_data(object()) is None
    assert issubclass(FaceDataModule, TaskData)


# ------------------------------------------------------------------ mesh NME
def test_mesh_nme_of_a_perfect_prediction_is_zero_and_the_baseline_is_worse(datamodule: VolumeDataModule,
                                                                            batch: dict) -> None:
    task = make_task("vrn")
    stats = datamodule.train_statistics()
    task.set_baseline(stats.mean_occupancy, stats.mean_landmarks)
    target = batch["volume"].float()
    perfect = (target * 2 - 1) * 10.0  # logits whose sigmoid crosses 0.5 exactly half way, like the target's
    pred, base = task._mesh_nmes(batch, perfect, target)
    assert pred.dtype == torch.float64 and pred.shape == (target.shape[0],)
    assert torch.isfinite(pred).all() and torch.isfinite(base).all()
    assert float(pred.abs().max()) == 0.0  # rounded to MESH_NME_DECIMALS
    assert bool((base > 0.01).all())
    shifted = torch.roll(perfect, shifts=2, dims=-1)  # the face 2 voxels to the right: a clear, finite error
    worse, _ = task._mesh_nmes(batch, shifted, target)
    assert bool((worse > 1e-3).all())
    # switched off: nothing computed
    off = make_task("vrn", mesh_nme=False)
    pred_off, base_off = off._mesh_nmes(batch, perfect, target)
    assert bool(torch.isnan(pred_off).all() and torch.isnan(base_off).all())


def test_mesh_nme_counts_only_the_ground_truths_visible_surface() -> None:
    """The face region of Jackson et al. (Sec. 5): of a closed volume mesh only the visible surface counts (the top
    faces of the columns and the step wall between two heights), not the flat back or the outer rim walls."""
    from faceforge.geometry.volume_mesh import volume_to_mesh

    target = np.zeros((12, 16, 16), np.float32)
    target[:5, 4:12, 4:8] = 1  # left half of the face: front surface at level 4 + 0.5
    target[:9, 4:12, 8:12] = 1  # right half: at level 8 + 0.5 (a 4-voxel step at u = 7.5)
    pts = np.asarray(volume_to_mesh(target).vertices, dtype=np.float64)
    kept = visible_surface_points(pts, target)
    assert 0 < len(kept) < len(pts)
    assert not np.any(kept[:, 2] < 3.5)  # the back (k = -0.5) and the low parts of the rim walls are gone
    left = kept[kept[:, 0] < 7]
    right = kept[kept[:, 0] > 8]
    assert np.allclose(left[:, 2], 4.5, atol=1.0) and np.allclose(right[:, 2], 8.5, atol=1.0)
    step = kept[np.isclose(kept[:, 0], 7.5)]
    assert step[:, 2].min() <= 5.0 and step[:, 2].max() >= 8.0  # the step wall between the halves is face
    assert len(visible_surface_points(pts, np.zeros_like(target))) == 0


def test_mesh_nme_is_nan_without_eye_corners(batch: dict) -> None:
    task = make_task("vrn")
    no_lmk = {**batch, "landmarks": torch.full_like(batch["landmarks"], float("nan"))}
    target = batch["volume"].float()
    pred, base = task._mesh_nmes(no_lmk, (target * 2 - 1) * 10.0, target)
    assert bool(torch.isnan(pred).all() and torch.isnan(base).all())  # no baseline set either


def test_interocular_voxels_reads_depth_from_the_volume_surface() -> None:
    target = np.zeros((10, 16, 16), np.float32)
    target[:4, :, :8] = 1  # left half: front surface at level 3 + 0.5
    target[:7, :, 8:] = 1  # right half: front surface at level 6 + 0.5
    lmk = np.full((68, 2), np.nan)
    lmk[36], lmk[45] = (2.0, 5.0), (12.0, 5.0)
    assert interocular_voxels(lmk, target, (16, 16)) == pytest.approx(np.hypot(10.0, 3.0))
    # a crop twice the volume's side: pixels map to voxel columns ((x + 0.5) / 2 - 0.5)
    lmk2 = lmk.copy()
    lmk2[36], lmk2[45] = (4.5, 10.5), (24.5, 10.5)
    assert interocular_voxels(lmk2, target, (32, 32)) == pytest.approx(np.hypot(10.0, 3.0))
    # an empty column: the 2D distance
    target[:, :, 12] = 0
    assert interocular_voxels(lmk, target, (16, 16)) == pytest.approx(10.0)
    # 3D landmarks win when the data has them
    l3 = np.zeros((68, 3))
    l3[45] = (3.0, 4.0, 12.0)
    assert interocular_voxels(lmk, target, (16, 16), l3) == pytest.approx(13.0)
    assert math.isnan(interocular_voxels(np.full((68, 2), np.nan), target, (16, 16)))


def test_mesh_frame_option_is_checked_and_used(batch: dict) -> None:
    with pytest.raises(ReconstructionTaskError, match="mesh_frame"):
        make_task("vrn", mesh_frame="y_up")
    volume = batch["volume"][0].float().numpy()
    display = make_task("vrn")._display_mesh(volume, None)
    authors = make_task("vrn", mesh_frame="vrn_authors")._display_mesh(volume, None)
    c = (SIZE - 1) / 2
    a, d = np.asarray(authors.vertices), np.asarray(display.vertices)
    np.testing.assert_allclose(d, np.c_[a[:, 0] - c, c - a[:, 1], 2 * a[:, 2] - DEPTH / 2])
    assert authors.volume > 0 and display.volume > 0  # both wound with outward normals


def test_evaluate_overrides_the_mesh_options() -> None:
    from omegaconf import OmegaConf

    from faceforge.runs.common import RunConfigError
    from faceforge.runs.evaluation import _apply_mesh_overrides

    task = make_task("vrn")
    _apply_mesh_overrides(task, OmegaConf.create({"model": {"mesh_frame": "vrn_authors", "mesh_nme": False}}))
    assert task.mesh_frame == "vrn_authors" and not task.mesh_nme_enabled
    _apply_mesh_overrides(task, OmegaConf.create({}))  # nothing asked: unchanged
    assert task.mesh_frame == "vrn_authors"
    with pytest.raises(RunConfigError, match="mesh_frame"):
        _apply_mesh_overrides(task, OmegaConf.create({"model": {"mesh_frame": "y_up"}}))
    with pytest.raises(RunConfigError, match="3D reconstruction"):
        _apply_mesh_overrides(torch.nn.Linear(1, 1), OmegaConf.create({"model": {"mesh_nme": True}}))
