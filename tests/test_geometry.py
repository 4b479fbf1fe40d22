"""Tests of faceforge.geometry: morphable-model loaders, 300W-LP pose/projection, 300W-LP / AFLW2000-3D labels.

The projection tests use the real released files: the 3DDFA 68-point bases (40 shape / 10 expression PCs) applied to
each label's own parameters must land on the label's landmarks. Bounds follow from what the landmarks are:

* AFLW2000-3D ``pt3d_68`` are the fitted model's own landmarks (full 199/29 parameters), so the only difference is
  the truncation to 40/10 PCs: a few tenths of a percent of the face size, zero-mean. Bound 2% NME, and a mean
  signed offset < 0.5 px (face3d's ``h - y - 1`` convention would put it at 2 px).
* 300W-LP ``pt2d`` are manual 300W annotations and the parameters a 3DMM fit to them: fit error of a few percent, so
  bound 5% on the 51 inner points (the jaw follows the visible outline at large yaw) and 8% on all 68.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.spatial.transform import Rotation

from faceforge.geometry import (
    MorphableModel,
    MorphableModelError,
    ProjectionError,
    W300LPLabelError,
    angle2matrix_300wlp,
    flip_winding,
    landmarks_68_from_params,
    load_3ddfa_bfm_pkl,
    load_3ddfa_mean_shape,
    load_bfm_2009,
    project_300wlp,
    read_300wlp_mat,
)

H = 450  # 300W-LP / AFLW2000-3D image size
INNER = slice(17, 68)  # the 51 inner iBUG points (no jaw)
AFLW_NAMES = ["image00050", "image00081", "image00251", "image00430", "image00475", "image00514", "image00516",
              "image01038", "image01322", "image02283"]


def nme(pred: np.ndarray, gt: np.ndarray, box_from: np.ndarray | None = None) -> float:
    """Mean point error / sqrt(w * h) of the ground-truth landmark box (3DDFA protocol)."""
    ref = gt if box_from is None else box_from
    wh = ref[:, :2].max(0) - ref[:, :2].min(0)
    return float(np.linalg.norm(pred - gt, axis=1).mean() / np.sqrt(wh[0] * wh[1]))


@pytest.fixture(scope="module")
def model(fixtures_dir: Path) -> MorphableModel:
    return load_3ddfa_mean_shape(fixtures_dir / "3ddfa")


def _aflw_paths(fixtures_dir: Path) -> list[Path]:
    return [fixtures_dir / "prnet_aflw2000" / f"{n}.mat" for n in AFLW_NAMES]


# --------------------------------------------------------------------------------------------------------------
# Rotation and projection
# --------------------------------------------------------------------------------------------------------------

def test_rotation_is_orthonormal_with_det_one() -> None:
    rng = np.random.default_rng(0)
    for pitch, yaw, roll in rng.uniform(-np.pi, np.pi, size=(20, 3)):
        r = angle2matrix_300wlp(pitch, yaw, roll)
        assert r.shape == (3, 3)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)
        # R = Rx(-pitch) Ry(-yaw) Rz(-roll): intrinsic x-y-z Euler angles of the negated pose
        np.testing.assert_allclose(r, Rotation.from_euler("XYZ", [-pitch, -yaw, -roll]).as_matrix(), atol=1e-12)


def test_project_identity_rotation_flips_y_only() -> None:
    x = np.array([[1.0, 2.0, 3.0], [-4.0, 5.0, -6.0]])
    pose = np.array([0, 0, 0, 10.0, 20.0, 30.0, 2.0])
    v = project_300wlp(x, pose, H)
    np.testing.assert_allclose(v[:, 0], 2 * x[:, 0] + 10)
    np.testing.assert_allclose(v[:, 1], H + 1 - (2 * x[:, 1] + 20))
    np.testing.assert_allclose(v[:, 2], 2 * x[:, 2] + 30)


def test_projection_rejects_bad_input() -> None:
    with pytest.raises(ProjectionError, match="7 values"):
        project_300wlp(np.zeros((3, 3)), np.zeros(6), H)
    with pytest.raises(ProjectionError, match=r"\(N, 3\)"):
        project_300wlp(np.zeros((3, 2)), np.zeros(7), H)
    with pytest.raises(ProjectionError, match="non-finite"):
        project_300wlp(np.zeros((3, 3)), np.array([0, np.nan, 0, 0, 0, 0, 1.0]), H)


# --------------------------------------------------------------------------------------------------------------
# 3DDFA mean shape (real files)
# --------------------------------------------------------------------------------------------------------------

def test_3ddfa_mean_shape_layout(model: MorphableModel, fixtures_dir: Path) -> None:
    assert model.mean.shape == (53215, 3) and model.mean.dtype == np.float32
    assert model.triangles.shape == (105840, 3) and model.triangles.dtype == np.int64
    assert model.triangles.min() == 0 and model.triangles.max() == 53215 - 1  # 1-based file -> 0-based
    flat = np.load(fixtures_dir / "3ddfa" / "train.configs" / "keypoints_sim.npy")
    np.testing.assert_array_equal(model.landmark_flat_indices, flat)
    assert model.landmark_shape_basis.shape == (204, 40) and model.landmark_exp_basis.shape == (204, 10)
    # the 68-point mean equals the dense mean at the landmark vertices (u_base == u[keypoints])
    np.testing.assert_allclose(model.landmarks(), model.mean[model.landmark_indices], atol=1e-2)
    assert model.shape_basis is None and model.exp_basis is None
    with pytest.raises(MorphableModelError, match="no such basis"):
        model.vertices(shape_para=np.ones(199))


# --------------------------------------------------------------------------------------------------------------
# Landmark projection against the real labels
# --------------------------------------------------------------------------------------------------------------

def test_300wlp_landmarks_land_on_pt2d(model: MorphableModel, fixtures_dir: Path) -> None:
    label = read_300wlp_mat(fixtures_dir / "face3d_300wlp" / "IBUG_image_008_1_0.mat")
    assert label.pt2d is not None and label.pt2d.shape == (68, 2) and label.pt3d_68 is None
    assert abs(np.degrees(label.pose_para[1])) > 40  # a large-yaw sample: jaw outline != model jaw
    pred = landmarks_68_from_params(label, model, H)
    inner = nme(pred[INNER, :2], label.pt2d[INNER], box_from=label.pt2d)
    full = nme(pred[:, :2], label.pt2d)
    assert inner < 0.05, f"inner-51 NME {inner:.4f}"
    assert full < 0.08, f"68-point NME {full:.4f}"


@pytest.mark.parametrize("name", AFLW_NAMES)
def test_aflw2000_landmarks_match_pt3d(model: MorphableModel, fixtures_dir: Path, name: str) -> None:
    label = read_300wlp_mat(fixtures_dir / "prnet_aflw2000" / f"{name}.mat")
    assert label.pt3d_68 is not None and label.pt2d is None and label.pt2d_21 is not None
    pred = landmarks_68_from_params(label, model, H)
    gt = label.pt3d_68
    assert nme(pred[:, :2], gt[:, :2]) < 0.02
    assert nme(pred, gt, box_from=gt) < 0.02  # z too: kept as is, same scale


def test_aflw2000_projection_is_unbiased(model: MorphableModel, fixtures_dir: Path) -> None:
    """PC truncation errors average out; a convention error (e.g. y = H - y - 1) would not."""
    offsets = []
    for path in _aflw_paths(fixtures_dir):
        label = read_300wlp_mat(path)
        offsets.append((landmarks_68_from_params(label, model, H) - label.pt3d_68).mean(axis=0))
    mean_offset = np.mean(offsets, axis=0)
    assert np.all(np.abs(mean_offset) < 0.5), f"mean signed offset (x, y, z) = {mean_offset} px"


def test_wrong_rotation_convention_is_far_off(model: MorphableModel, fixtures_dir: Path) -> None:
    """The bounds above are discriminative: the transposed rotation misses by far more than 2% NME."""
    for path in _aflw_paths(fixtures_dir):
        label = read_300wlp_mat(path)
        lmk = model.landmarks(label.shape_para, label.exp_para)
        p = label.pose_para
        wrong = p[6] * lmk @ angle2matrix_300wlp(*p[:3]) + p[3:6]  # X @ R instead of X @ R.T
        wrong[:, 1] = H + 1 - wrong[:, 1]
        assert nme(wrong[:, :2], label.pt3d_68[:, :2]) > 0.1


def test_dense_mean_mesh_projects_onto_the_face(model: MorphableModel, fixtures_dir: Path) -> None:
    paths = [fixtures_dir / "face3d_300wlp" / "IBUG_image_008_1_0.mat", *_aflw_paths(fixtures_dir)]
    mean = model.vertices()
    for path in paths:
        label = read_300wlp_mat(path)
        gt = label.landmarks_2d
        v = project_300wlp(mean, label.pose_para, H)
        inside = (v[:, 0] >= 0) & (v[:, 0] <= H) & (v[:, 1] >= 0) & (v[:, 1] <= H)
        assert inside.mean() > 0.95, f"{path.name}: {inside.mean():.3f} of the vertices inside the image"
        lo, hi = v[:, :2].min(0), v[:, :2].max(0)
        assert np.all(gt.min(0) >= lo - 5) and np.all(gt.max(0) <= hi + 5), f"{path.name}: face outside mesh"
        # the mean shape's landmark vertices are near the annotated landmarks (identity differs: loose bound)
        assert nme(v[model.landmark_indices][INNER, :2], gt[INNER], box_from=gt) < 0.08, path.name


def test_triangle_winding_faces_camera_in_image_frame(model: MorphableModel, fixtures_dir: Path) -> None:
    """Documented fact: in the (mirrored) image frame the tri.mat normals point to +z (the camera)."""
    label = read_300wlp_mat(fixtures_dir / "prnet_aflw2000" / "image00050.mat")  # near-frontal
    v = project_300wlp(model.vertices(), label.pose_para, H)

    def front_normals_z(tri: np.ndarray) -> np.ndarray:
        n = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
        centre_z = v[tri, 2].mean(axis=1)
        return n[centre_z > np.percentile(centre_z, 80), 2]

    assert (front_normals_z(model.triangles) > 0).mean() > 0.95
    assert (front_normals_z(flip_winding(model.triangles)) < 0).mean() > 0.95


# --------------------------------------------------------------------------------------------------------------
# Label reader: real files and bad files
# --------------------------------------------------------------------------------------------------------------

def test_read_label_fields(fixtures_dir: Path) -> None:
    label = read_300wlp_mat(fixtures_dir / "face3d_300wlp" / "IBUG_image_008_1_0.mat")
    assert label.pose_para.shape == (7,) and label.shape_para.shape == (199,) and label.exp_para.shape == (29,)
    assert label.roi.shape == (4,)
    assert label.pose_para[6] > 0  # scale
    _pitch, yaw, _roll = label.pitch_yaw_roll
    assert yaw == pytest.approx(label.pose_para[1])
    # pt2d lies inside the 450x450 image
    assert label.pt2d.min() >= 0 and label.pt2d.max() <= H


def _good_label() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"pt2d": rng.uniform(100, 300, (2, 68)), "Pose_Para": np.array([[0.1, 0.2, 0.0, 200, 200, -80, 1e-3]]),
            "Shape_Para": rng.normal(size=(199, 1)) * 1e5, "Exp_Para": rng.normal(size=(29, 1)),
            "roi": np.array([[10, 10, 400, 400]], dtype=np.int16)}


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.pop("Exp_Para"), "Exp_Para"),
    (lambda d: d.pop("Pose_Para"), "Pose_Para"),
    (lambda d: d.__setitem__("Shape_Para", np.zeros((100, 1))), "Shape_Para"),
    (lambda d: d.__setitem__("Exp_Para", np.zeros((29, 2))), "Exp_Para"),
    (lambda d: d.__setitem__("pt2d", np.zeros((2, 50))), "pt2d"),
    (lambda d: d.__setitem__("pt3d_68", np.zeros((2, 68))), "pt3d_68"),
    (lambda d: d["Pose_Para"].__setitem__((0, 1), np.nan), "Pose_Para"),
    (lambda d: d["pt2d"].__setitem__((0, 3), np.inf), "pt2d"),
])
def test_bad_label_raises_naming_file_and_key(tmp_path: Path, mutate, key: str) -> None:
    data = _good_label()
    read_300wlp_mat_path = tmp_path / "bad.mat"
    scipy.io.savemat(read_300wlp_mat_path, data)
    read_300wlp_mat(read_300wlp_mat_path)  # the unmodified label is fine
    mutate(data)
    scipy.io.savemat(read_300wlp_mat_path, data)
    with pytest.raises(W300LPLabelError, match=rf"bad\.mat.*\[{key}\]"):
        read_300wlp_mat(read_300wlp_mat_path)


def test_unreadable_label_raises(tmp_path: Path) -> None:
    with pytest.raises(W300LPLabelError, match="file not found"):
        read_300wlp_mat(tmp_path / "absent.mat")
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(W300LPLabelError, match="junk.mat"):
        read_300wlp_mat(junk)


# --------------------------------------------------------------------------------------------------------------
# Loaders on synthetic files with the documented layouts
# --------------------------------------------------------------------------------------------------------------

def _synthetic_mesh(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = rng.normal(size=(n, 3)).astype(np.float32) * 1e4
    tri = np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)], axis=1)  # 0-based strip
    lmk = rng.choice(n, size=68, replace=False)
    return mean, tri, lmk


def _write_3ddfa_layout(root: Path, n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean, tri, lmk = _synthetic_mesh(n, rng)
    u_exp = rng.normal(size=(3 * n, 1)).astype(np.float32)
    (root / "train.configs").mkdir(parents=True)
    (root / "visualize").mkdir()
    (root / "cpp_weights").mkdir()
    np.save(root / "train.configs" / "u_shp.npy", mean.reshape(-1, 1) - u_exp)
    np.save(root / "train.configs" / "u_exp.npy", u_exp)
    flat = (3 * lmk[:, None] + np.arange(3)).reshape(-1).astype(np.int64)
    np.save(root / "train.configs" / "keypoints_sim.npy", flat)
    scipy.io.savemat(root / "visualize" / "tri.mat", {"tri": (tri.T + 1).astype(np.uint16)})
    np.savetxt(root / "cpp_weights" / "u_base.txt", mean.reshape(-1)[flat])
    np.savetxt(root / "cpp_weights" / "w_shp_base.txt", rng.normal(size=(204, 40)))
    np.savetxt(root / "cpp_weights" / "w_exp_base.txt", rng.normal(size=(204, 10)))
    return mean, tri, lmk


def test_load_3ddfa_mean_shape_synthetic(tmp_path: Path) -> None:
    mean, tri, lmk = _write_3ddfa_layout(tmp_path / "3ddfa")
    m = load_3ddfa_mean_shape(tmp_path / "3ddfa")
    np.testing.assert_allclose(m.mean, mean, rtol=1e-6, atol=1e-2)
    np.testing.assert_array_equal(m.triangles, tri)
    np.testing.assert_array_equal(m.landmark_indices, lmk)
    # 40/10 PCs: longer parameter vectors are truncated, the product is applied x1
    w_shp = np.loadtxt(tmp_path / "3ddfa" / "cpp_weights" / "w_shp_base.txt")
    shape_para = np.arange(199, dtype=np.float64)
    expected = mean[lmk].astype(np.float64) + (w_shp @ shape_para[:40]).reshape(68, 3)
    np.testing.assert_allclose(m.landmarks(shape_para), expected, rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("breakage, match", [
    (lambda r: (r / "train.configs" / "u_exp.npy").unlink(), r"u_exp\.npy: file not found"),
    (lambda r: (r / "cpp_weights" / "w_exp_base.txt").unlink(), r"w_exp_base\.txt: file not found"),
    (lambda r: scipy.io.savemat(r / "visualize" / "tri.mat", {"faces": np.ones((3, 5))}), r"tri\.mat \[tri\]"),
    (lambda r: np.save(r / "train.configs" / "keypoints_sim.npy", np.arange(204)[::-1].copy()),
     r"keypoints_sim\.npy \[keypoints_sim\]: .*triples"),
    (lambda r: np.save(r / "train.configs" / "u_exp.npy", np.zeros(30)), r"u_exp\.npy \[u_exp\]"),
    (lambda r: np.savetxt(r / "cpp_weights" / "u_base.txt", np.zeros(204)), r"u_base\.txt \[u_base\]"),
])
def test_load_3ddfa_mean_shape_errors(tmp_path: Path, breakage, match: str) -> None:
    root = tmp_path / "3ddfa"
    _write_3ddfa_layout(root)
    breakage(root)
    with pytest.raises(MorphableModelError, match=match):
        load_3ddfa_mean_shape(root)


def test_load_3ddfa_bfm_pkl_synthetic(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 120
    mean, tri, lmk = _synthetic_mesh(n, rng)
    w_shp, w_exp = rng.normal(size=(3 * n, 40)), rng.normal(size=(3 * n, 10))
    flat = (3 * lmk[:, None] + np.arange(3)).reshape(-1)
    path = tmp_path / "bfm.pkl"
    data = {"u": mean.reshape(-1, 1), "w_shp": w_shp, "w_exp": w_exp, "tri": tri, "keypoints": flat}
    path.write_bytes(pickle.dumps(data))
    m = load_3ddfa_bfm_pkl(path)
    np.testing.assert_array_equal(m.triangles, tri)  # 0-based kept
    sp, ep = rng.normal(size=199), rng.normal(size=29)
    dense = m.vertices(sp, ep)
    np.testing.assert_allclose(dense, mean + (w_shp @ sp[:40] + w_exp @ ep[:10]).reshape(-1, 3), rtol=1e-4,
                               atol=1e-2)
    np.testing.assert_allclose(m.landmarks(sp, ep), dense[lmk], rtol=1e-5, atol=1e-2)
    # 1-based, (3, F) triangles are recognised too
    data["tri"] = tri.T + 1
    path.write_bytes(pickle.dumps(data))
    np.testing.assert_array_equal(load_3ddfa_bfm_pkl(path).triangles, tri)
    del data["w_exp"]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(MorphableModelError, match=r"bfm\.pkl \[w_exp\]: missing key"):
        load_3ddfa_bfm_pkl(path)


class _RunsCode:
    """Pickles as a call of os.system: what a crafted model file would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_bfm_pickle_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "bfm.pkl"
    path.write_bytes(pickle.dumps({"u": _RunsCode(marker)}))
    with pytest.raises(MorphableModelError, match=r"bfm\.pkl.*refusing to load posix\.system"):
        load_3ddfa_bfm_pkl(path)
    assert not marker.exists()


@pytest.mark.parametrize("exp_format", ["mat", "bin"])
def test_load_bfm_2009_synthetic(tmp_path: Path, exp_format: str) -> None:
    rng = np.random.default_rng(3)
    n_full, n = 140, 120
    trim = np.sort(rng.choice(n_full, size=n, replace=False))
    shape_mu = rng.normal(size=(3 * n_full, 1)).astype(np.float32) * 1e4
    shape_pc = rng.normal(size=(3 * n_full, 199)).astype(np.float32)
    _, tri, lmk = _synthetic_mesh(n, rng)
    mu_exp = rng.normal(size=(3 * n, 1)).astype(np.float32)
    w_exp = rng.normal(size=(3 * n, 29)).astype(np.float32)
    scipy.io.savemat(tmp_path / "01_MorphableModel.mat", {"shapeMU": shape_mu, "shapePC": shape_pc,
                                                          "shapeEV": np.ones((199, 1))})
    scipy.io.savemat(tmp_path / "model_info.mat", {"trimIndex": (trim + 1).reshape(-1, 1).astype(np.float64),
                                                   "tri": (tri.T + 1).astype(np.float64),
                                                   "keypoints": (lmk + 1).reshape(1, -1).astype(np.float64)})
    if exp_format == "mat":
        exp_path = tmp_path / "Model_Expression.mat"
        scipy.io.savemat(exp_path, {"mu_exp": mu_exp, "w_exp": w_exp, "sigma_exp": np.ones((29, 1))})
    else:
        exp_path = tmp_path / "Exp_Pca.bin"
        exp_path.write_bytes(np.array([29], dtype="<i4").tobytes() + mu_exp.astype("<f4").tobytes()
                             + w_exp.T.astype("<f4").tobytes())
    m = load_bfm_2009(tmp_path / "01_MorphableModel.mat", exp_path, tmp_path / "model_info.mat")
    rows = (3 * trim[:, None] + np.arange(3)).reshape(-1)
    sp, ep = rng.normal(size=199), rng.normal(size=29)
    expected = shape_mu[rows, 0] + mu_exp[:, 0] + shape_pc[rows] @ sp + w_exp @ ep
    np.testing.assert_allclose(m.vertices(sp, ep), expected.reshape(-1, 3), rtol=1e-4, atol=1e-1)
    np.testing.assert_array_equal(m.triangles, tri)
    np.testing.assert_array_equal(m.landmark_indices, lmk)
    # the landmarks of a full model come from its dense bases
    np.testing.assert_allclose(m.landmarks(sp, ep), m.vertices(sp, ep)[lmk], rtol=1e-5, atol=1e-1)
    # and project like any other
    label_pose = np.array([0.1, -0.5, 0.05, 200, 210, -100, 1e-3])
    assert project_300wlp(m.landmarks(sp, ep), label_pose, H).shape == (68, 3)


def test_load_bfm_2009_errors(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "model_info.mat", {"tri": np.ones((3, 4)), "keypoints": np.ones((1, 68))})
    scipy.io.savemat(tmp_path / "bfm.mat", {"shapeMU": np.zeros((30, 1)), "shapePC": np.zeros((30, 2))})
    with pytest.raises(MorphableModelError, match=r"model_info\.mat \[trimIndex\]: missing key"):
        load_bfm_2009(tmp_path / "bfm.mat", tmp_path / "exp.mat", tmp_path / "model_info.mat")
    with pytest.raises(MorphableModelError, match=r"absent\.mat: file not found"):
        load_bfm_2009(tmp_path / "bfm.mat", tmp_path / "exp.mat", tmp_path / "absent.mat")
