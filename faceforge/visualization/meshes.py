"""Pictures of reconstructed meshes: predicted beside ground truth, rendered offscreen with matplotlib.

A run of ``train.py model=vrn*`` writes the first test batch's predicted meshes to ``<run dir>/meshes/test/`` and
their ground truth to ``<run dir>/meshes/gt/`` (same file names; the task's display frame: crop pixels, centred,
x right, y up, z towards the viewer). :func:`save_mesh_comparison_png` draws pairs of them as flat-shaded surfaces
from the front and turned (an orthographic z-buffer with Lambert shading, :func:`render_shaded`), so the relief
(eyes, nose, mouth) shows. Uses matplotlib's object API and the Agg canvas (no display), and writes atomically.

``python -m faceforge.visualization.meshes RUN_DIR [--out PNG] [--max 4]`` renders a run's test meshes.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trimesh
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from faceforge.errors import FaceforgeError
from faceforge.utils.atomic import atomic_path

__all__ = ["MeshPictureError", "load_mesh", "render_shaded", "save_mesh_comparison_png"]

_LIGHT = np.array([-0.5, 0.5, 1.0]) / np.linalg.norm([-0.5, 0.5, 1.0])


class MeshPictureError(FaceforgeError, ValueError):
    """A mesh file cannot be read as one triangle mesh, or there is nothing to draw."""


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """Read a mesh file (GLB, OBJ, PLY) as one :class:`trimesh.Trimesh` (a scene's geometries concatenated).

    Raises:
        MeshPictureError: the file is missing, unreadable or holds no triangles.
    """
    path = Path(path)
    try:
        loaded = trimesh.load(path, force="mesh")
    except Exception as exc:  # trimesh raises many types for a bad file
        raise MeshPictureError(f"{path}: not a readable mesh ({type(exc).__name__}: {exc})") from exc
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise MeshPictureError(f"{path}: holds no triangles")
    return loaded


def render_shaded(mesh: trimesh.Trimesh, yaw_deg: float = 0.0, size: int = 160, supersample: int = 2,
                  bounds: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """Render a mesh as a grey shaded picture seen from the front, turned by ``yaw_deg`` about the vertical axis.

    An orthographic z-buffer (:func:`faceforge.geometry.voxelize.rasterize_depth`) gives the nearest surface per
    pixel, so occlusion is exact; its depth gradient gives the normals for Lambert shading (light from the viewer's
    upper left), so the relief (eyes, nose, lips) shows.

    Args:
        mesh: vertices in the display frame (x right, y up, z towards the viewer; any units).
        yaw_deg: turn of the mesh about the y axis, degrees (positive: its right side towards the viewer).
        size: picture side, pixels.
        supersample: rendering supersampling per axis.
        bounds: ``(centre (3,), half side)`` of the cube to frame (to show several meshes at one scale); default
            the mesh's own bounding cube.

    Returns:
        (size, size) float64 picture in [0, 1] (background 1).
    """
    from faceforge.geometry.voxelize import rasterize_depth

    verts = np.asarray(mesh.vertices, dtype=np.float64)
    if bounds is None:
        lo, hi = verts.min(axis=0), verts.max(axis=0)
        bounds = ((lo + hi) / 2.0, float((hi - lo).max()) / 2.0)
    centre, half = bounds
    t = np.radians(yaw_deg)
    rot = np.array([[np.cos(t), 0.0, np.sin(t)], [0.0, 1.0, 0.0], [-np.sin(t), 0.0, np.cos(t)]])
    p = (verts - centre) @ rot.T
    big = size * supersample
    scale = (big - 1) / (2.2 * max(half, 1e-9))
    uvk = np.c_[p[:, 0] * scale + (big - 1) / 2.0, (big - 1) / 2.0 - p[:, 1] * scale, p[:, 2] * scale]
    front, mask = rasterize_depth(uvk, np.asarray(mesh.faces), big)
    depth = np.where(mask, front, np.nan)
    dv, du = np.gradient(depth)
    normal = np.stack([-np.nan_to_num(du), np.nan_to_num(dv), np.ones_like(depth)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    shade = np.where(mask, 0.2 + 0.8 * np.clip(normal @ _LIGHT, 0.0, 1.0), 1.0)
    return shade.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def save_mesh_comparison_png(pairs: Sequence[tuple[trimesh.Trimesh, trimesh.Trimesh]], path: str | os.PathLike,
                             images: Sequence[np.ndarray | None] | None = None,
                             titles: Sequence[str] | None = None, views: Sequence[float] = (0.0, 60.0)) -> Path:
    """Draw (predicted, ground truth) mesh pairs as rows of a PNG (:func:`render_shaded` from each yaw in
    ``views``), each with its input image when given; both meshes of a pair share one scale.

    Args:
        pairs: (predicted, ground-truth) meshes in one frame (the display frame: x right, y up, z to the viewer).
        path: the PNG to write.
        images: optional (S, S, 3) uint8 input crops, one per pair (None to leave that cell out).
        titles: optional row labels (e.g. sample ids).
        views: yaw angles (degrees) to render each mesh from.

    Returns:
        ``path``.

    Raises:
        MeshPictureError: no pairs, or ``images`` / ``titles`` of another length.
    """
    if not pairs:
        raise MeshPictureError("no meshes to draw")
    if images is not None and len(images) != len(pairs) or titles is not None and len(titles) != len(pairs):
        raise MeshPictureError("images and titles must have one entry per mesh pair")
    views = tuple(float(v) for v in views)
    cols = 2 * len(views) + (1 if images is not None else 0)
    fig = Figure(figsize=(1.9 * cols, 2.1 * len(pairs)))
    for r, (pred, gt) in enumerate(pairs):
        verts = np.vstack([pred.vertices, gt.vertices])
        lo, hi = verts.min(axis=0), verts.max(axis=0)
        bounds = ((lo + hi) / 2.0, float((hi - lo).max()) / 2.0)
        label = f"{titles[r]}\n" if titles is not None else ""
        col = 1
        if images is not None:
            ax = fig.add_subplot(len(pairs), cols, r * cols + 1)
            if images[r] is not None:
                ax.imshow(images[r])
            ax.set_axis_off()
            ax.set_title(f"{label}input", fontsize=8)
            col = 2
        for name, mesh in (("predicted", pred), ("ground truth", gt)):
            for yaw in views:
                ax = fig.add_subplot(len(pairs), cols, r * cols + col)
                ax.imshow(render_shaded(mesh, yaw, bounds=bounds), cmap="gray", vmin=0.0, vmax=1.0)
                ax.set_axis_off()
                ax.set_title(f"{label if col == 1 else ''}{name}, yaw {yaw:+.0f}", fontsize=8)
                col += 1
    fig.tight_layout()
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Render ``RUN_DIR/meshes/test/*`` beside ``RUN_DIR/meshes/gt/*`` into a PNG (see the module docstring)."""
    p = argparse.ArgumentParser(description="Draw a run's predicted test meshes beside their ground truth.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, default=None, help="PNG path (default RUN_DIR/meshes/test_vs_gt.png)")
    p.add_argument("--max", type=int, default=4, help="pairs to draw")
    args = p.parse_args(argv)
    preds = sorted((args.run_dir / "meshes" / "test").glob("*.*"))[: args.max]
    pairs, names = [], []
    for pred in preds:
        gt = args.run_dir / "meshes" / "gt" / pred.name
        if gt.is_file():
            pairs.append((load_mesh(pred), load_mesh(gt)))
            names.append(pred.stem)
    if not pairs:
        raise SystemExit(f"no predicted test meshes with ground truth under {args.run_dir / 'meshes'}")
    out = save_mesh_comparison_png(pairs, args.out or args.run_dir / "meshes" / "test_vs_gt.png", titles=names)
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
