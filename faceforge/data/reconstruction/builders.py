"""The builder of ``data=w300lp`` / ``data=aflw2000``, shared with ``faceforge-make-volumes``.

:func:`make_w300lp_volumes` loads the morphable model and the topology to voxelise, finds the image + ``.mat``
pairs (:func:`faceforge.data.reconstruction.w300lp.find_300wlp_samples`) and runs
:func:`faceforge.data.reconstruction.generation.generate_volumes`. :func:`build_w300lp_volumes` is the same run as
a Hydra builder (``data.builder``), and the console command
(:mod:`faceforge.data.reconstruction.cli`) takes its defaults from :func:`make_w300lp_volumes`'s signature, so both
paths make the same volumes from the same settings and no default is written twice.

The morphable model is exactly one of (``mesh="auto"`` then picks what the model can represent,
:mod:`faceforge.data.reconstruction.mesh`):

* ``model_dir``: a 3DDFA-layout folder (mean shape + 68-point bases,
  :func:`faceforge.geometry.morphable_model.load_3ddfa_mean_shape`): landmark-warped mean meshes;
* ``bfm_pkl``: a 3DDFA(_V2) BFM pickle with dense bases (``bfm_noneck_v3.pkl``,
  :func:`faceforge.geometry.morphable_model.load_3ddfa_bfm_pkl`): the labels' full dense fits. A pickle can run code
  when it is loaded: name only a file you trust;
* ``bfm2009``: ``[01_MorphableModel.mat, expression model, model_info.mat]`` (the full BFM 2009 and 3DDFA's
  expression and model-info files, :func:`faceforge.geometry.morphable_model.load_bfm_2009`): dense fits.

The topology: ``noneck_dir`` (3DDFA_V2's ``configs/`` with ``tri.pkl`` + ``indices.npy``: no neck, no ears, mouth
capped), else the model's own triangles, which a 53,215-vertex model may only use with ``keep_neck=True``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceforge.data.reconstruction.errors import VolumeGenerationError
from faceforge.data.reconstruction.generation import (
    REPORT_FILENAME,
    VolumeGenerationConfig,
    VolumeReport,
    generate_volumes,
)
from faceforge.data.reconstruction.volume_index import INDEX_FILENAME
from faceforge.data.reconstruction.w300lp import find_300wlp_samples
from faceforge.geometry.morphable_model import MorphableModel, load_3ddfa_bfm_pkl, load_3ddfa_mean_shape, load_bfm_2009
from faceforge.geometry.voxelize import FaceTopology, VoxelizationError, load_noneck_topology, topology_from_triangles

__all__ = ["BFM_FULL_VERTICES", "build_w300lp_volumes", "load_volume_model", "load_volume_topology",
           "make_w300lp_volumes"]

log = logging.getLogger(__name__)

#: Vertex count of the 3DDFA / 300W-LP BFM (with neck and ears).
BFM_FULL_VERTICES = 53215

PathArg = str | os.PathLike | None


def _unset(value: Any) -> bool:
    return value is None or value in ("", "???")


def load_volume_model(model_dir: PathArg = None, bfm_pkl: PathArg = None,
                      bfm2009: Sequence[str | os.PathLike] | None = None) -> MorphableModel:
    """Load the morphable model named by exactly one of ``model_dir``, ``bfm_pkl`` or ``bfm2009``.

    Args:
        model_dir: 3DDFA-layout folder (``train.configs/u_shp.npy``, ``u_exp.npy``, ``keypoints_sim.npy``,
            ``visualize/tri.mat``, ``cpp_weights/*_base.txt``): mean shape and 68-point bases.
        bfm_pkl: 3DDFA(_V2) BFM pickle with dense bases (trusted file only: a pickle can run code).
        bfm2009: three files: BFM 2009 ``01_MorphableModel.mat``, the 3DDFA expression model (``.mat`` or
            ``Exp_Pca.bin``) and 3DDFA's ``model_info.mat``.

    Returns:
        The model (N vertices, float64 model units).

    Raises:
        VolumeGenerationError: if none or several of the three are given, a folder or file is missing, or
            ``bfm2009`` does not name three files.
        faceforge.geometry.morphable_model.MorphableModelError: an unusable model file (names the file and key).
    """
    given = [name for name, v in (("model_dir", model_dir), ("bfm_pkl", bfm_pkl), ("bfm2009", bfm2009))
             if not _unset(v)]
    if len(given) != 1:
        raise VolumeGenerationError(
            f"name exactly one morphable model: model_dir (3DDFA mean shape + 68-point bases), bfm_pkl (dense 3DDFA "
            f"BFM pickle) or bfm2009 (01_MorphableModel.mat, expression model, model_info.mat); got "
            f"{', '.join(given) if given else 'none'}")
    if given[0] == "model_dir":
        if not Path(str(model_dir)).is_dir():
            raise VolumeGenerationError(f"model_dir={model_dir}: folder not found (a 3DDFA-style model folder: "
                                        "train.configs/, visualize/tri.mat, cpp_weights/)")
        return load_3ddfa_mean_shape(str(model_dir))
    if given[0] == "bfm_pkl":
        if not Path(str(bfm_pkl)).is_file():
            raise VolumeGenerationError(f"bfm_pkl={bfm_pkl}: file not found (a 3DDFA BFM pickle such as "
                                        "bfm_noneck_v3.pkl)")
        return load_3ddfa_bfm_pkl(str(bfm_pkl))
    files = [bfm2009] if isinstance(bfm2009, (str, os.PathLike)) else list(bfm2009)  # type: ignore[arg-type]
    if len(files) != 3:
        raise VolumeGenerationError(f"bfm2009 must name 3 files (01_MorphableModel.mat, expression model, "
                                    f"model_info.mat), got {len(files)}: {files}")
    for f in files:
        if not Path(str(f)).is_file():
            raise VolumeGenerationError(f"bfm2009: {f}: file not found")
    return load_bfm_2009(*(str(f) for f in files))


def load_volume_topology(model: MorphableModel, noneck_dir: PathArg = None, keep_neck: bool = False) -> FaceTopology:
    """The triangles to voxelise for ``model``.

    Args:
        model: the morphable model.
        noneck_dir: 3DDFA_V2 ``configs/`` folder (``tri.pkl``, ``indices.npy``; for a 53,215-vertex model).
        keep_neck: allow a 53,215-vertex model's own triangles (neck and ears included) without ``noneck_dir``.

    Returns:
        FaceTopology over the model's vertices.

    Raises:
        VolumeGenerationError: ``noneck_dir`` is not a folder.
        faceforge.geometry.voxelize.VoxelizationError: a 53,215-vertex model without ``noneck_dir`` nor
            ``keep_neck``, or an unusable topology folder (names the file).
    """
    if not _unset(noneck_dir):
        if not Path(str(noneck_dir)).is_dir():
            raise VolumeGenerationError(f"noneck_dir={noneck_dir}: folder not found (3DDFA_V2's configs/ folder with "
                                        "tri.pkl and indices.npy)")
        return load_noneck_topology(str(noneck_dir), num_vertices=model.num_vertices)
    if model.num_vertices == BFM_FULL_VERTICES and not keep_neck:
        raise VoxelizationError(f"the {BFM_FULL_VERTICES}-vertex BFM includes the neck and ears; give noneck_dir "
                                "(--noneck-dir: 3DDFA_V2 configs/ with tri.pkl and indices.npy) or keep_neck "
                                "(--keep-neck)")
    return topology_from_triangles(model.triangles, model.num_vertices, source=f"model ({model.source})")


def make_w300lp_volumes(output_dir: str | os.PathLike, root: str | os.PathLike, model_dir: PathArg = None,
                        noneck_dir: PathArg = None, bfm_pkl: PathArg = None,
                        bfm2009: Sequence[str | os.PathLike] | None = None, keep_neck: bool = False,
                        size: int = 192, depth: int = 200, workers: int = 1, margin: float = 0.1,
                        z_margin: float = 2.0, val_fraction: float = 0.02, flat_split: str = "test",
                        mesh: str = "auto", max_landmark_nme: float | None = 0.25, image_size: int | None = 450,
                        image_codec: str = "jpeg", jpeg_quality: int = 95, compression: str | None = "gzip",
                        shard_size: int = 500, limit: int | None = None, redo_skipped: bool = False,
                        progress: bool = True) -> VolumeReport:
    """300W-LP tree or AFLW2000-3D folder -> VRN volumes (see the module docstring for the model choice).

    Args:
        output_dir: volumes folder (``shards/``, ``volume_index.csv``, ``volume_report.json``).
        root: the 300W-LP root (AFW, HELEN, IBUG, LFPW and ``*_Flip``) or a flat AFLW2000-3D folder.
        model_dir, bfm_pkl, bfm2009: the morphable model, exactly one (:func:`load_volume_model`).
        noneck_dir, keep_neck: the topology (:func:`load_volume_topology`).
        size, depth: crop side and depth levels (192, 200 for VRN; smaller for CPU runs).
        workers: generation processes.
        margin: crop margin per side, fraction of the face box's longer side.
        z_margin: depth level of the face's rear-most vertex.
        val_fraction: share of 300W-LP source faces in ``val``.
        flat_split: split of samples in a flat folder (``test`` for AFLW2000-3D).
        mesh: ``auto``, ``dense``, ``landmark_warp`` or ``mean``.
        max_landmark_nme: skip fits far from their annotation (None, or a negative value, disables).
        image_size: side of the images the labels refer to (450); None or 0 accepts any size.
        image_codec, jpeg_quality: stored crop format (``jpeg``, ``png``, ``raw``) and JPEG quality.
        compression: HDF5 filter of the maps (``gzip``, ``lzf``, None or ``"none"``).
        shard_size: samples per shard (the unit of resumption).
        limit: only the first ``limit`` samples (sorted by id).
        redo_skipped: retry samples an earlier run skipped.
        progress: show a progress bar (stderr).

    Returns:
        The :class:`~faceforge.data.reconstruction.generation.VolumeReport` (also in ``volume_report.json``).

    Raises:
        VolumeGenerationError: a missing argument, folder or file, an invalid setting, or no samples found.
        faceforge.geometry.morphable_model.MorphableModelError: an unusable model (names the file).
        faceforge.geometry.voxelize.VoxelizationError: an unusable topology (names the file).
    """
    if _unset(root):
        raise VolumeGenerationError(f"building volumes into {output_dir} needs root (data.root=...: the 300W-LP root "
                                    "or AFLW2000-3D folder)")
    samples = find_300wlp_samples(root)
    model = load_volume_model(model_dir=model_dir, bfm_pkl=bfm_pkl, bfm2009=bfm2009)
    topology = load_volume_topology(model, noneck_dir=noneck_dir, keep_neck=keep_neck)
    if limit is not None:
        samples = samples[: max(int(limit), 0)]
    if not samples:
        raise VolumeGenerationError(f"{root}: no image or .mat files found (expected a 300W-LP tree or a flat folder "
                                    f"of NAME.jpg + NAME.mat pairs)")
    nme = None if max_landmark_nme is None or float(max_landmark_nme) < 0 else float(max_landmark_nme)
    config = VolumeGenerationConfig(
        size=int(size), depth=int(depth), margin=float(margin), z_margin=float(z_margin), mesh=str(mesh),
        expected_image_size=(int(image_size), int(image_size)) if image_size else None, max_landmark_nme=nme,
        image_codec=str(image_codec), jpeg_quality=int(jpeg_quality),
        compression=None if compression in (None, "none") else str(compression), shard_size=int(shard_size),
        val_fraction=float(val_fraction), flat_split=str(flat_split))
    return generate_volumes(samples, output_dir, model, topology=topology, workers=int(workers), config=config,
                            redo_skipped=bool(redo_skipped), progress=bool(progress))


def build_w300lp_volumes(output_dir: str | os.PathLike, root: str | os.PathLike, **settings: Any) -> dict[str, Any]:
    """Builder of ``data=w300lp`` / ``data=aflw2000`` (``data.builder``): :func:`make_w300lp_volumes`.

    Takes the keyword arguments of :func:`make_w300lp_volumes` (``model_dir`` or ``bfm_pkl`` or ``bfm2009``,
    ``noneck_dir``, ``size``, ...), with the same defaults as ``faceforge-make-volumes``.

    Returns:
        The generation report as a dict.

    Raises:
        VolumeGenerationError: as :func:`make_w300lp_volumes`, and when no sample could be stored (the message
            lists the skip reasons; no index is left behind).
        faceforge.geometry.morphable_model.MorphableModelError, faceforge.geometry.voxelize.VoxelizationError:
            an unusable model or topology (names the file).
    """
    report = make_w300lp_volumes(output_dir, root, **settings)
    log.info("%s", report.summary())
    if report.stored == 0:
        (Path(output_dir) / INDEX_FILENAME).unlink(missing_ok=True)
        raise VolumeGenerationError(f"no volume could be made from {root}: {report.total} samples, skipped "
                                    f"{report.skipped} (details in {Path(output_dir) / REPORT_FILENAME})")
    return report.to_dict()
