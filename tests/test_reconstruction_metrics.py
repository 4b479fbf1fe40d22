"""Reconstruction metrics: volumetric IoU, 68-landmark NME (3DDFA's AFLW2000-3D protocol), alignment, mesh NME."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import RegularGridInterpolator

from faceforge.geometry.volume_frame import VolumeFrame
from faceforge.geometry.volume_mesh import volume_to_mesh
from faceforge.metrics.reconstruction import (
    LandmarkNME,
    MeshNME,
    ReconstructionMetricError,
    VolumetricIoU,
    apply_similarity,
    icp,
    landmark_nme,
    mesh_nme,
    outer_interocular_distance,
    umeyama,
    volumetric_iou,
)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _small_rotation(deg_x: float, deg_y: float, deg_z: float) -> np.ndarray:
    ax, ay, az = np.radians([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rx @ ry @ rz


# ------------------------------------------------------------------------------------------------ volumetric IoU

def test_iou_identical_disjoint_and_hand_case() -> None:
    t = torch.zeros(1, 4, 5, 6, dtype=torch.bool)
    t[0, 1:3, 1:4, 2:5] = True
    assert volumetric_iou(t, t).item() == 1.0
    disjoint = torch.zeros_like(t)
    disjoint[0, 3, 4, 0] = True
    assert volumetric_iou(disjoint, t).item() == 0.0
    # hand case: target 6 voxels, prediction 4 voxels, 2 shared -> 2 / 8
    target = torch.zeros(1, 2, 2, 4, dtype=torch.bool)
    target[0, 0, :, :3] = True  # 6 voxels
    pred = torch.zeros_like(target)
    pred[0, 0, 0, 2:4] = True  # (0,0,2) shared, (0,0,3) not
    pred[0, 0, 1, 2:4] = True  # (0,1,2) shared, (0,1,3) not
    assert volumetric_iou(pred, target).item() == pytest.approx(0.25)


def test_iou_metric_logits_probs_and_sample_average() -> None:
    target = torch.zeros(2, 2, 2, 4, dtype=torch.bool)
    target[:, 0, :, :3] = True
    pred = torch.zeros_like(target)
    pred[0] = target[0]  # IoU 1
    pred[1, 0, :, 2:4] = True  # IoU 0.25
    logits = torch.where(pred, 4.0, -4.0)
    m = VolumetricIoU()  # logits by default
    m.update(logits[:1], target[:1].float())
    m.update(logits[1:], target[1:].to(torch.uint8))
    assert m.compute().item() == pytest.approx(0.625)  # mean of 1 and 0.25 per sample
    probs = VolumetricIoU(from_logits=False)
    probs.update(torch.sigmoid(logits), target)
    assert probs.compute().item() == pytest.approx(0.625)
    pooled = VolumetricIoU(average="voxel")
    pooled.update(logits, target)
    assert pooled.compute().item() == pytest.approx((6 + 2) / (6 + 8))  # not the per-sample mean
    # threshold 0.9: sigmoid(4) = 0.982 still in, sigmoid(2) = 0.88 out
    hi = VolumetricIoU(threshold=0.9)
    hi.update(torch.where(pred, 2.0, -4.0), target)
    assert hi.compute().item() == 0.0
    with pytest.raises(ReconstructionMetricError, match="outside"):
        probs.update(logits, target)


def test_iou_states_merge_like_distributed() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 6, 6, generator=g)
    target = torch.rand(6, 5, 6, 6, generator=g) > 0.5
    whole = VolumetricIoU()
    whole.update(logits, target)
    a, b = VolumetricIoU(), VolumetricIoU()
    a.update(logits[:2], target[:2])
    b.update(logits[2:], target[2:])
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(whole.compute().item())
    assert whole.compute().item() == pytest.approx(volumetric_iou(logits, target).mean().item())


def test_iou_empty_cases_and_errors() -> None:
    empty = torch.zeros(1, 3, 3, 3, dtype=torch.bool)
    assert volumetric_iou(empty, empty).item() == 1.0
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics' own warning
        assert math.isnan(VolumetricIoU().compute().item())
    with pytest.raises(ReconstructionMetricError):
        volumetric_iou(torch.zeros(1, 3, 3, 3), torch.zeros(1, 3, 3, 4))
    with pytest.raises(ReconstructionMetricError, match="threshold"):
        VolumetricIoU(threshold=1.0)


# ------------------------------------------------------------------------------------------------ landmark NME

def _face_box_landmarks(w: float = 10.0, h: float = 40.0) -> torch.Tensor:
    """68 points spanning a w x h box (corners included) with outer eye corners 36, 45 at distance 8."""
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(0, w, 68), rng.uniform(0, h, 68)])
    pts[0], pts[1] = (0, 0), (w, h)
    pts[36], pts[45] = (1, 10), (9, 10)
    return torch.tensor(pts, dtype=torch.float64)


def test_landmark_nme_box_and_interocular_hand_cases() -> None:
    gt = _face_box_landmarks()[None]
    pred = gt + torch.tensor([3.0, 4.0], dtype=torch.float64)  # every point 5 px off
    assert landmark_nme(pred, gt).item() == pytest.approx(5 / math.sqrt(10 * 40))  # sqrt(w*h) = 20 -> 0.25
    assert landmark_nme(pred, gt, "interocular").item() == pytest.approx(5 / 8)
    # a third coordinate is ignored (2D protocol)
    z = torch.zeros(1, 68, 1, dtype=torch.float64)
    assert landmark_nme(torch.cat([pred, z + 7], -1), torch.cat([gt, z], -1)).item() == pytest.approx(0.25)
    # only one point wrong by 68 px -> mean error 1 px
    one = gt.clone()
    one[0, 10, 0] += 68.0
    assert landmark_nme(one, gt).item() == pytest.approx(1 / 20)


def test_landmark_nme_yaw_bins_and_balanced_mean() -> None:
    gt = _face_box_landmarks().expand(7, 68, 2).clone()
    errors = torch.tensor([1.0, 2.0, 3.0, 5.0, 7.0, 11.0, 13.0], dtype=torch.float64)  # px, along x
    pred = gt.clone()
    pred[..., 0] += errors[:, None]
    nmes = errors / 20.0
    yaw_deg = torch.tensor([10.0, -30.0, 5.0, 45.0, -60.0, 75.0, 95.0])  # 30 and 60 belong to the lower bin
    m = LandmarkNME()
    m.update(pred[:3], gt[:3], torch.deg2rad(yaw_deg[:3]))  # float32 radians: edges must still bin as 3DDFA
    m.update(pred[3:], gt[3:], torch.deg2rad(yaw_deg[3:]))
    out = m.compute()
    assert out["nme"].item() == pytest.approx(nmes.mean().item())
    assert out["n"].item() == 7
    assert out["nme_0_30"].item() == pytest.approx(nmes[:3].mean().item())
    assert out["nme_30_60"].item() == pytest.approx(nmes[3:5].mean().item())
    assert out["nme_60_90"].item() == pytest.approx(nmes[5:].mean().item())  # 95 deg joins the last bin (3DDFA)
    assert (out["n_0_30"].item(), out["n_30_60"].item(), out["n_60_90"].item()) == (3, 2, 2)
    balanced = (nmes[:3].mean() + nmes[3:5].mean() + nmes[5:].mean()) / 3  # (0.1 + 0.3 + 0.6) / 3
    assert out["nme_balanced"].item() == pytest.approx(balanced.item())
    assert out["nme_balanced"].item() == pytest.approx(1 / 3)
    assert out["nme"].item() == pytest.approx(0.3)  # the sample mean differs from the balanced one

    strict = LandmarkNME(extend_last_bin=False)
    strict.update(pred, gt, torch.deg2rad(yaw_deg))
    s = strict.compute()
    assert s["n_60_90"].item() == 1 and s["nme_60_90"].item() == pytest.approx(nmes[5].item())
    assert s["nme"].item() == pytest.approx(nmes.mean().item())  # still counted overall


def test_yaw_bins_take_edge_yaws_after_float32_radians_as_3ddfa_does() -> None:
    """30 and 60 degrees that went through float32 radians (as the data serve yaw) stay in [0, 30] and (30, 60],
    95 degrees joins the last bin, NaN joins none: the one definition used by the NME and the per-yaw IoU."""
    from faceforge.metrics.reconstruction import yaw_bin_masks

    degrees = [0.0, 30.0, 30.5, 60.0, 60.5, 90.0, 95.0, float("nan")]
    through_f32 = torch.rad2deg(torch.deg2rad(torch.tensor(degrees, dtype=torch.float64)).float().double()).abs()
    assert through_f32[1] > 30 and through_f32[3] > 60  # the float32 round trip lands just above the edges
    masks = yaw_bin_masks(through_f32, ((0, 30), (30, 60), (60, 90)))
    assert [m.nonzero().flatten().tolist() for m in masks] == [[0, 1], [2, 3], [4, 5, 6]]


def test_landmark_nme_empty_bin_no_yaw_and_errors() -> None:
    gt = _face_box_landmarks()[None]
    m = LandmarkNME()
    m.update(gt + 1.0, gt)  # no yaw: overall only
    out = m.compute()
    assert out["nme"].item() == pytest.approx(math.sqrt(2) / 20)
    assert out["n_0_30"].item() == 0 and math.isnan(out["nme_balanced"].item())
    with pytest.raises(ReconstructionMetricError, match="NaN"):
        landmark_nme(gt * float("nan"), gt)
    with pytest.raises(ReconstructionMetricError, match="degenerate"):
        landmark_nme(gt, torch.zeros_like(gt))
    with pytest.raises(ReconstructionMetricError, match="yaw"):
        m.update(gt, gt, torch.zeros(3))
    with pytest.raises(ReconstructionMetricError):
        LandmarkNME(yaw_bins=((30, 0),))


# ------------------------------------------------------------------------------------------------ alignment

def test_umeyama_recovers_similarity_numpy_and_torch() -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3)) * 10
    rot, scale, trans = _rotation(rng), 1.7, np.array([5.0, -3.0, 12.0])
    dst = scale * src @ rot.T + trans
    fit = umeyama(src, dst)
    assert float(fit.scale) == pytest.approx(scale)
    np.testing.assert_allclose(fit.rotation, rot, atol=1e-10)
    np.testing.assert_allclose(fit.translation, trans, atol=1e-9)
    np.testing.assert_allclose(apply_similarity(src, fit), dst, atol=1e-9)
    # batched torch
    src_t = torch.tensor(np.stack([src, src[::-1].copy()]))
    dst_t = torch.tensor(np.stack([dst, (src[::-1] @ rot.T + trans)]))
    fit_t = umeyama(src_t, dst_t)
    assert isinstance(fit_t.scale, torch.Tensor) and fit_t.scale.shape == (2,)
    assert torch.allclose(fit_t.scale, torch.tensor([scale, 1.0], dtype=torch.float64))
    assert torch.allclose(apply_similarity(src_t, fit_t), dst_t, atol=1e-9)
    # rigid fit of a rigid motion: scale stays 1
    rigid = umeyama(src, src @ rot.T + trans, with_scale=False)
    assert float(rigid.scale) == 1.0
    np.testing.assert_allclose(rigid.rotation, rot, atol=1e-10)


def test_umeyama_never_returns_a_reflection() -> None:
    rng = np.random.default_rng(2)
    src = rng.normal(size=(30, 3))
    mirrored = src * np.array([-1.0, 1.0, 1.0])
    fit = umeyama(src, mirrored)
    assert np.linalg.det(fit.rotation) == pytest.approx(1.0)
    with pytest.raises(ReconstructionMetricError, match="identical"):
        umeyama(np.ones((5, 3)), rng.normal(size=(5, 3)))


def _surface_points(n_u: int = 40, n_v: int = 40) -> np.ndarray:
    """A curved, face-like height field (pixels): a bumpy cap, no symmetry that would confuse ICP."""
    u, v = (a.ravel() for a in np.meshgrid(np.linspace(-1, 1, n_u), np.linspace(-1, 1, n_v)))
    z = 20 * np.sqrt(np.clip(1.2 - 0.6 * u ** 2 - 0.4 * v ** 2, 0, None)) + 3 * np.exp(-(u ** 2 + (v - 0.1) ** 2)
                                                                                       / 0.05) + 2 * u * v
    return np.column_stack([50 + 30 * u, 60 + 40 * v, z])


def test_icp_recovers_a_small_rigid_motion() -> None:
    # as in mesh evaluation: a sparse point set (ground truth) moved onto a dense one (a marching-cubes mesh)
    dense = _surface_points(120, 120)
    sparse = _surface_points(20, 20)
    rot = _small_rotation(3, -4, 2)
    centre = sparse.mean(0)
    moved = (sparse - centre) @ rot.T + centre + np.array([1.5, -1.0, 2.0])
    res = icp(moved, dense, max_iterations=200, tolerance=1e-10)
    assert res.converged
    np.testing.assert_allclose(apply_similarity(moved, res.transform), sparse, atol=0.15)
    assert res.distances.max() < 0.45  # on the dense surface: within half a cell diagonal of a dense vertex
    start = icp(moved, dense, max_iterations=0)
    assert start.iterations == 0 and start.distances.mean() > 5 * res.distances.mean()
    with pytest.raises(ReconstructionMetricError, match="init"):
        icp(moved, dense, init="nope")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ mesh NME

def test_mesh_nme_index_correspondence_hand_cases() -> None:
    gt = _surface_points(10, 10)
    d = 25.0
    shifted = gt + np.array([0.0, 0.0, 5.0])
    assert mesh_nme(shifted, gt, d, correspondence="index", alignment="none") == pytest.approx(5 / d)
    assert mesh_nme(shifted, gt, d, correspondence="index", alignment="z_translation") == pytest.approx(0, abs=1e-12)
    xy_shift = gt + np.array([3.0, 4.0, 0.0])
    assert mesh_nme(xy_shift, gt, d, "index", "z_translation") == pytest.approx(5 / d)
    assert mesh_nme(xy_shift, gt, d, "index", "translation") == pytest.approx(0, abs=1e-12)
    rot = _small_rotation(10, 20, 5)
    rotated = 1.3 * gt @ rot.T + 7
    assert mesh_nme(rotated, gt, d, "index", "rigid") > 0.01
    assert mesh_nme(rotated, gt, d, "index", "similarity") == pytest.approx(0, abs=1e-9)


def test_mesh_nme_nearest_uses_icp_only_for_correspondence() -> None:
    rng = np.random.default_rng(3)
    gt = _surface_points(30, 30)
    d = 40.0
    # the prediction: the same surface, shuffled, denser (midpoints added), plus a back plane, shifted in z by 6
    mids = (gt[:-1] + gt[1:]) / 2
    back = np.column_stack([rng.uniform(20, 80, 300), rng.uniform(20, 100, 300), np.full(300, -30.0)])
    pred = np.concatenate([gt, mids, back]) + np.array([0.0, 0.0, 6.0])
    pred = pred[rng.permutation(len(pred))]
    # VRN's protocol: correspondence by ICP, error in the ORIGINAL positions (+ the mean-z shift)
    assert mesh_nme(pred, gt, d, "nearest", "z_translation") == pytest.approx(0, abs=1e-9)
    assert mesh_nme(pred, gt, d, "nearest", "none") == pytest.approx(6 / d, rel=1e-6)
    # a rotated prediction: ICP finds the pairs, but the error is measured without the rotation...
    rot = _small_rotation(0, 4, 0)
    centre = pred.mean(0)
    turned = (pred - centre) @ rot.T + centre
    vrn = mesh_nme(turned, gt, d, "nearest", "z_translation")
    assert vrn > 0.01
    # ...unless rigid alignment is asked for (the supplementary-material variant)
    assert mesh_nme(turned, gt, d, "nearest", "rigid") < 0.002
    with pytest.raises(ReconstructionMetricError, match="interocular"):
        mesh_nme(pred, gt, 0.0)
    with pytest.raises(ReconstructionMetricError, match="same vertex count"):
        mesh_nme(pred, gt, d, "index")


def test_mesh_nme_metric_ragged_batches_and_landmark_interocular() -> None:
    gt = _surface_points(12, 12)
    lm = np.zeros((68, 3))
    lm[36], lm[45] = (10, 20, 5), (30, 20, 5)  # outer eye corners 20 apart
    assert float(outer_interocular_distance(lm)) == pytest.approx(20)
    assert outer_interocular_distance(torch.tensor(lm)[None]).shape == (1,)
    m = MeshNME()
    preds = [gt + np.array([0, 0, 3.0]), np.concatenate([gt, gt + 0.01])[::-1] + np.array([2.0, 0, 0])]
    m.update(preds, [gt, gt], target_landmarks=np.stack([lm, lm]))
    m.update(torch.tensor(gt[None]), torch.tensor(gt[None]), interocular=torch.tensor([20.0]))
    got = m.compute().item()
    # sample 1: z offset removed -> 0; sample 2: 2 px in x, not removed -> 2/20; sample 3: 0
    assert got == pytest.approx((0 + 2 / 20 + 0) / 3, abs=1e-3)
    with pytest.raises(ReconstructionMetricError, match="interocular"):
        m.update([gt], [gt])
    with pytest.raises(ReconstructionMetricError, match="correspondence"):
        MeshNME(correspondence="closest")  # type: ignore[arg-type]


def test_mesh_nme_of_a_marching_cubes_mesh_in_image_pixels() -> None:
    """End to end: voxelise a known surface with a frame, mesh it back, compare with the surface (VRN protocol)."""
    frame = VolumeFrame(scale=0.5, tx=-5.0, ty=-10.0, z_offset=4.0, depth_scale=2.0, size=48, depth=40)
    gt = _surface_points(25, 25)  # source pixels: x 20..80, y 20..100, z ~0..25
    # column volume filled from the back plane up to the surface height (VRN's filling), via the frame
    k, v, u = np.mgrid[:40, :48, :48].astype(np.float64)
    xyz = frame.volume_to_image(np.column_stack([u.ravel(), v.ravel(), k.ravel()]))
    uu, vv = np.meshgrid(np.linspace(-1, 1, 400), np.linspace(-1, 1, 400))
    xs, ys = 50 + 30 * uu, 60 + 40 * vv
    zs = (20 * np.sqrt(np.clip(1.2 - 0.6 * uu ** 2 - 0.4 * vv ** 2, 0, None))
          + 3 * np.exp(-(uu ** 2 + (vv - 0.1) ** 2) / 0.05) + 2 * uu * vv)
    height = RegularGridInterpolator((ys[:, 0], xs[0]), zs, bounds_error=False, fill_value=None)
    inside = (np.abs(xyz[:, 0] - 50) <= 30) & (np.abs(xyz[:, 1] - 60) <= 40)
    surf = height(xyz[:, [1, 0]])
    volume = (inside & (xyz[:, 2] <= surf)).reshape(40, 48, 48)
    mesh = volume_to_mesh(volume, frame=frame)
    d = 40.0
    # one voxel is 2 source px in x, y and 1 px in z: the staircase surface is within about a voxel of the truth
    nme = mesh_nme(mesh.vertices, gt, d)
    assert nme < 1.0 / d
    assert mesh_nme(mesh.vertices, gt, d, alignment="none") < 1.0 / d
