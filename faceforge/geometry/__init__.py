"""Geometry: morphable models, 300W-LP poses and projection, 300W-LP / AFLW2000-3D labels."""
from __future__ import annotations

from faceforge.geometry.morphable_model import (
    NUM_LANDMARKS,
    MorphableModel,
    MorphableModelError,
    load_3ddfa_bfm_pkl,
    load_3ddfa_mean_shape,
    load_bfm_2009,
)
from faceforge.geometry.projection import (
    ProjectionError,
    angle2matrix_300wlp,
    flip_winding,
    project_300wlp,
    split_pose_para,
)
from faceforge.geometry.w300lp import W300LPLabel, W300LPLabelError, landmarks_68_from_params, read_300wlp_mat

__all__ = [
    "NUM_LANDMARKS",
    "MorphableModel",
    "MorphableModelError",
    "ProjectionError",
    "W300LPLabel",
    "W300LPLabelError",
    "angle2matrix_300wlp",
    "flip_winding",
    "landmarks_68_from_params",
    "load_3ddfa_bfm_pkl",
    "load_3ddfa_mean_shape",
    "load_bfm_2009",
    "project_300wlp",
    "read_300wlp_mat",
    "split_pose_para",
]
