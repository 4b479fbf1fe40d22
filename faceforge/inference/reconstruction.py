"""A 3D face from one photo: face detection and crop, VRN volume, textured mesh, OBJ / GLB, turntable MP4.

Pipeline (:class:`Reconstructor`):

1. the face: MTCNN (:class:`~faceforge.data.detection.extraction.FaceDetector`), the most confident face, cut as a
   square crop with :func:`~faceforge.data.detection.extraction.crop_face` at the network's input size (the
   checkpoint's ``input.image_size``); the same window is also cut at :data:`TEXTURE_SIZE` pixels for the texture;
2. the volume: the checkpoint's task (VRN, VRN-Guided, VRN-Multitask: Jackson et al., ICCV 2017; or the
   3DFaceGAN-style model) gives (D, S, S) logits; ``sigmoid`` gives the occupancy;
3. the mesh: marching cubes at ``iso_level`` (:func:`faceforge.geometry.volume_mesh.volume_to_mesh`, largest
   component), moved to the display frame the training task uses for its meshes (centred, x right, y up, z towards
   the viewer; units: crop pixels / depth levels);
4. colour: UV = the orthographic projection of each vertex onto the input crop (``u = (x + 0.5) / S``,
   ``v = 1 - (y + 0.5) / S`` in crop pixels; the VRN volume is aligned with its input image, Sec. 3.1), the texture
   map is the crop at :data:`TEXTURE_SIZE` px, and the vertex colours are the texture sampled there (bilinear);
5. files: ``NAME.obj`` (``v x y z r g b`` vertex colours, ``vt`` UVs) + ``NAME.mtl`` + ``NAME_texture.png``,
   ``NAME.glb`` (trimesh; baseColorTexture + TEXCOORD_0) and ``NAME_turntable.mp4``: a yaw sweep of
   +-:data:`TURNTABLE_YAW_DEG` degrees over :data:`TURNTABLE_SECONDS` s, rendered offscreen on the CPU with the
   project's z-buffer (:func:`faceforge.visualization.meshes.render_shaded` for the shading,
   :func:`faceforge.geometry.voxelize.rasterize_depth` to look the texture up), encoded with PyAV (H.264).

Every file is written atomically (:mod:`faceforge.utils.atomic`).
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceforge.errors import FaceforgeError

__all__ = ["TEXTURE_SIZE", "TURNTABLE_FPS", "TURNTABLE_SECONDS", "TURNTABLE_YAW_DEG", "FaceMesh",
           "ReconstructError", "ReconstructionFiles", "Reconstructor", "ReconstructorModel", "encode_mp4",
           "load_reconstructor", "render_turntable", "write_obj"]

#: Side of the texture map, pixels (the crop window cut again at this size).
TEXTURE_SIZE = 512
#: Turntable: length (s), frame rate and the largest yaw (degrees) of its sweep.
TURNTABLE_SECONDS = 2.0
TURNTABLE_FPS = 24
TURNTABLE_YAW_DEG = 45.0
#: Crop margin for the face (training's face extraction margin, ``conf/data/video_base.yaml``).
DEFAULT_MARGIN = 0.3


class ReconstructError(FaceforgeError, ValueError):
    """A reconstruction request that cannot be served: a checkpoint of another kind, no face, an empty volume."""


@dataclass
class ReconstructorModel:
    """A volume-regression task ready for inference.

    Attributes:
        task: the :class:`~faceforge.tasks.reconstruction.VolumeRegressionTask` (or subclass), eval mode, CPU.
        image_size: input crop side = volume side, pixels.
        variant: ``vrn``, ``guided``, ``multitask`` or ``facegan``.
        path: the checkpoint file.
    """

    task: Any
    image_size: int
    variant: str
    path: str


def load_reconstructor(path: str | Path) -> ReconstructorModel:
    """Load a VRN / VRN-Guided / VRN-Multitask / 3DFaceGAN checkpoint through the safe loader.

    Raises:
        faceforge.tasks.checkpointing.CheckpointError: missing, unreadable or unsafe checkpoint.
        ReconstructError: the checkpoint holds another kind of model (e.g. a deepfake detector), or is the MesoNet
            authors' ``.h5``.
    """
    from faceforge.runs.evaluation import checkpoint_input_needs, is_keras_h5
    from faceforge.tasks.checkpointing import load_task, read_checkpoint
    from faceforge.tasks.reconstruction import VolumeRegressionTask

    path = Path(path)
    if is_keras_h5(path):
        raise ReconstructError(f"{path}: the MesoNet authors' weights detect deepfakes; `faceforge reconstruct` "
                               f"needs a 3D reconstruction checkpoint (model=vrn, vrn_guided, vrn_multitask)")
    ckpt = read_checkpoint(path)
    needs, _ = checkpoint_input_needs(ckpt, path)
    task = load_task(ckpt, source=path)
    if not isinstance(task, VolumeRegressionTask):
        raise ReconstructError(f"{path}: holds a {type(task).__name__} ({type(task.net).__name__}), not a 3D "
                               f"reconstruction model; `faceforge predict` takes detection checkpoints")
    size = needs.get("image_size") or getattr(task.net, "output_size", None)
    if not size:
        raise ReconstructError(f"{path}: records no input size (input.image_size)")
    return ReconstructorModel(task=task.to("cpu").eval(), image_size=int(size),
                              variant=str(task.hparams.get("variant", "vrn")), path=str(path))


@dataclass
class FaceMesh:
    """A reconstructed face.

    Attributes:
        vertices: (V, 3) float64, display frame (x right, y up, z towards the viewer; crop pixels, centred).
        faces: (F, 3) int64, outward normals.
        uv: (V, 2) float64 texture coordinates in [0, 1] (origin bottom left, as OBJ and trimesh).
        colors: (V, 4) uint8 RGBA vertex colours.
        texture: (T, T, 3) uint8 RGB texture map (the face crop).
        crop: (S, S, 3) uint8 RGB network input.
        box: ``[x1, y1, x2, y2]`` face box in the photo (the whole image with ``crops=True``).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    colors: np.ndarray
    texture: np.ndarray
    crop: np.ndarray
    box: list[float]

    def to_trimesh(self, textured: bool = True) -> Any:
        """A ``trimesh.Trimesh``: with the texture (``TextureVisuals``) or with the vertex colours."""
        import trimesh
        from PIL import Image

        if not textured:
            return trimesh.Trimesh(self.vertices, self.faces, vertex_colors=self.colors, process=False)
        material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(self.texture))
        visual = trimesh.visual.TextureVisuals(uv=self.uv, material=material)
        return trimesh.Trimesh(self.vertices, self.faces, visual=visual, process=False)


@dataclass
class ReconstructionFiles:
    """What :meth:`Reconstructor.reconstruct_file` wrote."""

    obj: Path
    mtl: Path
    texture: Path
    glb: Path
    video: Path | None
    num_vertices: int
    num_faces: int
    files: list[Path] = field(default_factory=list)


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._")
    return stem or "face"


class Reconstructor:
    """Photo -> :class:`FaceMesh` -> files (see the module docstring).

    Args:
        model: from :func:`load_reconstructor`.
        iso_level: isosurface level on the occupancy probability (0.5: the classifier's boundary).
        crops: the photos are already face crops: no detection, the whole image is the window.
        detector: a :class:`~faceforge.data.detection.extraction.FaceDetector` (default: training's settings).
        margin: crop margin.
        texture_size: side of the texture map, pixels.

    Raises:
        ReconstructError: ``iso_level`` not in (0, 1) or ``texture_size < 8``.
    """

    def __init__(self, model: ReconstructorModel, iso_level: float = 0.5, crops: bool = False,
                 detector: Any | None = None, margin: float = DEFAULT_MARGIN, texture_size: int = TEXTURE_SIZE) -> None:
        if not 0.0 < iso_level < 1.0:
            raise ReconstructError(f"iso_level must be in (0, 1) (an occupancy probability), got {iso_level}")
        if texture_size < 8:
            raise ReconstructError(f"texture_size must be >= 8, got {texture_size}")
        self.model = model
        self.iso_level = float(iso_level)
        self.crops = bool(crops)
        self.margin = float(margin)
        self.texture_size = int(texture_size)
        if detector is None and not crops:
            from faceforge.data.detection.extraction import FaceDetector

            detector = FaceDetector(device="cpu", keep=1)
        self.detector = detector

    def _face(self, image: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """(network crop, texture crop, box) of the most confident face."""
        from faceforge.data.core.image_io import resize_image
        from faceforge.data.detection.extraction import crop_face

        s, t = self.model.image_size, self.texture_size
        if self.crops:
            h, w = image.shape[:2]
            return resize_image(image, s), resize_image(image, t), [0.0, 0.0, float(w), float(h)]
        found = self.detector.detect([image])[0]
        if not found:
            raise ReconstructError(f"{name}: no face found in the image")
        box = found[0].box
        crop, _ = crop_face(image, box, margin=self.margin, size=s)
        texture, _ = crop_face(image, box, margin=self.margin, size=t)
        return crop, texture, [float(v) for v in box]

    @torch.no_grad()
    def occupancy(self, crop: np.ndarray) -> np.ndarray:
        """(D, S, S) float32 occupancy probabilities for one (S, S, 3) uint8 RGB crop."""
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]
        return torch.sigmoid(self.model.task(x).volume.float())[0].numpy()

    def reconstruct_array(self, image: np.ndarray, name: str = "image") -> FaceMesh:
        """Reconstruct the face in an (H, W, 3) uint8 RGB photo (``name`` names it in messages).

        Raises:
            ReconstructError: no face, or no voxel above ``iso_level`` (the message says how full the volume is).
        """
        from faceforge.geometry.volume_mesh import VolumeMeshError, sample_image_bilinear, volume_to_mesh

        crop, texture, box = self._face(image, name)
        occ = self.occupancy(crop)
        try:
            mesh = volume_to_mesh(occ, iso_level=self.iso_level, largest_component=True)
        except VolumeMeshError as exc:
            raise ReconstructError(f"{name}: the predicted volume gives no surface ({exc})") from None
        d, s = occ.shape[0], occ.shape[-1]
        xyz = np.asarray(mesh.vertices, dtype=np.float64)  # (u, v, k): crop pixels, depth levels
        faces = np.asarray(mesh.faces, dtype=np.int64)
        uv = np.c_[(xyz[:, 0] + 0.5) / s, 1.0 - (xyz[:, 1] + 0.5) / s].clip(0.0, 1.0)
        ratio = self.texture_size / s
        colors = sample_image_bilinear(texture, (xyz[:, :2] + 0.5) * ratio - 0.5)
        c = (s - 1) / 2.0
        verts = np.c_[xyz[:, 0] - c, c - xyz[:, 1], xyz[:, 2] - d / 2.0]
        return FaceMesh(vertices=verts, faces=faces[:, [0, 2, 1]], uv=uv, colors=colors, texture=texture,
                        crop=crop, box=box)

    def reconstruct_file(self, path: str | Path, out_dir: str | Path, video: bool = True,
                         data: bytes | None = None, stem: str | None = None) -> ReconstructionFiles:
        """Reconstruct the face in an image file and write its files into ``out_dir``.

        Args:
            path: the photo (or only its name, with ``data``).
            out_dir: output folder (created).
            video: also render the turntable MP4.
            data: the photo's encoded bytes (e.g. an upload), decoded instead of reading ``path``.
            stem: base name of the outputs (default: the photo's name, made file-safe).

        Raises:
            faceforge.data.core.image_io.ImageReadError: unreadable image.
            ReconstructError: see :meth:`reconstruct_array`.
        """
        from faceforge.data.core.image_io import read_rgb_image

        image = read_rgb_image(path, data=data)
        face = self.reconstruct_array(image, str(path))
        return write_face_files(face, out_dir, stem or _safe_stem(str(path)), video=video)


def write_obj(face: FaceMesh, obj_path: str | Path, texture_name: str) -> tuple[Path, Path]:
    """Write ``face`` as Wavefront OBJ (``v x y z r g b`` with colours in [0, 1], ``vt``, ``f v/vt``) and its MTL
    (``map_Kd texture_name``) beside it, atomically; returns (obj, mtl)."""
    from faceforge.utils.atomic import atomic_write_text

    obj_path = Path(obj_path)
    mtl_path = obj_path.with_suffix(".mtl")
    rgb = face.colors[:, :3].astype(np.float64) / 255.0
    lines = ["# faceforge reconstruct: display frame (x right, y up, z towards the viewer), crop pixels",
             f"mtllib {mtl_path.name}", "o face"]
    lines += [f"v {x:.5f} {y:.5f} {z:.5f} {r:.4f} {g:.4f} {b:.4f}"
              for (x, y, z), (r, g, b) in zip(face.vertices, rgb)]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in face.uv]
    lines += ["usemtl face"]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in (face.faces + 1)]
    atomic_write_text(obj_path, "\n".join(lines) + "\n")
    atomic_write_text(mtl_path, f"newmtl face\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\n"
                                f"illum 1\nmap_Kd {texture_name}\n")
    return obj_path, mtl_path


def render_turntable(face: FaceMesh, size: int = 256, seconds: float = TURNTABLE_SECONDS, fps: int = TURNTABLE_FPS,
                     max_yaw_deg: float = TURNTABLE_YAW_DEG) -> list[np.ndarray]:
    """Frames of a yaw sweep ``max_yaw * sin(2 pi t / seconds)``: (size, size, 3) uint8 RGB, textured and shaded.

    Shading: :func:`faceforge.visualization.meshes.render_shaded` (orthographic z-buffer, Lambert); colour: each
    drawn pixel's surface point (from the same z-buffer, :func:`faceforge.geometry.voxelize.rasterize_depth`) turned
    back into the crop and looked up in the texture. Background white.
    """
    from faceforge.geometry.voxelize import rasterize_depth
    from faceforge.visualization.meshes import render_shaded

    verts = face.vertices
    centre = (verts.min(axis=0) + verts.max(axis=0)) / 2.0
    half = float(np.linalg.norm(verts - centre, axis=1).max())  # fits every yaw
    tex = face.texture.astype(np.float64) / 255.0
    t_size = tex.shape[0]
    s = face.crop.shape[0]
    c_crop = (s - 1) / 2.0
    n = max(1, int(round(seconds * fps)))
    frames = []
    for i in range(n):
        yaw = max_yaw_deg * np.sin(2.0 * np.pi * i / n)
        shade = render_shaded(face.to_trimesh(textured=False), yaw_deg=yaw, size=size, supersample=1,
                              bounds=(centre, half))
        t = np.radians(yaw)
        rot = np.array([[np.cos(t), 0.0, np.sin(t)], [0.0, 1.0, 0.0], [-np.sin(t), 0.0, np.cos(t)]])
        p = (verts - centre) @ rot.T
        scale = (size - 1) / (2.2 * max(half, 1e-9))
        mid = (size - 1) / 2.0
        front, mask = rasterize_depth(np.c_[p[:, 0] * scale + mid, mid - p[:, 1] * scale, p[:, 2] * scale],
                                      face.faces, size)
        rgb = np.ones((size, size, 3))
        vv, uu = np.nonzero(mask)
        if len(vv):
            q = np.c_[(uu - mid) / scale, (mid - vv) / scale, front[vv, uu] / scale] @ rot + centre  # display frame
            cx = (q[:, 0] + c_crop + 0.5) * (t_size / s) - 0.5
            cy = (c_crop - q[:, 1] + 0.5) * (t_size / s) - 0.5
            xi = np.clip(np.round(cx).astype(int), 0, t_size - 1)
            yi = np.clip(np.round(cy).astype(int), 0, t_size - 1)
            light = np.clip(0.35 + 0.65 * (shade[vv, uu] - 0.2) / 0.8, 0.0, 1.0)
            rgb[vv, uu] = tex[yi, xi] * light[:, None]
        frames.append((rgb * 255.0 + 0.5).astype(np.uint8))
    return frames


def encode_mp4(frames: list[np.ndarray], path: str | Path, fps: int = TURNTABLE_FPS) -> Path:
    """Encode (H, W, 3) uint8 RGB frames (even H, W) as an H.264 MP4 (yuv420p) with PyAV, atomically.

    Raises:
        ReconstructError: no frames, or frames of odd or unequal size.
    """
    import av

    from faceforge.utils.atomic import atomic_path

    if not frames:
        raise ReconstructError(f"{path}: no frames to encode")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2 or any(f.shape != frames[0].shape for f in frames):
        raise ReconstructError(f"{path}: frames must share one even size, got {frames[0].shape}")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "20", "preset": "veryfast"}
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return Path(path)


def write_face_files(face: FaceMesh, out_dir: str | Path, stem: str, video: bool = True) -> ReconstructionFiles:
    """Write ``stem.obj`` + ``stem.mtl`` + ``stem_texture.png``, ``stem.glb`` and (``video``) ``stem_turntable.mp4``
    into ``out_dir``, atomically."""
    from PIL import Image

    from faceforge.utils.atomic import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texture_path = out / f"{stem}_texture.png"
    buf = io.BytesIO()
    Image.fromarray(face.texture).save(buf, format="PNG")
    atomic_write_bytes(texture_path, buf.getvalue())
    obj_path, mtl_path = write_obj(face, out / f"{stem}.obj", texture_path.name)
    glb_path = out / f"{stem}.glb"
    atomic_write_bytes(glb_path, face.to_trimesh(textured=True).export(file_type="glb"))
    video_path = None
    if video:
        video_path = encode_mp4(render_turntable(face), out / f"{stem}_turntable.mp4")
    files = [obj_path, mtl_path, texture_path, glb_path] + ([video_path] if video_path else [])
    return ReconstructionFiles(obj=obj_path, mtl=mtl_path, texture=texture_path, glb=glb_path, video=video_path,
                               num_vertices=len(face.vertices), num_faces=len(face.faces), files=files)
