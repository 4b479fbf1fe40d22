"""Tests of faceforge.data.reconstruction.generation: 300W-LP / AFLW2000-3D samples -> stored VRN volumes.

The tree is built in a temporary folder from the real fixture files (one 300W-LP sample, also copied into an
``IBUG_Flip`` folder, three AFLW2000-3D samples in a flat folder) plus broken copies of them (missing key, NaN, wrong
shape, unreadable image, wrong image size, annotation far from the fit, unpaired files). Checks follow from what a
volume means: it lies on the face in the crop, its surface maps back onto the face in the source image (and, for
AFLW2000-3D, onto the fitted 3D landmarks' depth), bad samples are counted by reason, reruns resume and reproduce the
index.
"""
from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from faceforge.data.reconstruction.cli import main
from faceforge.data.reconstruction.codec import DENSE_BYTES_PER_SAMPLE
from faceforge.data.reconstruction.errors import VolumeGenerationError
from faceforge.data.reconstruction.generation import (
    REPORT_FILENAME,
    VolumeGenerationConfig,
    VolumeReport,
    generate_volumes,
)
from faceforge.data.reconstruction.mesh import face_mesh_from_label, thin_plate_warp
from faceforge.data.reconstruction.store import VolumeStoreError
from faceforge.data.reconstruction.volume_index import INDEX_FILENAME, open_volume_store, read_volume_index
from faceforge.data.reconstruction.w300lp import find_300wlp_samples
from faceforge.geometry import MorphableModel, MorphableModelError, load_3ddfa_mean_shape, read_300wlp_mat
from faceforge.geometry.volume_frame import VolumeFrame
from faceforge.geometry.voxelize import crop_image_to_frame, load_noneck_topology

IBUG = "IBUG_image_008_1_0"
AFLW = ["image00050", "image00251", "image00475"]  # frontal, yaw -55, yaw +66
INNER = slice(17, 68)
GOOD = {f"IBUG/{IBUG}", f"IBUG_Flip/{IBUG}", *AFLW}
EXPECTED_SKIPS = {"missing_label": 1, "missing_image": 1, "missing_key": 1, "non_finite": 1, "wrong_shape": 1,
                  "unreadable_image": 1, "image_size_mismatch": 1, "fit_mismatch": 1}
TOTAL = len(GOOD) + sum(EXPECTED_SKIPS.values())


def _build_tree(root: Path, fixtures: Path) -> None:
    src = fixtures / "face3d_300wlp"
    (root / "IBUG").mkdir(parents=True)
    for ext in ("jpg", "mat"):
        shutil.copy(src / f"{IBUG}.{ext}", root / "IBUG")
    for name in AFLW:  # AFLW2000-3D style: pairs directly in the root
        for ext in ("jpg", "mat"):
            shutil.copy(fixtures / "prnet_aflw2000" / f"{name}.{ext}", root)
    # 300W-LP's landmarks/ folder is ignored
    (root / "landmarks" / "IBUG").mkdir(parents=True)
    shutil.copy(src / f"{IBUG}.mat", root / "landmarks" / "IBUG" / f"{IBUG}_pts.mat")
    # a *_Flip folder (here a plain copy: a mirrored 3DMM fit cannot be made without the full model)
    (root / "IBUG_Flip").mkdir()
    for ext in ("jpg", "mat"):
        shutil.copy(src / f"{IBUG}.{ext}", root / "IBUG_Flip")
    img = cv2.imread(str(src / f"{IBUG}.jpg"))
    # broken samples
    bad = root / "HELEN"
    bad.mkdir()
    label = scipy.io.loadmat(str(src / f"{IBUG}.mat"))
    label = {k: v for k, v in label.items() if not k.startswith("__")}

    def write(name: str, mutate=None, image: bool = True, mat: bool = True) -> None:
        if image:
            shutil.copy(src / f"{IBUG}.jpg", bad / f"{name}.jpg")
        if mat:
            d = {k: v.copy() for k, v in label.items()}
            if mutate is not None:
                mutate(d)
            scipy.io.savemat(str(bad / f"{name}.mat"), d)

    write("HELEN_missing_key_0", lambda d: d.pop("Exp_Para"))
    write("HELEN_nan_0", lambda d: d["Pose_Para"].__setitem__((0, 3), np.nan))
    write("HELEN_shape_0", lambda d: d.__setitem__("Shape_Para", np.zeros((100, 1))))
    write("HELEN_no_label_0", mat=False)
    write("HELEN_no_image_0", image=False)
    write("HELEN_junk_0")
    (bad / "HELEN_junk_0.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
    write("HELEN_far_0", lambda d: d.__setitem__("pt2d", d["pt2d"] + 120.0))
    write("HELEN_small_0")
    cv2.imwrite(str(bad / "HELEN_small_0.jpg"), cv2.resize(img, (300, 300)))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("w300lp")
    _build_tree(root, fixtures_dir)
    return root


@pytest.fixture(scope="module")
def model(fixtures_dir: Path):
    return load_3ddfa_mean_shape(fixtures_dir / "3ddfa")


@pytest.fixture(scope="module")
def topology(fixtures_dir: Path):
    return load_noneck_topology(fixtures_dir / "3ddfa_v2" / "configs")


CONFIG = VolumeGenerationConfig(shard_size=4)


@pytest.fixture(scope="module")
def run(tree: Path, model, topology, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VolumeReport]:
    out = tmp_path_factory.mktemp("volumes")
    report = generate_volumes(find_300wlp_samples(tree), out, model, topology, workers=1, config=CONFIG)
    return out, report


def test_find_samples(tree: Path) -> None:
    samples = {s.sample_id: s for s in find_300wlp_samples(tree)}
    assert not any(sid.startswith("landmarks/") for sid in samples)
    assert set(AFLW) <= set(samples) and all(samples[n].flat and samples[n].group == n for n in AFLW)
    ibug = samples[f"IBUG/{IBUG}"]
    assert ibug.subset == "IBUG" and not ibug.flipped and ibug.group == "IBUG/IBUG_image_008_1"
    flip = samples[f"IBUG_Flip/{IBUG}"]
    assert flip.flipped and flip.group == ibug.group  # a face and its mirror share the split unit
    assert samples["HELEN/HELEN_no_label_0"].label_path is None
    assert samples["HELEN/HELEN_no_image_0"].image_path is None
    assert len(samples) == TOTAL


def test_report_counts_every_sample(run: tuple[Path, VolumeReport]) -> None:
    out, report = run
    assert report.total == TOTAL and report.stored == 5 and report.generated == TOTAL and report.reused == 0
    assert report.skipped == EXPECTED_SKIPS
    reasons = {s["sample_id"]: s["reason"] for s in report.skipped_samples}
    assert reasons["HELEN/HELEN_nan_0"] == "non_finite" and reasons["HELEN/HELEN_far_0"] == "fit_mismatch"
    assert all("HELEN_nan_0.mat" in s["detail"] for s in report.skipped_samples if s["reason"] == "non_finite")
    assert report.mesh_sources == {"landmark_warp": 5}
    assert report.splits.get("test") == 3 and report.clipped_columns == 0
    # storage: far below 1/20 of the dense uint8 volume
    assert report.volume_bytes_per_sample <= DENSE_BYTES_PER_SAMPLE / 20
    assert report.dense_to_stored_ratio > 20
    assert (out / REPORT_FILENAME).is_file() and (out / INDEX_FILENAME).is_file()


def test_volumes_lie_on_the_face(run: tuple[Path, VolumeReport], tree: Path) -> None:
    out, _ = run
    rows = read_volume_index(out)
    assert {r["sample_id"] for r in rows} == GOOD
    store = open_volume_store(out)
    assert store.sample_ids == [r["sample_id"] for r in rows]
    for i, row in enumerate(rows):
        sample = store[i]
        frame = sample.frame
        assert frame == VolumeFrame(row["frame_scale"], row["frame_tx"], row["frame_ty"], row["frame_z_offset"],
                                    row["frame_depth_scale"], row["size"], row["depth"])
        enc = sample.encoded
        mask = enc.mask
        assert 0.2 < mask.mean() < 0.8 and np.all(enc.start == 0)  # filled from k = 0 to the surface
        assert row["volume_bytes"] == store.stored_bytes(i)["volume"] <= DENSE_BYTES_PER_SAMPLE / 20
        # the annotated inner landmarks (crop pixels) lie in the footprint
        np.testing.assert_allclose(row["landmarks"], sample.landmarks, atol=0.01)
        u, v = np.round(row["landmarks"][INNER]).astype(int).T
        assert mask[v, u].mean() > 0.9, row["sample_id"]
        # the surface voxels, mapped back to the source image, cover the face region around the landmarks
        label = read_300wlp_mat(row["label_path"])
        gt = label.landmarks_2d
        vv, uu = np.nonzero(mask)
        surface = frame.volume_to_image(np.c_[uu, vv, enc.stop[vv, uu] - 1.0])
        lo, hi = gt.min(axis=0), gt.max(axis=0)
        pad = 0.35 * (hi - lo)
        near = np.all((surface[:, :2] >= lo - pad) & (surface[:, :2] <= hi + pad), axis=1)
        assert near.mean() > 0.97, row["sample_id"]
        # ... and spans the inner landmarks up to the fit's error (a few % of the face size; 300W-LP's jaw points
        # follow the visible outline, not the model's jaw, so they are left out)
        ilo, ihi = gt[INNER].min(axis=0), gt[INNER].max(axis=0)
        tol = 0.04 * np.sqrt(np.prod(hi - lo))
        assert np.all(surface[:, :2].min(axis=0) <= ilo + tol) and np.all(surface[:, :2].max(axis=0) >= ihi - tol)
        # depth: where AFLW2000-3D gives 3D landmarks, the volume's surface has their depth (nose tip, landmark 30)
        if label.pt3d_68 is not None:
            nose = label.pt3d_68[30]
            u30, v30, _ = np.round(frame.image_to_volume(nose[None])[0]).astype(int)
            z_vol = frame.volume_to_image(np.array([[u30, v30, enc.stop[v30, u30] - 0.5]]))[0, 2]
            assert abs(z_vol - nose[2]) < tol, row["sample_id"]
        # the stored crop is the source image under the same frame
        src = cv2.cvtColor(cv2.imread(row["image_path"]), cv2.COLOR_BGR2RGB)
        diff = np.abs(crop_image_to_frame(src, frame).astype(int) - sample.image.astype(int))
        assert diff.mean() < 3
        assert sample.meta["label_path"] == row["label_path"] and sample.meta["split"] == row["split"]


def test_rerun_resumes_and_reproduces(run: tuple[Path, VolumeReport], tree: Path, model, topology,
                                      tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(run[0], out)
    index = (out / INDEX_FILENAME).read_bytes()
    shards = sorted((out / "shards").iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    samples = find_300wlp_samples(tree)
    again = generate_volumes(samples, out, model, topology, config=CONFIG)
    assert again.generated == 0 and again.reused == TOTAL and again.skipped == EXPECTED_SKIPS
    assert (out / INDEX_FILENAME).read_bytes() == index
    assert {p.name: p.stat().st_mtime_ns for p in sorted((out / "shards").iterdir())} == stamps
    # an interrupted run: one shard's record never written, another shard's file cut short
    records = sorted(p for p in shards if p.suffix == ".json")
    records[0].unlink()
    h5 = max(p for p in shards if p.suffix == ".h5")
    h5.write_bytes(h5.read_bytes()[:1000])
    resumed = generate_volumes(samples, out, model, topology, config=CONFIG)
    assert 0 < resumed.generated <= 8 and resumed.reused == TOTAL - resumed.generated
    assert (out / INDEX_FILENAME).read_bytes() == index
    assert len(open_volume_store(out)) == len(GOOD)
    # a different configuration makes new shards; the old ones are reported as stale, not used
    other = generate_volumes(samples, out, model, topology, config=VolumeGenerationConfig(shard_size=4, margin=0.2))
    assert other.generated == TOTAL and len(other.stale_shards) == len(shards)
    assert read_volume_index(out)[0]["frame_scale"] < read_volume_index(run[0])[0]["frame_scale"]


def test_truncated_store_is_a_clear_error(run: tuple[Path, VolumeReport], tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(run[0], out)
    first = read_volume_index(out)[0]["store_file"]
    data = (out / first).read_bytes()
    (out / first).write_bytes(data[: len(data) // 3])
    with pytest.raises(VolumeStoreError, match=rf"{first.split('/')[-1]}: cannot open the volume store"):
        open_volume_store(out)


@pytest.mark.parametrize("where", ["/tmp/elsewhere/secret.h5", "../secret.h5", "shards/../../secret.h5"])
def test_store_file_outside_the_folder_is_refused(run: tuple[Path, VolumeReport], tmp_path: Path,
                                                  where: str) -> None:
    """The index is data: a store_file leading out of its folder is refused before any file is opened."""
    out = tmp_path / "copy"
    shutil.copytree(run[0], out)
    index = out / INDEX_FILENAME
    first = read_volume_index(out)[0]["store_file"]
    index.write_text(index.read_text().replace(first, where, 1))
    with pytest.raises(VolumeGenerationError, match=rf"{INDEX_FILENAME}: store_file '{re.escape(where)}' is not a "
                                                    rf"relative path inside"):
        open_volume_store(out)


def test_parallel_run_matches_sequential(tree: Path, model, topology, tmp_path: Path) -> None:
    samples = [s for s in find_300wlp_samples(tree)
               if s.sample_id in {"image00050", f"IBUG/{IBUG}", "HELEN/HELEN_nan_0", "HELEN/HELEN_junk_0"}]
    cfg = VolumeGenerationConfig(shard_size=2)
    seq = generate_volumes(samples, tmp_path / "seq", model, topology, workers=1, config=cfg)
    par = generate_volumes(samples, tmp_path / "par", model, topology, workers=2, config=cfg)
    assert par.stored == seq.stored == 2 and par.skipped == seq.skipped == {"non_finite": 1, "unreadable_image": 1}
    rows_seq = (tmp_path / "seq" / INDEX_FILENAME).read_text()
    assert (tmp_path / "par" / INDEX_FILENAME).read_text() == rows_seq
    a, b = open_volume_store(tmp_path / "seq"), open_volume_store(tmp_path / "par")
    for i in range(len(a)):
        assert a.read_encoded(i) == b.read_encoded(i)


def test_cli(fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "aflw"
    root.mkdir()
    for ext in ("jpg", "mat"):
        shutil.copy(fixtures_dir / "prnet_aflw2000" / f"image00050.{ext}", root)
    model_args = ["--model-dir", str(fixtures_dir / "3ddfa")]
    noneck = ["--noneck-dir", str(fixtures_dir / "3ddfa_v2" / "configs")]
    out = tmp_path / "out"
    assert main(["--root", str(root), "--output", str(out), *model_args, *noneck, "-q"]) == 0
    printed = capsys.readouterr().out
    assert "1/1 samples stored" in printed and "B/sample" in printed
    rows = read_volume_index(out)
    assert [r["sample_id"] for r in rows] == ["image00050"] and rows[0]["split"] == "test"
    assert main(["--root", str(tmp_path / "absent"), "--output", str(out), *model_args, *noneck, "-q"]) == 1
    assert "dataset root folder not found" in capsys.readouterr().err
    # the 53,215-vertex model has a neck and ears: refuse unless told which topology to use
    assert main(["--root", str(root), "--output", str(out), *model_args, "-q"]) == 1
    assert "--noneck-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(root)])
    assert exc.value.code == 2


def test_mesh_modes(model, fixtures_dir: Path) -> None:
    """auto picks the model's best representation; landmark_warp puts the landmark vertices on the fit's landmarks."""
    label = read_300wlp_mat(fixtures_dir / "prnet_aflw2000" / "image00475.mat")
    warped, mode = face_mesh_from_label(label, model)
    assert mode == "landmark_warp"
    np.testing.assert_allclose(warped[model.landmark_indices], model.landmarks(label.shape_para, label.exp_para),
                               atol=1.0)  # BFM units (micrometres)
    moved = np.linalg.norm(warped - model.mean, axis=1)
    assert moved.max() > 1000.0  # the fit differs from the mean by millimetres
    mean, mode = face_mesh_from_label(label, model, "mean")
    assert mode == "mean" and np.array_equal(mean, model.vertices())
    # a model with dense bases (here: tiny synthetic ones) is used as is
    n3 = 3 * model.num_vertices
    rng = np.random.default_rng(0)
    dense_model = MorphableModel(mean=model.mean, triangles=model.triangles, landmark_indices=model.landmark_indices,
                                 shape_basis=rng.normal(size=(n3, 3)).astype(np.float32),
                                 exp_basis=rng.normal(size=(n3, 2)).astype(np.float32))
    dense, mode = face_mesh_from_label(label, dense_model)
    assert mode == "dense"
    np.testing.assert_allclose(dense, dense_model.vertices(label.shape_para, label.exp_para))
    with pytest.raises(MorphableModelError, match="no such basis"):
        face_mesh_from_label(label, model, "dense")


# ---------------------------------------------------------------------------------------------------------------
# The thin-plate warp (scipy) and the builder shared by Hydra and the command line
# ---------------------------------------------------------------------------------------------------------------

def _reference_thin_plate_warp(points: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3D thin-plate spline (U(r) = r, affine part) solved directly from its linear system (Bookstein 1989)."""
    centre = source.mean(axis=0)
    scale = float(np.abs(source - centre).max())
    x, s, disp = (points - centre) / scale, (source - centre) / scale, (target - source) / scale
    k = len(s)
    system = np.zeros((k + 4, k + 4))
    system[:k, :k] = np.linalg.norm(s[:, None] - s[None], axis=-1)
    system[:k, k:] = np.c_[np.ones(k), s]
    system[k:, :k] = system[:k, k:].T
    coef = np.linalg.solve(system, np.r_[disp, np.zeros((4, 3))])
    field = np.linalg.norm(x[:, None] - s[None], axis=-1) @ coef[:k] + np.c_[np.ones(len(x)), x] @ coef[k:]
    return points + field * scale


def test_thin_plate_warp_matches_the_direct_solution(model, fixtures_dir: Path) -> None:
    """scipy's RBFInterpolator gives the warp the hand-written solver gave: same meshes, same volumes."""
    label = read_300wlp_mat(fixtures_dir / "prnet_aflw2000" / "image00475.mat")
    base = model.vertices()
    src, dst = base[model.landmark_indices], model.landmarks(label.shape_para, label.exp_para)
    warped = thin_plate_warp(base, src, dst)
    size = float(np.ptp(base, axis=0).max())
    assert np.abs(warped - _reference_thin_plate_warp(base, src, dst)).max() < 1e-9 * size
    np.testing.assert_allclose(warped[model.landmark_indices], dst, atol=1e-8 * size)  # interpolates exactly
    # an affine map is reproduced exactly (the spline's polynomial part), far from the landmarks too
    a = np.array([[1.1, 0.1, 0.0], [-0.05, 0.9, 0.2], [0.0, 0.1, 1.2]])
    np.testing.assert_allclose(thin_plate_warp(base, src, src @ a.T + 3.0), base @ a.T + 3.0, atol=1e-7 * size)
    with pytest.raises(np.linalg.LinAlgError):
        thin_plate_warp(base, src * [1, 1, 0], dst)  # coplanar landmarks


def _write_dense_bfm_pickle(path: Path, model: MorphableModel) -> None:
    """A 3DDFA-layout BFM pickle (``u``, ``w_shp``, ``w_exp``, ``tri``, ``keypoints``) with dense bases.

    The real BFM is not redistributable; this one has the fixture's mean shape and its 68-point bases on the landmark
    vertices (zero elsewhere), so its dense fits differ from the landmark-warped mean.
    """
    n = model.num_vertices
    rows = (3 * model.landmark_indices[:, None] + np.arange(3)).reshape(-1)
    w_shp = np.zeros((3 * n, model.landmark_shape_basis.shape[1]), np.float32)
    w_exp = np.zeros((3 * n, model.landmark_exp_basis.shape[1]), np.float32)
    w_shp[rows], w_exp[rows] = model.landmark_shape_basis, model.landmark_exp_basis
    with open(path, "wb") as fh:
        pickle.dump({"u": model.mean.reshape(-1, 1).astype(np.float32), "w_shp": w_shp, "w_exp": w_exp,
                     "tri": model.triangles.T, "keypoints": rows}, fh)


def _hydra_builder(project_root: Path, *overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(project_root / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    assert cfg.data.builder._target_ == "faceforge.data.reconstruction.builders.build_w300lp_volumes"
    return instantiate(cfg.data.builder)


def test_hydra_builder_uses_a_dense_bfm_like_the_cli(model, fixtures_dir: Path, project_root: Path,
                                                     tmp_path: Path) -> None:
    """data=aflw2000 with data.builder.bfm_pkl makes the dense-fit volumes faceforge-make-volumes --bfm-pkl makes."""
    root = tmp_path / "aflw"
    root.mkdir()
    for name in AFLW[:2]:
        for ext in ("jpg", "mat"):
            shutil.copy(fixtures_dir / "prnet_aflw2000" / f"{name}.{ext}", root)
    pkl = tmp_path / "bfm_dense.pkl"
    _write_dense_bfm_pickle(pkl, model)
    noneck = fixtures_dir / "3ddfa_v2" / "configs"
    builder = _hydra_builder(project_root, "data=aflw2000", f"data.root={root}", "data.model_dir=null",
                             f"data.noneck_dir={noneck}", f"data.builder.bfm_pkl={pkl}", "data.builder.size=96",
                             "data.builder.depth=100")
    report = builder(output_dir=tmp_path / "hydra")
    assert report["stored"] == 2 and report["mesh_sources"] == {"dense": 2} and "BFM pickle" in report["model"]["model"]
    assert main(["--root", str(root), "--output", str(tmp_path / "cli"), "--bfm-pkl", str(pkl), "--noneck-dir",
                 str(noneck), "--size", "96", "--depth", "100", "-q"]) == 0
    # same settings, same defaults: the same shards and a byte-identical index
    assert (tmp_path / "hydra" / INDEX_FILENAME).read_bytes() == (tmp_path / "cli" / INDEX_FILENAME).read_bytes()
    rows = read_volume_index(tmp_path / "hydra")
    assert [r["mesh_source"] for r in rows] == ["dense", "dense"] and {r["split"] for r in rows} == {"test"}
    # the dense mesh is not the landmark-warped mean the mean-shape model gives
    model_dir = fixtures_dir / "3ddfa"
    warp = _hydra_builder(project_root, "data=aflw2000", f"data.root={root}", f"data.model_dir={model_dir}",
                          f"data.noneck_dir={noneck}", "data.builder.size=96", "data.builder.depth=100")
    assert warp(output_dir=tmp_path / "warp")["mesh_sources"] == {"landmark_warp": 2}
    with open_volume_store(tmp_path / "hydra") as dense_store, open_volume_store(tmp_path / "warp") as warp_store:
        assert dense_store.read_encoded(0) != warp_store.read_encoded(0)


def test_hydra_builder_with_the_real_dense_bfm(fixtures_dir: Path, project_root: Path, tmp_path: Path) -> None:
    """The real 3DDFA BFM pickle, where the fixture folder has it (it is not redistributable: usually absent)."""
    found = [p for p in (fixtures_dir / "3ddfa" / "bfm_noneck_v3.pkl", fixtures_dir / "3ddfa_v2" / "configs" /
                         "bfm_noneck_v3.pkl") if p.is_file()]
    if not found:
        pytest.skip(f"no dense Basel Face Model (bfm_noneck_v3.pkl) under {fixtures_dir}: the BFM is not "
                    "redistributable")
    builder = _hydra_builder(project_root, "data=aflw2000", f"data.root={fixtures_dir / 'prnet_aflw2000'}",
                             "data.model_dir=null", "data.noneck_dir=null", f"data.builder.bfm_pkl={found[0]}",
                             "data.builder.size=96", "data.builder.depth=100", "data.builder.limit=2")
    report = builder(output_dir=tmp_path / "volumes")
    assert report["stored"] == 2 and report["mesh_sources"] == {"dense": 2}


def test_builder_needs_exactly_one_model_and_the_cli_says_so_in_one_line(fixtures_dir: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from faceforge.data.reconstruction.builders import build_w300lp_volumes
    from faceforge.data.reconstruction.errors import VolumeGenerationError

    root = fixtures_dir / "prnet_aflw2000"
    with pytest.raises(VolumeGenerationError, match="exactly one morphable model.*got none"):
        build_w300lp_volumes(tmp_path / "a", root, model_dir=None)
    with pytest.raises(VolumeGenerationError, match="got model_dir, bfm_pkl"):
        build_w300lp_volumes(tmp_path / "a", root, model_dir=fixtures_dir / "3ddfa", bfm_pkl=tmp_path / "x.pkl")
    with pytest.raises(VolumeGenerationError, match="bfm_pkl=.*absent.pkl: file not found"):
        build_w300lp_volumes(tmp_path / "a", root, bfm_pkl=tmp_path / "absent.pkl")
    assert not (tmp_path / "a").exists()  # refused before writing anything
    assert main(["--root", str(root), "--output", str(tmp_path / "b"), "--bfm-pkl", str(tmp_path / "absent.pkl"),
                 "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("faceforge: VolumeGenerationError: bfm_pkl=") and err.count("\n") == 1


def test_cli_defaults_are_the_builders() -> None:
    """No default is written twice: every option of faceforge-make-volumes defaults to make_w300lp_volumes'."""
    import inspect

    from faceforge.data.reconstruction.builders import make_w300lp_volumes
    from faceforge.data.reconstruction.cli import build_parser

    defaults = {k: p.default for k, p in inspect.signature(make_w300lp_volumes).parameters.items()
                if p.default is not inspect.Parameter.empty}
    args = vars(build_parser().parse_args(["--root", "r", "--output", "o", "--model-dir", "m"]))
    shared = set(args) & set(defaults) - {"model_dir"}
    assert {"size", "depth", "workers", "margin", "mesh", "image_size", "max_landmark_nme", "shard_size"} <= shared
    assert {k: args[k] for k in shared} == {k: defaults[k] for k in shared}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.slow
def test_kill_9_mid_run_leaves_no_worker_and_the_rerun_gives_the_same_index(fixtures_dir: Path,
                                                                            tmp_path: Path) -> None:
    """SIGKILL of ``faceforge-make-volumes --workers 2`` mid-run: its workers die with it (the shared runner), no
    index is left, and rerunning the same command reuses the finished shards and writes the index an uninterrupted
    run writes."""
    import subprocess
    import sys

    from tests.test_runner import kill_mid_run

    root = tmp_path / "aflw"
    root.mkdir()
    for src in sorted((fixtures_dir / "prnet_aflw2000").glob("*.mat")):
        for copy in range(4):  # 40 samples, so that the run is still going when it is killed
            for ext in ("jpg", "mat"):
                shutil.copy(src.with_suffix(f".{ext}"), root / f"{src.stem}_{copy}.{ext}")
    common = ["--root", str(root), "--model-dir", str(fixtures_dir / "3ddfa"), "--noneck-dir",
              str(fixtures_dir / "3ddfa_v2" / "configs"), "--size", "64", "--depth", "64", "--shard-size", "2", "-q"]
    assert main([*common, "--output", str(tmp_path / "reference")]) == 0
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "faceforge.data.reconstruction.cli", *common, "--output", str(out), "--workers", "2"]
    cwd = Path(__file__).resolve().parents[1]
    kill_mid_run(argv, cwd, lambda: (out / "shards").is_dir() and any((out / "shards").glob("part-*.json")),
                 "volume generation", timeout=120)  # a shard is done: the run is in the middle
    assert not (out / INDEX_FILENAME).exists()  # the index is written last
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert len(read_volume_index(out)) == 40
    assert "reused" in done.stdout and " 0 reused" not in done.stdout
    assert (out / INDEX_FILENAME).read_bytes() == (tmp_path / "reference" / INDEX_FILENAME).read_bytes()
