"""The embedded detection dataset: synthetic talking-head "videos", pristine and manipulated, as a face index.

:func:`build_synthetic_detection` writes exactly what face extraction writes for a real dataset
(``crops/<video_id>/<frame:06d>_0.png`` and ``face_index.parquet`` + ``face_index.meta.json``, see
:mod:`faceforge.data.detection.face_index`), so ``data=synthetic`` runs the same DataModule, cache and task code as
``data=ffpp``. The frames ARE the crops (a head filling most of a square frame, like a face crop with margin), so
boxes and landmarks are in crop pixels and ``det_prob`` is 1.

Videos: ``num_videos`` in all, ``round(num_videos * fake_fraction)`` of them fake. Each real video
``synthetic/original/<NNNN>`` is one person (:mod:`.faces`) in one scene with a smooth per-frame pose and
expression trajectory, captured with sensor noise (sigma 3-7 of 255). Fake ``j`` is made from real video
``j mod n_real`` (its ``source_id``) with method ``methods[j mod len(methods)]`` and is named
``synthetic/<method>/<NNNN>`` (numbered per method). Splits are drawn by source group (a real video with all
fakes made from it), so a person never appears in two splits. Every frame, real or fake, finally goes through
the same optional JPEG re-compression (one quality per group), so compression is no cue.

Manipulation traces (what a detector can learn; modelled on what real face swaps leave, cf. Li & Lyu 2019,
"Exposing DeepFake Videos By Detecting Face Warping Artifacts", and Li et al. 2020, "Face X-ray": a face
synthesised at low resolution, warped/resampled into the frame, colour-mismatched and blended with a mask):

* ``SynthSwap`` (identity swap, like Deepfakes/FaceSwap): the inner face (eyes, brows, nose, mouth, skin texture
  and 30-60 % of the skin tone) of ANOTHER, unseen identity is rendered in the target's pose at 1/4 resolution
  (64 px for 256 px crops, the output size of the original Deepfakes autoencoder), upsampled bilinearly and
  slightly blurred, given a per-video colour gain error of up to +-10 % per channel, and blended into the captured
  frame with a soft elliptic mask (feather ~5 % of the face size) over brows-to-chin.
* ``SynthBlend`` (expression re-enactment, like Face2Face/NeuralTextures): the SAME identity with another
  expression (mouth opened, brows raised, gaze moved) is rendered at 1/3 resolution, upsampled with
  nearest-neighbour (blocky resampling), over-sharpened (unsharp mask: halos), colour gain error up to +-3 %, and
  blended over the lower face with a narrow (2 px) mask boundary.

In both, the blended region carries no camera noise (it came from a renderer, not the sensor) and has less fine
detail than the surrounding real skin: the noise/resolution inconsistency and the blending boundary are the
learnable signals.

* ``SynthFlicker`` (not in the default ``methods``; a control for video-level detectors): no per-frame trace at
  all. The face inside SynthSwap's soft elliptic mask is the captured face itself, only its colour is scaled by
  the frame's flicker gain (below, with :data:`FLICKER_ONLY_SCALE` = 4 times the standard deviations: brightness
  14 %, channels 6 %; no position jitter, whose sub-pixel resampling would leave a per-frame blur). A single frame
  is a real frame with a somewhat different face colour (skin tones vary far more between people), so frame-level
  detectors stay near chance while a temporal model can see the flicker. Needs ``temporal_artifacts=True``.
  The amplitude is what a small CNN-LSTM trained from scratch learns on CPU in seconds: with the standard 3.5 %
  flicker a tiny ResNeXt-LSTM (``backbone="tiny"``, 96 videos, 64 px) stayed at chance within 240 epochs, at 10 %
  it only began to fit its training videos after ~200 epochs, at 4x (14 %) it reached a held-out AUC of 0.84-0.88
  (three seeds; 160 videos at 48 px, 140 epochs) while the same clips with one frame repeated stayed at 0.52-0.62
  (``tests/test_clips.py`` checks this). A zero-mean flicker is a second-order statistic (a variance over time),
  which a CNN-LSTM must learn without a first-order gradient towards it.

Temporal inconsistency (``temporal_artifacts=True``, the default; for video-level detectors such as ResNeXt-LSTM):
real face swaps are made frame by frame, so the synthesised face flickers in colour and jitters in position
against the head it is pasted on, which real videos do not do (Guera & Delp 2018, "Deepfake Video Detection Using
Recurrent Neural Networks", Sec. III; Sabir et al. 2019, "Recurrent Convolutional Strategies for Face
Manipulation Detection in Videos"). Here every frame of a fake video draws, independently:

* a colour flicker of the synthesised face: its per-video colour gain is multiplied by ``1 + b + c_ch`` with a
  brightness term ``b ~ N(0, 0.035)`` shared by the channels and a per-channel term ``c_ch ~ N(0, 0.015)``, both
  clipped to +-2.5 sigma;
* a position jitter of the synthesised face inside its (fixed, pose-following) blending mask:
  ``N(0, 0.006)`` of the image side per axis (about 1.5 px at 256 px), clipped to +-2.5 sigma.

The real videos' pose and expression trajectories are smooth (:func:`~faceforge.data.detection.synthetic_faces.
sample_poses`), so the frame-to-frame change of a fake's face colour is larger than its source video's. Each
single frame stays a frame of the same kind as without the option (the flicker is within the per-video colour
error range, the jitter about a pixel), so frame-level detectors see the same traces. The per-frame draws come
from their own random stream (``[seed, 3, fake number]``), so ``temporal_artifacts=False`` gives exactly the
frames of generator version 1.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.data.core.prepared import PREPARE_REPORT, make_report
from faceforge.data.core.runner import run_parallel
from faceforge.data.detection.face_index import INDEX_FILENAMES, FaceIndex, format_landmarks
from faceforge.data.detection.synthetic_faces import (
    FaceIdentity,
    FramePose,
    Scene,
    capture,
    ellipse_alpha,
    face_coordinates,
    jpeg_roundtrip,
    render_background,
    render_face,
    sample_identity,
    sample_poses,
    sample_scene,
    with_inner_face_of,
)
from faceforge.errors import BuilderSettingsError as SettingsError
from faceforge.utils.atomic import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
DATASET = "synthetic"
REAL_METHOD = "original"
#: Folder of the per-group done-markers (``group-NNNNN-DIGEST.json``: the group's index rows, written after its
#: crops), which let an interrupted build resume; DIGEST names the generator version and the parameters.
PARTS_DIR = "parts"

# rng stream tags (order-independent seeding: np.random.default_rng([seed, TAG, number]))
_REAL, _FAKE, _SPLIT, _TEMPORAL = 0, 1, 2, 3

#: Standard deviations of the per-frame temporal artifacts of fakes (see the module docstring).
FLICKER_BRIGHTNESS_STD = 0.035
FLICKER_CHANNEL_STD = 0.015
JITTER_STD = 0.006
_CLIP_SIGMAS = 2.5
#: SynthFlicker's colour flicker is this many times the standard one (its only trace; see the module docstring).
FLICKER_ONLY_SCALE = 4.0


def _swap_trace(captured: np.ndarray, identity: FaceIdentity, scene: Scene, pose: FramePose, size: int,
                params: dict[str, Any]) -> np.ndarray:
    """SynthSwap: another identity's inner face, 1/4-res, colour-shifted, soft elliptic blend (see module doc)."""
    low = max(16, size // 4)
    swapped = with_inner_face_of(identity, params["donor"], skin_mix=params["skin_mix"])
    face = render_face(swapped, scene, _jittered(pose, params), low,
                       background=np.zeros((low, low, 3), np.float32)).image
    face = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)
    face = cv2.GaussianBlur(face, (0, 0), sigmaX=0.5 * size / 256)
    face = np.clip(face * params["gain"][None, None, :], 0, 1)
    X, Y, k = face_coordinates(scene, pose, size)
    mask = ellipse_alpha(X, Y, 0.0, 0.12, identity.head_w * 0.8, 0.66, k, feather_px=max(1.0, 0.05 * k))
    return _blend(captured, face, mask)


def _blend_trace(captured: np.ndarray, identity: FaceIdentity, scene: Scene, pose: FramePose, size: int,
                 params: dict[str, Any]) -> np.ndarray:
    """SynthBlend: same identity, new expression, 1/3-res nearest upsampling + sharpening, lower-face blend."""
    low = max(16, size // 3)
    new_pose = replace(pose, mouth_open=float(np.clip(pose.mouth_open + params["mouth"], 0, 0.3)),
                       brow_raise=pose.brow_raise + params["brow"],
                       gaze=(pose.gaze[0] + params["gaze"][0], pose.gaze[1] + params["gaze"][1]))
    face = render_face(identity, scene, _jittered(new_pose, params), low,
                       background=np.zeros((low, low, 3), np.float32)).image
    face = cv2.resize(face, (size, size), interpolation=cv2.INTER_NEAREST)
    face = face + 1.0 * (face - cv2.GaussianBlur(face, (0, 0), sigmaX=1.2 * size / 256))
    face = np.clip(face * params["gain"][None, None, :], 0, 1)
    X, Y, k = face_coordinates(scene, pose, size)
    mask = ellipse_alpha(X, Y, 0.0, identity.mouth_y - 0.05, identity.head_w * 0.7, 0.45, k, feather_px=2.0)
    return _blend(captured, face, mask)


def _flicker_trace(captured: np.ndarray, identity: FaceIdentity, scene: Scene, pose: FramePose, size: int,
                   params: dict[str, Any]) -> np.ndarray:
    """SynthFlicker (temporal only): the captured face itself, its colour scaled by the frame's flicker gain inside
    the soft elliptic mask of SynthSwap (see module doc)."""
    X, Y, k = face_coordinates(scene, pose, size)
    mask = ellipse_alpha(X, Y, 0.0, 0.12, identity.head_w * 0.8, 0.66, k, feather_px=max(1.0, 0.05 * k))
    face = np.clip(captured.astype(np.float32) * (params["gain"][None, None, :] / 255.0), 0, 1)
    return _blend(captured, face, mask)


def _jittered(pose: FramePose, params: dict[str, Any]) -> FramePose:
    """The pose the synthesised face is rendered in: ``pose`` moved by the frame's jitter (if any)."""
    offset = params.get("offset")
    if offset is None:
        return pose
    return replace(pose, dx=pose.dx + float(offset[0]), dy=pose.dy + float(offset[1]))


def temporal_jitter(rng: np.random.Generator, num_frames: int,
                    flicker_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame temporal artifacts of one fake video (see the module docstring).

    Args:
        rng: the fake video's temporal stream.
        num_frames: frames of the video.
        flicker_scale: multiplies the flicker's standard deviations (and clipping bounds).

    Returns:
        ``(gain, offset)``: float32 ``(F, 3)`` multiplicative colour flicker (around 1) and float64 ``(F, 2)``
        position jitter ``(dx, dy)`` in fractions of the image side.
    """
    c = _CLIP_SIGMAS
    b_std, c_std = FLICKER_BRIGHTNESS_STD * flicker_scale, FLICKER_CHANNEL_STD * flicker_scale
    bright = np.clip(rng.normal(0.0, b_std, (num_frames, 1)), -c * b_std, c * b_std)
    chan = np.clip(rng.normal(0.0, c_std, (num_frames, 3)), -c * c_std, c * c_std)
    offset = np.clip(rng.normal(0.0, JITTER_STD, (num_frames, 2)), -c * JITTER_STD, c * JITTER_STD)
    return (1.0 + bright + chan).astype(np.float32), offset


def _blend(captured: np.ndarray, face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    out = captured.astype(np.float32) * (1 - m) + face * 255.0 * m
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _swap_params(rng: np.random.Generator) -> dict[str, Any]:
    return {"donor": sample_identity(rng), "skin_mix": float(rng.uniform(0.3, 0.6)),
            "gain": (1 + rng.uniform(-0.10, 0.10, 3)).astype(np.float32)}


def _blend_params(rng: np.random.Generator) -> dict[str, Any]:
    return {"mouth": float(rng.uniform(0.06, 0.16)), "brow": float(rng.uniform(0.0, 0.03)),
            "gaze": (float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.015, 0.015))),
            "gain": (1 + rng.uniform(-0.03, 0.03, 3)).astype(np.float32)}


def _flicker_params(rng: np.random.Generator) -> dict[str, Any]:
    return {"gain": np.ones(3, dtype=np.float32)}


#: method -> (per-video parameter sampler, per-frame trace). Add an entry to add a method.
METHODS: dict[str, tuple[Callable[[np.random.Generator], dict[str, Any]], Callable[..., np.ndarray]]] = {
    "SynthSwap": (_swap_params, _swap_trace),
    "SynthBlend": (_blend_params, _blend_trace),
    "SynthFlicker": (_flicker_params, _flicker_trace),
}
#: Methods whose only trace is temporal (they need ``temporal_artifacts=True``).
TEMPORAL_ONLY_METHODS = ("SynthFlicker",)


def build_synthetic_detection(output_dir: str | Path, num_videos: int = 48, frames_per_video: int = 8,
                              image_size: int = 256, fake_fraction: float = 0.5, val_fraction: float = 0.2,
                              test_fraction: float = 0.2, seed: int = 0,
                              methods: Sequence[str] = ("SynthSwap", "SynthBlend"),
                              jpeg_quality: tuple[int, int] | None = None,
                              temporal_artifacts: bool = True, workers: int = 1,
                              progress: bool = False) -> FaceIndex:
    """Generate the synthetic detection dataset into ``output_dir`` and return its face index.

    Deterministic for a given ``seed`` and arguments (byte-identical crops and index, whatever ``workers``).
    The prepared-dataset contract (:mod:`faceforge.data.core.prepared`): the source groups (a real video and the
    fakes made from it) are rendered by :func:`~faceforge.data.core.runner.run_parallel` (spawned workers that die
    with this process); this process writes each group's crops (temporary file + rename) and then its done-marker
    ``parts/group-NNNNN-DIGEST.json`` (its index rows). An existing index is removed first and the index is
    written last, so a killed build leaves no index, and the next build with the same arguments resumes: groups
    with a done-marker and all their crops are not rendered again, and the index is byte-identical to an
    uninterrupted build's.

    Args:
        output_dir: folder to write ``crops/`` and ``face_index.parquet`` into (created if missing).
        num_videos: videos in all (real + fake); at least 3 real videos are needed for three splits.
        frames_per_video: frames (= face crops) per video.
        image_size: side of the square crops, pixels (>= 32).
        fake_fraction: share of fake videos in [0, 1).
        val_fraction, test_fraction: share of source groups (a real video + its fakes) in val / test; each is
            at least one group when > 0.
        seed: the only source of randomness.
        methods: manipulation methods, keys of :data:`METHODS`; fakes cycle through them (``SynthFlicker``, the
            temporal-only control, needs ``temporal_artifacts``).
        jpeg_quality: ``(low, high)``: every frame is JPEG re-compressed at a per-group quality drawn in
            ``[low, high]`` before it is stored as PNG; None (default) stores the captured frames losslessly.
        temporal_artifacts: fakes also flicker in colour and jitter in position from frame to frame (see the
            module docstring); False gives the frames of generator version 1.
        workers: rendering processes (``<= 1``: in this process); the output does not depend on it.
        progress: show a tqdm bar of the groups on stderr.

    Returns:
        The written :class:`~faceforge.data.detection.face_index.FaceIndex` (rows sorted by video, frame).

    Raises:
        ValueError: for an unknown method, fractions out of range, too few videos for the splits, a too small
            ``image_size``, or a temporal-only method without ``temporal_artifacts``.
        OSError: if the files cannot be written.
    """
    output_dir = Path(output_dir)
    methods = tuple(str(m) for m in methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SettingsError(f"unknown synthetic manipulation methods {unknown}; known: {sorted(METHODS)}")
    if not temporal_artifacts and set(methods) & set(TEMPORAL_ONLY_METHODS):
        raise SettingsError(f"methods {sorted(set(methods) & set(TEMPORAL_ONLY_METHODS))} have only a temporal trace: "
                           f"they need temporal_artifacts=True (else their fakes equal their source videos)")
    if not 0.0 <= fake_fraction < 1.0:
        raise SettingsError(f"fake_fraction must be in [0, 1), got {fake_fraction}")
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise SettingsError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be >= 0 and sum "
                           f"to less than 1")
    if image_size < 32:
        raise SettingsError(f"image_size must be >= 32, got {image_size}")
    if frames_per_video < 1:
        raise SettingsError(f"frames_per_video must be >= 1, got {frames_per_video}")
    n_fake = round(num_videos * fake_fraction) if methods else 0
    n_real = int(num_videos) - n_fake
    n_val = _at_least_one(n_real * val_fraction, val_fraction)
    n_test = _at_least_one(n_real * test_fraction, test_fraction)
    if n_real < 1 or n_real - n_val - n_test < 1:
        raise SettingsError(f"num_videos={num_videos} gives {n_real} real videos (source groups): too few for a train "
                           f"split plus {n_val} val and {n_test} test groups; use more videos")

    # splits by source group
    perm = np.random.default_rng([seed, _SPLIT]).permutation(n_real)
    group_split = np.empty(n_real, dtype=object)
    group_split[perm[:n_val]] = "val"
    group_split[perm[n_val:n_val + n_test]] = "test"
    group_split[perm[n_val + n_test:]] = "train"

    # fakes: (fake number, method, number within method, source real)
    per_method: dict[str, int] = {m: 0 for m in methods}
    fakes_of: dict[int, list[tuple[int, str, int]]] = {i: [] for i in range(n_real)}
    for j in range(n_fake):
        m = methods[j % len(methods)]
        fakes_of[j % n_real].append((j, m, per_method[m]))
        per_method[m] += 1

    params = {"num_videos": int(num_videos), "frames_per_video": int(frames_per_video),
              "image_size": int(image_size), "fake_fraction": float(fake_fraction),
              "val_fraction": float(val_fraction), "test_fraction": float(test_fraction), "seed": int(seed),
              "methods": list(methods), "jpeg_quality": list(jpeg_quality) if jpeg_quality else None,
              "temporal_artifacts": bool(temporal_artifacts)}
    for name in INDEX_FILENAMES:  # the index is written last: none while building
        (output_dir / name).unlink(missing_ok=True)
    (output_dir / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(json.dumps([GENERATOR_VERSION, params], sort_keys=True).encode()).hexdigest()[:10]
    for stale in (output_dir / PARTS_DIR).glob("group-*.json"):  # markers of a build with other arguments
        if not stale.stem.endswith(f"-{digest}"):
            stale.unlink()
    tasks = [_GroupTask(i, tuple(fakes_of[i]), str(group_split[i]), int(frames_per_video), int(image_size),
                        int(seed), tuple(jpeg_quality) if jpeg_quality else None, bool(temporal_artifacts))
             for i in range(n_real)]
    done: dict[int, list[dict[str, Any]]] = {}
    for task in tasks:  # resume: groups an interrupted build finished
        rows_done = _load_group_marker(output_dir, task, digest)
        if rows_done is not None:
            done[task.index] = rows_done

    def write_group(task: _GroupTask, result: tuple[list[dict[str, Any]], list[tuple[str, bytes]]]) -> None:
        group_rows, pngs = result
        for crop_rel, data in pngs:
            (output_dir / crop_rel).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(output_dir / crop_rel, data)
        atomic_write_json(_group_marker(output_dir, task, digest), {"rows": group_rows})  # after its crops
        done[task.index] = group_rows

    run_parallel(tasks, _render_group_task, workers=int(workers), on_result=write_group,
                 skip=lambda task: task.index in done, progress="videos (source groups)" if progress else False)
    rows = [r for task in tasks for r in done[task.index]]

    meta = {
        "dataset": DATASET, "generator": "faceforge.data.detection.synthetic.build_synthetic_detection",
        "generator_version": GENERATOR_VERSION, "params": params,
        "sampling": "all frames of each synthetic video (frame_index 0..frames_per_video-1)",
        "detector": "none: the frames are the crops; boxes and landmarks are in crop pixels",
    }
    index = FaceIndex.from_records(rows, root=output_dir, meta=meta).sorted()
    index.meta["summary"] = index.summary()
    counts = {"videos": int(num_videos), "faces": len(index)}
    summary = [f"synthetic detection data: {index.meta['summary']}"]
    # the contract's report: no reader, no input that can be bad, so no problem to list
    atomic_write_json(output_dir / PREPARE_REPORT, make_report(meta["generator"], counts, [], summary))
    index.write(output_dir)  # last: a folder with an index is complete
    log.info("synthetic detection dataset written to %s: %s", output_dir, index.meta["summary"])
    return FaceIndex.read(output_dir)  # exactly what is on disk


def _at_least_one(x: float, fraction: float) -> int:
    return max(1, round(x)) if fraction > 0 else 0


@dataclass(frozen=True)
class _GroupTask:
    """One source group to render (a picklable work item): real video ``index`` and the fakes made from it,
    each ``(fake number, method, number within the method)``."""

    index: int
    fakes: tuple[tuple[int, str, int], ...]
    split: str
    num_frames: int
    size: int
    seed: int
    jpeg_quality: tuple[int, int] | None
    temporal_artifacts: bool


def _group_marker(output_dir: Path, task: _GroupTask, digest: str) -> Path:
    return output_dir / PARTS_DIR / f"group-{task.index:05d}-{digest}.json"


def _load_group_marker(output_dir: Path, task: _GroupTask, digest: str) -> list[dict[str, Any]] | None:
    """The index rows of a group an earlier build finished, or None (no marker, unreadable, or a crop missing)."""
    path = _group_marker(output_dir, task, digest)
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: unreadable done-marker, rendering the group again", path)
        return None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and (output_dir / str(r.get("crop_path"))).is_file()
                                             for r in rows):
        return None
    return rows


def _render_group_task(task: _GroupTask) -> tuple[list[dict[str, Any]], list[tuple[str, bytes]]]:
    """Worker body of :func:`build_synthetic_detection`: render real video ``task.index`` and the fakes made from
    it; return their index rows and their crops as ``(crop path relative to the dataset folder, PNG bytes)``
    (nothing is written here: the main process writes)."""
    i, split, num_frames, size, seed = task.index, task.split, task.num_frames, task.size, task.seed
    jpeg_quality, temporal_artifacts = task.jpeg_quality, task.temporal_artifacts
    rng = np.random.default_rng([seed, _REAL, i])
    identity = sample_identity(rng)
    scene = sample_scene(rng)
    poses = sample_poses(rng, num_frames)
    quality = int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)) if jpeg_quality else None
    background = render_background(scene, size)
    real_id = f"{DATASET}/{REAL_METHOD}/{i:04d}"
    fake_specs = []
    for j, method, number in task.fakes:
        frng = np.random.default_rng([seed, _FAKE, j])
        params = METHODS[method][0](frng)
        scale = FLICKER_ONLY_SCALE if method in TEMPORAL_ONLY_METHODS else 1.0
        jitter = temporal_jitter(np.random.default_rng([seed, _TEMPORAL, j]), num_frames, scale) \
            if temporal_artifacts else None
        fake_specs.append((f"{DATASET}/{method}/{number:04d}", method, params, jitter))

    rows: list[dict[str, Any]] = []
    pngs: list[tuple[str, bytes]] = []
    for f, pose in enumerate(poses):
        rendered = render_face(identity, scene, pose, size, background)
        captured = capture(rendered.image, scene.noise_sigma, rng)
        frames = [(real_id, REAL_METHOD, 0, captured)]
        for video_id, method, params, jitter in fake_specs:
            if jitter is not None:
                params = {**params, "gain": (params["gain"] * jitter[0][f]).astype(np.float32),
                          "offset": jitter[1][f]}
            frames.append((video_id, method, 1, METHODS[method][1](captured, identity, scene, pose, size, params)))
        for video_id, method, label, frame in frames:
            if quality is not None:
                frame = jpeg_roundtrip(frame, quality)
            crop_rel = f"crops/{video_id}/{f:06d}_0.png"
            pngs.append((crop_rel, _encode_png(frame)))
            rows.append({
                "video_id": video_id, "dataset": DATASET, "method": method, "compression": "", "split": split,
                "label": label, "source_id": real_id, "video_path": f"crops/{video_id}", "num_frames": num_frames,
                "frame_index": f, "face_rank": 0, "det_prob": 1.0,
                "x1": float(rendered.box[0]), "y1": float(rendered.box[1]),
                "x2": float(rendered.box[2]), "y2": float(rendered.box[3]),
                "landmarks": format_landmarks(rendered.landmarks), "crop_path": crop_rel,
            })
    return rows, pngs


def _encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"cannot encode a {rgb.shape} crop as PNG")
    return buf.tobytes()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m faceforge.data.detection.synthetic OUTPUT_DIR [--num-videos N ...]``."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("output_dir")
    p.add_argument("--num-videos", type=int, default=48)
    p.add_argument("--frames-per-video", type=int, default=8)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jpeg-quality", type=int, nargs=2, default=None, metavar=("LOW", "HIGH"))
    p.add_argument("--methods", nargs="+", default=["SynthSwap", "SynthBlend"], choices=sorted(METHODS))
    p.add_argument("--no-temporal-artifacts", action="store_true",
                   help="fakes without frame-to-frame colour flicker and position jitter (generator version 1)")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (the output does not depend on it)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    index = build_synthetic_detection(a.output_dir, num_videos=a.num_videos, frames_per_video=a.frames_per_video,
                                      image_size=a.image_size, seed=a.seed,
                                      jpeg_quality=tuple(a.jpeg_quality) if a.jpeg_quality else None,
                                      methods=tuple(a.methods), temporal_artifacts=not a.no_temporal_artifacts,
                                      workers=a.workers, progress=True)
    print(index.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
