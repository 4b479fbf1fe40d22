"""Procedural face images: a small 2.5-D generative model of a talking head, rendered with NumPy and OpenCV.

The generative model (all lengths in "face units": the head's half-height is 1; x right, y down):

* **Identity** (:class:`FaceIdentity`, fixed for a person): head half-width ``head_w`` in [0.68, 0.82] and jaw
  narrowing ``jaw`` (the half-width shrinks as ``head_w * (1 - jaw * y^2)`` below the centre); skin tone (a random
  point between light and dark skin anchors, with a random undertone); a skin texture (low-frequency blotches and
  pores: a 128x128 noise map sampled in face coordinates, so it moves with the face and holds detail down to ~1 px
  at 256 px); eye height, spacing, size and iris colour; brow height, thickness and tilt; nose length and width;
  mouth height, width, lip thickness and colour; hair colour, style (short, fringe, side part, long, bald) and
  hairline; ear size; shirt colour.
* **Scene** (:class:`Scene`, fixed for a video): textured background (two colours mixed by a low-frequency
  noise field, plus a random stripe pattern and fine texture), head position and size in the frame, light
  direction and ambient level, a global lighting gradient, and the camera's sensor-noise level.
* **Frame** (:class:`FramePose`, varies smoothly within a video): small translation, scale and in-plane rotation
  (radians), a yaw-like horizontal shift of the inner features, eye blink, mouth opening, brow raise and gaze.

Rendering (:func:`render_face`) composites layers with anti-aliased edges (1 px ramps of an approximate signed
distance): background, shirt, neck, back hair, ears, head (Lambertian shading of an ellipsoid, normal
``(x / w, y, sqrt(1 - (x / w)^2 - y^2))``, times the skin texture), eyes (sclera, iris, pupil, lid line), brows,
nose (bridge shadow, nostrils, tip highlight), mouth (lips, interior, teeth), front hair with strand texture, then
the lighting gradient. :func:`capture` adds the camera's sensor noise (Gaussian, partly shared across channels)
and quantises to uint8; :func:`jpeg_roundtrip` is the optional re-compression.

The model is a deliberately simple stand-in for real faces: it gives a detector real structure to look at (face
layout, shading, texture, camera noise) so that the manipulation traces of :mod:`.detection` are learnt as traces,
not as "face versus no face".
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

__all__ = [
    "FaceIdentity",
    "FramePose",
    "RenderedFace",
    "Scene",
    "capture",
    "ellipse_alpha",
    "face_coordinates",
    "jpeg_roundtrip",
    "render_background",
    "render_face",
    "sample_identity",
    "sample_poses",
    "sample_scene",
    "with_inner_face_of",
]

HAIR_STYLES = ("short", "fringe", "side_part", "long", "bald")

_SKIN_LIGHT = np.array([0.96, 0.80, 0.69], dtype=np.float32)
_SKIN_DARK = np.array([0.36, 0.23, 0.15], dtype=np.float32)
_TEXTURE_SIZE = 128


@dataclass(frozen=True)
class FaceIdentity:
    """Parameters of one synthetic person (face units: head half-height = 1; colours RGB in [0, 1])."""

    head_w: float
    jaw: float
    skin: tuple[float, float, float]
    texture_seed: int
    texture_amp: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    iris: tuple[float, float, float]
    brow_y: float
    brow_thick: float
    brow_tilt: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_h: float
    lip: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: str
    hairline: float
    ear: float
    shirt: tuple[float, float, float]


@dataclass(frozen=True)
class Scene:
    """Per-video parameters: background, head placement (fractions of the image size), light and camera noise."""

    bg_seed: int
    bg_a: tuple[float, float, float]
    bg_b: tuple[float, float, float]
    stripe_freq: float
    stripe_angle: float
    stripe_amp: float
    cx: float
    cy: float
    scale: float
    light: tuple[float, float, float]
    ambient: float
    gradient: tuple[float, float]
    noise_sigma: float


@dataclass(frozen=True)
class FramePose:
    """Per-frame pose and expression: offsets as fractions of the image size, ``roll`` in radians."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    roll: float = 0.0
    yaw: float = 0.0
    blink: float = 0.0
    mouth_open: float = 0.0
    brow_raise: float = 0.0
    gaze: tuple[float, float] = (0.0, 0.0)


@dataclass
class RenderedFace:
    """Output of :func:`render_face`.

    Attributes:
        image: float32 ``(S, S, 3)`` RGB in [0, 1] (noise-free).
        landmarks: float32 ``(5, 2)`` pixels: left eye, right eye (image left/right), nose tip, mouth corners.
        box: float32 ``(4,)`` face box ``x1, y1, x2, y2`` in pixels (the head ellipse from brow to chin).
    """

    image: np.ndarray
    landmarks: np.ndarray
    box: np.ndarray


# ---------------------------------------------------------------------------------------------------- sampling
def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _color(rng: np.random.Generator, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(lo, hi, 3))  # type: ignore[return-value]


def sample_identity(rng: np.random.Generator) -> FaceIdentity:
    """Draw a random person (see the module docstring for the parameter ranges' meaning).

    Args:
        rng: NumPy generator (the only source of randomness).
    """
    t = rng.beta(1.6, 1.6)
    skin = (1 - t) * _SKIN_LIGHT + t * _SKIN_DARK
    skin = np.clip(skin * (1 + rng.normal(0, 0.04, 3)), 0.05, 1.0)
    hair_base = [(0.08, 0.06, 0.05), (0.30, 0.19, 0.10), (0.55, 0.40, 0.22), (0.75, 0.62, 0.40), (0.55, 0.55, 0.55),
                 (0.45, 0.15, 0.07)]
    hair = np.clip(np.array(hair_base[int(rng.integers(len(hair_base)))]) * rng.uniform(0.8, 1.2), 0, 1)
    iris_base = [(0.30, 0.18, 0.08), (0.20, 0.35, 0.55), (0.30, 0.40, 0.25), (0.12, 0.08, 0.05)]
    iris = np.clip(np.array(iris_base[int(rng.integers(len(iris_base)))]) * rng.uniform(0.8, 1.2), 0, 1)
    lip = np.clip(skin * np.array([0.95, 0.62, 0.62]) * rng.uniform(0.85, 1.05), 0, 1)
    style = HAIR_STYLES[int(rng.choice(len(HAIR_STYLES), p=[0.3, 0.2, 0.2, 0.2, 0.1]))]
    return FaceIdentity(
        head_w=_u(rng, 0.68, 0.82), jaw=_u(rng, 0.05, 0.35), skin=tuple(float(v) for v in skin),
        texture_seed=int(rng.integers(2**31)), texture_amp=_u(rng, 0.03, 0.07),
        eye_y=_u(rng, -0.22, -0.08), eye_dx=_u(rng, 0.24, 0.34), eye_w=_u(rng, 0.10, 0.15), eye_h=_u(rng, 0.045, 0.07),
        iris=tuple(float(v) for v in iris),
        brow_y=_u(rng, 0.13, 0.20), brow_thick=_u(rng, 0.018, 0.04), brow_tilt=_u(rng, -0.25, 0.25),
        nose_len=_u(rng, 0.28, 0.40), nose_w=_u(rng, 0.08, 0.13),
        mouth_y=_u(rng, 0.42, 0.55), mouth_w=_u(rng, 0.16, 0.25), lip_h=_u(rng, 0.03, 0.055),
        lip=tuple(float(v) for v in lip), hair=tuple(float(v) for v in hair), hair_style=style,
        hairline=_u(rng, -0.62, -0.42), ear=_u(rng, 0.8, 1.2), shirt=_color(rng, 0.05, 0.9),
    )


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw per-video scene parameters (background, placement, light, sensor noise sigma in [3, 7] of 255)."""
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.6, 0.2), 1.0])
    light /= np.linalg.norm(light)
    return Scene(
        bg_seed=int(rng.integers(2**31)), bg_a=_color(rng, 0.1, 0.9), bg_b=_color(rng, 0.1, 0.9),
        stripe_freq=_u(rng, 8, 40), stripe_angle=_u(rng, 0, np.pi), stripe_amp=_u(rng, 0.0, 0.08),
        cx=_u(rng, 0.46, 0.54), cy=_u(rng, 0.47, 0.55), scale=_u(rng, 0.30, 0.36),
        light=tuple(float(v) for v in light), ambient=_u(rng, 0.35, 0.6),
        gradient=(_u(rng, -0.3, 0.3), _u(rng, -0.3, 0.3)), noise_sigma=_u(rng, 3.0, 7.0),
    )


def sample_poses(rng: np.random.Generator, num_frames: int) -> list[FramePose]:
    """A smooth random trajectory of ``num_frames`` poses (a talking, slightly moving head).

    Each scalar follows a random phase sinusoid plus a small random walk; blinks are rare events.
    """
    t = np.arange(num_frames, dtype=np.float64)

    def wave(amp: float, period: tuple[float, float] = (6, 20)) -> np.ndarray:
        p = rng.uniform(*period)
        walk = np.cumsum(rng.normal(0, amp * 0.15, num_frames))
        return amp * np.sin(2 * np.pi * t / p + rng.uniform(0, 2 * np.pi)) + walk

    dx, dy = wave(0.025), wave(0.02)
    sc = 1 + wave(0.03)
    roll, yaw = wave(0.08), wave(0.12)
    mouth = np.clip(0.06 + wave(0.07, (2, 5)), 0, 0.22)
    brow = np.clip(wave(0.02, (3, 8)), -0.02, 0.04)
    blink = (rng.random(num_frames) < 0.12) * rng.uniform(0.6, 1.0, num_frames)
    gx, gy = wave(0.02), wave(0.01)
    return [FramePose(dx=float(dx[i]), dy=float(dy[i]), scale=float(sc[i]), roll=float(roll[i]), yaw=float(yaw[i]),
                      blink=float(blink[i]), mouth_open=float(mouth[i]), brow_raise=float(brow[i]),
                      gaze=(float(gx[i]), float(gy[i])))
            for i in range(num_frames)]


# ---------------------------------------------------------------------------------------------------- primitives
def face_coordinates(scene: Scene, pose: FramePose, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Face coordinates of every pixel centre.

    Args:
        scene: head placement (``cx``, ``cy``, ``scale`` as fractions of the image size).
        pose: per-frame offsets, scale and roll (radians, positive = clockwise on screen).
        size: image side ``S`` in pixels.

    Returns:
        ``(X, Y, k)``: float32 ``(S, S)`` face coordinates (x right, y down, head half-height 1) and ``k``, the
        number of pixels per face unit.
    """
    k = scene.scale * pose.scale * size
    cx = (scene.cx + pose.dx) * size
    cy = (scene.cy + pose.dy) * size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    px, py = xs + 0.5 - cx, ys + 0.5 - cy
    c, s = np.cos(pose.roll), np.sin(pose.roll)
    X = (c * px + s * py) / k
    Y = (-s * px + c * py) / k
    return X.astype(np.float32), Y.astype(np.float32), float(k)


def _to_pixels(scene: Scene, pose: FramePose, size: int, pts: np.ndarray) -> np.ndarray:
    """Face coordinates ``(K, 2)`` -> pixel coordinates ``(K, 2)`` (inverse of :func:`face_coordinates`)."""
    k = scene.scale * pose.scale * size
    cx = (scene.cx + pose.dx) * size
    cy = (scene.cy + pose.dy) * size
    c, s = np.cos(pose.roll), np.sin(pose.roll)
    x, y = pts[:, 0] * k, pts[:, 1] * k
    return np.stack([c * x - s * y + cx, s * x + c * y + cy], axis=1).astype(np.float32)


def ellipse_alpha(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, ax: float, ay: float, k: float,
                  angle: float = 0.0, feather_px: float = 1.0) -> np.ndarray:
    """Soft coverage of an ellipse in face coordinates.

    Args:
        X, Y: float32 ``(H, W)`` face coordinates; ``cx, cy, ax, ay``: centre and half-axes (face units).
        k: pixels per face unit (so the edge ramp is ``feather_px`` pixels wide).
        angle: rotation of the ellipse, radians.
        feather_px: width of the linear edge ramp in pixels (1 = anti-aliasing; larger = soft blending mask).

    Returns:
        float32 ``(H, W)`` in [0, 1].
    """
    dx, dy = X - cx, Y - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    r = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2)
    d_px = (r - 1.0) * (min(ax, ay) * k)
    return np.clip(0.5 - d_px / feather_px, 0.0, 1.0).astype(np.float32)


def _over(img: np.ndarray, alpha: np.ndarray, color: np.ndarray | tuple[float, ...]) -> None:
    """In place: ``img = img * (1 - alpha) + color * alpha`` (color (3,) or (H, W, 3))."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * np.asarray(color, dtype=np.float32)


def _noise_map(seed: int, grid: int, size: int, interp: int = cv2.INTER_CUBIC) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((grid, grid)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=interp)


def render_background(scene: Scene, size: int) -> np.ndarray:
    """The static background of a video: float32 ``(S, S, 3)`` in [0, 1]."""
    low = _noise_map(scene.bg_seed, 5, size)
    t = np.clip(0.5 + 0.35 * low, 0, 1)[..., None]
    img = (1 - t) * np.array(scene.bg_a, np.float32) + t * np.array(scene.bg_b, np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    proj = np.cos(scene.stripe_angle) * xs + np.sin(scene.stripe_angle) * ys
    stripes = scene.stripe_amp * np.sign(np.sin(2 * np.pi * scene.stripe_freq * proj))
    fine = 0.025 * _noise_map(scene.bg_seed + 1, max(8, size // 3), size, cv2.INTER_LINEAR)
    img = img * (1 + stripes + fine)[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def _skin_texture(identity: FaceIdentity, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Multiplicative skin texture sampled in face coordinates (moves with the face): float32 ``(H, W)``."""
    rng = np.random.default_rng(identity.texture_seed)
    n = _TEXTURE_SIZE
    pores = rng.standard_normal((n, n)).astype(np.float32)
    blotch = cv2.resize(rng.standard_normal((6, 6)).astype(np.float32), (n, n), interpolation=cv2.INTER_CUBIC)
    tex = identity.texture_amp * (0.8 * pores + 0.4 * blotch)
    # face units [-1.2, 1.2] -> texture pixels: about 1 texel per 1.6 px at 256 px (fine, pore-like detail)
    mx = ((X / 2.4 + 0.5) * (n - 1)).astype(np.float32)
    my = ((Y / 2.4 + 0.5) * (n - 1)).astype(np.float32)
    return 1.0 + cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


# ---------------------------------------------------------------------------------------------------- rendering
def render_face(identity: FaceIdentity, scene: Scene, pose: FramePose, size: int,
                background: np.ndarray | None = None) -> RenderedFace:
    """Render one noise-free frame of ``identity`` in ``scene`` at ``pose``.

    Args:
        identity, scene, pose: the generative parameters (see the module docstring).
        size: image side ``S`` in pixels (the renderer is resolution-independent: a smaller ``size`` gives the
            same picture with less detail).
        background: float32 ``(S, S, 3)`` from :func:`render_background` (computed if None).

    Returns:
        :class:`RenderedFace` with a float32 ``(S, S, 3)`` image in [0, 1], landmarks and box in pixels.
    """
    X, Y, k = face_coordinates(scene, pose, size)
    img = (background if background is not None else render_background(scene, size)).copy()
    cv = _Canvas(img, X, Y, k, scene, pose, size)
    skin = np.array(identity.skin, np.float32)
    hair = np.array(identity.hair, np.float32)
    hw = identity.head_w
    light = np.array(scene.light, np.float32)

    # shirt, neck, back hair, ears
    cv.ellipse(0.0, 2.25, hw * 2.7, 1.05, np.array(identity.shirt, np.float32))
    cv.ellipse(0.0, 1.05, hw * 0.52, 0.62, skin * (scene.ambient + 0.25))
    if identity.hair_style == "long":
        cv.ellipse(0.0, 0.25, hw * 1.3, 1.35, hair * 0.8)
    elif identity.hair_style != "bald":
        cv.ellipse(0.0, -0.1, hw * 1.1, 1.02, hair * 0.85, clip_below=identity.eye_y + 0.25)
    ear_y = identity.eye_y + 0.12
    for side in (-1.0, 1.0):
        cv.ellipse(side * hw * 0.98, ear_y, 0.10 * identity.ear, 0.19 * identity.ear, skin * (scene.ambient + 0.3))

    # head: ellipse with a narrowing jaw, Lambertian shading of an ellipsoid, skin texture
    sl = cv.window(0.0, 0.0, max(hw, 1.0) * 1.05)
    Xh, Yh = X[sl], Y[sl]
    w = hw * (1.0 - identity.jaw * np.clip(Yh, 0, None) ** 2)
    u = Xh / w
    r = np.sqrt(u * u + Yh * Yh)
    head_a = np.clip(0.5 - (r - 1.0) * (hw * k), 0, 1).astype(np.float32)
    nz = np.sqrt(np.clip(1.0 - u * u - Yh * Yh, 0.0, 1.0))
    norm = np.sqrt(u * u + Yh * Yh + nz * nz) + 1e-6
    diffuse = np.clip((u * light[0] + Yh * light[1] + nz * light[2]) / norm, 0, 1)
    shade = np.full(X.shape, scene.ambient + (1 - scene.ambient) * max(light[2], 0.0), np.float32)
    shade[sl] = scene.ambient + (1 - scene.ambient) * diffuse
    tex = _skin_texture(identity, Xh, Yh)
    _over(img[sl], head_a, skin[None, None, :] * (shade[sl] * tex)[..., None])
    cv.shade3 = shade[..., None]

    # inner features (shifted horizontally with yaw)
    sx = pose.yaw * 0.25
    ey = identity.eye_y
    eh = max(identity.eye_h * (1.0 - 0.9 * pose.blink), 0.004)
    for side in (-1.0, 1.0):
        ex = sx + side * identity.eye_dx + pose.yaw * 0.03 * side
        wl = cv.window(ex, ey, identity.eye_w * 1.2)
        sclera = ellipse_alpha(X[wl], Y[wl], ex, ey, identity.eye_w, eh, k)
        lid = np.clip(ellipse_alpha(X[wl], Y[wl], ex, ey - 0.006, identity.eye_w * 1.12, eh * 1.35, k) - sclera,
                      0, 1) * (Y[wl] < ey + 0.01)
        _over(img[wl], sclera, np.array([0.93, 0.91, 0.88], np.float32) * cv.shade3[wl])
        ir = identity.eye_h * 0.85
        gx, gy = ex + pose.gaze[0], ey + pose.gaze[1]
        _over(img[wl], ellipse_alpha(X[wl], Y[wl], gx, gy, ir, ir, k) * sclera,
              np.array(identity.iris, np.float32) * cv.shade3[wl])
        _over(img[wl], ellipse_alpha(X[wl], Y[wl], gx, gy, ir * 0.42, ir * 0.42, k) * sclera, (0.03, 0.03, 0.03))
        _over(img[wl], lid * 0.9, skin * 0.25)
        by = ey - identity.brow_y - pose.brow_raise
        cv.ellipse(ex, by, identity.eye_w * 1.3, identity.brow_thick, hair * 0.6, angle=-side * identity.brow_tilt,
                   opacity=0.92, shaded=False)

    ny = ey + identity.nose_len
    side_l = 1.0 if light[0] < 0 else -1.0  # shadow on the side away from the light
    cv.ellipse(sx + side_l * identity.nose_w * 0.45, (ey + ny) / 2 + 0.03, identity.nose_w * 0.3,
               identity.nose_len * 0.5, None, feather_px=3.0, multiply=0.88)
    for side in (-1.0, 1.0):
        cv.ellipse(sx + side * identity.nose_w * 0.55, ny, 0.045, 0.025, skin * 0.35, opacity=0.85, shaded=False)
    cv.ellipse(sx, ny - 0.04, identity.nose_w * 0.45, 0.05, None, feather_px=3.0, multiply=1.07)

    my = identity.mouth_y
    mw = identity.mouth_w
    opening = pose.mouth_open
    cv.ellipse(sx, my, mw, identity.lip_h + opening * 0.5, np.array(identity.lip, np.float32))
    wm = cv.window(sx, my, mw)
    inner = ellipse_alpha(X[wm], Y[wm], sx, my, mw * 0.82, max(0.006, opening * 0.45), k)
    _over(img[wm], inner, (0.22, 0.07, 0.07))
    if opening > 0.05:
        teeth = inner * (Y[wm] < my - opening * 0.12)
        _over(img[wm], teeth, np.array([0.88, 0.86, 0.8], np.float32) * cv.shade3[wm])

    # front hair with strands
    if identity.hair_style != "bald":
        tilt = {"side_part": 0.25, "fringe": 0.0}.get(identity.hair_style, 0.05)
        wh = cv.window(0.0, -0.5, max(hw, 0.6) * 1.15)
        Xw, Yw = X[wh], Y[wh]
        line = identity.hairline + (0.25 if identity.hair_style == "fringe" else 0.0) + tilt * Xw \
            + 0.03 * np.cos(Xw * 7.0)
        region = np.clip(0.5 - (np.sqrt((Xw / (hw * 1.06)) ** 2 + (Yw / 1.04) ** 2) - 1.0) * k, 0, 1)
        front = np.clip((line - Yw) * k / 1.5 + 0.5, 0, 1) * region
        strands = 0.82 + 0.18 * np.sin(Xw * 55.0 + 3.0 * np.sin(Yw * 9.0))
        _over(img[wh], front.astype(np.float32), hair[None, None, :] * strands[..., None])

    # global lighting gradient
    ramp = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    img *= (1.0 + scene.gradient[0] * ramp[None, :] + scene.gradient[1] * ramp[:, None])[..., None]
    np.clip(img, 0.0, 1.0, out=img)

    pts = np.array([[sx - identity.eye_dx, ey], [sx + identity.eye_dx, ey], [sx, ny],
                    [sx - mw, my], [sx + mw, my]], dtype=np.float32)
    corners = np.array([[-hw, ey - identity.brow_y - 0.1], [hw, ey - identity.brow_y - 0.1], [-hw, 1.0], [hw, 1.0]],
                       dtype=np.float32)
    cpx = _to_pixels(scene, pose, size, corners)
    box = np.array([cpx[:, 0].min(), cpx[:, 1].min(), cpx[:, 0].max(), cpx[:, 1].max()], dtype=np.float32)
    return RenderedFace(image=img, landmarks=_to_pixels(scene, pose, size, pts), box=box)


class _Canvas:
    """Draws soft ellipses on the part of the image they can touch (a square window around them)."""

    def __init__(self, img: np.ndarray, X: np.ndarray, Y: np.ndarray, k: float, scene: Scene, pose: FramePose,
                 size: int) -> None:
        self.img, self.X, self.Y, self.k = img, X, Y, k
        self.scene, self.pose, self.size = scene, pose, size
        self.shade3: np.ndarray | None = None

    def window(self, cx: float, cy: float, radius: float) -> tuple[slice, slice]:
        p = _to_pixels(self.scene, self.pose, self.size, np.array([[cx, cy]], np.float32))[0]
        r = radius * self.k + 4.0
        x0, x1 = max(0, int(p[0] - r)), min(self.size, int(np.ceil(p[0] + r)) + 1)
        y0, y1 = max(0, int(p[1] - r)), min(self.size, int(np.ceil(p[1] + r)) + 1)
        return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, color: np.ndarray | None, angle: float = 0.0,
                feather_px: float = 1.0, opacity: float = 1.0, shaded: bool = True, multiply: float | None = None,
                clip_below: float | None = None) -> None:
        sl = self.window(cx, cy, max(ax, ay))
        a = ellipse_alpha(self.X[sl], self.Y[sl], cx, cy, ax, ay, self.k, angle=angle, feather_px=feather_px)
        if clip_below is not None:
            a *= np.clip((clip_below - self.Y[sl]) * self.k / 3.0 + 0.5, 0, 1)
        if opacity != 1.0:
            a *= opacity
        if multiply is not None:
            self.img[sl] *= (1.0 + (multiply - 1.0) * a)[..., None]
            return
        col = np.asarray(color, np.float32)
        if shaded and self.shade3 is not None:
            col = col * self.shade3[sl]
        _over(self.img[sl], a, col)


# ---------------------------------------------------------------------------------------------------- camera
def capture(image: np.ndarray, noise_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Simulate the camera: add sensor noise and quantise.

    Args:
        image: float32 ``(H, W, 3)`` in [0, 1].
        noise_sigma: noise standard deviation in 8-bit units (per channel: 70% shared luma, 70% independent).
        rng: NumPy generator.

    Returns:
        uint8 ``(H, W, 3)``.
    """
    h, w = image.shape[:2]
    common = rng.standard_normal((h, w, 1), dtype=np.float32)
    indep = rng.standard_normal((h, w, 3), dtype=np.float32)
    noisy = image * 255.0 + noise_sigma * (0.7 * common + 0.7 * indep)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-encode and decode an RGB uint8 image (OpenCV, 4:2:0 chroma subsampling) at ``quality`` in [1, 100].

    Returns:
        uint8 ``(H, W, 3)`` RGB.
    """
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError("OpenCV failed to JPEG-encode an image")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def with_inner_face_of(base: FaceIdentity, donor: FaceIdentity, skin_mix: float = 0.5) -> FaceIdentity:
    """``base`` with the inner face (eyes, brows, nose, mouth, skin texture) of ``donor``: a face swap's target.

    The skin tone is ``(1 - skin_mix) * base.skin + skin_mix * donor.skin`` (a swap rarely matches it exactly).
    """
    skin = tuple(float((1 - skin_mix) * a + skin_mix * b) for a, b in zip(base.skin, donor.skin))
    return replace(base, skin=skin, texture_seed=donor.texture_seed, texture_amp=donor.texture_amp,
                   eye_y=donor.eye_y, eye_dx=donor.eye_dx, eye_w=donor.eye_w, eye_h=donor.eye_h, iris=donor.iris,
                   brow_y=donor.brow_y, brow_thick=donor.brow_thick, brow_tilt=donor.brow_tilt,
                   nose_len=donor.nose_len, nose_w=donor.nose_w, mouth_y=donor.mouth_y, mouth_w=donor.mouth_w,
                   lip_h=donor.lip_h, lip=donor.lip)
